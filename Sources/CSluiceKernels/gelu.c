// The GELU (tanh) gate of Gemma's feed-forward block. Swift's `geluTanhGate` computes the
// same thing portably, but the compiler splits its 16-lane vectors into 256- and 128-bit
// pieces and scalar tails (measured 3.2 ns per element, 4.5% of a 32-sequence decode step).
// This is the same sequence of float operations, lane for lane, in AVX-512 registers, so
// the two agree to the bit (GeluKernelTests); the engine uses this one where AVX-512 runs.
#include "sluice_kernels.h"

#include <math.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__AVX512F__)
#define SLUICE_HAVE_AVX512 1
#include <immintrin.h>
#endif

// Fused multiply-adds only where written: contracting a product and a sum would change bits.
#pragma clang fp contract(off)

int sluice_avx512_available(void) {
#ifdef SLUICE_HAVE_AVX512
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

#ifdef SLUICE_HAVE_AVX512

/// Lanes of `a` (sign bit clear) whose bits are below `bound`'s: for such floats the bit
/// patterns order like the values, and NaN is never below a number (as `below` in Swift).
static inline __mmask16 below(__m512 a, uint32_t bound) {
    return _mm512_cmplt_epu32_mask(_mm512_castps_si512(a), _mm512_set1_epi32((int)bound));
}

static inline uint32_t bits(float x) {
    union { float f; uint32_t u; } v = {x};
    return v.u;
}

/// `exp16` of VectorMath.swift.
static inline __m512 exp16(__m512 x) {
    // clamp16(x, -87, 88): at or beyond a bound on the bound's side; NaN stays NaN.
    const __m512i xb = _mm512_castps_si512(x);
    const __m512 magnitude = _mm512_castsi512_ps(_mm512_and_si512(xb, _mm512_set1_epi32(0x7FFFFFFF)));
    const __mmask16 number = below(magnitude, bits(INFINITY) + 1);
    const __mmask16 negative = _mm512_movepi32_mask(xb);
    const __mmask16 too_low = negative & ~below(magnitude, bits(87.0f)) & number;
    const __mmask16 too_high = ~negative & ~below(magnitude, bits(88.0f)) & number;
    __m512 clamped = _mm512_mask_mov_ps(x, too_high, _mm512_set1_ps(88.0f));
    clamped = _mm512_mask_mov_ps(clamped, too_low, _mm512_set1_ps(-87.0f));

    const __m512 rounding_shift = _mm512_set1_ps(12582912.0f);
    const __m512 shifted = _mm512_fmadd_ps(clamped, _mm512_set1_ps(1.44269504f), rounding_shift);
    const __m512 n = _mm512_sub_ps(shifted, rounding_shift);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693145751953125f), clamped);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-1.428606765330187e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512i integer = _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_castps_si512(rounding_shift));
    const __m512 power = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(integer, _mm512_set1_epi32(127)), 23));
    return _mm512_mul_ps(p, power);
}

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
        const __mmask16 lanes = count - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (count - i)) - 1);
        const __m512 g = _mm512_maskz_loadu_ps(lanes, gate + i), u = _mm512_maskz_loadu_ps(lanes, up + i);
        const __m512 cube = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.044715f), g), g), g);
        const __m512 inner = _mm512_mul_ps(c, _mm512_add_ps(g, cube));
        const __m512 gated = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), g),
                                                         _mm512_add_ps(_mm512_set1_ps(1.0f), tanh16(inner))), u);
        _mm512_mask_storeu_ps(gate + i, lanes, gated);
    }
}

#else

void sluice_gelu_tanh_gate(float *gate, const float *up, long count) {
    (void)gate; (void)up; (void)count;
}

#endif
