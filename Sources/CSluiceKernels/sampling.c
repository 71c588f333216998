// The sampler's passes over a row of logits: a histogram of the candidates by weight with
// their total mass (bounded, not exact), and the collection of the few most likely ones,
// whose weights the sampler then computes exactly (see Sampling/Sampler.swift).
#include "sluice_sampling.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu_targets.h"

// Each kernel is compiled three times, for the build's baseline (x86-64-v2, where `fma` is a call
// into libm), for AVX2 + FMA and for AVX-512, and the entry points pick by the variant in use; all
// compute the same bits. Fused multiply-adds only where written, so that none contracts differently.
// (AVX-512 runs the scans' 8 double and 16 float lanes in one register each: the sampler of a 262,144-
// token row measured 2-3% more tokens/s for one sampled sequence of the default model than with AVX2.)
#pragma clang fp contract(off)

#define BODY static inline __attribute__((always_inline))
// The BODY functions are inlined into each copy, so no 8-lane vector crosses a call: the warning
// that passing one in AVX2 registers differs from the AVX-512 convention does not apply.
#pragma clang diagnostic ignored "-Wpsabi"

/// e^r for |r| <= ln 2 / 2, by its Taylor series to r^13 / 13! (truncation under 2e-17 relative).
BODY double taylor_exp(double r) {
    double p = 1.0 / 6227020800.0;
    p = __builtin_elementwise_fma(p, r, 1.0 / 479001600.0);
    p = __builtin_elementwise_fma(p, r, 1.0 / 39916800.0);
    p = __builtin_elementwise_fma(p, r, 1.0 / 3628800.0);
    p = __builtin_elementwise_fma(p, r, 1.0 / 362880.0);
    p = __builtin_elementwise_fma(p, r, 1.0 / 40320.0);
    p = __builtin_elementwise_fma(p, r, 1.0 / 5040.0);
    p = __builtin_elementwise_fma(p, r, 1.0 / 720.0);
    p = __builtin_elementwise_fma(p, r, 1.0 / 120.0);
    p = __builtin_elementwise_fma(p, r, 1.0 / 24.0);
    p = __builtin_elementwise_fma(p, r, 1.0 / 6.0);
    p = __builtin_elementwise_fma(p, r, 0.5);
    p = __builtin_elementwise_fma(p, r, 1.0);
    return __builtin_elementwise_fma(p, r, 1.0);
}

