// The instruction sets a kernel variant's functions are compiled for. The build's baseline
// (Package.swift) is x86-64-v2; the AVX2 and AVX-512 functions carry these target attributes and
// run only where sluice_cpu_variant() says the CPU has them. A build pinned to one machine (a
// raised baseline) may compile them with more, which that machine has.
#ifndef SLUICE_CPU_TARGETS_H
#define SLUICE_CPU_TARGETS_H

#include "sluice_cpu.h"

#if defined(__x86_64__)
#define SLUICE_X86_64 1
/// `#pragma clang attribute push(SLUICE_AVX512_VNNI_TARGET, apply_to = function)` around AVX-512 VNNI code.
#define SLUICE_AVX512_VNNI_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))
/// `#pragma clang attribute push(SLUICE_AVX2_TARGET, apply_to = function)` around AVX2 (+FMA, F16C) code.
#define SLUICE_AVX2_TARGET __attribute__((target("avx2,fma,f16c")))
#define SLUICE_AVX512_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl")))
#endif

/// How far ahead (bytes) the AVX-512 kernels' lone-token tiles prefetch the weights they stream.
/// One token reads each weight once, so the step waits on memory: on the 2-core Zen 4 machine the
/// Llama-3.2-1B-shaped Q4_K_M file decoded one sequence 3% faster with the 4- and 6-bit tiles
/// fetching 3 KiB ahead (medians of five alternating runs: 30.9 against 29.9 tokens/s; 2 and 4 KiB
/// within 1% of it). A prefetch past the panel reads the next panel, which the same thread streams
/// next; one past the matrix is harmless.
#define SLUICE_LONE_TOKEN_PREFETCH_BYTES 3072

/// How far ahead (bytes) the AVX-512 byte kernels' two-panel tiles prefetch the weights they
/// stream, in a call of `SLUICE_FEW_TOKENS_PREFETCH_FROM` to 6 tokens (one tile of tokens): the
/// output head's product for the rows a sampled step leaves open, a few sequences' decode. On the
/// 2-core Zen 4 machine the default model's output head (262144 x 640, `int16`) went from 136 to
/// 152-156 GFLOP/s at 4 tokens and from 185-189 to 213-220 at 6 with 1 or 2 KiB (three alternating
/// rounds of `sluice-bench matmul --tensors token_embd.weight --precision int16`); 2 tokens were
/// 1-4% slower with it, so they go without.
#define SLUICE_FEW_TOKENS_PREFETCH_BYTES 1024
#define SLUICE_FEW_TOKENS_PREFETCH_FROM 3

#endif
