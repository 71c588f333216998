// The float (`--precision float32`) matrix products, operation for operation those of MatMul.swift's
// `dotProduct` (vector16.h). Every output element is the same accumulator as in Swift (16-lane fused
// multiply-adds over k, `laneSum`, then one fused multiply-add per element past the last 16), so
// every variant agrees with Swift to the bit (MatMulTests). A translation unit per variant includes
// this after vector16.h, with `VARIANT(name)` naming its functions: f32_matmul_avx2.c (AVX2 + FMA)
// and f32_matmul_baseline.c (the build's baseline).

typedef int8_t v16c __attribute__((ext_vector_type(16)));

/// `finish` of MatMul.swift.
V16_INLINE float finish(v16f acc, const float *a, const float *b, long from, long to) {
    float sum = lane_sum16(acc);
    for (long k = from; k < to; k++) sum = __builtin_fmaf(a[k], b[k], sum);
    return sum;
}

V16_INLINE float dot(const float *a, const float *b, long count) {
    v16f acc = splat16(0);
    long k = 0;
    for (; k + 16 <= count; k += 16) acc = fma16(load16f(a + k), load16f(b + k), acc);
    return finish(acc, a, b, k, count);
}

float VARIANT(sluice_dot)(const float *a, const float *b, long count) { return dot(a, b, count); }

/// One packed row's chunk: 16 quants times their scale, less the offset (what `dequantizeRow` gives).
V16_INLINE v16f chunk(const int8_t *quants, const float *scales, const float *mins, long offset, long scale_index) {
    v16c q;
    memcpy(&q, quants + offset, sizeof q);
    const v16f w = scales[scale_index] * __builtin_convertvector(q, v16f);
    return mins ? w - mins[scale_index] : w;
}

/// Four packed rows (a quad, from its lane 0) times TOKENS activation rows.
V16_INLINE void fused_tile(const int TOKENS, const int8_t *quants, const float *scales, const float *mins, int scale_shift,
                           const float *x, long columns, float *y, long out_stride) {
    v16f acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int t = 0; t < TOKENS; t++) acc[i][t] = splat16(0);
    for (long c = 0; c < columns / 16; c++) {
        const long offset = 64 * c, scale_index = 4 * (c >> scale_shift), k = 16 * c;
        v16f v[4];
        for (int t = 0; t < TOKENS; t++) v[t] = load16f(x + t * columns + k);
        for (int i = 0; i < 4; i++) {
            const v16f u = chunk(quants, scales, mins, offset + 16 * i, scale_index + i);
            for (int t = 0; t < TOKENS; t++) acc[i][t] = fma16(u, v[t], acc[i][t]);
        }
    }
    for (int t = 0; t < TOKENS; t++)
        for (int i = 0; i < 4; i++) y[t * out_stride + i] = lane_sum16(acc[i][t]);
}

V16_INLINE void packed_rows(const int8_t *quants, const float *scales, const float *mins, long columns, long scales_per_row,
                            int scale_shift, long first_row, long last_row, const float *x, long first_token,
                            long last_token, float *y, long out_stride) {
    long r = first_row;
    for (; r + 4 <= last_row; r += 4) {
        const int8_t *q = quants + (r >> 2) * 4 * columns;
        const long scale_base = (r >> 2) * 4 * scales_per_row;
        const float *s = scales + scale_base, *m = mins ? mins + scale_base : NULL;
        long t = first_token;
        for (; t + 4 <= last_token; t += 4) fused_tile(4, q, s, m, scale_shift, x + t * columns, columns, y + t * out_stride + r, out_stride);
        if (t + 2 <= last_token) {
            fused_tile(2, q, s, m, scale_shift, x + t * columns, columns, y + t * out_stride + r, out_stride);
            t += 2;
        }
        if (t < last_token) fused_tile(1, q, s, m, scale_shift, x + t * columns, columns, y + t * out_stride + r, out_stride);
    }
    for (; r < last_row; r++) {
        const int8_t *q = quants + (r >> 2) * 4 * columns + 16 * (r & 3);
        const long scale_base = (r >> 2) * 4 * scales_per_row + (r & 3);
        const float *s = scales + scale_base, *m = mins ? mins + scale_base : NULL;
        for (long t = first_token; t < last_token; t++) {
            v16f acc = splat16(0);
            for (long c = 0; c < columns / 16; c++) acc = fma16(chunk(q, s, m, 64 * c, 4 * (c >> scale_shift)), load16f(x + t * columns + 16 * c), acc);
            y[t * out_stride + r] = lane_sum16(acc);
        }
    }
}

