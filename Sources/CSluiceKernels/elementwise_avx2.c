// Elementwise kernels in AVX2 (+FMA, F16C): the gates, softmax, BERT's erf GELU, the fused
// multiply-add loops of the norms and BERT's attention, and the KV cache's rounding to half floats. Each is the Swift portable version's
// sequence of float operations, lane for lane (vector16.h), so the two agree to the bit
// (VectorMathTests); the engine runs these where the variant is `avx2` or above, because the
// build's Swift code targets x86-64-v2, where its fused multiply-adds are calls into libm.
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
#include "vector16.h"

void sluice_gelu_tanh_gate_avx2(float *gate, const float *up, long count) {
    const v16f c = splat16((float)sqrt(2.0 / M_PI));
    for (long i = 0; i < count; i += 16) {
        const long n = count - i < 16 ? count - i : 16;
        const v16f g = load_partial16(gate + i, n), u = load_partial16(up + i, n);
        const v16f inner = c * (g + 0.044715f * g * g * g);
        store_partial16(gate + i, 0.5f * g * (1.0f + tanh16(inner)) * u, n);
    }
}

void sluice_silu_gate_avx2(float *gate, const float *up, long count) {
    for (long i = 0; i < count; i += 16) {
        const long n = count - i < 16 ? count - i : 16;
        const v16f g = load_partial16(gate + i, n), u = load_partial16(up + i, n);
        store_partial16(gate + i, g / (1.0f + exp16(-g)) * u, n);
    }
}

void sluice_softmax_avx2(float *scores, long count) {
    float maximum = -INFINITY;
    // Swift's max(maximum, s): s where s >= maximum.
    for (long i = 0; i < count; i++) maximum = scores[i] >= maximum ? scores[i] : maximum;
    const v16i lanes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    v16f totals = splat16(0);
    for (long i = 0; i < count; i += 16) {
        const long n = count - i < 16 ? count - i : 16;
        const v16f e = select16(lanes < (v16i)(int32_t)n, exp16(load_partial16(scores + i, n) - maximum), splat16(0));
        store_partial16(scores + i, e, n);
        totals += e;
    }
    const float inverse = 1.0f / lane_sum16(totals);
    for (long i = 0; i < count; i++) scores[i] *= inverse;
}

void sluice_gelu_erf_avx2(float *x, long count) {
    const v16i sign = (v16i)0x80000000u;
    for (long i = 0; i < count; i += 16) {
        const long n = count - i < 16 ? count - i : 16;
        const v16f v = load_partial16(x + i, n);
        const v16f z = v * (float)(1 / sqrt(2.0));
        const v16i b = bits16(z);
        const v16f a = floats16(b & ~sign);
        const v16f t = 1.0f / (1.0f + 0.3275911f * a);
        v16f p = splat16(1.061405429f);
        p = fma16(p, t, splat16(-1.453152027f));
        p = fma16(p, t, splat16(1.421413741f));
        p = fma16(p, t, splat16(-0.284496736f));
        p = fma16(p, t, splat16(0.254829592f));
        const v16f magnitude = 1.0f - p * t * exp16(-(a * a));
        const v16f erf = floats16(bits16(magnitude) | (b & sign));
        store_partial16(x + i, 0.5f * v * (1.0f + erf), n);
    }
}

void sluice_exp_shifted_avx2(float *x, long count, float shift) {
    for (long i = 0; i < count; i += 16) {
        const long n = count - i < 16 ? count - i : 16;
        store_partial16(x + i, exp16(load_partial16(x + i, n) - shift), n);
    }
}

void sluice_multiply_add_avx2(float *accumulator, float weight, const float *values, long count) {
    long k = 0;
    for (; k + 16 <= count; k += 16) store16f(accumulator + k, fma16(splat16(weight), load16f(values + k), load16f(accumulator + k)));
    for (; k < count; k++) accumulator[k] = __builtin_fmaf(weight, values[k], accumulator[k]);
}

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
