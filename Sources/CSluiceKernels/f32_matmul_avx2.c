// The float (`--precision float32`) matrix products (f32_matmul_kernels.h) compiled for AVX2 + FMA,
// for the `avx2` variant and above.
#include "sluice_kernels.h"

#include <stddef.h>
#include <stdint.h>

#include "cpu_targets.h"

#pragma clang fp contract(off)

#if defined(SLUICE_X86_64)
#pragma clang attribute push(SLUICE_AVX2_TARGET, apply_to = function)
#define SLUICE_HAS_FMA_INSTRUCTION 1
#include "vector16.h"
#define VARIANT(name) name##_avx2
#include "f32_matmul_kernels.h"
#pragma clang attribute pop
#else

float sluice_dot_avx2(const float *a, const float *b, long count) { (void)a; (void)b; (void)count; return 0; }
void sluice_f32_packed_rows_avx2(const int8_t *quants, const float *scales, const float *mins, long columns,
                                 long scales_per_row, int scale_shift, long first_row, long last_row, const float *x,
                                 long first_token, long last_token, float *y, long out_stride) {
    (void)quants; (void)scales; (void)mins; (void)columns; (void)scales_per_row; (void)scale_shift; (void)first_row;
    (void)last_row; (void)x; (void)first_token; (void)last_token; (void)y; (void)out_stride;
}
void sluice_f32_decode_packed_row_avx2(const int8_t *quants, const float *scales, const float *mins, long columns,
                                       long scales_per_row, int scale_shift, long row, float *out) {
    (void)quants; (void)scales; (void)mins; (void)columns; (void)scales_per_row; (void)scale_shift; (void)row; (void)out;
}
void sluice_f32_row_tiles_avx2(const float *w, long rows, const float *x, long tokens, long columns, float *y,
                               long out_stride) {
    (void)w; (void)rows; (void)x; (void)tokens; (void)columns; (void)y; (void)out_stride;
}

#endif
