import Foundation

/// Gemma 3 (text), as llama.cpp runs the `gemma3` GGUF architecture.
///
/// What sets it apart from Llama: embeddings scaled by √width; RMSNorm both
/// before and after attention and the feed-forward block (GGUF stores the norm
/// weights with Gemma's +1 already folded in); per-head RMSNorm of queries and
/// keys; NeoX-style RoPE with base 10 000 on sliding-window layers and
/// `rope.freq_base` on every sixth (global) layer; queries scaled by
/// 1/√head_size before the dot product; GELU (tanh) gated feed-forward; output
/// projection tied to the token embeddings.
public final class Gemma3: LanguageModel, @unchecked Sendable {
    public let architecture = "gemma3"
    public let shape: ModelShape

    struct Layer {
        var attentionNorm: [Float]
        var query: WeightMatrix
        var key: WeightMatrix
        var value: WeightMatrix
        var queryNorm: [Float]
        var keyNorm: [Float]
        var attentionOutput: WeightMatrix
        var postAttentionNorm: [Float]
        var feedForwardNorm: [Float]
        var gate: WeightMatrix
        var up: WeightMatrix
        var down: WeightMatrix
        var postFeedForwardNorm: [Float]
        /// Sliding-window layers see the last `window` positions; global ones see all.
        var window: Int?
        var rotary: RotaryEmbedding

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
    let queryScale: Float
    let pool: ComputePool

    public init(file: GGUFFile, pool: ComputePool, precision: MatmulPrecision = .float32) throws {
        self.pool = pool
        let width = try file.requireInt("gemma3.embedding_length")
        let layerCount = try file.requireInt("gemma3.block_count")
        heads = try file.requireInt("gemma3.attention.head_count")
        kvHeads = try file.optionalInt("gemma3.attention.head_count_kv") ?? heads
        headSize = try file.optionalInt("gemma3.attention.key_length") ?? width / heads
        let valueSize = try file.optionalInt("gemma3.attention.value_length") ?? headSize
        feedForwardWidth = try file.requireInt("gemma3.feed_forward_length")
        epsilon = Float(try file.optionalDouble("gemma3.attention.layer_norm_rms_epsilon") ?? 1e-6)
        let contextLength = try file.optionalInt("gemma3.context_length") ?? 32768
        let window = try file.optionalInt("gemma3.attention.sliding_window") ?? 512
        let globalBase = try file.optionalDouble("gemma3.rope.freq_base") ?? 1_000_000
        let scalingFactor = try file.optionalDouble("gemma3.rope.scaling.factor") ?? 1
        guard heads > 0, kvHeads > 0, heads % kvHeads == 0, headSize > 0, headSize % 2 == 0, valueSize == headSize, layerCount > 0 else {
            throw ModelLoadError("gemma3: inconsistent attention shape (heads \(heads), kv heads \(kvHeads), key size \(headSize), value size \(valueSize))")
        }
        // Gemma 3 scales queries by 1/√query_pre_attn_scalar, which is the head size for every size but 27B;
        // llama.cpp derives the same from the shape.
        queryScale = Float(1 / Double(headSize).squareRoot())

        tokenEmbedding = try file.matrix("token_embd.weight", columns: width, rows: try Self.vocabularySize(file), precision: precision)
        let output = try file.optionalMatrix("output.weight", columns: width, rows: tokenEmbedding.rows, precision: precision) ?? tokenEmbedding
        head = OutputHead(norm: try file.vector("output_norm.weight", count: width), epsilon: epsilon, matrix: output, pool: pool)

        // Local layers: base 10 000 with no scaling; global layers: the file's base and linear scaling.
        let localRotary = RotaryEmbedding(dimensions: headSize, base: 10_000, style: .halves)
        let globalRotary = RotaryEmbedding(dimensions: headSize, base: globalBase, style: .halves, positionScale: 1 / scalingFactor)
        let (heads, kvHeads, headSize, feedForwardWidth) = (heads, kvHeads, headSize, feedForwardWidth)
        layers = try (0..<layerCount).map { i in
            let p = "blk.\(i)."
            let isGlobal = i % 6 == 5
            return Layer(
                attentionNorm: try file.vector(p + "attn_norm.weight", count: width),
                query: try file.matrix(p + "attn_q.weight", columns: width, rows: heads * headSize, precision: precision),
                key: try file.matrix(p + "attn_k.weight", columns: width, rows: kvHeads * headSize, precision: precision),
                value: try file.matrix(p + "attn_v.weight", columns: width, rows: kvHeads * headSize, precision: precision),
                queryNorm: try file.vector(p + "attn_q_norm.weight", count: headSize),
                keyNorm: try file.vector(p + "attn_k_norm.weight", count: headSize),
                attentionOutput: try file.matrix(p + "attn_output.weight", columns: heads * headSize, rows: width, precision: precision),
                postAttentionNorm: try file.vector(p + "post_attention_norm.weight", count: width),
                feedForwardNorm: try file.vector(p + "ffn_norm.weight", count: width),
                gate: try file.matrix(p + "ffn_gate.weight", columns: width, rows: feedForwardWidth, precision: precision),
                up: try file.matrix(p + "ffn_up.weight", columns: width, rows: feedForwardWidth, precision: precision),
                down: try file.matrix(p + "ffn_down.weight", columns: feedForwardWidth, rows: width, precision: precision),
                postFeedForwardNorm: try file.vector(p + "post_ffw_norm.weight", count: width),
                window: isGlobal ? nil : window,
                rotary: isGlobal ? globalRotary : localRotary)
        }
        shape = ModelShape(vocabularySize: tokenEmbedding.rows, contextLength: contextLength, layerCount: layerCount,
                           embeddingWidth: width, kvWidth: kvHeads * headSize, slidingWindows: layers.map(\.window),
                           kvStorage: .matching(layers.flatMap(\.matrices)))
    }

