#ifndef SLUICE_KERNELS_H
#define SLUICE_KERNELS_H

#include <stdint.h>

/// Whether this build holds the int8 kernels and the variant in use runs them: AVX2 and
/// above (`sluice_cpu_variant() >= SLUICE_CPU_AVX2`; the AVX-512 VNNI kernels there, AVX2
/// ones below, with the same results bit for bit). Everything below requires it.
int sluice_int8_available(void);

/// Quantizes `tokens` rows of `columns` floats to signed 8-bit integers, one
/// scale per `block` (16 or 32) consecutive elements: q = round(x / s) with
/// s = max|x| / 127. Writes `xq[t * columns + k]`, and per block
/// `scale[t * blocks + b] = s`, `sum[t * blocks + b] = Σ q` and
/// `scaled_sum[t * blocks + b] = s * Σ q`.
///
/// With `xq_low` (else NULL), also rounds what q misses in steps of s / 256 into
/// `xq_low`: each element is then the integer 256 q + low at step s / 256, which
/// is what `scale`, `sum` and `scaled_sum` then describe.
void sluice_quantize_rows(const float *x, int tokens, int columns, int block,
                          int8_t *xq, int8_t *xq_low, float *scale, float *scaled_sum, int32_t *sum);

/// How a weight matrix stores its scales and offsets.
enum sluice_weight_kind {
    /// Blocks of 32; scales are IEEE half floats; offsets are scale × `bias` (Q8_0, Q4_0, Q5_0).
    SLUICE_WEIGHTS_HALF_SCALED32 = 0,
    /// Blocks of 16; float scales; offsets are scale × `bias` (Q6_K).
    SLUICE_WEIGHTS_SCALED16 = 1,
    /// Blocks of 32; float scales and float `offsets` (Q4_K, Q5_K).
    SLUICE_WEIGHTS_AFFINE32 = 2,
};

/// y[t * y_stride + r] = Σ_b (s[r,b] · sx[t,b]) · (Σ_{k in b} u[r,k] · x[t,k] − bias · xsum[t,b])
///                        − m[r,b] · sxsum[t,b],
/// x being xq, or 256 xq + xq_low where `xq_low` is not NULL, for the rows of
/// panels [panel_begin, panel_end) below `rows`, and t in [0, tokens). With `xq_low`,
/// |xq| <= 127 as `sluice_quantize_rows` writes it (the AVX2 kernel holds 256 xq + xq_low
/// in 16 bits).
///
/// Weights are unsigned bytes `u` with a scale `s` and offset `m` per block
/// (each weight is s · u − m), in panels of 16 rows: panel p holds, for every
/// group of 4 columns, 16 rows × 4 bytes (64 bytes). Its scales (and offsets)
/// are `blocks × 16` values at `p * 16 * blocks`, as `kind` says. Kinds without
/// stored offsets have m = s · bias, taken off each block's integer sum exactly
/// (the m term is then absent); `SLUICE_WEIGHTS_AFFINE32` has bias 0.
///
/// Every output element is reduced in the same order (blocks in order, each an
/// exact integer sum) whatever `tokens`, the tile it falls in or the panel
/// range, so results do not depend on the batch.
void sluice_int8_matmul(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                        int columns, int rows, int panel_begin, int panel_end,
                        const int8_t *xq, const int8_t *xq_low, const float *xscale, const float *xscaled_sum,
                        const int32_t *xsum, int tokens, float *y, int y_stride);

/// Row `row` of `sluice_int8_matmul`'s product for one token, bit for bit what that
/// kernel writes for it, computed alone.
float sluice_int8_row_product(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                              int columns, int row, const int8_t *xq, const int8_t *xq_low, const float *xscale,
                              const float *xscaled_sum, const int32_t *xsum);

