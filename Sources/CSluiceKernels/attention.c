// Attention's inner loops in AVX-512: the query-key scores and the weighted sums of values.
// Swift computes both portably (Attention.swift), but the portable build's Swift code runs on
// AVX2 registers, where the 16 sixteen-lane accumulators of the grouped kernels are 32 halves
// that do not fit in 16 registers (attention went from 7.8% to 15% of a 32-sequence decode
// step). Every score here is the same chain as Swift's `dotProduct` times the scale (16 running
// lanes of fused multiply-adds, `laneSum`, a fused multiply-add per element past the last 16,
// one multiply), and every output element the same chain of fused multiply-adds from zero over
// positions in increasing order, so the two agree to the bit (AttentionTests); only the number
// of keys or columns handled together differs, which no single result depends on.
#include "sluice_kernels.h"

#include <stddef.h>
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

#ifdef SLUICE_HAVE_AVX512
#pragma clang attribute push(SLUICE_AVX512_TARGET, apply_to = function)

#define INLINE static inline __attribute__((always_inline))

/// Position `p`'s row, as `LayerView.key` / `LayerView.value` find it.
INLINE const char *row_at(const struct sluice_kv_rows *rows, long p) {
    return (const char *)rows->blocks[p >> rows->shift] + rows->offset + (p & ((1L << rows->shift) - 1)) * rows->row_bytes;
}

/// Sixteen elements at `p` as floats (half floats are widened exactly).
INLINE __m512 load16(const char *p, const int half) {
    return half ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)) : _mm512_loadu_ps((const float *)p);
}

/// The first `lanes` of sixteen elements at `p` as floats, zeros elsewhere; reads nothing past them.
INLINE __m512 load_partial16(const char *p, __mmask16 lanes, const int half) {
    return half ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lanes, p)) : _mm512_maskz_loadu_ps(lanes, p);
}

/// Element `k` of the row at `p` as a float.
INLINE float element(const char *p, long k, const int half) {
    return half ? _cvtsh_ss(((const uint16_t *)p)[k]) : ((const float *)p)[k];
}

