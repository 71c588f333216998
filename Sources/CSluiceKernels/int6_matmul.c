// Int8 matrix products over Q6_K's 6-bit weights stored at six bits each (see sluice_int4.h).
//
// As int4_matmul.c does for 4-bit weights: each block's three 64-byte lines are put back
// together in registers (shift, and, or) into the four lines of bytes the byte layout holds,
// and fed to the same `vpdpbusd`s, so every output is bit for bit the byte kernel's. Q6_K's
// scales are kept as the file's 8-bit multipliers of one half float per 256 columns (their
// products are exact in float32): 0.82 bytes per weight instead of 1.25.
#include "sluice_int4.h"
#include "sluice_kernels.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "cpu_targets.h"

// Fused multiply-adds only where written: contracting a product and a sum would change bits.
#pragma clang fp contract(off)

#if defined(SLUICE_X86_64)
#define SLUICE_HAVE_INT6 1
#include <immintrin.h>
#endif

#ifdef SLUICE_HAVE_INT6
#pragma clang attribute push(SLUICE_AVX512_VNNI_TARGET, apply_to = function)

#define SLUICE_INT6_MAX_TOKENS 6
/// What Q6_K's unsigned quants are offset by: u = q + 32.
#define SLUICE_INT6_BIAS 32

/// Group g (columns 4g ..< 4g + 4 of the block) of a panel's block, as the byte layout's line:
/// the low four bits from nibble line g / 2, the top two from the crumb line.
static inline __attribute__((always_inline))
__m512i group_bytes(const int g, __m512i nibbles0, __m512i nibbles1, __m512i crumbs) {
    const __m512i low_mask = _mm512_set1_epi8(0x0F), high_mask = _mm512_set1_epi8(0x30);
    const __m512i n = g < 2 ? nibbles0 : nibbles1;
    const __m512i low = _mm512_and_si512(g % 2 == 0 ? n : _mm512_srli_epi16(n, 4), low_mask);
    const __m512i high = _mm512_and_si512(g == 0 ? _mm512_slli_epi16(crumbs, 4)
                                          : g == 1 ? _mm512_slli_epi16(crumbs, 2)
                                          : g == 2 ? crumbs : _mm512_srli_epi16(crumbs, 2), high_mask);
    return _mm512_or_si512(low, high);
}