/// One pass over `values` that continues a running maximum: raises `*maximum` to
/// max(*maximum, values), and writes, in ascending order, `first_row + i` to `rows` and
/// values[i] to `kept` for every i < `count` with values[i] >= (the final *maximum) − `margin`,
/// and possibly others below it. Returns how many it wrote (at most `count`).
int sluice_collect_near_maximum(const float *values, int count, float margin, float *maximum, int32_t first_row,
                                int32_t *rows, float *kept);

/// Each variant's integer kernels under its own name, for tests and benchmarks that compare the
/// variants in one process; everything else calls the functions above, which pick the variant
/// in use. The `_avx2` ones need a CPU with AVX2, FMA and F16C, `sluice_int8_matmul_avx512` one
/// with AVX-512 (F, BW, DQ, VL), the `_avx512_vnni` ones and `sluice_collect_near_maximum_avx512`
/// one with AVX-512 VNNI (`sluice_cpu_best_variant()`, whatever `SLUICE_CPU` says).
void sluice_quantize_rows_avx2(const float *x, int tokens, int columns, int block,
                               int8_t *xq, int8_t *xq_low, float *scale, float *scaled_sum, int32_t *sum);
void sluice_quantize_rows_avx512_vnni(const float *x, int tokens, int columns, int block,
                                      int8_t *xq, int8_t *xq_low, float *scale, float *scaled_sum, int32_t *sum);
void sluice_int8_matmul_avx2(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                             int columns, int rows, int panel_begin, int panel_end,
                             const int8_t *xq, const int8_t *xq_low, const float *xscale, const float *xscaled_sum,
                             const int32_t *xsum, int tokens, float *y, int y_stride);
void sluice_int8_matmul_avx512_vnni(const uint8_t *weights, int kind, const void *scales, const float *offsets,
                                    int bias, int columns, int rows, int panel_begin, int panel_end,
                                    const int8_t *xq, const int8_t *xq_low, const float *xscale,
                                    const float *xscaled_sum, const int32_t *xsum, int tokens, float *y, int y_stride);
void sluice_int8_matmul_avx512(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                               int columns, int rows, int panel_begin, int panel_end,
                               const int8_t *xq, const int8_t *xq_low, const float *xscale, const float *xscaled_sum,
                               const int32_t *xsum, int tokens, float *y, int y_stride);
float sluice_int8_row_product_avx2(const uint8_t *weights, int kind, const void *scales, const float *offsets,
                                   int bias, int columns, int row, const int8_t *xq, const int8_t *xq_low,
                                   const float *xscale, const float *xscaled_sum, const int32_t *xsum);
float sluice_int8_row_product_avx512_vnni(const uint8_t *weights, int kind, const void *scales, const float *offsets,
                                          int bias, int columns, int row, const int8_t *xq, const int8_t *xq_low,
                                          const float *xscale, const float *xscaled_sum, const int32_t *xsum);
int sluice_collect_near_maximum_avx2(const float *values, int count, float margin, float *maximum, int32_t first_row,
                                     int32_t *rows, float *kept);
int sluice_collect_near_maximum_avx512(const float *values, int count, float margin, float *maximum,
                                       int32_t first_row, int32_t *rows, float *kept);

/// Whether this build holds the AVX-512 elementwise and attention kernels and this CPU can run them
/// (with the variant `SLUICE_CPU` allows).
int sluice_avx512_available(void);

/// gate[i] = gelu_tanh(gate[i]) · up[i] for i < count, bit for bit as Swift's
/// `geluTanhGate(_:_:count:)` computes it. Requires `sluice_avx512_available()`.
void sluice_gelu_tanh_gate(float *gate, const float *up, long count);

/// Softmax of `count` scores in place, bit for bit as Swift's `portableSoftmax` computes it.
/// Requires `sluice_avx512_available()`.
void sluice_softmax(float *scores, long count);

