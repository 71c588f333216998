// The output projection for greedy rows, in two stages: every logit at one byte per
// activation with a proven error bound, then the exact products of the few rows the
// bound cannot rule out (see ArgmaxHead.swift).
#include "sluice_kernels.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "cpu_targets.h"

#if defined(SLUICE_X86_64)
#define SLUICE_HAVE_VNNI 1
#include <immintrin.h>
#endif

#ifdef SLUICE_HAVE_VNNI
#pragma clang attribute push(SLUICE_AVX512_VNNI_TARGET, apply_to = function)
#include "int8_row_product.h"

float sluice_int8_row_product_avx512_vnni(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                              int columns, int row, const int8_t *xq, const int8_t *xq_low, const float *xscale,
                              const float *xscaled_sum, const int32_t *xsum) {
    return int8_row_product(weights, kind, scales, offsets, bias, columns, row, xq, xq_low, xscale, xscaled_sum, xsum);
}

int sluice_collect_near_maximum_avx512(const float *values, int count, float margin, float *maximum, int32_t first_row,
                                int32_t *rows, float *kept) {
    float best = *maximum;
    int found = 0;
    for (int i = 0; i < count; i += 16) {
        const __mmask16 valid = count - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (count - i)) - 1);
        const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), valid, values + i);
        const float top = _mm512_reduce_max_ps(v);
        if (top > best) best = top;
        // The threshold only rises, so rows kept early are a superset of those the final one keeps.
        __mmask16 near = _mm512_mask_cmp_ps_mask(valid, v, _mm512_set1_ps(best - margin), _CMP_GE_OQ);
        while (near) {
            const int at = i + __builtin_ctz(near);
            rows[found] = first_row + at;
            kept[found++] = values[at];
            near &= near - 1;
        }
    }
    *maximum = best;
    return found;
}

#pragma clang attribute pop

#else

float sluice_int8_row_product_avx512_vnni(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                              int columns, int row, const int8_t *xq, const int8_t *xq_low, const float *xscale,
                              const float *xscaled_sum, const int32_t *xsum) {
    (void)weights; (void)kind; (void)scales; (void)offsets; (void)bias; (void)columns; (void)row; (void)xq;
    (void)xq_low; (void)xscale; (void)xscaled_sum; (void)xsum;
    return 0;
}

int sluice_collect_near_maximum_avx512(const float *values, int count, float margin, float *maximum, int32_t first_row,
                                int32_t *rows, float *kept) {
    (void)values; (void)count; (void)margin; (void)maximum; (void)first_row; (void)rows; (void)kept;
    return 0;
}

#endif
