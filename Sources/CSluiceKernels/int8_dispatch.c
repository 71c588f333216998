// Picks the integer kernels of the variant in use (sluice_cpu_variant): AVX-512 VNNI where the
// process runs that variant, the AVX-512 (no VNNI) matrix products on `avx512`, else the AVX2
// ones; all give the same bits.
#include "sluice_kernels.h"

#include "cpu_targets.h"

int sluice_int8_available(void) {
#if defined(SLUICE_X86_64)
    return sluice_cpu_variant() >= SLUICE_CPU_AVX2;
#else
    return 0;
#endif
}

static int use_vnni(void) { return sluice_cpu_variant() >= SLUICE_CPU_AVX512_VNNI; }

void sluice_quantize_rows(const float *x, int tokens, int columns, int block,
                          int8_t *xq, int8_t *xq_low, float *scale, float *scaled_sum, int32_t *sum) {
    if (use_vnni()) sluice_quantize_rows_avx512_vnni(x, tokens, columns, block, xq, xq_low, scale, scaled_sum, sum);
    else sluice_quantize_rows_avx2(x, tokens, columns, block, xq, xq_low, scale, scaled_sum, sum);
}

void sluice_int8_matmul(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                        int columns, int rows, int panel_begin, int panel_end,
                        const int8_t *xq, const int8_t *xq_low, const float *xscale, const float *xscaled_sum,
                        const int32_t *xsum, int tokens, float *y, int y_stride) {
    if (use_vnni())
        sluice_int8_matmul_avx512_vnni(weights, kind, scales, offsets, bias, columns, rows, panel_begin, panel_end, xq,
                                       xq_low, xscale, xscaled_sum, xsum, tokens, y, y_stride);
    else if (sluice_cpu_variant() == SLUICE_CPU_AVX512)
        sluice_int8_matmul_avx512(weights, kind, scales, offsets, bias, columns, rows, panel_begin, panel_end, xq,
                                  xq_low, xscale, xscaled_sum, xsum, tokens, y, y_stride);
    else
        sluice_int8_matmul_avx2(weights, kind, scales, offsets, bias, columns, rows, panel_begin, panel_end, xq,
                                xq_low, xscale, xscaled_sum, xsum, tokens, y, y_stride);
}

float sluice_int8_row_product(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                              int columns, int row, const int8_t *xq, const int8_t *xq_low, const float *xscale,
                              const float *xscaled_sum, const int32_t *xsum) {
    return use_vnni()
        ? sluice_int8_row_product_avx512_vnni(weights, kind, scales, offsets, bias, columns, row, xq, xq_low, xscale,
                                              xscaled_sum, xsum)
        : sluice_int8_row_product_avx2(weights, kind, scales, offsets, bias, columns, row, xq, xq_low, xscale,
                                       xscaled_sum, xsum);
}

int sluice_collect_near_maximum(const float *values, int count, float margin, float *maximum, int32_t first_row,
                                int32_t *rows, float *kept) {
    return use_vnni() ? sluice_collect_near_maximum_avx512(values, count, margin, maximum, first_row, rows, kept)
                      : sluice_collect_near_maximum_avx2(values, count, margin, maximum, first_row, rows, kept);
}
