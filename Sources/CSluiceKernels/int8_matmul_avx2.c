// The integer matrix kernels for CPUs with AVX2 but no AVX-512 VNNI: the same packed weights,
// the same integers and the same float steps per output as int8_matmul.c's VNNI kernels, so
// every output has the same bits and a fleet's AVX2 machines compute the tokens its AVX-512
// machines do (and continue their checkpoints).
//
// AVX2 has no u8 x s8 dot product that cannot saturate (vpmaddubsw's pair sums overflow int16
// at 255 · 127 · 2), so the weights are widened to int16 and multiplied with vpmaddwd (exact
// int32 pair sums); integer sums are exact whatever their order, and the float steps per
// block are the VNNI tile's, lane for lane.
#include "sluice_kernels.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "cpu_targets.h"

// Fused multiply-adds only where written: contracting a product and a sum would change bits.
#pragma clang fp contract(off)

#if defined(SLUICE_X86_64)
#include <immintrin.h>

#pragma clang attribute push(SLUICE_AVX2_TARGET, apply_to = function)
#include "int8_row_product.h"

/// Tokens per tile: a panel keeps two integer accumulators per token, four widened weight
/// registers and the activation broadcasts in the 16 ymm registers. Four measured fastest: at
/// 32 tokens, 0.63 ms for 2048 x 640 int16 against 0.66-0.67 ms with five or six (spilling)
/// and 0.68 ms for tiles of half panels (8 rows) of six tokens, which broadcast twice as often.
#define SLUICE_AVX2_MAX_TOKENS 4
/// Up to this many tokens, one panel at a time (streaming the weights); beyond, two panels share
/// each block's widened activations.
#define SLUICE_AVX2_LONE_PANEL_TOKENS 1
/// How far ahead a lone token's tile prefetches its weights.
#define SLUICE_AVX2_PREFETCH_BYTES 4096

/// Eight int32 lanes saturated to int8, in order, in the low 8 bytes.
static inline __attribute__((always_inline)) __m128i saturate_to_bytes(__m256i v) {
    const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_packs_epi16(words, words);
}

static inline __attribute__((always_inline)) float maximum_of(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline __attribute__((always_inline)) int sum_of(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/// int8_matmul.c's `quantize_block`, eight lanes at a time: the same maximum, the same
/// roundings (to nearest even), saturations and fused residual, so the same bytes, step and sum.
static inline __attribute__((always_inline))
int quantize_block(const float *x, const int block, int8_t *q, int8_t *low, float *step) {
    __m256 v[4];
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 magnitude = _mm256_setzero_ps(), unordered = _mm256_setzero_ps();
    for (int i = 0; i < block / 8; i++) {
        v[i] = _mm256_loadu_ps(x + 8 * i);
        magnitude = _mm256_max_ps(magnitude, _mm256_andnot_ps(sign, v[i]));
        unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(v[i], v[i], _CMP_UNORD_Q));
    }
    const float amax = maximum_of(magnitude);
    if (_mm256_movemask_ps(unordered) || !(amax > 0)) {  // all zeros, or a NaN (as the VNNI quantizer)
        memset(q, 0, (size_t)block);
        if (low) memset(low, 0, (size_t)block);
        *step = 0;
        return 0;
    }
    const float scale = amax / 127.0f;
    const __m256 inverse = _mm256_set1_ps(127.0f / amax);
    __m256i total = _mm256_setzero_si256();
    for (int i = 0; i < block / 8; i++) {
        __m256i qi = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inverse));
        _mm_storel_epi64((__m128i *)(q + 8 * i), saturate_to_bytes(qi));
        if (low) {
            const __m256 residual = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(qi), _mm256_set1_ps(scale), v[i]);
            const __m256i li = _mm256_cvtps_epi32(_mm256_mul_ps(residual, _mm256_set1_ps(256.0f / scale)));
            const __m128i packed = saturate_to_bytes(li);
            _mm_storel_epi64((__m128i *)(low + 8 * i), packed);
            qi = _mm256_add_epi32(_mm256_slli_epi32(qi, 8), _mm256_cvtepi8_epi32(packed));
        }
        total = _mm256_add_epi32(total, qi);
    }
    *step = low ? scale / 256.0f : scale;
    return sum_of(total);
}

