// One output of the integer tile computed alone (the argmax head's exact pass), shared by the
// VNNI (argmax_head.c) and AVX2 (int8_matmul_avx2.c) kernel files: each includes it inside its own
// target attribute, so the compiler vectorizes the integer loop for that instruction set while the
// arithmetic stays one text. Not part of the module's public headers.
#ifndef SLUICE_INT8_ROW_PRODUCT_H
#define SLUICE_INT8_ROW_PRODUCT_H

#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice_kernels.h"

/// `sluice_int8_row_product`: the same integer the tile forms for the row's lane (exact in int32
/// either way), then the tile's float operations in the tile's order, each rounded once.
static inline __attribute__((always_inline))
float int8_row_product(const uint8_t *weights, int kind, const void *scales, const float *offsets, int bias,
                       int columns, int row, const int8_t *xq, const int8_t *xq_low, const float *xscale,
                       const float *xscaled_sum, const int32_t *xsum) {
#pragma clang fp contract(off)
    const int block = kind == SLUICE_WEIGHTS_SCALED16 ? 16 : 32;
    const int blocks = columns / block;
    const int lane = row & 15;
    const uint8_t *line = weights + (size_t)(row >> 4) * 16 * columns + 4 * lane;
    const size_t scale_base = (size_t)(row >> 4) * 16 * blocks + lane;
    float acc = 0;
    for (int b = 0; b < blocks; b++) {
        int32_t dot = 0;
        for (int k = b * block; k < (b + 1) * block; k++) {
            const int32_t u = line[64 * (k >> 2) + (k & 3)];
            const int32_t x = xq_low ? 256 * (int32_t)xq[k] + (int32_t)xq_low[k] : (int32_t)xq[k];
            dot += u * x;
        }
        const size_t at = scale_base + 16 * (size_t)b;
        const float s = kind == SLUICE_WEIGHTS_HALF_SCALED32
            ? _cvtsh_ss(((const uint16_t *)scales)[at])
            : ((const float *)scales)[at];
        const float scale = s * xscale[b];
        if (kind == SLUICE_WEIGHTS_AFFINE32) {
            acc = fmaf((float)dot, scale, acc);
            acc = fmaf(-offsets[at], xscaled_sum[b], acc);
        } else {
            acc = fmaf((float)(dot - bias * xsum[b]), scale, acc);
        }
    }
    return acc;
}

#endif