/// Where the attention kernels find one layer's keys (or values) of one sequence, as `LayerView`
/// does: position p's row starts `offset` bytes into block `blocks[p >> shift]`, plus
/// (p mod 2^shift) · `row_bytes`. `half`: the cache holds IEEE half floats (else floats).
struct sluice_kv_rows {
    void *const *blocks;
    long offset;
    long row_bytes;
    int shift;
    int half;
};

/// `scores[p - first] = dot(q, key p) · scale` for p in first ... last, each dot product `d` long
/// and bit for bit Swift's `dotProduct` (16 running lanes, `laneSum`, the rest one by one).
/// Requires `sluice_avx512_available()`.
void sluice_attention_scores(const float *q, struct sluice_kv_rows keys, long d, float scale, long first, long last,
                             float *scores);

/// `sluice_attention_scores` for four queries at `q + i·d`, their scores at `scores + i·stride`.
/// Requires `sluice_avx512_available()`.
void sluice_group_scores4(const float *q, struct sluice_kv_rows keys, long d, float scale, long first, long last,
                          float *scores, long stride);

/// `out[c] = Σ weights[p - first] · value p [c]` for c < d, over p = first ... last in increasing
/// order, one fused multiply-add each from zero. Requires `sluice_avx512_available()`.
void sluice_weighted_values(const float *weights, struct sluice_kv_rows values, long d, long first, long last,
                            float *out);

/// `sluice_weighted_values` for four heads: head i's weights at `weights + i·stride`, its output
/// at `out + i·d`. Requires `sluice_avx512_available()`.
void sluice_group_weighted_values4(const float *weights, long stride, struct sluice_kv_rows values, long d, long first,
                                   long last, float *out);

/// Whether the variant in use is `avx2` or above: the build's baseline is x86-64-v2, so the float
/// kernels whose Swift versions are fused multiply-adds (calls into libm there) have AVX2 + FMA
/// versions below, each bit for bit its Swift counterpart. Everything named `_avx2` requires it.
int sluice_avx2_available(void);

/// The float kernels, one source per family compiled once per variant (vector16.h): `_avx2` for
/// the `avx2` variant and above, `_baseline` for `portable` (on x86-64-v2 with software fused
/// multiply-adds, rounded as the instruction rounds them). Each is bit for bit its Swift counterpart:
/// - `sluice_attention_scores`, `sluice_group_scores4`, `sluice_weighted_values`,
///   `sluice_group_weighted_values4`: Swift's `portableAttentionScores`, `portableGroupScores4`,
///   `portableWeightedValues`, `portableGroupWeightedValues4` (the AVX-512 versions above).
/// - `sluice_gelu_tanh_gate`, `sluice_silu_gate`, `sluice_softmax`, `sluice_gelu_erf`: Swift's
///   `portableGeluTanhGate`, `portableSiluGate`, `portableSoftmax`, `portableGeluErf` (BERT).
/// - `sluice_exp_shifted`: x[i] = exp16(x[i] - shift), sixteen at a time as Swift's `exp16`.
/// - `sluice_multiply_add`: accumulator[k] = fma(weight, values[k], accumulator[k]) for k < count.
/// - `sluice_dot`: Swift's `dot` (16 running lanes of fused multiply-adds, `laneSum`, the rest one
///   by one).
/// - `sluice_f32_packed_rows`: the products of a `PackedWeights` layout (`fusedRows`): rows
///   first_row ..< last_row (first_row a multiple of 4) times tokens first_token ..< last_token of
///   `x` (`columns` apart), into y[t * out_stride + r]; `mins` is NULL for types without offsets.
/// - `sluice_f32_decode_packed_row`: row `row` of a `PackedWeights` layout decoded to `columns`
///   floats at `out`, bit for bit what `dequantizeRow` writes (`PackedWeights.decode`).
/// - `sluice_f32_row_tiles`: `rows` (4: four-token tiles, then one token at a time; otherwise `dot` per row)
///   decoded weight rows at `w` times `tokens` activation rows, into y[t * out_stride + r].
#define SLUICE_FLOAT_KERNELS(V)                                                                                           \
    void sluice_attention_scores_##V(const float *q, struct sluice_kv_rows keys, long d, float scale, long first,        \
                                     long last, float *scores);                                                          \
    void sluice_group_scores4_##V(const float *q, struct sluice_kv_rows keys, long d, float scale, long first, long last, \
                                  float *scores, long stride);                                                           \
    void sluice_weighted_values_##V(const float *weights, struct sluice_kv_rows values, long d, long first, long last,    \
                                    float *out);                                                                         \
    void sluice_group_weighted_values4_##V(const float *weights, long stride, struct sluice_kv_rows values, long d,      \
                                           long first, long last, float *out);                                           \
    void sluice_gelu_tanh_gate_##V(float *gate, const float *up, long count);                                            \
    void sluice_silu_gate_##V(float *gate, const float *up, long count);                                                 \
    void sluice_softmax_##V(float *scores, long count);                                                                  \
    void sluice_gelu_erf_##V(float *x, long count);                                                                      \
    void sluice_exp_shifted_##V(float *x, long count, float shift);                                                      \
    void sluice_multiply_add_##V(float *accumulator, float weight, const float *values, long count);                     \
    float sluice_dot_##V(const float *a, const float *b, long count);                                                    \
    void sluice_f32_packed_rows_##V(const int8_t *quants, const float *scales, const float *mins, long columns,           \
                                    long scales_per_row, int scale_shift, long first_row, long last_row, const float *x, \
                                    long first_token, long last_token, float *y, long out_stride);                       \
    void sluice_f32_decode_packed_row_##V(const int8_t *quants, const float *scales, const float *mins, long columns,     \
                                          long scales_per_row, int scale_shift, long row, float *out);                   \
    void sluice_f32_row_tiles_##V(const float *w, long rows, const float *x, long tokens, long columns, float *y,        \
                                  long out_stride);
