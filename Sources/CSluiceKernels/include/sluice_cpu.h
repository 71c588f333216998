#ifndef SLUICE_CPU_H
#define SLUICE_CPU_H

/// The kernel variants one build carries, chosen once at start from the CPU (cpuid) and the
/// `SLUICE_CPU` environment variable. Every variant computes the same floats at a given
/// precision: they differ in speed and in whether they offer the integer precisions.
enum sluice_cpu_variant {
    /// C and Swift code for the build's baseline (x86-64-v2 on x86-64; NEON on aarch64).
    SLUICE_CPU_PORTABLE = 0,
    /// AVX2, FMA and F16C: the float kernels (attention, gates, norms, `float32` products,
    /// sampling) in AVX2, and the int8 matrix kernels (`--precision int8/int16`), the same bits
    /// as the VNNI ones.
    SLUICE_CPU_AVX2 = 1,
    /// AVX-512 (F, BW, DQ, VL): the AVX-512 elementwise and attention kernels, and integer matrix
    /// products from `vpmaddwd` (the VNNI kernels' tile and bits, without `vpdpbusd`).
    SLUICE_CPU_AVX512 = 2,
    /// AVX-512 with VNNI: the VNNI int8 matrix kernels.
    SLUICE_CPU_AVX512_VNNI = 3,
};

/// The variant in use: the best this CPU runs, limited by `SLUICE_CPU`; -1 when `SLUICE_CPU`
/// names a variant this CPU lacks or no variant at all (`sluice_cpu_refusal` says which).
int sluice_cpu_variant(void);

/// The best variant this CPU (and build) runs, ignoring `SLUICE_CPU`.
int sluice_cpu_best_variant(void);

/// The variant's name: "portable", "avx2", "avx512" or "avx512-vnni" (NULL for other numbers).
const char *sluice_cpu_variant_name(int variant);

/// Why `sluice_cpu_variant()` is -1 (empty text otherwise).
const char *sluice_cpu_refusal(void);

#endif
