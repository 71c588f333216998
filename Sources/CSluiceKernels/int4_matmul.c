// Int8 matrix products over 4-bit weights stored two per byte (see sluice_int4.h).
//
// A lone sequence's decode step reads every weight once, so it runs at the speed memory
// delivers weights: the byte layout (int8_matmul.c) reads 1.25 bytes per Q4_K weight with
// its float scales and offsets, this one 0.58 (the file's own 0.5625 plus alignment).
// Each 64-byte line is split in registers (and, shift) into the two lines of bytes the
// byte layout holds, and fed to the same `vpdpbusd`s: the integer sums are the same
// integers, the scales the same floats, and the float operations the same in the same
// order, so every output is bit for bit the byte kernel's.
#include "sluice_int4.h"
#include "sluice_kernels.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "cpu_targets.h"

// Fused multiply-adds only where written: contracting a product and a sum would change bits.
#pragma clang fp contract(off)

#if defined(SLUICE_X86_64)
#define SLUICE_HAVE_INT4 1
#include <immintrin.h>
#endif

int sluice_int4_available(void) {
#ifdef SLUICE_HAVE_INT4
    return sluice_cpu_variant() >= SLUICE_CPU_AVX512_VNNI;
#else
    return 0;
#endif
}

#ifdef SLUICE_HAVE_INT4
#pragma clang attribute push(SLUICE_AVX512_VNNI_TARGET, apply_to = function)

/// Tokens per tile, as in the byte kernel: 2 panels x 6 tokens of accumulators in registers.
#define SLUICE_INT4_MAX_TOKENS 6

/// One 64-byte line of each panel (eight columns of 16 rows) times eight activation bytes of
/// each token, into one accumulator per panel and token (the wide tiles' path).
static inline __attribute__((always_inline))
void accumulate_line(const int PANELS, const int TOKENS, const uint8_t *w, size_t panel_bytes, const int8_t *x,
                     int columns, __m512i dot[2][SLUICE_INT4_MAX_TOKENS]) {
    const __m512i nibble = _mm512_set1_epi8(0x0F);
    __m512i low[2], high[2];
    for (int p = 0; p < PANELS; p++) {
        const __m512i v = _mm512_loadu_si512(w + p * panel_bytes);
        low[p] = _mm512_and_si512(v, nibble);
        high[p] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
    }
    for (int t = 0; t < TOKENS; t++) {
        int32_t first, second;
        memcpy(&first, x + (size_t)t * columns, 4);
        memcpy(&second, x + (size_t)t * columns + 4, 4);
        const __m512i xa = _mm512_set1_epi32(first), xb = _mm512_set1_epi32(second);
        for (int p = 0; p < PANELS; p++) {
            dot[p][t] = _mm512_dpbusd_epi32(dot[p][t], low[p], xa);
            dot[p][t] = _mm512_dpbusd_epi32(dot[p][t], high[p], xb);
        }
    }
}

