#ifndef SLUICE_INT4_H
#define SLUICE_INT4_H

#include <stdint.h>

/// Whether the 4-bit weight layout's kernels run here (the avx512-vnni variant). Weights whose
/// unsigned quants `u` fit in four bits (Q4_0, Q4_K) may then be stored two per byte.
int sluice_int4_available(void);

/// `sluice_int8_matmul` (same arguments, same formula, bit for bit the same outputs) over weights
/// stored two per byte, for kinds `SLUICE_WEIGHTS_HALF_SCALED32` (Q4_0, bias 8) and
/// `SLUICE_WEIGHTS_AFFINE32` (Q4_K, bias 0), in panels of 16 rows:
///
/// - `weights`: panel p at p · 8 · columns; in it, block b (32 columns) at 256 b: four 64-byte
///   lines, line j holding for each row r (bytes 4r ..< 4r + 4) columns 32b + 8j + i in the low
///   nibbles and 32b + 8j + 4 + i in the high ones (i < 4). Decoded in registers, each line gives
///   `vpdpbusd` the two lines of bytes the byte layout holds.
/// - `scales`: 32 bytes per panel and block (panel p at p · 32 · blocks, block b at 32 b).
///   Half-scaled kind: the 16 rows' half-float scales. Affine kind: the 16 rows' 6-bit scale
///   multipliers `sc` (bytes 0-15) and offset multipliers `mn` (bytes 16-31).
/// - `super_scales` (affine kind only, else NULL): per panel and 256 columns, 16 half floats `d`
///   then 16 `dmin` (panel p at p · 32 · columns / 256). A weight is (d · sc) · u − dmin · mn:
///   both products are exact in float32 (11 by 6 significant bits), so they are the very floats
///   the byte layout stores.
void sluice_int4_matmul(const uint8_t *weights, int kind, const uint8_t *scales, const uint16_t *super_scales,
                        int bias, int columns, int rows, int panel_begin, int panel_end,
                        const int8_t *xq, const int8_t *xq_low, const float *xscale, const float *xscaled_sum,
                        const int32_t *xsum, int tokens, float *y, int y_stride);

/// Row `row` of `sluice_int4_matmul`'s product for one token, bit for bit what that kernel
/// writes for it, computed alone.
float sluice_int4_row_product(const uint8_t *weights, int kind, const uint8_t *scales, const uint16_t *super_scales,
                              int bias, int columns, int row, const int8_t *xq, const int8_t *xq_low,
                              const float *xscale, const float *xscaled_sum, const int32_t *xsum);

/// `sluice_int8_matmul` for `SLUICE_WEIGHTS_SCALED16` with bias 32 (Q6_K: u = q + 32 < 64), bit for
/// bit its outputs, over weights stored at six bits each, in panels of 16 rows (available where
/// `sluice_int4_available()` is):
///
/// - `weights`: panel p at p · 12 · columns; in it, block b (16 columns) at 192 b: three 64-byte
///   lines, each with bytes 4r ..< 4r + 4 for row r. Line 0: the low four bits of u at columns
///   16b + i (low nibbles) and 16b + 4 + i (high nibbles), i < 4; line 1 likewise for columns
///   16b + 8 + i and 16b + 12 + i; line 2: the top two bits of u at column 16b + 4g + i in bits
///   2g, 2g + 1 (g < 4).
/// - `scales`: the 16 rows' signed 8-bit scale multipliers `sc` per panel and block (panel p at
///   p · 16 · blocks, block b at 16 b); `super_scales`: per panel and 256 columns, the 16 rows'
///   half-float `d` (panel p at p · 16 · columns / 256). A weight is (d · sc) · (u − 32), d · sc
///   being exact in float32: the byte layout's float scale.
void sluice_int6_matmul(const uint8_t *weights, const int8_t *scales, const uint16_t *super_scales, int columns,
                        int rows, int panel_begin, int panel_end, const int8_t *xq, const int8_t *xq_low,
                        const float *xscale, const int32_t *xsum, int tokens, float *y, int y_stride);

/// Row `row` of `sluice_int6_matmul`'s product for one token, bit for bit, computed alone.
float sluice_int6_row_product(const uint8_t *weights, const int8_t *scales, const uint16_t *super_scales, int columns,
                              int row, const int8_t *xq, const int8_t *xq_low, const float *xscale,
                              const int32_t *xsum);

#endif