void sluice_quantize_rows_avx2(const float *x, int tokens, int columns, int block,
                               int8_t *xq, int8_t *xq_low, float *scale, float *scaled_sum, int32_t *sum) {
    const int blocks = columns / block;
    for (int t = 0; t < tokens; t++) {
        for (int b = 0; b < blocks; b++) {
            const size_t offset = (size_t)t * columns + (size_t)b * block;
            int8_t *low = xq_low ? xq_low + offset : NULL;
            float s;
            int total = block == 32 ? quantize_block(x + offset, 32, xq + offset, low, &s)
                                    : quantize_block(x + offset, 16, xq + offset, low, &s);
            scale[(size_t)t * blocks + b] = s;
            scaled_sum[(size_t)t * blocks + b] = s * (float)total;
            sum[(size_t)t * blocks + b] = total;
        }
    }
}

/// One panel's integer sums over one block for TOKENS tokens, one row per lane (rows 0-7 in
/// `sums[t][0]`, 8-15 in `sums[t][1]`), starting from `start[t]`: `w` at the block's first line, `x[t]` the block's
/// activations as int16 pairs, columns 0 and 2 of each group of four in one 32-bit word, 1 and 3
/// in the next.
///
/// Each row's four bytes of a line are one 32-bit lane; its even bytes (columns 0, 2) and odd
/// bytes (1, 3) widened in place to int16 pairs meet those words in vpmaddwd, so the sums land
/// in the row's own lane with no horizontal step. Both halves of a line share each broadcast.
/// The broadcasts come from memory (load ports only): one 16-byte load shuffled into four with
/// vpshufd took 0.80 instead of 0.62 ms for 2048 x 640 int16 at 32 tokens (the vector ALUs are
/// the bottleneck). Other exact routes were slower too: vpmovzxbw-widened lines with a vphaddd
/// per block (0.68 ms, half panels), and two bytes of activation as two passes instead of one
/// int16 (1.2 ms).
static inline __attribute__((always_inline))
void panel_sums(const int TOKENS, const int BLOCK, const uint8_t *w, int32_t x[SLUICE_AVX2_MAX_TOKENS][16],
                const __m256i start[SLUICE_AVX2_MAX_TOKENS], __m256i sums[SLUICE_AVX2_MAX_TOKENS][2]) {
    const __m256i low_bytes = _mm256_set1_epi16(0x00FF);
    for (int t = 0; t < TOKENS; t++) sums[t][0] = sums[t][1] = start[t];
    for (int g = 0; g < BLOCK / 4; g++) {
        const __m256i line0 = _mm256_loadu_si256((const __m256i *)(w + 64 * g));
        const __m256i line1 = _mm256_loadu_si256((const __m256i *)(w + 64 * g + 32));
        const __m256i even0 = _mm256_and_si256(line0, low_bytes), odd0 = _mm256_srli_epi16(line0, 8);
        const __m256i even1 = _mm256_and_si256(line1, low_bytes), odd1 = _mm256_srli_epi16(line1, 8);
        for (int t = 0; t < TOKENS; t++) {
            const __m256i x02 = _mm256_set1_epi32(x[t][2 * g]);
            sums[t][0] = _mm256_add_epi32(sums[t][0], _mm256_madd_epi16(even0, x02));
            sums[t][1] = _mm256_add_epi32(sums[t][1], _mm256_madd_epi16(even1, x02));
            const __m256i x13 = _mm256_set1_epi32(x[t][2 * g + 1]);
            sums[t][0] = _mm256_add_epi32(sums[t][0], _mm256_madd_epi16(odd0, x13));
            sums[t][1] = _mm256_add_epi32(sums[t][1], _mm256_madd_epi16(odd1, x13));
        }
    }
}

