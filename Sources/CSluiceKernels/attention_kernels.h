// Attention's inner loops: Attention.swift's portable kernels, operation for operation
// (vector16.h). Every score is the same chain as `dotProduct` times the scale, every output
// element the same chain of fused multiply-adds from zero over positions in increasing order, so
// every variant agrees with Swift to the bit (AttentionTests). A translation unit per variant
// includes this after vector16.h, with `VARIANT(name)` naming its functions: attention_avx2.c
// (AVX2 + FMA, F16C) and attention_baseline.c (the build's baseline).

/// Position `p`'s row, as `LayerView.key` / `LayerView.value` find it.
V16_INLINE const char *row_at(const struct sluice_kv_rows *rows, long p) {
    return (const char *)rows->blocks[p >> rows->shift] + rows->offset + (p & ((1L << rows->shift) - 1)) * rows->row_bytes;
}

/// `finish` of MatMul.swift: the lane sum, then one fused multiply-add per element past `from`.
V16_INLINE float finish(v16f acc, const float *q, const char *key, long from, long d, const int half) {
    float sum = lane_sum16(acc);
    for (long k = from; k < d; k++) sum = __builtin_fmaf(q[k], element_at(key, k, half), sum);
    return sum;
}

V16_INLINE float dot(const float *q, const char *key, long d, const int half) {
    const size_t width = half ? 2 : 4;
    v16f acc = splat16(0);
    long k = 0;
    for (; k + 16 <= d; k += 16) acc = fma16(load16f(q + k), load16(key + k * width, half), acc);
    return finish(acc, q, key, k, d, half);
}

/// `portableAttentionScores`: eight keys at a time, then one.
V16_INLINE void attention_scores(const float *q, const struct sluice_kv_rows *keys, long d, float scale, long first,
                                 long last, float *scores, const int half) {
    const size_t width = half ? 2 : 4;
    long p = first;
    for (; p + 8 <= last + 1; p += 8) {
        const char *row[8];
        v16f acc[8];
        for (int j = 0; j < 8; j++) {
            row[j] = row_at(keys, p + j);
            acc[j] = splat16(0);
        }
        long k = 0;
        for (; k + 16 <= d; k += 16) {
            const v16f x = load16f(q + k);
            for (int j = 0; j < 8; j++) acc[j] = fma16(x, load16(row[j] + k * width, half), acc[j]);
        }
        for (int j = 0; j < 8; j++) scores[p - first + j] = finish(acc[j], q, row[j], k, d, half) * scale;
    }
    for (; p <= last; p++) scores[p - first] = dot(q, row_at(keys, p), d, half) * scale;
}

/// `portableGroupScores4`: four queries against four keys at a time, then one key.
V16_INLINE void group_scores4(const float *q, const struct sluice_kv_rows *keys, long d, float scale, long first, long last,
                              float *scores, long stride, const int half) {
    const size_t width = half ? 2 : 4;
    long p = first;
    for (; p + 4 <= last + 1; p += 4) {
        const char *row[4];
        for (int j = 0; j < 4; j++) row[j] = row_at(keys, p + j);
        v16f acc[4][4];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) acc[i][j] = splat16(0);
        long k = 0;
        for (; k + 16 <= d; k += 16) {
            v16f x[4];
            for (int i = 0; i < 4; i++) x[i] = load16f(q + i * d + k);
            for (int j = 0; j < 4; j++) {
                const v16f u = load16(row[j] + k * width, half);
                for (int i = 0; i < 4; i++) acc[i][j] = fma16(x[i], u, acc[i][j]);
            }
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) scores[i * stride + (p - first) + j] = finish(acc[i][j], q + i * d, row[j], k, d, half) * scale;
    }
    for (; p <= last; p++) {
        const char *row = row_at(keys, p);
        for (int i = 0; i < 4; i++) scores[i * stride + (p - first)] = dot(q + i * d, row, d, half) * scale;
    }
}