/// Block `b`'s integer sums for a narrow tile (few panels x tokens, so that every sum below fits
/// in registers), in `dot`: each line is split once, for both activation bytes, into its low
/// nibbles and its high nibbles times 16 (one `and` each: 16 u <= 240 is still a byte), and the
/// two go to separate accumulators (two independent `vpdpbusd` chains where one token leaves
/// their latency exposed). The sums of 16 u x are multiples of 16, so the shift back is exact:
/// 256 (Σ u q) + Σ u low, the byte kernel's integer.
static inline __attribute__((always_inline))
void narrow_block(const int PANELS, const int TOKENS, const int LOW, const uint8_t *wb, size_t panel_bytes,
                  const int8_t *xq, const int8_t *xl, int columns, __m512i dot[2][SLUICE_INT4_MAX_TOKENS]) {
    const __m512i low_mask = _mm512_set1_epi8(0x0F), high_mask = _mm512_set1_epi8((char)0xF0);
    __m512i lows[2][2][3], highs[2][2][3];  // [half][panel][token]
    for (int h = 0; h <= LOW; h++)
        for (int p = 0; p < PANELS; p++)
            for (int t = 0; t < TOKENS; t++) lows[h][p][t] = highs[h][p][t] = _mm512_setzero_si512();
    for (int j = 0; j < 4; j++) {
        __m512i low[2], high[2];
        for (int p = 0; p < PANELS; p++) {
            const __m512i v = _mm512_loadu_si512(wb + 64 * j + p * panel_bytes);
            low[p] = _mm512_and_si512(v, low_mask);
            high[p] = _mm512_and_si512(v, high_mask);
        }
        for (int h = 0; h <= LOW; h++) {
            const int8_t *x = (h == 0 ? xq : xl) + 8 * j;
            for (int t = 0; t < TOKENS; t++) {
                int32_t first, second;
                memcpy(&first, x + (size_t)t * columns, 4);
                memcpy(&second, x + (size_t)t * columns + 4, 4);
                const __m512i xa = _mm512_set1_epi32(first), xb = _mm512_set1_epi32(second);
                for (int p = 0; p < PANELS; p++) {
                    lows[h][p][t] = _mm512_dpbusd_epi32(lows[h][p][t], low[p], xa);
                    highs[h][p][t] = _mm512_dpbusd_epi32(highs[h][p][t], high[p], xb);
                }
            }
        }
    }
    for (int p = 0; p < PANELS; p++)
        for (int t = 0; t < TOKENS; t++) {
            dot[p][t] = _mm512_add_epi32(lows[0][p][t], _mm512_srai_epi32(highs[0][p][t], 4));
            if (LOW) {
                dot[p][t] = _mm512_add_epi32(_mm512_slli_epi32(dot[p][t], 8),
                                             _mm512_add_epi32(lows[1][p][t], _mm512_srai_epi32(highs[1][p][t], 4)));
            }
        }
}

