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

#endif