// exp(a) for a in [-745, 0]: a = k ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor series, then
// scaled by 2^k. Relative error about 1e-16; the sampler allows 2e-13. Branch-free so that the
// loops below vectorize.
BODY double polynomial_exp(double a) {
    const double shifter = 0x1.8p52;
    const double k = (a * 0x1.71547652b82fep0 + shifter) - shifter;
    const double r = __builtin_elementwise_fma(-k, 0x1.62e42fefa3800p-1, a) - k * 0x1.ef35793c76730p-45;
    const double p = taylor_exp(r);
    // k >= -1075: 2^k as (k + 1023) << 52 is normal for k >= -1022; below that the product
    // underflows towards 0, which the bound allows for weights far under exp(-40).
    int64_t ki = (int64_t)k;
    ki = ki < -1022 ? -1022 : ki;
    uint64_t bits = (uint64_t)(ki + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}


// The sampler's exp and log (exact weights, log-probabilities). libm's differ in the last bit
// between CPUs with and without FMA (glibc picks its code by cpuid: about one exp in 1,400 and one
// log in 50,000 differ between this machine and the same binary under qemu's Nehalem), which would
// make a request's log-probabilities depend on the machine. These are the same operations
// everywhere: fused multiply-adds only where written, which are exact on every path.

/// 2^k for -1074 <= k <= 1023, exactly.
BODY double power_of_two(int64_t k) {
    const int64_t low = k < -1022 ? 600 : 0;  // below the normal range: 2^(k + 600) · 2^-600, both exact
    const uint64_t bits = (uint64_t)(k + low + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return low ? scale * 0x1p-600 : scale;
}

/// e^a for every double: the polynomial above (relative error about 1e-16), scaled in two steps
/// where 2^k alone would overflow or leave the normal range.
BODY double exact_exp(double a) {
    if (a != a) return a;
    if (a > 709.782712893384) return INFINITY;
    if (a < -745.2) return 0.0;
    const double shifter = 0x1.8p52;
    const double k = (a * 0x1.71547652b82fep0 + shifter) - shifter;
    const double r = __builtin_elementwise_fma(-k, 0x1.62e42fefa3800p-1, a) - k * 0x1.ef35793c76730p-45;
    const double p = taylor_exp(r);
    const int64_t ki = (int64_t)k;
    if (ki > 1023) return p * 2.0 * power_of_two(ki - 1);
    if (ki < -1022) return p * 0x1p-52 * power_of_two(ki + 52);
    return p * power_of_two(ki);
}

/// ln x for every double: x = 2^k · m with m in [√2/2, √2), f = m − 1, s = f / (2 + f), and
/// ln(1 + f) = f − f²/2 + s·(f²/2 + R) with R = 2s²/3 + 2s⁴/5 + ... (the atanh series to s²², whose
/// truncation is below 1e-19 for |s| <= 0.172); k·ln 2 in two parts. Within 1 ulp.
BODY double exact_log(double x) {
    if (x != x || x == INFINITY) return x;
    if (x < 0) return NAN;
    if (x == 0) return -INFINITY;
    int64_t k = 0;
    if (x < 0x1p-1022) {
        x *= 0x1p54;
        k = -54;
    }
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    k += (int64_t)(bits >> 52) - 1023;
    bits = (bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull;  // m in [1, 2)
    double m;
    memcpy(&m, &bits, sizeof m);
    if (m >= 0x1.6a09e667f3bcdp0) {  // √2
        m *= 0.5;
        k += 1;
    }
    const double f = m - 1.0;
    const double s = f / (2.0 + f);
    const double z = s * s;
    double series = 2.0 / 23;
    series = __builtin_elementwise_fma(series, z, 2.0 / 21);
    series = __builtin_elementwise_fma(series, z, 2.0 / 19);
    series = __builtin_elementwise_fma(series, z, 2.0 / 17);
    series = __builtin_elementwise_fma(series, z, 2.0 / 15);
    series = __builtin_elementwise_fma(series, z, 2.0 / 13);
    series = __builtin_elementwise_fma(series, z, 2.0 / 11);
    series = __builtin_elementwise_fma(series, z, 2.0 / 9);
    series = __builtin_elementwise_fma(series, z, 2.0 / 7);
    series = __builtin_elementwise_fma(series, z, 2.0 / 5);
    series = __builtin_elementwise_fma(series, z, 2.0 / 3);
    const double R = z * series;
    const double half_square = 0.5 * f * f;
    const double kd = (double)k;
    return kd * 6.93147180369123816490e-01 - ((half_square - (s * (half_square + R) + kd * 1.90821492927058770002e-10)) - f);
}

typedef double v8d __attribute__((ext_vector_type(8)));
typedef int64_t v8l __attribute__((ext_vector_type(8)));
typedef float v8f __attribute__((ext_vector_type(8)));

/// `exact_exp` of eight a in [-700, 0], lane for lane the same operations (there 2^k is normal).
BODY v8d exact_exp8(v8d a) {
    const v8d shifter = 0x1.8p52;
    const v8d k = (a * 0x1.71547652b82fep0 + shifter) - shifter;
    const v8d r = __builtin_elementwise_fma(-k, (v8d)0x1.62e42fefa3800p-1, a) - k * 0x1.ef35793c76730p-45;
    v8d p = 1.0 / 6227020800.0;
    const double coefficients[13] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0,
                                     1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0};
    for (int c = 0; c < 13; c++) p = __builtin_elementwise_fma(p, r, (v8d)coefficients[c]);
    const v8l bits = (__builtin_convertvector(k, v8l) + 1023) << 52;
    return p * (v8d)bits;
}

/// Terms of the log-softmax normalizer below e^-50 of the largest (which is 1) are left out: even
/// 2^31 of them add less than 2e-13 relatively, and most of a flat tail costs no exp.
#define SLUICE_NORMALIZER_FLOOR (-50.0)

/// Σ e^(logits[i] − maximum) over the terms at or above the floor, each difference taken in float:
/// eight running sums (element i in sum i mod 8, in index order), then added as a balanced tree.
/// The order is fixed, so the bits do not depend on the CPU or on which copy of this runs; eight
/// exps are computed at a time (the same bits as one at a time).
BODY double exp_sum(const float *logits, int count, float maximum) {
    double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    v8d sums = 0.0;
    int i = 0;
    for (; i + 8 <= count; i += 8) {
        v8f values;
        memcpy(&values, logits + i, sizeof values);
        const v8d x = __builtin_convertvector(values - maximum, v8d);
        const v8l kept = x >= SLUICE_NORMALIZER_FLOOR;
        // NaN lanes are not below the floor: they take the one-at-a-time path, which sums them.
        if (!__builtin_reduce_or(kept | (x != x))) continue;
        if (__builtin_reduce_and(x >= -700.0)) {
            sums += (v8d)((v8l)exact_exp8(x) & kept);
        } else {
            for (int j = 0; j < 8; j++) {
                if (!(x[j] < SLUICE_NORMALIZER_FLOOR)) sums[j] += exact_exp(x[j]);
            }
        }
    }
    memcpy(lanes, &sums, sizeof lanes);
    for (; i < count; i++) {
        const double x = (double)(logits[i] - maximum);
        if (!(x < SLUICE_NORMALIZER_FLOOR)) lanes[i % 8] += exact_exp(x);
    }
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

BODY float maximum_of(const float *values, int count) {
    if (isnan(values[0])) return values[0];
    // Order does not matter among non-NaN values: equal values are equal (a +0 and a -0 give the
    // same cutoff and weights), and x > m never takes a NaN.
    float lanes[16];
    for (int j = 0; j < 16; j++) lanes[j] = values[0];
    int i = 0;
    for (; i + 16 <= count; i += 16) {
        for (int j = 0; j < 16; j++) lanes[j] = values[i + j] > lanes[j] ? values[i + j] : lanes[j];
    }
    float best = lanes[0];
    for (int j = 1; j < 16; j++) best = lanes[j] > best ? lanes[j] : best;
    for (; i < count; i++) best = values[i] > best ? values[i] : best;
    return best;
}

BODY int first_equal(const float *values, int count, float value) {
    int i = 0;
    for (; i + 16 <= count; i += 16) {
        int any = 0;
        for (int j = 0; j < 16; j++) any |= values[i + j] == value;
        if (any) break;
    }
    for (; i < count; i++) {
        if (values[i] == value) return i;
    }
    return count;
}

BODY int scan(const float *logits, int count, float maximum, double cutoff, double inverse_temperature,
              double bucket_scale, int buckets, int32_t *histogram, double *mass) {
    const double top = (double)maximum;
    const double last = (double)(buckets - 1);
    double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int found = 0;
    int i = 0;
    for (; i + 8 <= count; i += 8) {
        int bucket[8];
        int keep[8];
        for (int j = 0; j < 8; j++) {
            const double d = (double)logits[i + j];
            const int candidate = d >= cutoff;
            const double a = candidate ? (d - top) * inverse_temperature : 0.0;
            const double scaled = -a * bucket_scale;
            bucket[j] = (int)(scaled < last ? scaled : last);
            keep[j] = candidate;
            lanes[j] += candidate ? polynomial_exp(a) : 0.0;
        }
        for (int j = 0; j < 8; j++) {
            // Non-candidates land in the spare bucket past the last.
            histogram[keep[j] ? bucket[j] : buckets] += 1;
            found += keep[j];
        }
    }
    for (; i < count; i++) {
        const double d = (double)logits[i];
        if (!(d >= cutoff)) continue;
        const double a = (d - top) * inverse_temperature;
        const double scaled = -a * bucket_scale;
        histogram[(int)(scaled < last ? scaled : last)] += 1;
        lanes[0] += polynomial_exp(a);
        found++;
    }
    *mass = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    return found;
}

BODY int collect(const float *logits, int count, float maximum, double cutoff, double inverse_temperature,
                 double bucket_scale, int buckets, int last_bucket, int32_t *tokens, double *scaled_out) {
    const double top = (double)maximum;
    const double last = (double)(buckets - 1);
    // Buckets at most last_bucket hold exactly the a with (int)min(-a * scale, last) <= last_bucket.
    // Most of a row is left out, so blocks of 16 are tested at once (vectorized) before any is written.
    int found = 0;
    int i = 0;
    for (; i + 16 <= count; i += 16) {
        double a[16];
        int keep[16];
        int any = 0;
        for (int j = 0; j < 16; j++) {
            const double d = (double)logits[i + j];
            const int candidate = d >= cutoff;
            a[j] = candidate ? (d - top) * inverse_temperature : 0.0;
            const double scaled = -a[j] * bucket_scale;
            keep[j] = candidate & ((int)(scaled < last ? scaled : last) <= last_bucket);
            any |= keep[j];
        }
        if (!any) continue;
        for (int j = 0; j < 16; j++) {
            if (!keep[j]) continue;
            tokens[found] = i + j;
            scaled_out[found++] = a[j];
        }
    }
    for (; i < count; i++) {
        const double d = (double)logits[i];
        if (!(d >= cutoff)) continue;
        const double a = (d - top) * inverse_temperature;
        const double scaled = -a * bucket_scale;
        if ((int)(scaled < last ? scaled : last) > last_bucket) continue;
        tokens[found] = i;
        scaled_out[found++] = a;
    }
    return found;
}

typedef float v16f __attribute__((ext_vector_type(16)));
typedef int32_t v16i __attribute__((ext_vector_type(16)));

/// 2^a for sixteen a in [-100, 0], in float: a = k + f with |f| <= 1/2, 2^f as e^(f ln 2) by its
/// Taylor series to the 6th power (truncation under 1.2e-7 relatively, Horner's roundings under
/// 5e-7), times 2^k built in the exponent field.
BODY v16f exp2_small16(v16f a) {
    const v16f k = __builtin_elementwise_rint(a);
    const v16f r = (a - k) * 0x1.62e430p-1f;  // f · ln 2
    v16f p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const v16i bits = (__builtin_convertvector(k, v16i) + 127) << 23;
    return p * (v16f)bits;
}

/// The sum of sixteen floats (in a fixed order: the bound below allows for any).
BODY float sum16(v16f v) {
    float total = 0.0f;
    for (int j = 0; j < 16; j++) total += v[j];
    return total;
}

// The terms' error: the difference v − reference and its product with log2(e) / T are each rounded
// in float (relative 2^-24, and the scale itself once more), so a term's exponent is off by at most
// |a| · 3 · 2^-24 <= 1.8e-5 for |a| <= 100, which moves 2^a by under 1.3e-5 relatively; with the
// polynomial's 6.2e-7, and the float partial sums' (16 terms per lane, then 16 lanes, before each
// is added to a double: under 1.8e-6), under SLUICE_WEIGHT_TERM_ERROR.
BODY void accumulate_weights(const float *values, int count, double inverse_temperature, float *reference,
                             double *sum) {
    v16f tops = *reference;
    v16f finite = 0.0f;
    int i = 0;
    for (; i + 16 <= count; i += 16) {
        v16f v;
        memcpy(&v, values + i, sizeof v);
        finite += v - v;  // NaN wherever a value is not finite
        tops = __builtin_elementwise_max(tops, v);
    }
    float top = __builtin_reduce_max(tops);
    float check = sum16(finite);
    for (int j = i; j < count; j++) {
        check += values[j] - values[j];
        top = values[j] > top ? values[j] : top;
    }
    if (check != 0.0f) {
        *sum = NAN;
        return;
    }
    if (top > *reference) {
        if (*sum > 0) *sum *= exact_exp(((double)*reference - (double)top) * inverse_temperature);
        *reference = top;
    }
    const float scale = (float)(inverse_temperature * 0x1.71547652b82fep0);  // log2(e) / T
    double total = 0;
    i = 0;
    while (i + 16 <= count) {
        // Up to 16 vectors in float, then into the double total.
        v16f lanes = 0.0f;
        for (int n = 0; n < 16 && i + 16 <= count; n++, i += 16) {
            v16f v;
            memcpy(&v, values + i, sizeof v);
            const v16f a = (v - top) * scale;
            const v16i kept = a >= -100.0f;
            lanes += (v16f)((v16i)exp2_small16(__builtin_elementwise_max(a, (v16f)-100.0f)) & kept);
        }
        total += (double)sum16(lanes);
    }
    if (i < count) {
        v16f a = -1000.0f;
        for (int j = 0; i + j < count; j++) a[j] = (values[i + j] - top) * scale;
        const v16i kept = a >= -100.0f;
        total += (double)sum16((v16f)((v16i)exp2_small16(__builtin_elementwise_max(a, (v16f)-100.0f)) & kept));
    }
    *sum += total;
}

// One copy of each kernel per instruction set: NAME##_avx512 with AVX-512, NAME##_avx2 with AVX2 + FMA,
// NAME##_baseline with neither.
#define SAMPLING_KERNELS(SUFFIX)                                                                                          \
    static double exp_##SUFFIX(double a) { return polynomial_exp(a); }                                                   \
    static double exact_exp_##SUFFIX(double a) { return exact_exp(a); }                                                  \
    static double exact_log_##SUFFIX(double x) { return exact_log(x); }                                                  \
    static double exp_sum_##SUFFIX(const float *logits, int count, float maximum) {                                      \
        return exp_sum(logits, count, maximum);                                                                          \
    }                                                                                                                     \
    static float maximum_##SUFFIX(const float *values, int count) { return maximum_of(values, count); }                 \
    static int first_equal_##SUFFIX(const float *values, int count, float value) {                                       \
        return first_equal(values, count, value);                                                                        \
    }                                                                                                                     \
    static int scan_##SUFFIX(const float *logits, int count, float maximum, double cutoff, double inverse_temperature,   \
                             double bucket_scale, int buckets, int32_t *histogram, double *mass) {                       \
        return scan(logits, count, maximum, cutoff, inverse_temperature, bucket_scale, buckets, histogram, mass);        \
    }                                                                                                                     \
    static void accumulate_weights_##SUFFIX(const float *values, int count, double inverse_temperature,             \
                                            float *reference, double *sum) {                                         \
        accumulate_weights(values, count, inverse_temperature, reference, sum);                                      \
    }                                                                                                                 \
    static int collect_##SUFFIX(const float *logits, int count, float maximum, double cutoff, double inverse_temperature, \
                                double bucket_scale, int buckets, int last_bucket, int32_t *tokens, double *scaled) {    \
        return collect(logits, count, maximum, cutoff, inverse_temperature, bucket_scale, buckets, last_bucket, tokens, \
                       scaled);                                                                                          \
    }