    static func vocabularySize(_ file: GGUFFile) throws -> Int {
        guard let tensor = file.tensor(named: "token_embd.weight"), tensor.dimensions.count == 2 else {
            throw ModelLoadError("the model file has no 2-D tensor 'token_embd.weight'")
        }
        return tensor.dimensions[1]
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
        let maxPosition = placements.map(\.position).max() ?? 0
        for layer in layers { layer.rotary.reserve(positions: maxPosition + 1) }

        let x = Activations(n * width)          // the residual stream
        let normed = Activations(n * width)
        let q = Activations(n * queryWidth)
        let k = Activations(n * kvWidth)
        let v = Activations(n * kvWidth)
        let attended = Activations(n * queryWidth)
        let projected = Activations(n * width)
        let gate = Activations(n * feedForwardWidth)
        let up = Activations(n * feedForwardWidth)

        let embeddingScale = Float(Double(width).squareRoot())
        for (t, token) in tokens.enumerated() {
            tokenEmbedding.dequantize(row: Int(token), into: x.pointer + t * width)
            scaleInPlace(x.pointer + t * width, by: embeddingScale, count: width)
        }

        // Elementwise work between the matrix products runs on the pool too once the batch is large
        // enough (ElementwiseSplit); each token's or row's arithmetic is the same on any thread.
        let tokensPerChunk = ElementwiseSplit.rows(ofWidth: 2 * (queryWidth + kvWidth))
        let rowsPerChunk = ElementwiseSplit.rows(ofWidth: 3 * width)
        for (index, layer) in layers.enumerated() {
            // Attention block: norm → Q, K, V → per-head norm → RoPE → cache → attend → project → norm → residual.
            rmsNorm(x.pointer, rows: n, width: width, weight: layer.attentionNorm, epsilon: epsilon, into: normed.pointer, pool: pool)
            matmul(normed.pointer, tokens: n, [(layer.query, q.pointer), (layer.key, k.pointer), (layer.value, v.pointer)], pool: pool)
            forEachRange(n, minimumPerChunk: tokensPerChunk, pool: pool) { range in
                for t in range {
                    let (query, key) = (q.pointer + t * queryWidth, k.pointer + t * kvWidth)
                    rmsNorm(query, rows: heads, width: headSize, weight: layer.queryNorm, epsilon: epsilon, into: query)
                    rmsNorm(key, rows: kvHeads, width: headSize, weight: layer.keyNorm, epsilon: epsilon, into: key)
                    layer.rotary.apply(query, heads: heads, position: placements[t].position)
                    layer.rotary.apply(key, heads: kvHeads, position: placements[t].position)
                    scaleInPlace(query, by: queryScale, count: queryWidth)
                }
            }
            storeKeysAndValues(k.pointer, v.pointer, width: kvWidth, placements: placements, layer: index, cache: cache)
            let attention = AttentionShape(heads: heads, kvHeads: kvHeads, headSize: headSize, scale: 1, window: layer.window)
            causalAttention(queries: q.pointer, placements: placements, shape: attention, cache: cache, layer: index,
                            output: attended.pointer, pool: pool)
            matmul(attended.pointer, tokens: n, layer.attentionOutput, into: projected.pointer, pool: pool)
            // Post-attention norm, residual and the feed-forward block's norm, row by row in one pass.
            forEachRange(n, minimumPerChunk: rowsPerChunk, pool: pool) { range in
                let offset = range.lowerBound * width
                rmsNorm(projected.pointer + offset, rows: range.count, width: width, weight: layer.postAttentionNorm,
                        epsilon: epsilon, into: projected.pointer + offset)
                addInPlace(x.pointer + offset, projected.pointer + offset, count: range.count * width)
                rmsNorm(x.pointer + offset, rows: range.count, width: width, weight: layer.feedForwardNorm,
                        epsilon: epsilon, into: normed.pointer + offset)
            }

            // Feed-forward block: gelu(gate) · up → down → norm → residual.
            matmul(normed.pointer, tokens: n, [(layer.gate, gate.pointer), (layer.up, up.pointer)], pool: pool)
            geluTanhGate(gate.pointer, up.pointer, count: n * feedForwardWidth, pool: pool)
            matmul(gate.pointer, tokens: n, layer.down, into: projected.pointer, pool: pool)
            forEachRange(n, minimumPerChunk: rowsPerChunk, pool: pool) { range in
                let offset = range.lowerBound * width
                rmsNorm(projected.pointer + offset, rows: range.count, width: width, weight: layer.postFeedForwardNorm,
                        epsilon: epsilon, into: projected.pointer + offset)
                addInPlace(x.pointer + offset, projected.pointer + offset, count: range.count * width)
            }
        }

        return x
    }
}
