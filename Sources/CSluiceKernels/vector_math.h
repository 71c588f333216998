// Vector math shared by the AVX-512 elementwise and attention kernels: the operations of VectorMath.swift,
// lane for lane, so that the C and Swift versions agree to the bit.
#ifndef SLUICE_VECTOR_MATH_H
#define SLUICE_VECTOR_MATH_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#pragma clang fp contract(off)

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

/// The lanes of a group of 16 that hold elements, when `left` elements remain.
static inline __mmask16 lanes_holding(long left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/// `laneSum` of VectorMath.swift: halves added down to two lanes, then those two.
static inline float lane_sum(__m512 v) {
    const __m256 eight = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    const __m128 four = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
    const __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
    return _mm_cvtss_f32(_mm_add_ss(two, _mm_movehdup_ps(two)));
}

#endif