SLUICE_FLOAT_KERNELS(avx2)
SLUICE_FLOAT_KERNELS(baseline)

/// The eight running lanes of `rmsNorm`'s sum of squares: lane j = Σ fma(x, x) over the elements
/// 8i + j below the last multiple of 8, in Double, from zero in increasing i.
void sluice_square_lanes_avx2(const float *x, long count, double lanes[8]);
/// Swift's `Float16.store` (KVStorage.swift): `count` floats rounded to half floats, to nearest even,
/// saturating at ±65504 (a NaN becomes -65504), with F16C's conversions.
void sluice_store_halves_saturated_avx2(void *destination, const float *source, long count);

/// Sixteen floats (imported into Swift as SIMD16<Float>).
typedef float sluice_float_x16 __attribute__((ext_vector_type(16)));
typedef _Float16 sluice_half_x16 __attribute__((ext_vector_type(16)));

/// Sixteen IEEE half floats at `p` widened to floats. Inline here so that Swift callers get the
/// one conversion instruction (F16C's vcvtph2ps) in place: Swift's generic SIMD conversion
/// stays an outlined call in the attention loops.
static inline __attribute__((always_inline)) sluice_float_x16 sluice_load_half_x16(const void *p) {
    sluice_half_x16 h;
    __builtin_memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, sluice_float_x16);
}

/// Sixteen floats rounded to IEEE half floats (to nearest even) at `p`, magnitudes beyond the
/// largest half float saturating (NaN too); inline for the same reason as `sluice_load_half_x16`.
static inline __attribute__((always_inline)) void sluice_store_half_saturated_x16(void *p, sluice_float_x16 v) {
    const sluice_float_x16 largest = 65504.0f;
    const sluice_half_x16 h = __builtin_convertvector(__builtin_elementwise_min(__builtin_elementwise_max(v, -largest), largest),
                                                      sluice_half_x16);
    __builtin_memcpy(p, &h, sizeof h);
}

#endif