/// `out[c] = Σ_p w_i[p] · v[p][c]` for HEADS heads (head i's weights at `weights + i·stride`,
/// output at `out + i·d`) and VECTORS groups of 16 columns from `k`: each element one chain of
/// fused multiply-adds from zero over positions in increasing order.
V16_INLINE void values_block(const int HEADS, const int VECTORS, const float *weights, long stride,
                             const struct sluice_kv_rows *values, long d, long first, long last, long k, float *out,
                             const int half) {
    const size_t width = half ? 2 : 4;
    v16f acc[4][8];
    for (int i = 0; i < HEADS; i++)
        for (int v = 0; v < VECTORS; v++) acc[i][v] = splat16(0);
    for (long p = first; p <= last; p++) {
        const char *row = row_at(values, p) + k * width;
        for (int v = 0; v < VECTORS; v++) {
            const v16f u = load16(row + 16 * v * width, half);
            for (int i = 0; i < HEADS; i++) acc[i][v] = fma16(splat16(weights[i * stride + (p - first)]), u, acc[i][v]);
        }
    }
    for (int i = 0; i < HEADS; i++)
        for (int v = 0; v < VECTORS; v++) store16f(out + i * d + k + 16 * v, acc[i][v]);
}

/// The columns past the last 16 of HEADS heads, one at a time.
V16_INLINE void values_tail(const int HEADS, const float *weights, long stride, const struct sluice_kv_rows *values, long d,
                            long first, long last, long k, float *out, const int half) {
    for (; k < d; k++) {
        float o[4] = {0, 0, 0, 0};
        for (long p = first; p <= last; p++) {
            const float v = element_at(row_at(values, p), k, half);
            for (int i = 0; i < HEADS; i++) o[i] = __builtin_fmaf(weights[i * stride + (p - first)], v, o[i]);
        }
        for (int i = 0; i < HEADS; i++) out[i * d + k] = o[i];
    }
}

V16_INLINE void weighted_values(const float *weights, const struct sluice_kv_rows *values, long d, long first, long last,
                                float *out, const int half) {
    long k = 0;
    for (; k + 128 <= d; k += 128) values_block(1, 8, weights, 0, values, d, first, last, k, out, half);
    for (; k + 16 <= d; k += 16) values_block(1, 1, weights, 0, values, d, first, last, k, out, half);
    values_tail(1, weights, 0, values, d, first, last, k, out, half);
}

V16_INLINE void group_weighted_values4(const float *weights, long stride, const struct sluice_kv_rows *values, long d,
                                       long first, long last, float *out, const int half) {
    long k = 0;
    for (; k + 64 <= d; k += 64) values_block(4, 4, weights, stride, values, d, first, last, k, out, half);
    for (; k + 16 <= d; k += 16) values_block(4, 1, weights, stride, values, d, first, last, k, out, half);
    values_tail(4, weights, stride, values, d, first, last, k, out, half);
}

void VARIANT(sluice_attention_scores)(const float *q, struct sluice_kv_rows keys, long d, float scale, long first, long last,
                                  float *scores) {
    if (keys.half) attention_scores(q, &keys, d, scale, first, last, scores, 1);
    else attention_scores(q, &keys, d, scale, first, last, scores, 0);
}

void VARIANT(sluice_group_scores4)(const float *q, struct sluice_kv_rows keys, long d, float scale, long first, long last,
                               float *scores, long stride) {
    if (keys.half) group_scores4(q, &keys, d, scale, first, last, scores, stride, 1);
    else group_scores4(q, &keys, d, scale, first, last, scores, stride, 0);
}

void VARIANT(sluice_weighted_values)(const float *weights, struct sluice_kv_rows values, long d, long first, long last,
                                 float *out) {
    if (values.half) weighted_values(weights, &values, d, first, last, out, 1);
    else weighted_values(weights, &values, d, first, last, out, 0);
}

void VARIANT(sluice_group_weighted_values4)(const float *weights, long stride, struct sluice_kv_rows values, long d, long first,
                                        long last, float *out) {
    if (values.half) group_weighted_values4(weights, stride, &values, d, first, last, out, 1);
    else group_weighted_values4(weights, stride, &values, d, first, last, out, 0);
}
