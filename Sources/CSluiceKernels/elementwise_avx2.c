// Elementwise kernels in AVX2 (+FMA, F16C): those of elementwise_kernels.h, the norms' sums of
// squares and the KV cache's rounding to half floats, each the Swift portable version's sequence
// of float operations, lane for lane (VectorMathTests), for the `avx2` variant and above.
#include "sluice_kernels.h"

#include <math.h>
#include <stdint.h>

#include "cpu_targets.h"

// Fused multiply-adds only where written: contracting a product and a sum would change bits.
#pragma clang fp contract(off)

int sluice_avx2_available(void) {
#if defined(SLUICE_X86_64)
    return sluice_cpu_variant() >= SLUICE_CPU_AVX2;
#else
    return 0;
#endif
}

#if defined(SLUICE_X86_64)
#pragma clang attribute push(SLUICE_AVX2_TARGET, apply_to = function)
#define SLUICE_HAS_FMA_INSTRUCTION 1
#include "vector16.h"
#define VARIANT(name) name##_avx2
#include "elementwise_kernels.h"

typedef double v8d __attribute__((ext_vector_type(8)));

void sluice_square_lanes_avx2(const float *x, long count, double lanes[8]) {
    v8d acc = (v8d)0.0;
    for (long k = 0; k + 8 <= count; k += 8) {
        v8f v;
        memcpy(&v, x + k, sizeof v);
        const v8d d = __builtin_convertvector(v, v8d);
        acc = __builtin_elementwise_fma(d, d, acc);
    }
    memcpy(lanes, &acc, sizeof acc);
}

void sluice_store_halves_saturated_avx2(void *destination, const float *source, long count) {
    _Float16 *out = destination;
    long k = 0;
    for (; k + 16 <= count; k += 16) sluice_store_half_saturated_x16(out + k, load16f(source + k));
    for (; k < count; k++) {
        // Swift's Float16(min(largest, max(-largest, x))): a NaN becomes -largest, as in the vectors.
        const float floor = source[k] >= -65504.0f ? source[k] : -65504.0f;
        out[k] = (_Float16)(floor < 65504.0f ? floor : 65504.0f);
    }
}

#pragma clang attribute pop
#else

void sluice_gelu_tanh_gate_avx2(float *gate, const float *up, long count) { (void)gate; (void)up; (void)count; }
void sluice_silu_gate_avx2(float *gate, const float *up, long count) { (void)gate; (void)up; (void)count; }
void sluice_softmax_avx2(float *scores, long count) { (void)scores; (void)count; }
void sluice_gelu_erf_avx2(float *x, long count) { (void)x; (void)count; }
void sluice_exp_shifted_avx2(float *x, long count, float shift) { (void)x; (void)count; (void)shift; }
void sluice_multiply_add_avx2(float *accumulator, float weight, const float *values, long count) {
    (void)accumulator; (void)weight; (void)values; (void)count;
}
void sluice_square_lanes_avx2(const float *x, long count, double lanes[8]) { (void)x; (void)count; (void)lanes; }
void sluice_store_halves_saturated_avx2(void *destination, const float *source, long count) {
    (void)destination; (void)source; (void)count;
}

#endif
