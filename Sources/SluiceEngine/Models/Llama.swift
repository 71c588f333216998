import Foundation

/// Llama 2/3, Mistral, SmolLM, TinyLlama: the `llama` GGUF architecture.
///
/// Pre-norm blocks (RMSNorm → attention → residual, RMSNorm → SwiGLU → residual),
/// grouped-query attention, RoPE on adjacent pairs (GGUF conversion permutes
/// Llama's Q and K rows for that), optional Llama 3.1 frequency factors, an
/// output projection that may be tied to the embeddings. Qwen 2 is the same
/// network with Q/K/V biases and NeoX-style RoPE, Qwen 3 with per-head RMSNorm of
/// queries and keys (before RoPE) instead of biases, so both reuse this forward pass.
public final class Llama: LanguageModel, @unchecked Sendable {
    public let architecture: String
    public let shape: ModelShape

    struct Layer {
        var attentionNorm: [Float]
        var query: WeightMatrix
        var key: WeightMatrix
        var value: WeightMatrix
        var queryBias: [Float]?
        var keyBias: [Float]?
        var valueBias: [Float]?
        /// Qwen 3: per-head RMSNorm weights of queries and keys (`headSize` each).
        var queryNorm: [Float]?
        var keyNorm: [Float]?
        var attentionOutput: WeightMatrix
        var feedForwardNorm: [Float]
        var gate: WeightMatrix
        var up: WeightMatrix
        var down: WeightMatrix

        var matrices: [WeightMatrix] { [query, key, value, attentionOutput, gate, up, down] }
    }

    let tokenEmbedding: WeightMatrix
    let head: OutputHead
    let layers: [Layer]
    let heads: Int
    let kvHeads: Int
    let headSize: Int
    let feedForwardWidth: Int
    let epsilon: Float
    let rotary: RotaryEmbedding
    let pool: ComputePool

    public convenience init(file: GGUFFile, pool: ComputePool, precision: MatmulPrecision = .float32) throws {
        try self.init(file: file, pool: pool, architecture: "llama", rotaryStyle: .interleaved, hasAttentionBiases: false,
                      hasQueryKeyNorms: false, precision: precision)
    }