/// PANELS (1 or 2) panels of 16 rows times TOKENS (1-4) tokens, as int8_matmul.c's `tile`:
/// per block and output element the same integer, then the same float operations in the same
/// order.
static inline __attribute__((always_inline))
void tile(const int PANELS, const int TOKENS, const int KIND, const int LOW,
          const uint8_t *w, const void *s, const float *m, int32_t bias, size_t panel_bytes, size_t panel_scales,
          int columns, int blocks, const int8_t *xq, const int8_t *xl, const float *xs, const float *xss,
          const int32_t *xsum, float *y, int y_stride, int rows0, int rows1) {
    const int BLOCK = KIND == SLUICE_WEIGHTS_SCALED16 ? 16 : 32;
    __m256 acc[2][2][SLUICE_AVX2_MAX_TOKENS];  // [panel][half][token]
    for (int p = 0; p < PANELS; p++)
        for (int h = 0; h < 2; h++)
            for (int t = 0; t < TOKENS; t++) acc[p][h][t] = _mm256_setzero_ps();

    for (int b = 0; b < blocks; b++) {
        if (PANELS == 1 && TOKENS == 1) {
            // A lone token streams the weights: fetching 4 KiB ahead (across panel ends too; a
            // prefetch past the matrix is harmless) measured 1.8-1.9 ms instead of 2.3-2.6 ms for
            // 65536 x 640 int16 on one thread (the VNNI kernel: 1.8-2.3 ms in the same runs).
            for (int i = 0; i < BLOCK / 4; i++)
                _mm_prefetch((const char *)(w + (size_t)b * BLOCK * 16 + SLUICE_AVX2_PREFETCH_BYTES + 64 * i), _MM_HINT_T0);
        }
        // The block's activations, once for every panel and half: each group of four columns
        // reordered to 0 2 1 3 and widened to int16 (two 32-bit words per group). Two bytes make
        // one int16, 256 q + low (within ±32640), so they cost one product as one byte does: the
        // VNNI kernel's integer (Σ u q) · 256 + Σ u low, and exact in int32 (|Σ| < 32 · 255 · 2^15).
        _Alignas(32) int32_t x[SLUICE_AVX2_MAX_TOKENS][16];
        const __m128i order = _mm_setr_epi8(0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15);
        for (int t = 0; t < TOKENS; t++) {
            for (int i = 0; i < BLOCK / 16; i++) {
                const size_t at = (size_t)t * columns + (size_t)b * BLOCK + 16 * i;
                __m256i v = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(xq + at)), order));
                if (LOW) {
                    const __m256i low = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(xl + at)), order));
                    v = _mm256_add_epi16(_mm256_slli_epi16(v, 8), low);
                }
                _mm256_store_si256((__m256i *)&x[t][8 * i], v);
            }
        }
        // Signed types: Σ (u − bias) x = Σ u x − bias Σ x, the VNNI kernel's integer; starting
        // the sums at −bias Σ x gives it (int32 arithmetic wraps the same in any order).
        __m256i start[SLUICE_AVX2_MAX_TOKENS];
        for (int t = 0; t < TOKENS; t++)
            start[t] = KIND == SLUICE_WEIGHTS_AFFINE32
                ? _mm256_setzero_si256()
                : _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_set1_epi32(bias * xsum[(size_t)t * blocks + b]));
        for (int p = 0; p < PANELS; p++) {
            __m256i sums[SLUICE_AVX2_MAX_TOKENS][2];
            panel_sums(TOKENS, BLOCK, w + p * panel_bytes + (size_t)b * BLOCK * 16, x, start, sums);
            for (int h = 0; h < 2; h++) {
                __m256i dot[SLUICE_AVX2_MAX_TOKENS];
                for (int t = 0; t < TOKENS; t++) dot[t] = sums[t][h];
                const size_t at = p * panel_scales + 16 * (size_t)b + 8 * h;
                const __m256 sv = KIND == SLUICE_WEIGHTS_HALF_SCALED32
                    ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)s + at)))
                    : _mm256_loadu_ps((const float *)s + at);
                for (int t = 0; t < TOKENS; t++) {
                    const __m256 scale = _mm256_mul_ps(sv, _mm256_set1_ps(xs[(size_t)t * blocks + b]));
                    acc[p][h][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[t]), scale, acc[p][h][t]);
                    if (KIND == SLUICE_WEIGHTS_AFFINE32)
                        acc[p][h][t] = _mm256_fnmadd_ps(_mm256_loadu_ps(m + at), _mm256_set1_ps(xss[(size_t)t * blocks + b]), acc[p][h][t]);
                }
            }
        }
    }
    for (int p = 0; p < PANELS; p++) {
        const int valid = p == 0 ? rows0 : rows1;
        for (int h = 0; h < 2; h++) {
            const int lanes = valid - 8 * h >= 8 ? 8 : valid - 8 * h;
            if (lanes <= 0) continue;
            const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            for (int t = 0; t < TOKENS; t++) {
                float *out = y + (size_t)t * y_stride + 16 * p + 8 * h;
                if (lanes == 8) _mm256_storeu_ps(out, acc[p][h][t]);
                else _mm256_maskstore_ps(out, mask, acc[p][h][t]);
            }
        }
    }
}

