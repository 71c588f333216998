// Chooses the kernel variant once per process: the best the CPU runs (cpuid), limited by
// the SLUICE_CPU environment variable for tests and for users who must pin one.
#include "sluice_cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const variant_names[] = {"portable", "avx2", "avx512", "avx512-vnni"};

const char *sluice_cpu_variant_name(int variant) {
    return variant >= 0 && variant <= SLUICE_CPU_AVX512_VNNI ? variant_names[variant] : NULL;
}

int sluice_cpu_best_variant(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    const int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    if (avx512 && __builtin_cpu_supports("avx512vnni")) return SLUICE_CPU_AVX512_VNNI;
    if (avx512) return SLUICE_CPU_AVX512;
    if (avx2) return SLUICE_CPU_AVX2;
#endif
    return SLUICE_CPU_PORTABLE;
}

static char refusal[200];

static int select_variant(void) {
    const int best = sluice_cpu_best_variant();
    const char *wanted = getenv("SLUICE_CPU");
    if (wanted == NULL || wanted[0] == '\0') return best;
    for (int variant = 0; variant <= SLUICE_CPU_AVX512_VNNI; variant++) {
        if (strcmp(wanted, variant_names[variant]) != 0) continue;
        if (variant > best) {
            snprintf(refusal, sizeof refusal, "SLUICE_CPU=%s: this CPU runs at most the %s kernels",
                     variant_names[variant], variant_names[best]);
            return -1;
        }
        return variant;
    }
    snprintf(refusal, sizeof refusal, "SLUICE_CPU=%.40s is not a kernel variant (portable, avx2, avx512, avx512-vnni)",
             wanted);
    return -1;
}

int sluice_cpu_variant(void) {
    // Computed once; racing first calls compute the same value.
    static int chosen = -2;
    int variant = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);
    if (variant == -2) {
        variant = select_variant();
        __atomic_store_n(&chosen, variant, __ATOMIC_RELEASE);
    }
    return variant;
}

const char *sluice_cpu_refusal(void) {
    return sluice_cpu_variant() < 0 ? refusal : "";
}
