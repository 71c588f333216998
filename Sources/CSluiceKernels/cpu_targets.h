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

#endif
