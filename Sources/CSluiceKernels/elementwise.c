// Elementwise kernels in AVX-512: Gemma's GELU (tanh) gate and attention's softmax. Swift
// computes both portably, but the compiler splits their 16-lane vectors into 256- and 128-bit
// pieces, lane-by-lane comparisons and scalar tails (GELU: 3.2 ns per element, 4.5% of a
// 32-sequence decode step). These are the same sequences of float operations, lane for lane,
// so the two agree to the bit (VectorMathTests); the engine uses these where AVX-512 runs.
#include "sluice_kernels.h"

#include <math.h>
#include <stdint.h>

#include "cpu_targets.h"

#if defined(SLUICE_X86_64)
#define SLUICE_HAVE_AVX512 1
#include <immintrin.h>
#pragma clang attribute push(SLUICE_AVX512_TARGET, apply_to = function)
#include "vector_math.h"
#pragma clang attribute pop
#endif

// Fused multiply-adds only where written: contracting a product and a sum would change bits.
#pragma clang fp contract(off)

int sluice_avx512_available(void) {
#ifdef SLUICE_HAVE_AVX512
    return sluice_cpu_variant() >= SLUICE_CPU_AVX512;
#else
    return 0;
#endif
}

#ifdef SLUICE_HAVE_AVX512
#pragma clang attribute push(SLUICE_AVX512_TARGET, apply_to = function)

/// `tanh16` of VectorMath.swift.
static inline __m512 tanh16(__m512 x) {
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    const __m512i xb = _mm512_castps_si512(x);
    const __m512 magnitude = _mm512_castsi512_ps(_mm512_andnot_si512(sign, xb));
    const __m512 a = _mm512_mask_mov_ps(_mm512_set1_ps(9.0f), below(magnitude, bits(9.0f)), magnitude);
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 e = exp16(_mm512_add_ps(a, a));
    const __m512 large = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, one)));
    const __m512 a2 = _mm512_mul_ps(a, a);
    __m512 series = _mm512_set1_ps(-17.0f / 315);
    series = _mm512_fmadd_ps(series, a2, _mm512_set1_ps(2.0f / 15));
    series = _mm512_fmadd_ps(series, a2, _mm512_set1_ps(-1.0f / 3));
    series = _mm512_fmadd_ps(_mm512_mul_ps(series, a2), a, a);
    const __m512 t = _mm512_mask_mov_ps(large, below(a, bits(0.0625f)), series);
    const __m512 signed_t = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), _mm512_and_si512(xb, sign)));
    return _mm512_mask_mov_ps(x, below(magnitude, bits(INFINITY) + 1), signed_t);
}

void sluice_gelu_tanh_gate(float *gate, const float *up, long count) {
    const __m512 c = _mm512_set1_ps((float)sqrt(2.0 / M_PI));
    for (long i = 0; i < count; i += 16) {
        const __mmask16 lanes = lanes_holding(count - i);
        const __m512 g = _mm512_maskz_loadu_ps(lanes, gate + i), u = _mm512_maskz_loadu_ps(lanes, up + i);
        const __m512 cube = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.044715f), g), g), g);
        const __m512 inner = _mm512_mul_ps(c, _mm512_add_ps(g, cube));
        const __m512 gated = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), g),
                                                         _mm512_add_ps(_mm512_set1_ps(1.0f), tanh16(inner))), u);
        _mm512_mask_storeu_ps(gate + i, lanes, gated);
    }
}

void sluice_softmax(float *scores, long count) {
    __m512 top = _mm512_set1_ps(-INFINITY);
    for (long i = 0; i < count; i += 16) {
        const __mmask16 lanes = lanes_holding(count - i);
        top = _mm512_max_ps(top, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), lanes, scores + i));
    }
    const __m512 maximum = _mm512_set1_ps(_mm512_reduce_max_ps(top));
    __m512 totals = _mm512_setzero_ps();
    for (long i = 0; i < count; i += 16) {
        const __mmask16 lanes = lanes_holding(count - i);
        const __m512 e = _mm512_maskz_mov_ps(lanes, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, scores + i), maximum)));
        _mm512_mask_storeu_ps(scores + i, lanes, e);
        totals = _mm512_add_ps(totals, e);
    }
    const __m512 inverse = _mm512_set1_ps(1.0f / lane_sum(totals));
    for (long i = 0; i < count; i += 16) {
        const __mmask16 lanes = lanes_holding(count - i);
        _mm512_mask_storeu_ps(scores + i, lanes, _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, scores + i), inverse));
    }
}

#pragma clang attribute pop

#else

void sluice_gelu_tanh_gate(float *gate, const float *up, long count) {
    (void)gate; (void)up; (void)count;
}

void sluice_softmax(float *scores, long count) {
    (void)scores; (void)count;
}

#endif
