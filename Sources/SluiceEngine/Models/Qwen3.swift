/// Qwen 3 (dense): the `qwen3` GGUF architecture.
///
/// The Llama network with NeoX-style RoPE, no Q/K/V biases, and an RMSNorm of each
/// query and key head (its own weights, the model's epsilon) between the projections
/// and RoPE, as llama.cpp runs it. The head size may differ from width / heads
/// (`attention.key_length`). Hyperparameters live under `qwen3.` keys.
public enum Qwen3 {
    public static func load(file: GGUFFile, pool: ComputePool, precision: MatmulPrecision = .float32) throws -> Llama {
        try Llama(file: file, pool: pool, architecture: "qwen3", rotaryStyle: .halves, hasAttentionBiases: false,
                  hasQueryKeyNorms: true, precision: precision)
    }
}
