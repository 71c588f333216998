// Sixteen-lane float vectors in clang's vector extension, and the operations of VectorMath.swift
// on them, lane for lane: what Swift's SIMD16<Float> code lowers to, written in C so that every
// variant's kernels are one source compiled per instruction set. A file that includes this inside
// a `#pragma clang attribute push(SLUICE_AVX2_TARGET, ...)` region defines
// SLUICE_HAS_FMA_INSTRUCTION to 1 first (a target attribute does not define __FMA__). Below
// x86-64-v3 there is no fused multiply-add instruction, and Swift lowers each one of its SIMD code
// to a call into libm; `fma16` here is then a vector software one with the same roundings.
#ifndef SLUICE_VECTOR16_H
#define SLUICE_VECTOR16_H

#include <stdint.h>
#include <string.h>

#pragma clang fp contract(off)
// Every function here is inlined into its caller, so no 16-lane vector crosses a call: the
// warning that passing one in AVX2 registers differs from the AVX-512 convention does not apply.
#pragma clang diagnostic ignored "-Wpsabi"

typedef float v16f __attribute__((ext_vector_type(16)));
typedef int32_t v16i __attribute__((ext_vector_type(16)));
typedef uint32_t v16u __attribute__((ext_vector_type(16)));
typedef _Float16 v16h __attribute__((ext_vector_type(16)));
typedef float v8f __attribute__((ext_vector_type(8)));
typedef float v4f __attribute__((ext_vector_type(4)));
typedef float v2f __attribute__((ext_vector_type(2)));

#define V16_INLINE static inline __attribute__((always_inline))

#if !defined(SLUICE_HAS_FMA_INSTRUCTION)
#if defined(__x86_64__) && !defined(__FMA__)
#define SLUICE_HAS_FMA_INSTRUCTION 0
#else
#define SLUICE_HAS_FMA_INSTRUCTION 1
#endif
#endif

#if SLUICE_HAS_FMA_INSTRUCTION
/// `a · b + c` per lane, rounded once (Swift's `c.addingProduct(a, b)`).
V16_INLINE v16f fma16(v16f a, v16f b, v16f c) { return __builtin_elementwise_fma(a, b, c); }
#else
typedef double v16d __attribute__((ext_vector_type(16)));
typedef int64_t v16l __attribute__((ext_vector_type(16)));

/// `a · b + c` per lane, rounded once, without a fused multiply-add instruction. In double the
/// product of two floats is exact (48 significant bits) and the sum is rounded once; rounding that
/// to float rounds the exact result correctly unless the double sum fell on a midpoint between two
/// floats (then the exact result may lie on either side of it), or below float's normal range
/// (where the midpoints sit higher). Such lanes are rare; for them the sum's error is recovered
/// exactly (Knuth's two-sum) and, where it is not zero and the sum's last bit is even, the sum
/// steps one unit toward it, to its odd neighbour: the exact result rounded to odd, which float
/// rounding then takes to the exact result rounded once, because double carries more than two bits
/// beyond float's 24 (Boldo and Melquiond, "When double rounding is odd"). A NaN or infinite sum
/// has a NaN error, which compares neither below nor above zero.
V16_INLINE v16f fma16(v16f a, v16f b, v16f c) {
    const v16d product = __builtin_convertvector(a, v16d) * __builtin_convertvector(b, v16d);
    const v16d addend = __builtin_convertvector(c, v16d);
    const v16d sum = product + addend;
    const v16l bits = (v16l)sum;
    // The 29 bits float drops are exactly one half: a midpoint.
    const v16l midpoint = (bits & 0x1FFFFFFF) == 0x10000000;
    // |sum| < 2^-126 (zero too: rare, and right either way).
    const v16l below_normal = (bits & 0x7FF0000000000000LL) < 0x3810000000000000LL;
    if (__builtin_expect(__builtin_reduce_or(midpoint | below_normal) == 0, 1)) return __builtin_convertvector(sum, v16f);
    const v16d product_part = sum - addend, addend_part = sum - product_part;
    const v16d error = (product - product_part) + (addend - addend_part);
    const v16l inexact = (error < 0) | (error > 0);
    const v16l even = (bits & 1) == 0;
    const v16l outward = (bits ^ (v16l)error) >= 0;  // the error has the sum's sign: away from zero
    const v16l step = (outward & 2) - 1;
    return __builtin_convertvector((v16d)(bits + (inexact & even & step)), v16f);
}
#endif

V16_INLINE v16f splat16(float x) { return (v16f)x; }

V16_INLINE v16f load16f(const float *p) {
    v16f v;
    memcpy(&v, p, sizeof v);
    return v;
}

V16_INLINE void store16f(float *p, v16f v) { memcpy(p, &v, sizeof v); }

/// Sixteen half floats at `p`, widened exactly.
V16_INLINE v16f load16h(const void *p) {
    v16h h;
    memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, v16f);
}

