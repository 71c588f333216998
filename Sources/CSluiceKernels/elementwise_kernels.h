// Elementwise kernels: the gates, softmax, BERT's erf GELU and the fused multiply-add loop of its
// attention. Each is the Swift portable version's sequence of float operations, lane for lane
// (vector16.h), so every variant agrees with Swift to the bit (VectorMathTests). A translation
// unit per variant includes this after vector16.h, with `VARIANT(name)` naming its functions:
// elementwise_avx2.c (AVX2 + FMA) and elementwise_baseline.c (the build's baseline).

void VARIANT(sluice_gelu_tanh_gate)(float *gate, const float *up, long count) {
    const v16f c = splat16((float)sqrt(2.0 / M_PI));
    for (long i = 0; i < count; i += 16) {
        const long n = count - i < 16 ? count - i : 16;
        const v16f g = load_partial16(gate + i, n), u = load_partial16(up + i, n);
        const v16f inner = c * (g + 0.044715f * g * g * g);
        store_partial16(gate + i, 0.5f * g * (1.0f + tanh16(inner)) * u, n);
    }
}

void VARIANT(sluice_silu_gate)(float *gate, const float *up, long count) {
    for (long i = 0; i < count; i += 16) {
        const long n = count - i < 16 ? count - i : 16;
        const v16f g = load_partial16(gate + i, n), u = load_partial16(up + i, n);
        store_partial16(gate + i, g / (1.0f + exp16(-g)) * u, n);
    }
}

void VARIANT(sluice_softmax)(float *scores, long count) {
    float maximum = -INFINITY;
    // Swift's max(maximum, s): s where s >= maximum.
    for (long i = 0; i < count; i++) maximum = scores[i] >= maximum ? scores[i] : maximum;
    const v16i lanes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    v16f totals = splat16(0);
    for (long i = 0; i < count; i += 16) {
        const long n = count - i < 16 ? count - i : 16;
        const v16f e = select16(lanes < (v16i)(int32_t)n, exp16(load_partial16(scores + i, n) - maximum), splat16(0));
        store_partial16(scores + i, e, n);
        totals += e;
    }
    const float inverse = 1.0f / lane_sum16(totals);
    for (long i = 0; i < count; i++) scores[i] *= inverse;
}

void VARIANT(sluice_gelu_erf)(float *x, long count) {
    const v16i sign = (v16i)0x80000000u;
    for (long i = 0; i < count; i += 16) {
        const long n = count - i < 16 ? count - i : 16;
        const v16f v = load_partial16(x + i, n);
        const v16f z = v * (float)(1 / sqrt(2.0));
        const v16i b = bits16(z);
        const v16f a = floats16(b & ~sign);
        const v16f t = 1.0f / (1.0f + 0.3275911f * a);
        v16f p = splat16(1.061405429f);
        p = fma16(p, t, splat16(-1.453152027f));
        p = fma16(p, t, splat16(1.421413741f));
        p = fma16(p, t, splat16(-0.284496736f));
        p = fma16(p, t, splat16(0.254829592f));
        const v16f magnitude = 1.0f - p * t * exp16(-(a * a));
        const v16f erf = floats16(bits16(magnitude) | (b & sign));
        store_partial16(x + i, 0.5f * v * (1.0f + erf), n);
    }
}

void VARIANT(sluice_exp_shifted)(float *x, long count, float shift) {
    for (long i = 0; i < count; i += 16) {
        const long n = count - i < 16 ? count - i : 16;
        store_partial16(x + i, exp16(load_partial16(x + i, n) - shift), n);
    }
}

void VARIANT(sluice_multiply_add)(float *accumulator, float weight, const float *values, long count) {
    long k = 0;
    for (; k + 16 <= count; k += 16) store16f(accumulator + k, fma16(splat16(weight), load16f(values + k), load16f(accumulator + k)));
    for (; k < count; k++) accumulator[k] = __builtin_fmaf(weight, values[k], accumulator[k]);
}