SAMPLING_KERNELS(baseline)

/// The variant a test pinned for its thread (see `sluice_sampling_use_variant`), or -1.
static _Thread_local int pinned_variant = -1;

#if defined(SLUICE_X86_64)
#pragma clang attribute push(SLUICE_AVX2_TARGET, apply_to = function)
SAMPLING_KERNELS(avx2)
#pragma clang attribute pop
#pragma clang attribute push(SLUICE_AVX512_TARGET, apply_to = function)
SAMPLING_KERNELS(avx512)
#pragma clang attribute pop

static int sampling_variant(void) {
    const int variant = sluice_cpu_variant();
    return pinned_variant >= 0 && pinned_variant < variant ? pinned_variant : variant;
}

#define USE_AVX2 (sampling_variant() >= SLUICE_CPU_AVX2)
#define USE_AVX512 (sampling_variant() >= SLUICE_CPU_AVX512)
#else
#define USE_AVX2 0
#define exp_avx2 exp_baseline
#define exact_exp_avx2 exact_exp_baseline
#define exact_log_avx2 exact_log_baseline
#define exp_sum_avx2 exp_sum_baseline
#define maximum_avx2 maximum_baseline
#define first_equal_avx2 first_equal_baseline
#define scan_avx2 scan_baseline
#define collect_avx2 collect_baseline
#define accumulate_weights_avx2 accumulate_weights_baseline
#define USE_AVX512 0
#define exp_sum_avx512 exp_sum_baseline
#define maximum_avx512 maximum_baseline
#define scan_avx512 scan_baseline
#define collect_avx512 collect_baseline
#define accumulate_weights_avx512 accumulate_weights_baseline
#endif