    /// Loads a Llama-shaped network whose hyperparameters live under `architecture.` keys.
    init(file: GGUFFile, pool: ComputePool, architecture: String, rotaryStyle: RotaryEmbedding.Style, hasAttentionBiases: Bool,
         hasQueryKeyNorms: Bool, precision: MatmulPrecision = .float32) throws {
        self.architecture = architecture
        self.pool = pool
        let a = architecture + "."
        let width = try file.requireInt(a + "embedding_length")
        let layerCount = try file.requireInt(a + "block_count")
        heads = try file.requireInt(a + "attention.head_count")
        kvHeads = try file.optionalInt(a + "attention.head_count_kv") ?? heads
        headSize = try file.optionalInt(a + "attention.key_length") ?? (heads > 0 ? width / heads : 0)
        let valueSize = try file.optionalInt(a + "attention.value_length") ?? headSize
        feedForwardWidth = try file.requireInt(a + "feed_forward_length")
        epsilon = Float(try file.optionalDouble(a + "attention.layer_norm_rms_epsilon") ?? 1e-5)
        let contextLength = try file.optionalInt(a + "context_length") ?? 4096
        guard heads > 0, kvHeads > 0, heads % kvHeads == 0, headSize > 0, headSize % 2 == 0, valueSize == headSize, layerCount > 0 else {
            throw ModelLoadError("\(architecture): inconsistent attention shape (heads \(heads), kv heads \(kvHeads), key size \(headSize), value size \(valueSize))")
        }
        let ropeDimensions = try file.optionalInt(a + "rope.dimension_count") ?? headSize
        guard ropeDimensions == headSize else {
            throw ModelLoadError("\(architecture): partial rotary embeddings (\(ropeDimensions) of \(headSize) dimensions) are not supported")
        }
        let base = try file.optionalDouble(a + "rope.freq_base") ?? 10_000
        var positionScale = 1.0
        if let scalingType = try? file.requireString(a + "rope.scaling.type"), scalingType != "none" {
            guard scalingType == "linear" else {
                throw ModelLoadError("\(architecture): RoPE scaling '\(scalingType)' is not supported")
            }
            positionScale = 1 / (try file.optionalDouble(a + "rope.scaling.factor") ?? 1)
        }
        let frequencyFactors = try file.optionalVector("rope_freqs.weight", count: headSize / 2)
        rotary = RotaryEmbedding(dimensions: headSize, base: base, style: rotaryStyle,
                                 positionScale: positionScale, frequencyFactors: frequencyFactors)

        tokenEmbedding = try file.matrix("token_embd.weight", columns: width, rows: try Gemma3.vocabularySize(file), precision: precision)
        let output = try file.optionalMatrix("output.weight", columns: width, rows: tokenEmbedding.rows, precision: precision) ?? tokenEmbedding
        head = OutputHead(norm: try file.vector("output_norm.weight", count: width), epsilon: epsilon, matrix: output, pool: pool)
        let (heads, kvHeads, headSize, feedForwardWidth) = (heads, kvHeads, headSize, feedForwardWidth)
        layers = try (0..<layerCount).map { i in
            let p = "blk.\(i)."
            func bias(_ name: String, _ count: Int) throws -> [Float]? {
                hasAttentionBiases ? try file.vector(p + name, count: count) : try file.optionalVector(p + name, count: count)
            }
            return Layer(
                attentionNorm: try file.vector(p + "attn_norm.weight", count: width),
                query: try file.matrix(p + "attn_q.weight", columns: width, rows: heads * headSize, precision: precision),
                key: try file.matrix(p + "attn_k.weight", columns: width, rows: kvHeads * headSize, precision: precision),
                value: try file.matrix(p + "attn_v.weight", columns: width, rows: kvHeads * headSize, precision: precision),
                queryBias: try bias("attn_q.bias", heads * headSize),
                keyBias: try bias("attn_k.bias", kvHeads * headSize),
                valueBias: try bias("attn_v.bias", kvHeads * headSize),
                queryNorm: hasQueryKeyNorms ? try file.vector(p + "attn_q_norm.weight", count: headSize) : nil,
                keyNorm: hasQueryKeyNorms ? try file.vector(p + "attn_k_norm.weight", count: headSize) : nil,
                attentionOutput: try file.matrix(p + "attn_output.weight", columns: heads * headSize, rows: width, precision: precision),
                feedForwardNorm: try file.vector(p + "ffn_norm.weight", count: width),
                gate: try file.matrix(p + "ffn_gate.weight", columns: width, rows: feedForwardWidth, precision: precision),
                up: try file.matrix(p + "ffn_up.weight", columns: width, rows: feedForwardWidth, precision: precision),
                down: try file.matrix(p + "ffn_down.weight", columns: feedForwardWidth, rows: width, precision: precision))
        }
        shape = ModelShape(vocabularySize: tokenEmbedding.rows, contextLength: contextLength, layerCount: layerCount,
                           embeddingWidth: width, kvWidth: kvHeads * headSize,
                           kvStorage: .matching(layers.flatMap(\.matrices)))
    }

    public func forward(tokens: [Int32], placements: [TokenPlacement], logitRows: [Int], argmaxRows: ArgmaxRows?,
                        cache: KVCache, logits: UnsafeMutablePointer<Float>) -> [Int32?] {
        // A step of carried rows alone (see `HeadCarry`) runs no block.
        let x = tokens.isEmpty ? Activations(0) : residualStream(tokens: tokens, placements: placements, cache: cache)
        return head.project(x.pointer, width: shape.embeddingWidth, logitRows: logitRows, argmaxRows: argmaxRows, into: logits, pool: pool)
    }

    public func hiddenStates(tokens: [Int32], placements: [TokenPlacement], rows: [Int], cache: KVCache,
                             into states: UnsafeMutablePointer<Float>) {
        let x = residualStream(tokens: tokens, placements: placements, cache: cache)
        head.normalize(x.pointer, width: shape.embeddingWidth, rows: rows, into: states, pool: pool)
    }

