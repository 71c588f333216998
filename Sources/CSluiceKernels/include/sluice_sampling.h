#ifndef SLUICE_SAMPLING_H
#define SLUICE_SAMPLING_H

#include <stdint.h>

// Kernels of the sampler (see Sampling/Sampler.swift). A candidate is a logit l with
// (double)l >= cutoff; its scaled log-weight is a = ((double)l - (double)maximum) * inverse_temperature,
// and its bucket is min(buckets - 1, (int)(-a * bucket_scale)): the same bits in every kernel.

/// The largest of values[0..<count] (count >= 1) as a left-to-right `max` that keeps the running
/// value unless a later one is >= it: NaNs after the first value are passed over; a NaN first
/// value is the result.
float sluice_sampling_maximum(const float *values, int count);

/// The first index i < count with values[i] == value, or count if there is none.
int sluice_sampling_first_equal(const float *values, int count, float value);

/// Counts the candidates of each bucket into histogram[0..<buckets] (added to what is there)
/// and returns how many there are; *mass receives the sum of their weights exp(a), computed
/// with a polynomial and summed in lanes: within (2e-13 + (count + 64) * 2^-53) of the exact
/// sum, relatively.
int sluice_sampling_scan(const float *logits, int count, float maximum, double cutoff, double inverse_temperature,
                         double bucket_scale, int buckets, int32_t *histogram, double *mass);

/// Writes the token ids and scaled log-weights of the candidates whose bucket is at most
/// `last_bucket`, in ascending token order; returns how many.
int sluice_sampling_collect(const float *logits, int count, float maximum, double cutoff, double inverse_temperature,
                            double bucket_scale, int buckets, int last_bucket, int32_t *tokens, double *scaled);

/// For tests: this thread's sampling kernels become those of `variant` (a `sluice_cpu_variant` value;
/// one above the CPU's runs the CPU's own), or the process's own again for -1. Every variant gives the
/// same bits, which is what the tests check.
void sluice_sampling_use_variant(int variant);

/// exp(a) for -745 < a <= 0 by the polynomial the scan uses (for tests of its accuracy).
double sluice_sampling_exp(double a);

/// e^a, within about 1e-16 relatively, the same bits on every CPU and kernel variant (libm's exp
/// differs in the last bit between CPUs with and without FMA).
double sluice_exp(double a);

/// ln x, within 1 ulp, the same bits on every CPU and kernel variant.
double sluice_log(double x);

/// Σ sluice_exp(logits[i] − maximum) for i < count, the differences taken in float, over the terms
/// at or above e^-50: a log-softmax's normalizer less the maximum. Element i goes to running sum
/// i mod 8 (in index order), and the eight are added as ((0+1)+(2+3))+((4+5)+(6+7)).
double sluice_logit_exp_sum(const float *logits, int count, float maximum);

/// Relative error of each term `sluice_accumulate_weights` adds (its float arithmetic: see sampling.c).
#define SLUICE_WEIGHT_TERM_ERROR 3e-5

/// Continues a running sum of the weights e^((v − *reference) · inverse_temperature) of values[0..<count]
/// for the sampling head's bound on a row's total: raises `*reference` to the largest finite value seen
/// (rescaling `*sum` to it with `sluice_exp`), then adds each term, computed in float, to `*sum`. Each
/// term is within SLUICE_WEIGHT_TERM_ERROR of its exact value, relatively; terms under 2^-100 are left
/// out. Non-finite values make `*sum` non-finite. (inverse_temperature > 0.)
void sluice_accumulate_weights(const float *values, int count, double inverse_temperature, float *reference, double *sum);

#endif