/// Sixteen `laneSum`s at once: result lane 4q + r is `lane_sum(acc[4r + q])`, each by the same
/// additions of the same lanes (halves, quarters, then lanes 0 + 2 and 1 + 3, then those two).
INLINE __m512 lane_sums16(const __m512 acc[16]) {
    __m512 eights[8], fours[4], twos[2];
    for (int m = 0; m < 8; m++) {
        // [a.low 8, b.low 8] + [a.high 8, b.high 8]
        eights[m] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2 * m], acc[2 * m + 1], 0x44),
                                  _mm512_shuffle_f32x4(acc[2 * m], acc[2 * m + 1], 0xEE));
    }
    for (int m = 0; m < 4; m++) {
        // Each quarter: one accumulator's eight lanes 0-3 + 4-7.
        fours[m] = _mm512_add_ps(_mm512_shuffle_f32x4(eights[2 * m], eights[2 * m + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_f32x4(eights[2 * m], eights[2 * m + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    }
    for (int m = 0; m < 2; m++) {
        // Per quarter q: [four 0 + 2, four 1 + 3] of accumulators 8m + q and 8m + 4 + q.
        twos[m] = _mm512_add_ps(_mm512_shuffle_ps(fours[2 * m], fours[2 * m + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                                _mm512_shuffle_ps(fours[2 * m], fours[2 * m + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    return _mm512_add_ps(_mm512_shuffle_ps(twos[0], twos[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(twos[0], twos[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/// `finish` of MatMul.swift past the lane sum: the elements after the last full 16, one fused
/// multiply-add each.
INLINE float finish_tail(float sum, const float *q, const char *key, long from, long d, const int half) {
    for (long k = from; k < d; k++) sum = __builtin_fmaf(q[k], element(key, k, half), sum);
    return sum;
}

/// Scores of one query against keys `first` ... `last` (16, then 4, then 1 at a time).
INLINE void attention_scores(const float *q, const struct sluice_kv_rows *keys, long d, float scale, long first,
                             long last, float *scores, const int half) {
    const long full = d & ~15L;
    const __m512 scale16 = _mm512_set1_ps(scale);
    long p = first;
    for (; p + 16 <= last + 1; p += 16) {
        // Accumulator 4r + q holds key 4q + r, so that lane_sums16 puts key j's sum in lane j.
        const char *row[16];
        for (int j = 0; j < 16; j++) row[(j & 3) * 4 + (j >> 2)] = row_at(keys, p + j);
        __m512 acc[16];
        for (int s = 0; s < 16; s++) acc[s] = _mm512_setzero_ps();
        for (long k = 0; k < full; k += 16) {
            const __m512 x = _mm512_loadu_ps(q + k);
            for (int s = 0; s < 16; s++) acc[s] = _mm512_fmadd_ps(x, load16(row[s] + k * (half ? 2 : 4), half), acc[s]);
        }
        __m512 sums = lane_sums16(acc);
        if (full < d) {
            float lanes[16];
            _mm512_storeu_ps(lanes, sums);
            for (int j = 0; j < 16; j++) lanes[j] = finish_tail(lanes[j], q, row_at(keys, p + j), full, d, half);
            sums = _mm512_loadu_ps(lanes);
        }
        _mm512_storeu_ps(scores + (p - first), _mm512_mul_ps(sums, scale16));
    }
    for (; p + 4 <= last + 1; p += 4) {
        const char *row[4];
        __m512 acc[4];
        for (int j = 0; j < 4; j++) {
            row[j] = row_at(keys, p + j);
            acc[j] = _mm512_setzero_ps();
        }
        for (long k = 0; k < full; k += 16) {
            const __m512 x = _mm512_loadu_ps(q + k);
            for (int j = 0; j < 4; j++) acc[j] = _mm512_fmadd_ps(x, load16(row[j] + k * (half ? 2 : 4), half), acc[j]);
        }
        for (int j = 0; j < 4; j++) scores[p - first + j] = finish_tail(lane_sum(acc[j]), q, row[j], full, d, half) * scale;
    }
    for (; p <= last; p++) {
        const char *row = row_at(keys, p);
        __m512 acc = _mm512_setzero_ps();
        for (long k = 0; k < full; k += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + k), load16(row + k * (half ? 2 : 4), half), acc);
        scores[p - first] = finish_tail(lane_sum(acc), q, row, full, d, half) * scale;
    }
}

/// Scores of four queries (`q + i·d`) against keys `first` ... `last`, four keys at a time: each
/// 16 elements of a key are loaded once for the four. Query i's scores go to `scores + i·stride`.
INLINE void group_scores4(const float *q, const struct sluice_kv_rows *keys, long d, float scale, long first, long last,
                          float *scores, long stride, const int half) {
    const long full = d & ~15L;
    const __m512 scale16 = _mm512_set1_ps(scale);
    long p = first;
    for (; p + 4 <= last + 1; p += 4) {
        const char *row[4];
        for (int j = 0; j < 4; j++) row[j] = row_at(keys, p + j);
        // Accumulator 4j + i: query i, key j; lane_sums16 puts it in lane 4i + j.
        __m512 acc[16];
        for (int s = 0; s < 16; s++) acc[s] = _mm512_setzero_ps();
        for (long k = 0; k < full; k += 16) {
            __m512 x[4];
            for (int i = 0; i < 4; i++) x[i] = _mm512_loadu_ps(q + i * d + k);
            for (int j = 0; j < 4; j++) {
                const __m512 u = load16(row[j] + k * (half ? 2 : 4), half);
                for (int i = 0; i < 4; i++) acc[4 * j + i] = _mm512_fmadd_ps(x[i], u, acc[4 * j + i]);
            }
        }
        __m512 sums = lane_sums16(acc);
        if (full < d) {
            float lanes[16];
            _mm512_storeu_ps(lanes, sums);
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) lanes[4 * i + j] = finish_tail(lanes[4 * i + j], q + i * d, row[j], full, d, half);
            sums = _mm512_loadu_ps(lanes);
        }
        sums = _mm512_mul_ps(sums, scale16);
        float *at = scores + (p - first);
        _mm_storeu_ps(at, _mm512_extractf32x4_ps(sums, 0));
        _mm_storeu_ps(at + stride, _mm512_extractf32x4_ps(sums, 1));
        _mm_storeu_ps(at + 2 * stride, _mm512_extractf32x4_ps(sums, 2));
        _mm_storeu_ps(at + 3 * stride, _mm512_extractf32x4_ps(sums, 3));
    }
    for (; p <= last; p++) {
        const char *row = row_at(keys, p);
        __m512 acc[4];
        for (int i = 0; i < 4; i++) acc[i] = _mm512_setzero_ps();
        for (long k = 0; k < full; k += 16) {
            const __m512 u = load16(row + k * (half ? 2 : 4), half);
            for (int i = 0; i < 4; i++) acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(q + i * d + k), u, acc[i]);
        }
        for (int i = 0; i < 4; i++)
            scores[i * stride + (p - first)] = finish_tail(lane_sum(acc[i]), q + i * d, row, full, d, half) * scale;
    }
}

/// `out[c] = Σ_p weights[p - first] · v[p][c]` for HEADS (1 or 4) heads sharing the values (head
/// i's weights at `weights + i·stride`, output at `out + i·d`), for VECTORS groups of 16 columns
/// from column `k`, the last `last_lanes` wide: each element a chain of fused multiply-adds from
/// zero over positions in increasing order.
INLINE void values_block(const int HEADS, const int VECTORS, const float *weights, long stride,
                         const struct sluice_kv_rows *values, long d, long first, long last, long k, __mmask16 last_lanes,
                         float *out, const int half) {
    __m512 acc[4][16];
    for (int i = 0; i < HEADS; i++)
        for (int v = 0; v < VECTORS; v++) acc[i][v] = _mm512_setzero_ps();
    for (long p = first; p <= last; p++) {
        const char *row = row_at(values, p) + k * (half ? 2 : 4);
        __m512 w[4];
        for (int i = 0; i < HEADS; i++) w[i] = _mm512_set1_ps(weights[i * stride + (p - first)]);
        for (int v = 0; v < VECTORS; v++) {
            const __m512 u = v == VECTORS - 1 && last_lanes != 0xFFFF
                ? load_partial16(row + 16 * v * (half ? 2 : 4), last_lanes, half)
                : load16(row + 16 * v * (half ? 2 : 4), half);
            for (int i = 0; i < HEADS; i++) acc[i][v] = _mm512_fmadd_ps(w[i], u, acc[i][v]);
        }
    }
    for (int i = 0; i < HEADS; i++)
        for (int v = 0; v < VECTORS; v++) {
            const __mmask16 lanes = v == VECTORS - 1 ? last_lanes : 0xFFFF;
            _mm512_mask_storeu_ps(out + i * d + k + 16 * v, lanes, acc[i][v]);
        }
}

/// One head's weighted values: 256 columns at a time (16 accumulators), then fewer.
INLINE void weighted_values(const float *weights, const struct sluice_kv_rows *values, long d, long first, long last,
                            float *out, const int half) {
    long k = 0;
    for (; k + 256 <= d; k += 256) values_block(1, 16, weights, 0, values, d, first, last, k, 0xFFFF, out, half);
    if (k + 128 <= d) {
        values_block(1, 8, weights, 0, values, d, first, last, k, 0xFFFF, out, half);
        k += 128;
    }
    if (k + 64 <= d) {
        values_block(1, 4, weights, 0, values, d, first, last, k, 0xFFFF, out, half);
        k += 64;
    }
    if (k + 32 <= d) {
        values_block(1, 2, weights, 0, values, d, first, last, k, 0xFFFF, out, half);
        k += 32;
    }
    for (; k < d; k += 16) values_block(1, 1, weights, 0, values, d, first, last, k, lanes_holding(d - k), out, half);
}

/// Four heads' weighted values: 64 columns at a time (16 accumulators), then 16.
INLINE void group_weighted_values4(const float *weights, long stride, const struct sluice_kv_rows *values, long d,
                                   long first, long last, float *out, const int half) {
    long k = 0;
    for (; k + 64 <= d; k += 64) values_block(4, 4, weights, stride, values, d, first, last, k, 0xFFFF, out, half);
    for (; k < d; k += 16) values_block(4, 1, weights, stride, values, d, first, last, k, lanes_holding(d - k), out, half);
}

void sluice_attention_scores(const float *q, struct sluice_kv_rows keys, long d, float scale, long first, long last,
                             float *scores) {
    if (keys.half) attention_scores(q, &keys, d, scale, first, last, scores, 1);
    else attention_scores(q, &keys, d, scale, first, last, scores, 0);
}

void sluice_group_scores4(const float *q, struct sluice_kv_rows keys, long d, float scale, long first, long last,
                          float *scores, long stride) {
    if (keys.half) group_scores4(q, &keys, d, scale, first, last, scores, stride, 1);
    else group_scores4(q, &keys, d, scale, first, last, scores, stride, 0);
}

void sluice_weighted_values(const float *weights, struct sluice_kv_rows values, long d, long first, long last,
                            float *out) {
    if (values.half) weighted_values(weights, &values, d, first, last, out, 1);
    else weighted_values(weights, &values, d, first, last, out, 0);
}

void sluice_group_weighted_values4(const float *weights, long stride, struct sluice_kv_rows values, long d, long first,
                                   long last, float *out) {
    if (values.half) group_weighted_values4(weights, stride, &values, d, first, last, out, 1);
    else group_weighted_values4(weights, stride, &values, d, first, last, out, 0);
}

#pragma clang attribute pop

#else

void sluice_attention_scores(const float *q, struct sluice_kv_rows keys, long d, float scale, long first, long last,
                             float *scores) {
    (void)q; (void)keys; (void)d; (void)scale; (void)first; (void)last; (void)scores;
}

void sluice_group_scores4(const float *q, struct sluice_kv_rows keys, long d, float scale, long first, long last,
                          float *scores, long stride) {
    (void)q; (void)keys; (void)d; (void)scale; (void)first; (void)last; (void)scores; (void)stride;
}

void sluice_weighted_values(const float *weights, struct sluice_kv_rows values, long d, long first, long last,
                            float *out) {
    (void)weights; (void)values; (void)d; (void)first; (void)last; (void)out;
}

void sluice_group_weighted_values4(const float *weights, long stride, struct sluice_kv_rows values, long d, long first,
                                   long last, float *out) {
    (void)weights; (void)stride; (void)values; (void)d; (void)first; (void)last; (void)out;
}

#endif