/// Sixteen elements at `p`, floats or (`half`) half floats, as floats.
V16_INLINE v16f load16(const void *p, const int half) { return half ? load16h(p) : load16f((const float *)p); }

/// Element `k` of the floats or half floats at `p`.
V16_INLINE float element_at(const void *p, long k, const int half) {
    return half ? (float)((const _Float16 *)p)[k] : ((const float *)p)[k];
}

/// The first `count` (at most 16) floats at `p`, zeros in the other lanes (`loadPartial16`).
V16_INLINE v16f load_partial16(const float *p, long count) {
    if (count >= 16) return load16f(p);
    float lanes[16] = {0};
    for (long j = 0; j < count; j++) lanes[j] = p[j];
    return load16f(lanes);
}

/// Stores the first `count` (at most 16) lanes of `v` at `p` (`storePartial16`).
V16_INLINE void store_partial16(float *p, v16f v, long count) {
    if (count >= 16) {
        store16f(p, v);
        return;
    }
    float lanes[16];
    store16f(lanes, v);
    for (long j = 0; j < count; j++) p[j] = lanes[j];
}

/// `laneSum`: halves added down to two lanes, then those two.
V16_INLINE float lane_sum16(v16f v) {
    const v8f eight = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7)
        + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    const v4f four = __builtin_shufflevector(eight, eight, 0, 1, 2, 3) + __builtin_shufflevector(eight, eight, 4, 5, 6, 7);
    const v2f two = __builtin_shufflevector(four, four, 0, 1) + __builtin_shufflevector(four, four, 2, 3);
    return two[0] + two[1];
}

V16_INLINE v16i bits16(v16f x) { return (v16i)x; }
V16_INLINE v16f floats16(v16i x) { return (v16f)x; }

V16_INLINE uint32_t float_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/// All ones where `a` (sign bit clear) is below the float whose bits are `bound` (`below`).
V16_INLINE v16i below16(v16f a, uint32_t bound) {
    return (v16i)((v16u)bits16(a) - (v16u)bound) >> 31;
}

/// `x` where `mask` is all ones, `y` where it is zero (`select16`).
V16_INLINE v16f select16(v16i mask, v16f x, v16f y) { return floats16((bits16(x) & mask) | (bits16(y) & ~mask)); }

/// `clamp16`: `x` limited to `lower ... upper` (lower < 0 < upper); NaN stays NaN.
V16_INLINE v16f clamp16(v16f x, float lower, float upper) {
    const v16i b = bits16(x);
    const v16i negative = b >> 31;
    const v16f magnitude = floats16(b & 0x7FFFFFFF);
    const v16i number = below16(magnitude, 0x7F800000u + 1);
    const v16i too_low = negative & ~below16(magnitude, float_bits(-lower)) & number;
    const v16i too_high = ~negative & ~below16(magnitude, float_bits(upper)) & number;
    return select16(too_low, splat16(lower), select16(too_high, splat16(upper), x));
}

/// `exp16`: e^x per lane (see VectorMath.swift).
V16_INLINE v16f exp16(v16f x) {
    const v16f clamped = clamp16(x, -87, 88);
    const v16f rounding_shift = splat16(12582912.0f);
    const v16f shifted = fma16(clamped, splat16(1.44269504f), rounding_shift);
    const v16f n = shifted - rounding_shift;
    const v16f r = fma16(n, splat16(-1.428606765330187e-6f), fma16(n, splat16(-0.693145751953125f), clamped));
    v16f p = splat16(1.0f / 5040);
    p = fma16(p, r, splat16(1.0f / 720));
    p = fma16(p, r, splat16(1.0f / 120));
    p = fma16(p, r, splat16(1.0f / 24));
    p = fma16(p, r, splat16(1.0f / 6));
    p = fma16(p, r, splat16(0.5f));
    p = fma16(p, r, splat16(1.0f));
    p = fma16(p, r, splat16(1.0f));
    const v16u integer = (v16u)bits16(shifted) - (v16u)bits16(rounding_shift);
    return p * floats16((v16i)((integer + 127u) << 23));
}

/// `tanh16` (see VectorMath.swift).
V16_INLINE v16f tanh16(v16f x) {
    const v16i sign = (v16i)0x80000000u;
    const v16i b = bits16(x);
    const v16f magnitude = floats16(b & ~sign);
    const v16f a = select16(below16(magnitude, float_bits(9.0f)), magnitude, splat16(9.0f));
    const v16f large = 1.0f - 2.0f / (exp16(a + a) + 1.0f);
    const v16f a2 = a * a;
    v16f series = splat16(-17.0f / 315);
    series = fma16(series, a2, splat16(2.0f / 15));
    series = fma16(series, a2, splat16(-1.0f / 3));
    series = fma16(series * a2, a, a);
    const v16f t = select16(below16(a, float_bits(0.0625f)), series, large);
    const v16f signed_t = floats16(bits16(t) | (b & sign));
    return select16(below16(magnitude, 0x7F800000u + 1), signed_t, x);
}

#endif