/// The byte kernel's `tile` over the 4-bit layout: the same integers per block (sums of exact
/// products, in any order), then the same float operations in the same order.
///
/// Those float steps bound a batch's speed at two-byte activations: per panel, token and 32
/// columns, 16 `vpdpbusd`s, then a scale product and one or two fused multiply-adds, which share
/// the multiply pipes. Measured on Zen 4 (one core, 2048 x 2048, 32 tokens, affine weights): 93 G
/// products/s as written, 112 with the float steps left out, 99 without the second multiply-add;
/// splitting the nibbles, the shift between the two bytes and the tile's shape (5 or 6 tokens,
/// 6+6+5+5+5+5 instead of 6+6+6+6+6+2) each moved it by under 1%. Fewer float steps per block
/// would change every output bit (an engine identity bump).
static inline __attribute__((always_inline))
void tile(const int PANELS, const int TOKENS, const int KIND, const int LOW,
          const uint8_t *w, const uint8_t *s, const uint16_t *sup, int32_t bias, size_t panel_bytes,
          size_t panel_scale_bytes, size_t panel_super_halves, int columns, int blocks, const int8_t *xq,
          const int8_t *xl, const float *xs, const float *xss, const int32_t *xsum, float *y, int y_stride,
          __mmask16 mask0, __mmask16 mask1) {
    const int NARROW = TOKENS <= 3 && PANELS * TOKENS * (LOW + 1) <= 8;
    __m512 acc[2][SLUICE_INT4_MAX_TOKENS];
    for (int p = 0; p < PANELS; p++)
        for (int t = 0; t < TOKENS; t++) acc[p][t] = _mm512_setzero_ps();
    __m512 d[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()}, dmin[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};

    for (int b = 0; b < blocks; b++) {
        if (KIND == SLUICE_WEIGHTS_AFFINE32 && b % 8 == 0) {
            for (int p = 0; p < PANELS; p++) {
                const uint16_t *h = sup + p * panel_super_halves + (size_t)(b / 8) * 32;
                d[p] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
                dmin[p] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + 16)));
            }
        }
        __m512i dot[2][SLUICE_INT4_MAX_TOKENS];
        const uint8_t *wb = w + (size_t)b * 256;
        if (PANELS == 1 && TOKENS == 1) {
            for (int i = 0; i < 4; i++) _mm_prefetch((const char *)(wb + SLUICE_LONE_TOKEN_PREFETCH_BYTES + 64 * i), _MM_HINT_T0);
        }
        const size_t xb = (size_t)b * 32;
        if (NARROW) {
            narrow_block(PANELS, TOKENS, LOW, wb, panel_bytes, xq + xb, LOW ? xl + xb : NULL, columns, dot);
        } else {
            for (int p = 0; p < PANELS; p++)
                for (int t = 0; t < TOKENS; t++) dot[p][t] = _mm512_setzero_si512();
            // Two bytes: the high bytes' sum, times 256, then the low bytes' onto it (exact in int32).
            for (int half = 0; half <= LOW; half++) {
                const int8_t *xh = half == 0 ? xq : xl;
                if (half == 1) {
                    for (int p = 0; p < PANELS; p++)
                        for (int t = 0; t < TOKENS; t++) dot[p][t] = _mm512_slli_epi32(dot[p][t], 8);
                }
                // As in the byte kernel: one line at a time keeps the accumulators in registers.
#pragma clang loop unroll(disable)
                for (int j = 0; j < 4; j++)
                    accumulate_line(PANELS, TOKENS, wb + 64 * j, panel_bytes, xh + xb + 8 * j, columns, dot);
            }
        }
        if (KIND != SLUICE_WEIGHTS_AFFINE32) {
            for (int t = 0; t < TOKENS; t++) {
                const __m512i offset = _mm512_set1_epi32(bias * xsum[(size_t)t * blocks + b]);
                for (int p = 0; p < PANELS; p++) dot[p][t] = _mm512_sub_epi32(dot[p][t], offset);
            }
        }
        for (int p = 0; p < PANELS; p++) {
            const uint8_t *at = s + p * panel_scale_bytes + (size_t)32 * b;
            __m512 sv, mv = _mm512_setzero_ps();
            if (KIND == SLUICE_WEIGHTS_AFFINE32) {
                // d · sc and dmin · mn: exact, so the floats the byte layout stores.
                sv = _mm512_mul_ps(d[p], _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)at))));
                mv = _mm512_mul_ps(dmin[p], _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(at + 16)))));
            } else {
                sv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)at));
            }
            for (int t = 0; t < TOKENS; t++) {
                __m512 scale = _mm512_mul_ps(sv, _mm512_set1_ps(xs[(size_t)t * blocks + b]));
                acc[p][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[p][t]), scale, acc[p][t]);
                if (KIND == SLUICE_WEIGHTS_AFFINE32)
                    acc[p][t] = _mm512_fnmadd_ps(mv, _mm512_set1_ps(xss[(size_t)t * blocks + b]), acc[p][t]);
            }
        }
    }
    for (int t = 0; t < TOKENS; t++) {
        _mm512_mask_storeu_ps(y + (size_t)t * y_stride, mask0, acc[0][t]);
        if (PANELS == 2) _mm512_mask_storeu_ps(y + (size_t)t * y_stride + 16, mask1, acc[1][t]);
    }
}

typedef void (*tile_function)(const uint8_t *, const uint8_t *, const uint16_t *, int32_t, size_t, size_t, size_t,
                              int, int, const int8_t *, const int8_t *, const float *, const float *, const int32_t *,
                              float *, int, __mmask16, __mmask16);

#define SLUICE_INT4_TILE(P, T, K, L) \
    static void tile4_##P##_##T##_##K##_##L(const uint8_t *w, const uint8_t *s, const uint16_t *sup, int32_t bias, \
                                            size_t pb, size_t ps, size_t pss, int columns, int blocks, \
                                            const int8_t *xq, const int8_t *xl, const float *xs, const float *xss, \
                                            const int32_t *xsum, float *y, int y_stride, __mmask16 mask0, \
                                            __mmask16 mask1) { \
        tile(P, T, K, L, w, s, sup, bias, pb, ps, pss, columns, blocks, xq, xl, xs, xss, xsum, y, y_stride, mask0, \
             mask1); \
    }