/// The byte kernel's `tile` for `SLUICE_WEIGHTS_SCALED16` over the 6-bit layout.
///
/// Measured on Zen 4 (one core, 4096 x 2048, 32 tokens, two-byte activations): 77 G products/s as
/// written, 84 without putting the bytes back together (each tile of tokens rebuilds its panels'
/// lines: the one cost here that no output bit depends on), 92 without the float steps per 16
/// columns, 103 without either.
static inline __attribute__((always_inline))
void tile(const int PANELS, const int TOKENS, const int LOW, const uint8_t *w, const int8_t *s, const uint16_t *sup,
          size_t panel_bytes, size_t panel_scales, size_t panel_super_halves, int columns, int blocks,
          const int8_t *xq, const int8_t *xl, const float *xs, const int32_t *xsum, float *y, int y_stride,
          __mmask16 mask0, __mmask16 mask1) {
    // Few tokens: two accumulator chains (even and odd groups) hide `vpdpbusd`'s latency.
    const int SPLIT = TOKENS <= 3;
    __m512 acc[2][SLUICE_INT6_MAX_TOKENS];
    for (int p = 0; p < PANELS; p++)
        for (int t = 0; t < TOKENS; t++) acc[p][t] = _mm512_setzero_ps();
    __m512 d[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};

    for (int b = 0; b < blocks; b++) {
        if (b % 16 == 0) {
            for (int p = 0; p < PANELS; p++)
                d[p] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sup + p * panel_super_halves + (size_t)(b / 16) * 16)));
        }
        __m512i dot[2][SLUICE_INT6_MAX_TOKENS], other[2][SLUICE_INT6_MAX_TOKENS];
        for (int p = 0; p < PANELS; p++)
            for (int t = 0; t < TOKENS; t++) dot[p][t] = other[p][t] = _mm512_setzero_si512();
        const uint8_t *wb = w + (size_t)b * 192;
        const size_t xb = (size_t)b * 16;
        if (PANELS == 1 && TOKENS == 1) {
            for (int i = 0; i < 3; i++) _mm_prefetch((const char *)(wb + SLUICE_LONE_TOKEN_PREFETCH_BYTES + 64 * i), _MM_HINT_T0);
        }
        __m512i u[2][4];
        for (int p = 0; p < PANELS; p++) {
            const uint8_t *line = wb + p * panel_bytes;
            const __m512i n0 = _mm512_loadu_si512(line), n1 = _mm512_loadu_si512(line + 64);
            const __m512i c = _mm512_loadu_si512(line + 128);
            for (int g = 0; g < 4; g++) u[p][g] = group_bytes(g, n0, n1, c);
        }
        // Two bytes: the high bytes' sum, times 256, then the low bytes' onto it (exact in int32).
        for (int half = 0; half <= LOW; half++) {
            const int8_t *xh = (half == 0 ? xq : xl) + xb;
            if (half == 1) {
                for (int p = 0; p < PANELS; p++)
                    for (int t = 0; t < TOKENS; t++) {
                        if (SPLIT) {
                            dot[p][t] = _mm512_add_epi32(dot[p][t], other[p][t]);
                            other[p][t] = _mm512_setzero_si512();
                        }
                        dot[p][t] = _mm512_slli_epi32(dot[p][t], 8);
                    }
            }
            for (int g = 0; g < 4; g++) {
                for (int t = 0; t < TOKENS; t++) {
                    int32_t four;
                    memcpy(&four, xh + (size_t)t * columns + 4 * g, 4);
                    const __m512i xv = _mm512_set1_epi32(four);
                    for (int p = 0; p < PANELS; p++) {
                        if (SPLIT && g % 2 == 1) other[p][t] = _mm512_dpbusd_epi32(other[p][t], u[p][g], xv);
                        else dot[p][t] = _mm512_dpbusd_epi32(dot[p][t], u[p][g], xv);
                    }
                }
            }
        }
        for (int t = 0; t < TOKENS; t++) {
            // Σ (u − bias) x = Σ u x − bias Σ x, exact in int32, as in the byte kernel.
            const __m512i offset = _mm512_set1_epi32(SLUICE_INT6_BIAS * xsum[(size_t)t * blocks + b]);
            for (int p = 0; p < PANELS; p++) {
                if (SPLIT) dot[p][t] = _mm512_add_epi32(dot[p][t], other[p][t]);
                dot[p][t] = _mm512_sub_epi32(dot[p][t], offset);
            }
        }
        for (int p = 0; p < PANELS; p++) {
            // d · sc: exact (11 by 8 significant bits), so the float the byte layout stores.
            const __m512 sv = _mm512_mul_ps(d[p], _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                _mm_loadu_si128((const __m128i *)(s + p * panel_scales + (size_t)16 * b)))));
            for (int t = 0; t < TOKENS; t++) {
                __m512 scale = _mm512_mul_ps(sv, _mm512_set1_ps(xs[(size_t)t * blocks + b]));
                acc[p][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[p][t]), scale, acc[p][t]);
            }
        }
    }
    for (int t = 0; t < TOKENS; t++) {
        _mm512_mask_storeu_ps(y + (size_t)t * y_stride, mask0, acc[0][t]);
        if (PANELS == 2) _mm512_mask_storeu_ps(y + (size_t)t * y_stride + 16, mask1, acc[1][t]);
    }
}

typedef void (*tile_function)(const uint8_t *, const int8_t *, const uint16_t *, size_t, size_t, size_t, int, int,
                              const int8_t *, const int8_t *, const float *, const int32_t *, float *, int, __mmask16,
                              __mmask16);

#define SLUICE_INT6_TILE(P, T, L) \
    static void tile6_##P##_##T##_##L(const uint8_t *w, const int8_t *s, const uint16_t *sup, size_t pb, size_t ps, \
                                      size_t pss, int columns, int blocks, const int8_t *xq, const int8_t *xl, \
                                      const float *xs, const int32_t *xsum, float *y, int y_stride, __mmask16 mask0, \
                                      __mmask16 mask1) { \
        tile(P, T, L, w, s, sup, pb, ps, pss, columns, blocks, xq, xl, xs, xsum, y, y_stride, mask0, mask1); \
    }
#define SLUICE_INT6_TILES(L) \
    SLUICE_INT6_TILE(1, 1, L) SLUICE_INT6_TILE(1, 2, L) SLUICE_INT6_TILE(1, 3, L) \
    SLUICE_INT6_TILE(1, 4, L) SLUICE_INT6_TILE(1, 5, L) SLUICE_INT6_TILE(1, 6, L) \
    SLUICE_INT6_TILE(2, 1, L) SLUICE_INT6_TILE(2, 2, L) SLUICE_INT6_TILE(2, 3, L) \
    SLUICE_INT6_TILE(2, 4, L) SLUICE_INT6_TILE(2, 5, L) SLUICE_INT6_TILE(2, 6, L)
SLUICE_INT6_TILES(0)
SLUICE_INT6_TILES(1)