    /// Every block over the batch (keys and values into `cache`): the residual stream after the
    /// last block, before the output norm.
    func residualStream(tokens: [Int32], placements: [TokenPlacement], cache: KVCache) -> Activations {
        let n = tokens.count
        let width = shape.embeddingWidth
        let queryWidth = heads * headSize
        let kvWidth = kvHeads * headSize
        rotary.reserve(positions: (placements.map(\.position).max() ?? 0) + 1)

        let x = Activations(n * width)          // the residual stream
        let normed = Activations(n * width)
        let q = Activations(n * queryWidth)
        let k = Activations(n * kvWidth)
        let v = Activations(n * kvWidth)
        let attended = Activations(n * queryWidth)
        let projected = Activations(n * width)
        let gate = Activations(n * feedForwardWidth)
        let up = Activations(n * feedForwardWidth)

        for (t, token) in tokens.enumerated() {
            tokenEmbedding.dequantize(row: Int(token), into: x.pointer + t * width)
        }
        let attention = AttentionShape(heads: heads, kvHeads: kvHeads, headSize: headSize,
                                       scale: Float(1 / Double(headSize).squareRoot()), window: nil)

        // Elementwise work between the matrix products runs on the pool too once the batch is large
        // enough (ElementwiseSplit); each token's or row's arithmetic is the same on any thread.
        let tokensPerChunk = ElementwiseSplit.rows(ofWidth: queryWidth + 2 * kvWidth)
        for (index, layer) in layers.enumerated() {
            // Attention block: norm → Q, K, V (+ biases) → RoPE → cache → attend → project → residual.
            rmsNorm(x.pointer, rows: n, width: width, weight: layer.attentionNorm, epsilon: epsilon, into: normed.pointer, pool: pool)
            matmul(normed.pointer, tokens: n, [(layer.query, q.pointer), (layer.key, k.pointer), (layer.value, v.pointer)], pool: pool)
            forEachRange(n, minimumPerChunk: tokensPerChunk, pool: pool) { range in
                let (queries, keys, values) = (q.pointer + range.lowerBound * queryWidth, k.pointer + range.lowerBound * kvWidth,
                                               v.pointer + range.lowerBound * kvWidth)
                if let bias = layer.queryBias { addBias(queries, rows: range.count, width: queryWidth, bias: bias) }
                if let bias = layer.keyBias { addBias(keys, rows: range.count, width: kvWidth, bias: bias) }
                if let bias = layer.valueBias { addBias(values, rows: range.count, width: kvWidth, bias: bias) }
                for t in range {
                    if let norm = layer.queryNorm {
                        rmsNorm(q.pointer + t * queryWidth, rows: heads, width: headSize, weight: norm, epsilon: epsilon,
                                into: q.pointer + t * queryWidth)
                    }
                    if let norm = layer.keyNorm {
                        rmsNorm(k.pointer + t * kvWidth, rows: kvHeads, width: headSize, weight: norm, epsilon: epsilon,
                                into: k.pointer + t * kvWidth)
                    }
                    rotary.apply(q.pointer + t * queryWidth, heads: heads, position: placements[t].position)
                    rotary.apply(k.pointer + t * kvWidth, heads: kvHeads, position: placements[t].position)
                }
            }
            storeKeysAndValues(k.pointer, v.pointer, width: kvWidth, placements: placements, layer: index, cache: cache)
            causalAttention(queries: q.pointer, placements: placements, shape: attention, cache: cache, layer: index,
                            output: attended.pointer, pool: pool)
            matmul(attended.pointer, tokens: n, layer.attentionOutput, into: projected.pointer, pool: pool)
            addInPlace(x.pointer, projected.pointer, count: n * width, pool: pool)

            // Feed-forward block: norm → silu(gate) · up → down → residual.
            rmsNorm(x.pointer, rows: n, width: width, weight: layer.feedForwardNorm, epsilon: epsilon, into: normed.pointer, pool: pool)
            matmul(normed.pointer, tokens: n, [(layer.gate, gate.pointer), (layer.up, up.pointer)], pool: pool)
            siluGate(gate.pointer, up.pointer, count: n * feedForwardWidth, pool: pool)
            matmul(gate.pointer, tokens: n, layer.down, into: projected.pointer, pool: pool)
            addInPlace(x.pointer, projected.pointer, count: n * width, pool: pool)
        }

        return x
    }
}
