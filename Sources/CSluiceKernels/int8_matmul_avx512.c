// The integer matrix kernels for CPUs with AVX-512 (F, BW, DQ, VL) but no VNNI: int8_matmul.c's
// tile (int8_tile_avx512.h), whose block integers come here from `vpmaddwd` instead of `vpdpbusd`.
// AVX-512 has no u8 x s8 dot product that cannot saturate (vpmaddubsw's pair sums overflow int16),
// so, as in the AVX2 kernels, each 64-byte line's even and odd bytes are widened to int16 and the
// activations to int16 pairs (two bytes make one int16, 256 q + low), and vpmaddwd gives exact
// int32 pair sums: the VNNI kernel's integers, so every output has the same bits, on 16 rows per
// instruction where the AVX2 kernel covers 8.
#include "sluice_kernels.h"

#include <stddef.h>
#include <string.h>

#include "cpu_targets.h"

// Fused multiply-adds only where written: contracting a product and a sum would change bits.
#pragma clang fp contract(off)

#if defined(SLUICE_X86_64)
#include <immintrin.h>

#pragma clang attribute push(SLUICE_AVX512_TARGET, apply_to = function)

#define SLUICE_INT8_MATMUL sluice_int8_matmul_avx512
#include "int8_tile_avx512.h"

static inline __attribute__((always_inline))
void block_integers(const int PANELS, const int TOKENS, const int BLOCK, const int LOW, const uint8_t *w,
                    size_t panel_bytes, const int8_t *xq, const int8_t *xl, int columns, __m512i dot[2][SLUICE_MAX_TOKENS]) {
    // Each token's activations as int16, each group of four columns reordered to 0 2 1 3: the 32-bit
    // word 2g holds columns 4g and 4g + 2, word 2g + 1 columns 4g + 1 and 4g + 3.
    _Alignas(64) int32_t x[SLUICE_MAX_TOKENS][16];
    const __m128i order = _mm_setr_epi8(0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15);
    for (int t = 0; t < TOKENS; t++) {
        for (int i = 0; i < BLOCK / 16; i++) {
            const size_t at = (size_t)t * columns + 16 * i;
            __m256i v = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(xq + at)), order));
            if (LOW) {
                const __m256i low = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(xl + at)), order));
                v = _mm256_add_epi16(_mm256_slli_epi16(v, 8), low);
            }
            _mm256_store_si256((__m256i *)&x[t][8 * i], v);
        }
    }
    // A line holds four columns of each of the 16 rows, row r in 32-bit lane r: its even bytes
    // (columns 0 and 2) and odd bytes (1 and 3) as int16 pairs meet the matching activation words.
    const __m512i low_bytes = _mm512_set1_epi16(0x00FF);
    for (int g = 0; g < BLOCK / 4; g++) {
        __m512i even[2], odd[2];
        for (int p = 0; p < PANELS; p++) {
            const __m512i line = _mm512_loadu_si512(w + p * panel_bytes + 64 * g);
            even[p] = _mm512_and_si512(line, low_bytes);
            odd[p] = _mm512_srli_epi16(line, 8);
        }
        for (int t = 0; t < TOKENS; t++) {
            const __m512i x02 = _mm512_set1_epi32(x[t][2 * g]), x13 = _mm512_set1_epi32(x[t][2 * g + 1]);
            for (int p = 0; p < PANELS; p++) {
                dot[p][t] = _mm512_add_epi32(dot[p][t], _mm512_madd_epi16(even[p], x02));
                dot[p][t] = _mm512_add_epi32(dot[p][t], _mm512_madd_epi16(odd[p], x13));
            }
        }
    }
}

#pragma clang attribute pop

#else

void sluice_int8_matmul_avx512(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                               int columns, int rows, int panel_begin, int panel_end,
                               const int8_t *xq, const int8_t *xq_low, const float *xscale, const float *xscaled_sum,
                               const int32_t *xsum, int tokens, float *y, int y_stride) {
    (void)weights; (void)kind; (void)scales; (void)offsets; (void)bias; (void)columns; (void)rows; (void)panel_begin;
    (void)panel_end; (void)xq; (void)xq_low; (void)xscale; (void)xscaled_sum; (void)xsum; (void)tokens; (void)y;
    (void)y_stride;
}

#endif
