// Refuses a CPU below the build's x86-64-v2 baseline with one clear line, before any code built
// for that baseline runs (the Swift engine and the C kernels' baseline code use SSE4.2 and POPCNT
// freely, and such a CPU would otherwise die on the first of them with SIGILL, somewhere). The
// wider instruction sets (AVX2, AVX-512) are used only by kernels chosen at run time. This file
// alone is compiled for plain x86-64 (Package.swift), and the check runs as a constructor, before main.
#include "sluice_start_check.h"

#if defined(__x86_64__) && defined(SLUICE_REQUIRE_X86_64_V2)
#include <stdio.h>
#include <unistd.h>

__attribute__((constructor(101))) static void sluice_require_x86_64_v2(void) {
    __builtin_cpu_init();
    // What Swift's `-target-cpu nehalem` and clang's `-march=x86-64-v2` let the compiler emit.
    const char *missing = NULL;
    if (!__builtin_cpu_supports("sse3")) missing = "sse3";
    else if (!__builtin_cpu_supports("ssse3")) missing = "ssse3";
    else if (!__builtin_cpu_supports("sse4.1")) missing = "sse4.1";
    else if (!__builtin_cpu_supports("sse4.2")) missing = "sse4.2";
    else if (!__builtin_cpu_supports("popcnt")) missing = "popcnt";
    if (missing == NULL) return;
    dprintf(STDERR_FILENO,
            "sluice: this build needs an x86-64-v2 CPU (SSE4.2, POPCNT, ...) and this one lacks %s; "
            "build one for it with SLUICE_TARGET_CPU=x86-64 swift build -c release (see README, \"One binary for a mixed fleet\")\n",
            missing);
    _exit(SLUICE_EXIT_CPU_BELOW_BASELINE);
}
#endif
