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

#define SLUICE_INT8_MATMUL sluice_int8_matmul_avx512_vnni
#include "int8_tile_avx512.h"

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

/// The VNNI block integers: `vpdpbusd` over each group of four columns; with two bytes, the high
/// bytes' sum, times 256, then the low bytes' onto it (exact in int32).
static inline __attribute__((always_inline))
void block_integers(const int PANELS, const int TOKENS, const int BLOCK, const int LOW, const uint8_t *wb,
                    size_t panel_bytes, const int8_t *xq, const int8_t *xl, int columns, __m512i dot[2][SLUICE_MAX_TOKENS]) {
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
                accumulate_group(PANELS, TOKENS, wb + 64 * g, panel_bytes, xh + 4 * g, columns, dot);
        } else {
            for (int g = 0; g < BLOCK / 4; g++)
                accumulate_group(PANELS, TOKENS, wb + 64 * g, panel_bytes, xh + 4 * g, columns, dot);
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
