// Attention's inner loops (attention_kernels.h) compiled for AVX2 (+FMA, F16C), for the `avx2`
// variant.
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
#include "attention_kernels.h"
#pragma clang attribute pop
#else

void sluice_attention_scores_avx2(const float *q, struct sluice_kv_rows keys, long d, float scale, long first, long last,
                                  float *scores) {
    (void)q; (void)keys; (void)d; (void)scale; (void)first; (void)last; (void)scores;
}
void sluice_group_scores4_avx2(const float *q, struct sluice_kv_rows keys, long d, float scale, long first, long last,
                               float *scores, long stride) {
    (void)q; (void)keys; (void)d; (void)scale; (void)first; (void)last; (void)scores; (void)stride;
}
void sluice_weighted_values_avx2(const float *weights, struct sluice_kv_rows values, long d, long first, long last,
                                 float *out) {
    (void)weights; (void)values; (void)d; (void)first; (void)last; (void)out;
}
void sluice_group_weighted_values4_avx2(const float *weights, long stride, struct sluice_kv_rows values, long d, long first,
                                        long last, float *out) {
    (void)weights; (void)stride; (void)values; (void)d; (void)first; (void)last; (void)out;
}

#endif