void sluice_sampling_use_variant(int variant) { pinned_variant = variant; }

double sluice_sampling_exp(double a) { return USE_AVX2 ? exp_avx2(a) : exp_baseline(a); }

double sluice_exp(double a) { return USE_AVX2 ? exact_exp_avx2(a) : exact_exp_baseline(a); }

double sluice_log(double x) { return USE_AVX2 ? exact_log_avx2(x) : exact_log_baseline(x); }

double sluice_logit_exp_sum(const float *logits, int count, float maximum) {
    return USE_AVX512 ? exp_sum_avx512(logits, count, maximum)
           : USE_AVX2 ? exp_sum_avx2(logits, count, maximum) : exp_sum_baseline(logits, count, maximum);
}

float sluice_sampling_maximum(const float *values, int count) {
    return USE_AVX512 ? maximum_avx512(values, count) : USE_AVX2 ? maximum_avx2(values, count) : maximum_baseline(values, count);
}

int sluice_sampling_first_equal(const float *values, int count, float value) {
    return USE_AVX2 ? first_equal_avx2(values, count, value) : first_equal_baseline(values, count, value);
}

int sluice_sampling_scan(const float *logits, int count, float maximum, double cutoff, double inverse_temperature,
                         double bucket_scale, int buckets, int32_t *histogram, double *mass) {
    return USE_AVX512 ? scan_avx512(logits, count, maximum, cutoff, inverse_temperature, bucket_scale, buckets, histogram, mass)
           : USE_AVX2 ? scan_avx2(logits, count, maximum, cutoff, inverse_temperature, bucket_scale, buckets, histogram, mass)
                    : scan_baseline(logits, count, maximum, cutoff, inverse_temperature, bucket_scale, buckets, histogram, mass);
}

int sluice_sampling_collect(const float *logits, int count, float maximum, double cutoff, double inverse_temperature,
                            double bucket_scale, int buckets, int last_bucket, int32_t *tokens, double *scaled) {
    return USE_AVX512 ? collect_avx512(logits, count, maximum, cutoff, inverse_temperature, bucket_scale, buckets,
                                       last_bucket, tokens, scaled)
           : USE_AVX2 ? collect_avx2(logits, count, maximum, cutoff, inverse_temperature, bucket_scale, buckets, last_bucket,
                                     tokens, scaled)
                    : collect_baseline(logits, count, maximum, cutoff, inverse_temperature, bucket_scale, buckets, last_bucket,
                                       tokens, scaled);
}

void sluice_accumulate_weights(const float *values, int count, double inverse_temperature, float *reference, double *sum) {
    if (USE_AVX512) {
        accumulate_weights_avx512(values, count, inverse_temperature, reference, sum);
    } else if (USE_AVX2) {
        accumulate_weights_avx2(values, count, inverse_temperature, reference, sum);
    } else {
        accumulate_weights_baseline(values, count, inverse_temperature, reference, sum);
    }
}
