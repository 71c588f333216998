// The sampler's passes over a row of logits: a histogram of the candidates by weight with
// their total mass (bounded, not exact), and the collection of the few most likely ones,
// whose weights the sampler then computes exactly (see Sampling/Sampler.swift).
#include "sluice_sampling.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu_targets.h"

// Each kernel is compiled twice, for the build's baseline (x86-64-v2, where `fma` is a call into
// libm) and for AVX2 + FMA, and the entry points pick by the variant in use; both compute the
// same bits. Fused multiply-adds only where written, so that neither contracts differently.
#pragma clang fp contract(off)

#define BODY static inline __attribute__((always_inline))

// exp(a) for a in [-745, 0]: a = k ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor series to
// r^13 / 13! (truncation under 2e-17 relative), then scaled by 2^k. Relative error about 1e-16;
// the sampler allows 2e-13. Branch-free so that the loops below vectorize.
BODY double polynomial_exp(double a) {
    const double shifter = 0x1.8p52;
    const double k = (a * 0x1.71547652b82fep0 + shifter) - shifter;
    const double r = __builtin_elementwise_fma(-k, 0x1.62e42fefa3800p-1, a) - k * 0x1.ef35793c76730p-45;
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
    p = __builtin_elementwise_fma(p, r, 1.0);
    // k >= -1075: 2^k as (k + 1023) << 52 is normal for k >= -1022; below that the product
    // underflows towards 0, which the bound allows for weights far under exp(-40).
    int64_t ki = (int64_t)k;
    ki = ki < -1022 ? -1022 : ki;
    uint64_t bits = (uint64_t)(ki + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
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

// One copy of each kernel per instruction set: NAME##_avx2 with AVX2 + FMA, NAME##_baseline without.
#define SAMPLING_KERNELS(SUFFIX)                                                                                          \
    static double exp_##SUFFIX(double a) { return polynomial_exp(a); }                                                   \
    static float maximum_##SUFFIX(const float *values, int count) { return maximum_of(values, count); }                 \
    static int first_equal_##SUFFIX(const float *values, int count, float value) {                                       \
        return first_equal(values, count, value);                                                                        \
    }                                                                                                                     \
    static int scan_##SUFFIX(const float *logits, int count, float maximum, double cutoff, double inverse_temperature,   \
                             double bucket_scale, int buckets, int32_t *histogram, double *mass) {                       \
        return scan(logits, count, maximum, cutoff, inverse_temperature, bucket_scale, buckets, histogram, mass);        \
    }                                                                                                                     \
    static int collect_##SUFFIX(const float *logits, int count, float maximum, double cutoff, double inverse_temperature, \
                                double bucket_scale, int buckets, int last_bucket, int32_t *tokens, double *scaled) {    \
        return collect(logits, count, maximum, cutoff, inverse_temperature, bucket_scale, buckets, last_bucket, tokens, \
                       scaled);                                                                                          \
    }

SAMPLING_KERNELS(baseline)

#if defined(SLUICE_X86_64)
#pragma clang attribute push(SLUICE_AVX2_TARGET, apply_to = function)
SAMPLING_KERNELS(avx2)
#pragma clang attribute pop
#define USE_AVX2 (sluice_cpu_variant() >= SLUICE_CPU_AVX2)
#else
#define USE_AVX2 0
#define exp_avx2 exp_baseline
#define maximum_avx2 maximum_baseline
#define first_equal_avx2 first_equal_baseline
#define scan_avx2 scan_baseline
#define collect_avx2 collect_baseline
#endif

double sluice_sampling_exp(double a) { return USE_AVX2 ? exp_avx2(a) : exp_baseline(a); }

float sluice_sampling_maximum(const float *values, int count) {
    return USE_AVX2 ? maximum_avx2(values, count) : maximum_baseline(values, count);
}

int sluice_sampling_first_equal(const float *values, int count, float value) {
    return USE_AVX2 ? first_equal_avx2(values, count, value) : first_equal_baseline(values, count, value);
}

int sluice_sampling_scan(const float *logits, int count, float maximum, double cutoff, double inverse_temperature,
                         double bucket_scale, int buckets, int32_t *histogram, double *mass) {
    return USE_AVX2 ? scan_avx2(logits, count, maximum, cutoff, inverse_temperature, bucket_scale, buckets, histogram, mass)
                    : scan_baseline(logits, count, maximum, cutoff, inverse_temperature, bucket_scale, buckets, histogram, mass);
}

int sluice_sampling_collect(const float *logits, int count, float maximum, double cutoff, double inverse_temperature,
                            double bucket_scale, int buckets, int last_bucket, int32_t *tokens, double *scaled) {
    return USE_AVX2 ? collect_avx2(logits, count, maximum, cutoff, inverse_temperature, bucket_scale, buckets, last_bucket,
                                   tokens, scaled)
                    : collect_baseline(logits, count, maximum, cutoff, inverse_temperature, bucket_scale, buckets, last_bucket,
                                       tokens, scaled);
}