void VARIANT(sluice_f32_packed_rows)(const int8_t *quants, const float *scales, const float *mins, long columns,
                                 long scales_per_row, int scale_shift, long first_row, long last_row, const float *x,
                                 long first_token, long last_token, float *y, long out_stride) {
    if (mins) packed_rows(quants, scales, mins, columns, scales_per_row, scale_shift, first_row, last_row, x, first_token, last_token, y, out_stride);
    else packed_rows(quants, scales, NULL, columns, scales_per_row, scale_shift, first_row, last_row, x, first_token, last_token, y, out_stride);
}

void VARIANT(sluice_f32_decode_packed_row)(const int8_t *quants, const float *scales, const float *mins, long columns,
                                       long scales_per_row, int scale_shift, long row, float *out) {
    const int8_t *q = quants + (row >> 2) * 4 * columns + 16 * (row & 3);
    const long scale_base = (row >> 2) * 4 * scales_per_row + (row & 3);
    const float *s = scales + scale_base, *m = mins ? mins + scale_base : NULL;
    for (long c = 0; c < columns / 16; c++) store16f(out + 16 * c, chunk(q, s, m, 64 * c, 4 * (c >> scale_shift)));
}

/// Four weight rows times four activation rows.
V16_INLINE void tile4x4(const float *w, const float *x, long columns, float *y, long out_stride) {
    v16f acc[4][4];
    for (int r = 0; r < 4; r++)
        for (int t = 0; t < 4; t++) acc[r][t] = splat16(0);
    long k = 0;
    for (; k + 16 <= columns; k += 16) {
        v16f a[4];
        for (int r = 0; r < 4; r++) a[r] = load16f(w + r * columns + k);
        for (int t = 0; t < 4; t++) {
            const v16f u = load16f(x + t * columns + k);
            for (int r = 0; r < 4; r++) acc[r][t] = fma16(a[r], u, acc[r][t]);
        }
    }
    for (int r = 0; r < 4; r++)
        for (int t = 0; t < 4; t++) y[t * out_stride + r] = finish(acc[r][t], w + r * columns, x + t * columns, k, columns);
}

/// Four weight rows times one activation row.
V16_INLINE void tile4x1(const float *w, const float *x, long columns, float *y) {
    v16f acc[4];
    for (int r = 0; r < 4; r++) acc[r] = splat16(0);
    long k = 0;
    for (; k + 16 <= columns; k += 16) {
        const v16f v = load16f(x + k);
        for (int r = 0; r < 4; r++) acc[r] = fma16(load16f(w + r * columns + k), v, acc[r]);
    }
    for (int r = 0; r < 4; r++) y[r] = finish(acc[r], w + r * columns, x, k, columns);
}

void VARIANT(sluice_f32_row_tiles)(const float *w, long rows, const float *x, long tokens, long columns, float *y,
                               long out_stride) {
    if (rows == 4) {
        long t = 0;
        for (; t + 4 <= tokens; t += 4) tile4x4(w, x + t * columns, columns, y + t * out_stride, out_stride);
        for (; t < tokens; t++) tile4x1(w, x + t * columns, columns, y + t * out_stride);
    } else {
        for (long r = 0; r < rows; r++)
            for (long t = 0; t < tokens; t++) y[t * out_stride + r] = dot(w + r * columns, x + t * columns, columns);
    }
}
