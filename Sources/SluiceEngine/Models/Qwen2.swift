/// Qwen 2 and 2.5: the `qwen2` GGUF architecture.
///
/// The Llama network with biases on the Q, K and V projections and NeoX-style
/// RoPE (rotating the two halves of each head rather than adjacent pairs), as
/// llama.cpp runs it. Hyperparameters live under `qwen2.` keys.
public enum Qwen2 {
    public static func load(file: GGUFFile, pool: ComputePool, precision: MatmulPrecision = .float32) throws -> Llama {
        try Llama(file: file, pool: pool, architecture: "qwen2", rotaryStyle: .halves, hasAttentionBiases: true,
                  hasQueryKeyNorms: false, precision: precision)
    }
}
