// Refuses a CPU below the build's x86-64-v3 baseline with one clear line, before any code built
// for that baseline runs (the Swift code and the C kernels use AVX2, FMA and F16C freely, and such
// a CPU would otherwise die on the first of them with SIGILL, somewhere). This file alone is
// compiled for plain x86-64 (Package.swift), and the check runs as a constructor, before main.
#include "sluice_start_check.h"

#if defined(__x86_64__) && defined(SLUICE_REQUIRE_X86_64_V3)
#include <stdio.h>
#include <unistd.h>

__attribute__((constructor(101))) static void sluice_require_x86_64_v3(void) {
    __builtin_cpu_init();
    // What Swift's `-target-cpu haswell` and clang's `-march=x86-64-v3` let the compiler emit.
    const char *missing = NULL;
    if (!__builtin_cpu_supports("avx")) missing = "avx";
    else if (!__builtin_cpu_supports("avx2")) missing = "avx2";
    else if (!__builtin_cpu_supports("fma")) missing = "fma";
    else if (!__builtin_cpu_supports("f16c")) missing = "f16c";
    else if (!__builtin_cpu_supports("bmi")) missing = "bmi";
    else if (!__builtin_cpu_supports("bmi2")) missing = "bmi2";
    else if (!__builtin_cpu_supports("lzcnt")) missing = "lzcnt";
    else if (!__builtin_cpu_supports("movbe")) missing = "movbe";
    if (missing == NULL) return;
    dprintf(STDERR_FILENO,
            "sluice: this build needs an x86-64-v3 CPU (AVX2, FMA, F16C, BMI2, ...) and this one lacks %s; "
            "build one for it with SLUICE_TARGET_CPU=nehalem swift build -c release (see README, \"One binary for a mixed fleet\")\n",
            missing);
    _exit(SLUICE_EXIT_CPU_BELOW_BASELINE);
}
#endif