#define SLUICE_INT4_TILES(K, L) \
    SLUICE_INT4_TILE(1, 1, K, L) SLUICE_INT4_TILE(1, 2, K, L) SLUICE_INT4_TILE(1, 3, K, L) \
    SLUICE_INT4_TILE(1, 4, K, L) SLUICE_INT4_TILE(1, 5, K, L) SLUICE_INT4_TILE(1, 6, K, L) \
    SLUICE_INT4_TILE(2, 1, K, L) SLUICE_INT4_TILE(2, 2, K, L) SLUICE_INT4_TILE(2, 3, K, L) \
    SLUICE_INT4_TILE(2, 4, K, L) SLUICE_INT4_TILE(2, 5, K, L) SLUICE_INT4_TILE(2, 6, K, L)
// Kinds 0 (half-scaled, Q4_0) and 2 (affine, Q4_K); Q6_K's 16-element blocks need six bits.
SLUICE_INT4_TILES(0, 0)
SLUICE_INT4_TILES(2, 0)
SLUICE_INT4_TILES(0, 1)
SLUICE_INT4_TILES(2, 1)

#define SLUICE_INT4_TABLE(K, L) { \
        {tile4_1_1_##K##_##L, tile4_1_2_##K##_##L, tile4_1_3_##K##_##L, tile4_1_4_##K##_##L, tile4_1_5_##K##_##L, \
         tile4_1_6_##K##_##L}, \
        {tile4_2_1_##K##_##L, tile4_2_2_##K##_##L, tile4_2_3_##K##_##L, tile4_2_4_##K##_##L, tile4_2_5_##K##_##L, \
         tile4_2_6_##K##_##L}, \
    }
/// Indexed [two bytes][affine][panels - 1][tokens - 1].
static const tile_function tiles[2][2][2][SLUICE_INT4_MAX_TOKENS] = {
    {SLUICE_INT4_TABLE(0, 0), SLUICE_INT4_TABLE(2, 0)},
    {SLUICE_INT4_TABLE(0, 1), SLUICE_INT4_TABLE(2, 1)},
};

static __mmask16 row_mask(int rows, int panel) {
    int left = rows - 16 * panel;
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
}

void sluice_int4_matmul(const uint8_t *weights, int kind, const uint8_t *scales, const uint16_t *super_scales,
                        int bias, int columns, int rows, int panel_begin, int panel_end,
                        const int8_t *xq, const int8_t *xq_low, const float *xscale, const float *xscaled_sum,
                        const int32_t *xsum, int tokens, float *y, int y_stride) {
    const int blocks = columns / 32;
    const int affine = kind == SLUICE_WEIGHTS_AFFINE32;
    const size_t panel_bytes = (size_t)8 * columns, panel_scale_bytes = (size_t)32 * blocks;
    const size_t panel_super_halves = affine ? (size_t)32 * (columns / 256) : 0;
    const tile_function (*table)[SLUICE_INT4_MAX_TOKENS] = tiles[xq_low != NULL][affine];
    for (int p = panel_begin, panels = 1; p < panel_end; p += panels) {
        // As in the byte kernel: a lone token streams one panel at a time.
        panels = p + 1 < panel_end && tokens > 1 ? 2 : 1;
        const __mmask16 mask0 = row_mask(rows, p), mask1 = row_mask(rows, p + 1);
        const uint8_t *w = weights + (size_t)p * panel_bytes;
        const uint8_t *s = scales + (size_t)p * panel_scale_bytes;
        const uint16_t *sup = affine ? super_scales + (size_t)p * panel_super_halves : NULL;
        for (int t = 0; t < tokens; t += SLUICE_INT4_MAX_TOKENS) {
            const int count = tokens - t < SLUICE_INT4_MAX_TOKENS ? tokens - t : SLUICE_INT4_MAX_TOKENS;
            table[panels - 1][count - 1](w, s, sup, bias, panel_bytes, panel_scale_bytes, panel_super_halves, columns,
                                         blocks, xq + (size_t)t * columns,
                                         xq_low ? xq_low + (size_t)t * columns : NULL, xscale + (size_t)t * blocks,
                                         xscaled_sum + (size_t)t * blocks, xsum + (size_t)t * blocks,
                                         y + (size_t)t * y_stride + 16 * p, y_stride, mask0, mask1);
        }
    }
}

float sluice_int4_row_product(const uint8_t *weights, int kind, const uint8_t *scales, const uint16_t *super_scales,
                              int bias, int columns, int row, const int8_t *xq, const int8_t *xq_low,
                              const float *xscale, const float *xscaled_sum, const int32_t *xsum) {
    const int blocks = columns / 32;
    const int lane = row & 15;
    const size_t panel = (size_t)(row >> 4);
    const uint8_t *line = weights + panel * 8 * columns + 4 * lane;
    const uint8_t *s = scales + panel * 32 * blocks;
    const uint16_t *sup = kind == SLUICE_WEIGHTS_AFFINE32 ? super_scales + panel * 32 * (columns / 256) + lane : NULL;
    float acc = 0;
    for (int b = 0; b < blocks; b++) {
        // The tile's integer (exact in int32 in any order), then its float operations in its order.
        int32_t dot = 0;
        for (int k = b * 32; k < (b + 1) * 32; k++) {
            const int32_t u = (line[64 * (k >> 3) + (k & 3)] >> (4 * ((k >> 2) & 1))) & 15;
            const int32_t x = xq_low ? 256 * (int32_t)xq[k] + (int32_t)xq_low[k] : (int32_t)xq[k];
            dot += u * x;
        }
        const uint8_t *at = s + 32 * (size_t)b;
        if (kind == SLUICE_WEIGHTS_AFFINE32) {
            const float d = _cvtsh_ss(sup[(b / 8) * 32]), dmin = _cvtsh_ss(sup[(b / 8) * 32 + 16]);
            const float scale_w = d * (float)at[lane];
            const float offset = dmin * (float)at[16 + lane];
            const float scale = scale_w * xscale[b];
            acc = fmaf((float)dot, scale, acc);
            acc = fmaf(-offset, xscaled_sum[b], acc);
        } else {
            uint16_t half;
            memcpy(&half, at + 2 * lane, 2);
            const float scale = _cvtsh_ss(half) * xscale[b];
            acc = fmaf((float)(dot - bias * xsum[b]), scale, acc);
        }
    }
    return acc;
}

#pragma clang attribute pop

#else

void sluice_int4_matmul(const uint8_t *weights, int kind, const uint8_t *scales, const uint16_t *super_scales,
                        int bias, int columns, int rows, int panel_begin, int panel_end,
                        const int8_t *xq, const int8_t *xq_low, const float *xscale, const float *xscaled_sum,
                        const int32_t *xsum, int tokens, float *y, int y_stride) {
    (void)weights; (void)kind; (void)scales; (void)super_scales; (void)bias; (void)columns; (void)rows;
    (void)panel_begin; (void)panel_end; (void)xq; (void)xq_low; (void)xscale; (void)xscaled_sum; (void)xsum;
    (void)tokens; (void)y; (void)y_stride;
}

float sluice_int4_row_product(const uint8_t *weights, int kind, const uint8_t *scales, const uint16_t *super_scales,
                              int bias, int columns, int row, const int8_t *xq, const int8_t *xq_low,
                              const float *xscale, const float *xscaled_sum, const int32_t *xsum) {
    (void)weights; (void)kind; (void)scales; (void)super_scales; (void)bias; (void)columns; (void)row; (void)xq;
    (void)xq_low; (void)xscale; (void)xscaled_sum; (void)xsum;
    return 0;
}

#endif
