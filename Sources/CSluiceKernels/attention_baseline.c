// Attention's inner loops (attention_kernels.h) compiled for the build's baseline: the `portable`
// variant's. On x86-64-v2 their fused multiply-adds are vector software ones (vector16.h), the
// same roundings as the instruction's.
#include "sluice_kernels.h"

#include <stddef.h>
#include <stdint.h>

#pragma clang fp contract(off)

#include "vector16.h"
#define VARIANT(name) name##_baseline
#include "attention_kernels.h"