#define SLUICE_TILE(P, T, K, L) \
    static void tile_##P##_##T##_##K##_##L(const uint8_t *w, const void *s, const float *m, int32_t bias, size_t pb, size_t ps, \
                                           int columns, int blocks, const int8_t *xq, const int8_t *xl, const float *xs, \
                                           const float *xss, const int32_t *xsum, float *y, int y_stride, int rows0, \
                                           int rows1) { \
        tile(P, T, K, L, w, s, m, bias, pb, ps, columns, blocks, xq, xl, xs, xss, xsum, y, y_stride, rows0, rows1); \
    }
#define SLUICE_TILES(K, L) \
    SLUICE_TILE(1, 1, K, L) SLUICE_TILE(1, 2, K, L) SLUICE_TILE(1, 3, K, L) SLUICE_TILE(1, 4, K, L) \
    SLUICE_TILE(2, 1, K, L) SLUICE_TILE(2, 2, K, L) SLUICE_TILE(2, 3, K, L) SLUICE_TILE(2, 4, K, L)
SLUICE_TILES(0, 0)
SLUICE_TILES(1, 0)
SLUICE_TILES(2, 0)
SLUICE_TILES(0, 1)
SLUICE_TILES(1, 1)
SLUICE_TILES(2, 1)

typedef void (*tile_function)(const uint8_t *, const void *, const float *, int32_t, size_t, size_t, int, int,
                              const int8_t *, const int8_t *, const float *, const float *, const int32_t *, float *,
                              int, int, int);

