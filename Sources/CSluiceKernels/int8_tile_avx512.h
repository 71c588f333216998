// The AVX-512 integer tile shared by the VNNI kernels (int8_matmul.c) and the AVX-512 ones without
// VNNI (int8_matmul_avx512.c): panels of 16 rows times up to six tokens, and the float steps per
// block, lane for lane the same in both. The includer, inside its target region, defines
// SLUICE_INT8_MATMUL (the entry point's name, declared in sluice_kernels.h) before including this,
// and `block_integers` (declared below) after. Integer sums are exact, so both families give every
// output the same bits.
#ifndef SLUICE_INT8_TILE_AVX512_H
#define SLUICE_INT8_TILE_AVX512_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

/// Tokens per tile: 2 panels x 6 tokens keep 12 integer and 12 float accumulators in registers.
#define SLUICE_MAX_TOKENS 6

/// Adds each panel row's and token's block integer, Σ u·x over the block's BLOCK columns (x = 256 q +
/// low with LOW), to dot[panel][token]: `w` is the block's first line of panel 0 (panels
/// `panel_bytes` apart), `xq`/`xl` the block's activations of token 0 (tokens `columns` apart).
static inline void block_integers(const int PANELS, const int TOKENS, const int BLOCK, const int LOW, const uint8_t *w,
                                  size_t panel_bytes, const int8_t *xq, const int8_t *xl, int columns,
                                  __m512i dot[2][SLUICE_MAX_TOKENS]);

/// PANELS (1 or 2) panels of 16 rows times TOKENS (1-6) tokens, with activations
/// of one byte (LOW 0) or two (LOW 1: the block's integer is 256 q + low), for
/// weights of one KIND (see `sluice_weight_kind`). Each output element sees the
/// same operations in the same order in every instantiation. With `prefetch` set, the tile
/// fetches its panels' weights `SLUICE_FEW_TOKENS_PREFETCH_BYTES` ahead (see `SLUICE_INT8_MATMUL`).
static inline __attribute__((always_inline))
void tile(const int PANELS, const int TOKENS, const int KIND, const int LOW, const int prefetch,
          const uint8_t *w, const void *s, const float *m, int32_t bias, size_t panel_bytes, size_t panel_scales,
          int columns, int blocks, const int8_t *xq, const int8_t *xl, const float *xs, const float *xss,
          const int32_t *xsum, float *y, int y_stride, __mmask16 mask0, __mmask16 mask1) {
    const int BLOCK = KIND == SLUICE_WEIGHTS_SCALED16 ? 16 : 32;
    __m512 acc[2][SLUICE_MAX_TOKENS];
    for (int p = 0; p < PANELS; p++)
        for (int t = 0; t < TOKENS; t++) acc[p][t] = _mm512_setzero_ps();

    // With -march=native clang unrolls this loop by two for one panel and one token; for the
    // x86-64-v3 (now v2) baseline with target attributes it does not. Forcing it (unroll_count(2)) gave
    // the native code shape but no measurable speed: the output head's pass over token_embd
    // (262144 x 640, one token) took 12.2 ms either way, as with -march=native, and the
    // layers' 1-token products were within noise (sluice-bench matmul --tokens 1, int8 and int16).
    for (int b = 0; b < blocks; b++) {
        __m512i dot[2][SLUICE_MAX_TOKENS];
        for (int p = 0; p < PANELS; p++)
            for (int t = 0; t < TOKENS; t++) dot[p][t] = _mm512_setzero_si512();
        if (prefetch) {
            for (int p = 0; p < PANELS; p++)
                for (int i = 0; i < BLOCK * 16 / 64; i++)
                    _mm_prefetch((const char *)(w + p * panel_bytes + (size_t)b * BLOCK * 16 + SLUICE_FEW_TOKENS_PREFETCH_BYTES + 64 * i),
                                 _MM_HINT_T0);
        }
        block_integers(PANELS, TOKENS, BLOCK, LOW, w + (size_t)b * BLOCK * 16, panel_bytes, xq + (size_t)b * BLOCK,
                       LOW ? xl + (size_t)b * BLOCK : NULL, columns, dot);
        if (KIND != SLUICE_WEIGHTS_AFFINE32) {
            // Signed types: Σ (u − bias) x = Σ u x − bias Σ x, exact in int32, so the offset
            // costs an integer subtraction instead of a float product per block.
            for (int t = 0; t < TOKENS; t++) {
                const __m512i offset = _mm512_set1_epi32(bias * xsum[(size_t)t * blocks + b]);
                for (int p = 0; p < PANELS; p++) dot[p][t] = _mm512_sub_epi32(dot[p][t], offset);
            }
        }
        for (int p = 0; p < PANELS; p++) {
            const size_t at = p * panel_scales + 16 * b;
            const __m512 sv = KIND == SLUICE_WEIGHTS_HALF_SCALED32
                ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)s + at)))
                : _mm512_loadu_ps((const float *)s + at);
            for (int t = 0; t < TOKENS; t++) {
                __m512 scale = _mm512_mul_ps(sv, _mm512_set1_ps(xs[(size_t)t * blocks + b]));
                acc[p][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[p][t]), scale, acc[p][t]);
                if (KIND == SLUICE_WEIGHTS_AFFINE32)
                    acc[p][t] = _mm512_fnmadd_ps(_mm512_loadu_ps(m + at), _mm512_set1_ps(xss[(size_t)t * blocks + b]), acc[p][t]);
            }
        }
    }
    for (int t = 0; t < TOKENS; t++) {
        _mm512_mask_storeu_ps(y + (size_t)t * y_stride, mask0, acc[0][t]);
        if (PANELS == 2) _mm512_mask_storeu_ps(y + (size_t)t * y_stride + 16, mask1, acc[1][t]);
    }
}