#define SLUICE_INT6_TABLE(L) { \
        {tile6_1_1_##L, tile6_1_2_##L, tile6_1_3_##L, tile6_1_4_##L, tile6_1_5_##L, tile6_1_6_##L}, \
        {tile6_2_1_##L, tile6_2_2_##L, tile6_2_3_##L, tile6_2_4_##L, tile6_2_5_##L, tile6_2_6_##L}, \
    }
/// Indexed [two bytes][panels - 1][tokens - 1].
static const tile_function tiles[2][2][SLUICE_INT6_MAX_TOKENS] = {SLUICE_INT6_TABLE(0), SLUICE_INT6_TABLE(1)};

static __mmask16 row_mask(int rows, int panel) {
    int left = rows - 16 * panel;
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
}

void sluice_int6_matmul(const uint8_t *weights, const int8_t *scales, const uint16_t *super_scales, int columns,
                        int rows, int panel_begin, int panel_end, const int8_t *xq, const int8_t *xq_low,
                        const float *xscale, const int32_t *xsum, int tokens, float *y, int y_stride) {
    const int blocks = columns / 16;
    const size_t panel_bytes = (size_t)12 * columns, panel_scales = (size_t)16 * blocks;
    const size_t panel_super_halves = (size_t)16 * (columns / 256);
    const tile_function (*table)[SLUICE_INT6_MAX_TOKENS] = tiles[xq_low != NULL];
    for (int p = panel_begin, panels = 1; p < panel_end; p += panels) {
        panels = p + 1 < panel_end && tokens > 1 ? 2 : 1;
        const __mmask16 mask0 = row_mask(rows, p), mask1 = row_mask(rows, p + 1);
        const uint8_t *w = weights + (size_t)p * panel_bytes;
        const int8_t *s = scales + (size_t)p * panel_scales;
        const uint16_t *sup = super_scales + (size_t)p * panel_super_halves;
        for (int t = 0; t < tokens; t += SLUICE_INT6_MAX_TOKENS) {
            const int count = tokens - t < SLUICE_INT6_MAX_TOKENS ? tokens - t : SLUICE_INT6_MAX_TOKENS;
            table[panels - 1][count - 1](w, s, sup, panel_bytes, panel_scales, panel_super_halves, columns, blocks,
                                         xq + (size_t)t * columns, xq_low ? xq_low + (size_t)t * columns : NULL,
                                         xscale + (size_t)t * blocks, xsum + (size_t)t * blocks,
                                         y + (size_t)t * y_stride + 16 * p, y_stride, mask0, mask1);
        }
    }
}

float sluice_int6_row_product(const uint8_t *weights, const int8_t *scales, const uint16_t *super_scales, int columns,
                              int row, const int8_t *xq, const int8_t *xq_low, const float *xscale,
                              const int32_t *xsum) {
    const int blocks = columns / 16;
    const int lane = row & 15;
    const size_t panel = (size_t)(row >> 4);
    const uint8_t *w = weights + panel * 12 * columns + 4 * lane;
    const int8_t *s = scales + panel * 16 * blocks + lane;
    const uint16_t *sup = super_scales + panel * 16 * (columns / 256) + lane;
    float acc = 0;
    for (int b = 0; b < blocks; b++) {
        int32_t dot = 0;
        const uint8_t *line = w + 192 * (size_t)b;
        for (int g = 0; g < 4; g++) {
            for (int i = 0; i < 4; i++) {
                const int32_t low = (int32_t)(line[64 * (g >> 1) + i] >> (4 * (g & 1))) & 15;
                const int32_t high = (int32_t)(line[128 + i] >> (2 * g)) & 3;
                const int k = 16 * b + 4 * g + i;
                const int32_t x = xq_low ? 256 * (int32_t)xq[k] + (int32_t)xq_low[k] : (int32_t)xq[k];
                dot += (low + 16 * high) * x;
            }
        }
        const float weight_scale = _cvtsh_ss(sup[(b / 16) * 16]) * (float)s[16 * b];
        const float scale = weight_scale * xscale[b];
        acc = fmaf((float)(dot - SLUICE_INT6_BIAS * xsum[b]), scale, acc);
    }
    return acc;
}

#pragma clang attribute pop

#else

void sluice_int6_matmul(const uint8_t *weights, const int8_t *scales, const uint16_t *super_scales, int columns,
                        int rows, int panel_begin, int panel_end, const int8_t *xq, const int8_t *xq_low,
                        const float *xscale, const int32_t *xsum, int tokens, float *y, int y_stride) {
    (void)weights; (void)scales; (void)super_scales; (void)columns; (void)rows; (void)panel_begin; (void)panel_end;
    (void)xq; (void)xq_low; (void)xscale; (void)xsum; (void)tokens; (void)y; (void)y_stride;
}

float sluice_int6_row_product(const uint8_t *weights, const int8_t *scales, const uint16_t *super_scales, int columns,
                              int row, const int8_t *xq, const int8_t *xq_low, const float *xscale,
                              const int32_t *xsum) {
    (void)weights; (void)scales; (void)super_scales; (void)columns; (void)row; (void)xq; (void)xq_low; (void)xscale;
    (void)xsum;
    return 0;
}

#endif