#define SLUICE_TABLE(K, L) { \
        {tile_1_1_##K##_##L, tile_1_2_##K##_##L, tile_1_3_##K##_##L, tile_1_4_##K##_##L}, \
        {tile_2_1_##K##_##L, tile_2_2_##K##_##L, tile_2_3_##K##_##L, tile_2_4_##K##_##L}, \
    }
/// Indexed [two bytes][kind][panels - 1][tokens - 1].
static const tile_function tiles[2][3][2][SLUICE_AVX2_MAX_TOKENS] = {
    {SLUICE_TABLE(0, 0), SLUICE_TABLE(1, 0), SLUICE_TABLE(2, 0)},
    {SLUICE_TABLE(0, 1), SLUICE_TABLE(1, 1), SLUICE_TABLE(2, 1)},
};

static int rows_in_panel(int rows, int panel) {
    const int left = rows - 16 * panel;
    return left >= 16 ? 16 : left <= 0 ? 0 : left;
}

void sluice_int8_matmul_avx2(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                             int columns, int rows, int panel_begin, int panel_end,
                             const int8_t *xq, const int8_t *xq_low, const float *xscale, const float *xscaled_sum,
                             const int32_t *xsum, int tokens, float *y, int y_stride) {
    const int blocks = columns / (kind == SLUICE_WEIGHTS_SCALED16 ? 16 : 32);
    const size_t panel_bytes = (size_t)16 * columns, panel_scales = (size_t)16 * blocks;
    const size_t scale_bytes = kind == SLUICE_WEIGHTS_HALF_SCALED32 ? 2 : 4;
    const tile_function (*table)[SLUICE_AVX2_MAX_TOKENS] = tiles[xq_low != NULL][kind];
    for (int p = panel_begin, panels = 1; p < panel_end; p += panels) {
        panels = p + 1 < panel_end && tokens > SLUICE_AVX2_LONE_PANEL_TOKENS ? 2 : 1;
        const uint8_t *w = weights + (size_t)p * panel_bytes;
        const void *s = (const uint8_t *)scales + (size_t)p * panel_scales * scale_bytes;
        const float *m = offsets ? offsets + (size_t)p * panel_scales : NULL;
        for (int t = 0; t < tokens; t += SLUICE_AVX2_MAX_TOKENS) {
            const int count = tokens - t < SLUICE_AVX2_MAX_TOKENS ? tokens - t : SLUICE_AVX2_MAX_TOKENS;
            table[panels - 1][count - 1](w, s, m, bias, panel_bytes, panel_scales, columns, blocks,
                                         xq + (size_t)t * columns, xq_low ? xq_low + (size_t)t * columns : NULL,
                                         xscale + (size_t)t * blocks, xscaled_sum + (size_t)t * blocks,
                                         xsum + (size_t)t * blocks, y + (size_t)t * y_stride + 16 * p, y_stride,
                                         rows_in_panel(rows, p), rows_in_panel(rows, p + 1));
        }
    }
}

float sluice_int8_row_product_avx2(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                                   int columns, int row, const int8_t *xq, const int8_t *xq_low, const float *xscale,
                                   const float *xscaled_sum, const int32_t *xsum) {
    return int8_row_product(weights, kind, scales, offsets, bias, columns, row, xq, xq_low, xscale, xscaled_sum, xsum);
}

int sluice_collect_near_maximum_avx2(const float *values, int count, float margin, float *maximum, int32_t first_row,
                                     int32_t *rows, float *kept) {
    // argmax_head.c's AVX-512 scan, sixteen values at a time as there, so it keeps the same rows.
    float best = *maximum;
    int found = 0;
    for (int i = 0; i < count; i += 16) {
        __m256 v0, v1;
        if (count - i >= 16) {
            v0 = _mm256_loadu_ps(values + i);
            v1 = _mm256_loadu_ps(values + i + 8);
        } else {
            _Alignas(32) float tail[16];
            for (int j = 0; j < 16; j++) tail[j] = i + j < count ? values[i + j] : -INFINITY;
            v0 = _mm256_load_ps(tail);
            v1 = _mm256_load_ps(tail + 8);
        }
        const float top = maximum_of(_mm256_max_ps(v0, v1));
        if (top > best) best = top;
        // The threshold only rises, so rows kept early are a superset of those the final one keeps.
        const __m256 threshold = _mm256_set1_ps(best - margin);
        unsigned near = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v0, threshold, _CMP_GE_OQ))
            | (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v1, threshold, _CMP_GE_OQ)) << 8;
        if (count - i < 16) near &= (1u << (count - i)) - 1;
        while (near) {
            const int at = i + __builtin_ctz(near);
            rows[found] = first_row + at;
            kept[found++] = values[at];
            near &= near - 1;
        }
    }
    *maximum = best;
    return found;
}

#pragma clang attribute pop

#else

void sluice_quantize_rows_avx2(const float *x, int tokens, int columns, int block,
                               int8_t *xq, int8_t *xq_low, float *scale, float *scaled_sum, int32_t *sum) {
    (void)x; (void)tokens; (void)columns; (void)block; (void)xq; (void)xq_low; (void)scale; (void)scaled_sum; (void)sum;
}

void sluice_int8_matmul_avx2(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                             int columns, int rows, int panel_begin, int panel_end,
                             const int8_t *xq, const int8_t *xq_low, const float *xscale, const float *xscaled_sum,
                             const int32_t *xsum, int tokens, float *y, int y_stride) {
    (void)weights; (void)kind; (void)scales; (void)offsets; (void)bias; (void)columns; (void)rows; (void)panel_begin;
    (void)panel_end; (void)xq; (void)xq_low; (void)xscale; (void)xscaled_sum; (void)xsum; (void)tokens; (void)y;
    (void)y_stride;
}

float sluice_int8_row_product_avx2(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                                   int columns, int row, const int8_t *xq, const int8_t *xq_low, const float *xscale,
                                   const float *xscaled_sum, const int32_t *xsum) {
    (void)weights; (void)kind; (void)scales; (void)offsets; (void)bias; (void)columns; (void)row; (void)xq;
    (void)xq_low; (void)xscale; (void)xscaled_sum; (void)xsum;
    return 0;
}

int sluice_collect_near_maximum_avx2(const float *values, int count, float margin, float *maximum, int32_t first_row,
                                     int32_t *rows, float *kept) {
    (void)values; (void)count; (void)margin; (void)maximum; (void)first_row; (void)rows; (void)kept;
    return 0;
}

#endif