#define SLUICE_TILE(P, T, K, L) \
    static void tile_##P##_##T##_##K##_##L(int prefetch, const uint8_t *w, const void *s, const float *m, int32_t bias, \
                                           size_t pb, size_t ps, int columns, int blocks, const int8_t *xq, const int8_t *xl, \
                                           const float *xs, const float *xss, const int32_t *xsum, float *y, int y_stride, \
                                           __mmask16 mask0, __mmask16 mask1) { \
        tile(P, T, K, L, prefetch, w, s, m, bias, pb, ps, columns, blocks, xq, xl, xs, xss, xsum, y, y_stride, mask0, mask1); \
    }
#define SLUICE_TILES(K, L) \
    SLUICE_TILE(1, 1, K, L) SLUICE_TILE(1, 2, K, L) SLUICE_TILE(1, 3, K, L) SLUICE_TILE(1, 4, K, L) \
    SLUICE_TILE(1, 5, K, L) SLUICE_TILE(1, 6, K, L) \
    SLUICE_TILE(2, 1, K, L) SLUICE_TILE(2, 2, K, L) SLUICE_TILE(2, 3, K, L) SLUICE_TILE(2, 4, K, L) \
    SLUICE_TILE(2, 5, K, L) SLUICE_TILE(2, 6, K, L)
SLUICE_TILES(0, 0)
SLUICE_TILES(1, 0)
SLUICE_TILES(2, 0)
SLUICE_TILES(0, 1)
SLUICE_TILES(1, 1)
SLUICE_TILES(2, 1)

typedef void (*tile_function)(int, const uint8_t *, const void *, const float *, int32_t, size_t, size_t, int, int,
                              const int8_t *, const int8_t *, const float *, const float *, const int32_t *, float *,
                              int, __mmask16, __mmask16);

#define SLUICE_TABLE(K, L) { \
        {tile_1_1_##K##_##L, tile_1_2_##K##_##L, tile_1_3_##K##_##L, tile_1_4_##K##_##L, tile_1_5_##K##_##L, tile_1_6_##K##_##L}, \
        {tile_2_1_##K##_##L, tile_2_2_##K##_##L, tile_2_3_##K##_##L, tile_2_4_##K##_##L, tile_2_5_##K##_##L, tile_2_6_##K##_##L}, \
    }
/// Indexed [two bytes][kind][panels - 1][tokens - 1].
static const tile_function tiles[2][3][2][SLUICE_MAX_TOKENS] = {
    {SLUICE_TABLE(0, 0), SLUICE_TABLE(1, 0), SLUICE_TABLE(2, 0)},
    {SLUICE_TABLE(0, 1), SLUICE_TABLE(1, 1), SLUICE_TABLE(2, 1)},
};

static __mmask16 row_mask(int rows, int panel) {
    int left = rows - 16 * panel;
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
}

void SLUICE_INT8_MATMUL(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                        int columns, int rows, int panel_begin, int panel_end,
                        const int8_t *xq, const int8_t *xq_low, const float *xscale, const float *xscaled_sum,
                        const int32_t *xsum, int tokens, float *y, int y_stride) {
    const int blocks = columns / (kind == SLUICE_WEIGHTS_SCALED16 ? 16 : 32);
    const size_t panel_bytes = (size_t)16 * columns, panel_scales = (size_t)16 * blocks;
    const size_t scale_bytes = kind == SLUICE_WEIGHTS_HALF_SCALED32 ? 2 : 4;
    const tile_function (*table)[SLUICE_MAX_TOKENS] = tiles[xq_low != NULL][kind];
    // A call of a few tokens streams each weight from memory once, and its two-panel tiles wait
    // on it (a lone token streams one panel, which the hardware prefetcher keeps up with). More
    // tokens than one tile holds re-read each panel from cache for every tile of tokens.
    const int prefetch = tokens >= SLUICE_FEW_TOKENS_PREFETCH_FROM && tokens <= SLUICE_MAX_TOKENS;
    for (int p = panel_begin, panels = 1; p < panel_end; p += panels) {
        // Two panels share each activation load; a lone token has none to share, and streams
        // one panel at a time faster (measured 8.2 vs 13.1 ms for the output head on one thread).
        panels = p + 1 < panel_end && tokens > 1 ? 2 : 1;
        const __mmask16 mask0 = row_mask(rows, p), mask1 = row_mask(rows, p + 1);
        const uint8_t *w = weights + (size_t)p * panel_bytes;
        const void *s = (const uint8_t *)scales + (size_t)p * panel_scales * scale_bytes;
        const float *m = offsets ? offsets + (size_t)p * panel_scales : NULL;
        for (int t = 0; t < tokens; t += SLUICE_MAX_TOKENS) {
            const int count = tokens - t < SLUICE_MAX_TOKENS ? tokens - t : SLUICE_MAX_TOKENS;
            table[panels - 1][count - 1](prefetch, w, s, m, bias, panel_bytes, panel_scales, columns, blocks,
                                         xq + (size_t)t * columns, xq_low ? xq_low + (size_t)t * columns : NULL,
                                         xscale + (size_t)t * blocks, xscaled_sum + (size_t)t * blocks,
                                         xsum + (size_t)t * blocks, y + (size_t)t * y_stride + 16 * p, y_stride, mask0,
                                         mask1);
        }
    }
}


#endif
