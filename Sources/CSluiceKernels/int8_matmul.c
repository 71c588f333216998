// Int8 matrix products with AVX-512 VNNI: the one kernel family Swift cannot
// express (Swift SIMD has no `vpdpbusd`; the best pure-Swift int8 dot product
// measured 24-37 GOPS, see MEASURED.md, below its own fp32 tile).
#include "sluice_kernels.h"

#include <stddef.h>
#include <string.h>

#include "cpu_targets.h"

#if defined(SLUICE_X86_64)
#define SLUICE_HAVE_VNNI 1
#include <immintrin.h>
#endif

#ifdef SLUICE_HAVE_VNNI
#pragma clang attribute push(SLUICE_AVX512_VNNI_TARGET, apply_to = function)

/// Tokens per tile: 2 panels x 6 tokens keep 12 integer and 12 float accumulators in registers.
#define SLUICE_MAX_TOKENS 6

/// One block of `block` floats (16 or 32) to bytes `q` (and, with `low`, what q
/// misses, to bytes at 1/256 of q's step); returns the sum of the block's
/// integers at the final step (Σ q, or Σ 256 q + low).
static inline __attribute__((always_inline))
int quantize_block(const float *x, const int block, int8_t *q, int8_t *low, float *step) {
    __m512 a = _mm512_loadu_ps(x);
    __m512 b = block == 32 ? _mm512_loadu_ps(x + 16) : _mm512_setzero_ps();
    __m512 magnitude = _mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b));
    float amax = _mm512_reduce_max_ps(magnitude);
    // A NaN anywhere: nothing meaningful to keep. (Tested before the maximum is trusted: which
    // operand a max of NaN returns depends on the order of the reduction, which differs by variant.)
    const __mmask16 unordered = _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q);
    if (unordered || !(amax > 0)) {  // all zeros, or a NaN
        memset(q, 0, (size_t)block);
        if (low) memset(low, 0, (size_t)block);
        *step = 0;
        return 0;
    }
    const float scale = amax / 127.0f;
    const __m512 inverse = _mm512_set1_ps(127.0f / amax);
    int total = 0;
    for (int half = 0; half < block / 16; half++) {
        __m512 v = half == 0 ? a : b;
        // Round to nearest even; |x| * 127 / amax rounds to at most 127.
        __m512i qi = _mm512_cvtps_epi32(_mm512_mul_ps(v, inverse));
        _mm_storeu_si128((__m128i *)(q + 16 * half), _mm512_cvtsepi32_epi8(qi));
        if (low) {
            // |residual| <= scale / 2: at most 128 steps of scale / 256 (saturated to 127).
            __m512 residual = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(qi), _mm512_set1_ps(scale), v);
            __m512i li = _mm512_cvtps_epi32(_mm512_mul_ps(residual, _mm512_set1_ps(256.0f / scale)));
            __m128i packed = _mm512_cvtsepi32_epi8(li);
            _mm_storeu_si128((__m128i *)(low + 16 * half), packed);
            qi = _mm512_add_epi32(_mm512_slli_epi32(qi, 8), _mm512_cvtepi8_epi32(packed));
        }
        total += _mm512_reduce_add_epi32(qi);
    }
    *step = low ? scale / 256.0f : scale;
    return total;
}

void sluice_quantize_rows_avx512_vnni(const float *x, int tokens, int columns, int block,
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

/// Four columns (a 64-byte line of each panel at `w`, four bytes of each token's
/// activations at `x`) into the tile's integer sums.
static inline __attribute__((always_inline))
void accumulate_group(const int PANELS, const int TOKENS, const uint8_t *w, size_t panel_bytes, const int8_t *x,
                      int columns, __m512i dot[2][SLUICE_MAX_TOKENS]) {
    __m512i u[2];
    for (int p = 0; p < PANELS; p++) u[p] = _mm512_loadu_si512(w + p * panel_bytes);
    for (int t = 0; t < TOKENS; t++) {
        int32_t four;
        memcpy(&four, x + (size_t)t * columns, 4);
        const __m512i xv = _mm512_set1_epi32(four);
        for (int p = 0; p < PANELS; p++) dot[p][t] = _mm512_dpbusd_epi32(dot[p][t], u[p], xv);
    }
}

/// PANELS (1 or 2) panels of 16 rows times TOKENS (1-6) tokens, with activations
/// of one byte (LOW 0) or two (LOW 1: the block's integer is 256 q + low), for
/// weights of one KIND (see `sluice_weight_kind`). Each output element sees the
/// same operations in the same order in every instantiation.
static inline __attribute__((always_inline))
void tile(const int PANELS, const int TOKENS, const int KIND, const int LOW,
          const uint8_t *w, const void *s, const float *m, int32_t bias, size_t panel_bytes, size_t panel_scales,
          int columns, int blocks, const int8_t *xq, const int8_t *xl, const float *xs, const float *xss,
          const int32_t *xsum, float *y, int y_stride, __mmask16 mask0, __mmask16 mask1) {
    const int BLOCK = KIND == SLUICE_WEIGHTS_SCALED16 ? 16 : 32;
    __m512 acc[2][SLUICE_MAX_TOKENS];
    for (int p = 0; p < PANELS; p++)
        for (int t = 0; t < TOKENS; t++) acc[p][t] = _mm512_setzero_ps();

    // With -march=native clang unrolls this loop by two for one panel and one token; for the
    // x86-64-v3 baseline with target attributes it does not. Forcing it (unroll_count(2)) gave
    // the native code shape but no measurable speed: the output head's pass over token_embd
    // (262144 x 640, one token) took 12.2 ms either way, as with -march=native, and the
    // layers' 1-token products were within noise (sluice-bench matmul --tokens 1, int8 and int16).
    for (int b = 0; b < blocks; b++) {
        __m512i dot[2][SLUICE_MAX_TOKENS];
        for (int p = 0; p < PANELS; p++)
            for (int t = 0; t < TOKENS; t++) dot[p][t] = _mm512_setzero_si512();
        const uint8_t *wb = w + (size_t)b * BLOCK * 16;
        const size_t xb = (size_t)b * BLOCK;
        // Two bytes: the high bytes' sum, times 256, then the low bytes' onto it (exact in int32).
        for (int half = 0; half <= LOW; half++) {
            const int8_t *xh = half == 0 ? xq : xl;
            if (half == 1) {
                for (int p = 0; p < PANELS; p++)
                    for (int t = 0; t < TOKENS; t++) dot[p][t] = _mm512_slli_epi32(dot[p][t], 8);
            }
            if (TOKENS >= 4) {
                // Unrolled, wide tiles hold every group's weights in registers and spill the
                // accumulators; one group at a time keeps them all in registers (measured 3-4%
                // faster at 32 tokens, and 15% slower for a lone token, which streams weights).
#pragma clang loop unroll(disable)
                for (int g = 0; g < BLOCK / 4; g++)
                    accumulate_group(PANELS, TOKENS, wb + 64 * g, panel_bytes, xh + xb + 4 * g, columns, dot);
            } else {
                for (int g = 0; g < BLOCK / 4; g++)
                    accumulate_group(PANELS, TOKENS, wb + 64 * g, panel_bytes, xh + xb + 4 * g, columns, dot);
            }
        }
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
    static void tile_##P##_##T##_##K##_##L(const uint8_t *w, const void *s, const float *m, int32_t bias, size_t pb, size_t ps, \
                                           int columns, int blocks, const int8_t *xq, const int8_t *xl, const float *xs, \
                                           const float *xss, const int32_t *xsum, float *y, int y_stride, __mmask16 mask0, \
                                           __mmask16 mask1) { \
        tile(P, T, K, L, w, s, m, bias, pb, ps, columns, blocks, xq, xl, xs, xss, xsum, y, y_stride, mask0, mask1); \
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

typedef void (*tile_function)(const uint8_t *, const void *, const float *, int32_t, size_t, size_t, int, int,
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

void sluice_int8_matmul_avx512_vnni(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                        int columns, int rows, int panel_begin, int panel_end,
                        const int8_t *xq, const int8_t *xq_low, const float *xscale, const float *xscaled_sum,
                        const int32_t *xsum, int tokens, float *y, int y_stride) {
    const int blocks = columns / (kind == SLUICE_WEIGHTS_SCALED16 ? 16 : 32);
    const size_t panel_bytes = (size_t)16 * columns, panel_scales = (size_t)16 * blocks;
    const size_t scale_bytes = kind == SLUICE_WEIGHTS_HALF_SCALED32 ? 2 : 4;
    const tile_function (*table)[SLUICE_MAX_TOKENS] = tiles[xq_low != NULL][kind];
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
            table[panels - 1][count - 1](w, s, m, bias, panel_bytes, panel_scales, columns, blocks,
                                         xq + (size_t)t * columns, xq_low ? xq_low + (size_t)t * columns : NULL,
                                         xscale + (size_t)t * blocks, xscaled_sum + (size_t)t * blocks,
                                         xsum + (size_t)t * blocks, y + (size_t)t * y_stride + 16 * p, y_stride, mask0,
                                         mask1);
        }
    }
}

#pragma clang attribute pop

#else

void sluice_quantize_rows_avx512_vnni(const float *x, int tokens, int columns, int block,
                          int8_t *xq, int8_t *xq_low, float *scale, float *scaled_sum, int32_t *sum) {
    (void)x; (void)tokens; (void)columns; (void)block; (void)xq; (void)xq_low; (void)scale; (void)scaled_sum; (void)sum;
}

void sluice_int8_matmul_avx512_vnni(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                        int columns, int rows, int panel_begin, int panel_end,
                        const int8_t *xq, const int8_t *xq_low, const float *xscale, const float *xscaled_sum,
                        const int32_t *xsum, int tokens, float *y, int y_stride) {
    (void)weights; (void)kind; (void)scales; (void)offsets; (void)bias; (void)columns; (void)rows; (void)panel_begin;
    (void)panel_end; (void)xq; (void)xq_low; (void)xscale; (void)xscaled_sum; (void)xsum; (void)tokens; (void)y;
    (void)y_stride;
}

#endif
