/// The sizes the engine needs to know about a model.
public struct ModelShape: Sendable {
    public var vocabularySize: Int
    public var contextLength: Int
    public var layerCount: Int
    public var embeddingWidth: Int
    /// Floats per token per layer in the KV cache, for keys (and again for values).
    public var kvWidth: Int
    /// Each layer's attention window (nil: global); empty when every layer is global.
    public var slidingWindows: [Int?] = []
    /// How the KV cache stores keys and values: float16 where the matrix products round
    /// activations to integers anyway, float32 where they keep every float exactly.
    public var kvStorage: KVStorage = .float32
}

/// A decoder-only transformer that turns a batch of tokens into next-token logits.
///
/// One type per architecture (Gemma 3, Llama, Qwen 2), each with a forward pass
/// that reads top to bottom over the shared kernels and KV cache.
public protocol LanguageModel: AnyObject, Sendable {
    /// The GGUF `general.architecture` this model implements.
    var architecture: String { get }
    var shape: ModelShape { get }

    /// Runs one step over a batch that may mix several sequences' prefill chunks and decode tokens.
    ///
    /// Writes every token's keys and values into `cache` at its placement (the
    /// cache must have room), and the logits of the tokens at `logitRows`
    /// (indices into the batch) into `logits`, `vocabularySize` floats each, in that order.
    ///
    /// Rows flagged in `argmaxRows` need only their most likely token: for those the result
    /// holds the token `Sampler.argmax` would pick from their logits (their rows of `logits`
    /// are left undefined); it holds nil for the others.
    func forward(tokens: [Int32], placements: [TokenPlacement], logitRows: [Int], argmaxRows: ArgmaxRows?,
                 cache: KVCache, logits: UnsafeMutablePointer<Float>) -> [Int32?]

    /// Runs a step as `forward` does (every token's keys and values go into `cache`) and writes
    /// the final hidden states of the tokens at `rows` (indices into the batch) into `states`,
    /// `embeddingWidth` floats each, in that order.
    ///
    /// A final hidden state is the residual stream after the output norm: what the output
    /// projection reads, and what llama.cpp pools for embeddings (its `t_embd`, `result_norm`).
    /// It is computed by the same operations as in `forward`, so its logits would be the ones
    /// `forward` gives.
    func hiddenStates(tokens: [Int32], placements: [TokenPlacement], rows: [Int], cache: KVCache,
                      into states: UnsafeMutablePointer<Float>)
}

/// Which logit rows of a step need only their most likely token (greedy sampling without
/// log-probabilities), so the output projection may skip computing their other logits.
public struct ArgmaxRows: Sendable {
    /// One flag per entry of `logitRows`.
    public var flags: [Bool]
    /// Tokens from here on are never picked (padding rows of the embedding).
    public var usableVocabulary: Int

    public init(flags: [Bool], usableVocabulary: Int) {
        self.flags = flags
        self.usableVocabulary = usableVocabulary
    }
}

extension LanguageModel {
    /// One step with every logit row's logits written (see the requirement).
    public func forward(tokens: [Int32], placements: [TokenPlacement], logitRows: [Int],
                        cache: KVCache, logits: UnsafeMutablePointer<Float>) {
        _ = forward(tokens: tokens, placements: placements, logitRows: logitRows, argmaxRows: nil, cache: cache, logits: logits)
    }

    /// A cache sized for this model's layers and windows, holding at most `budgetBytes` (nil: unlimited).
    public func makeCache(budgetBytes: Int? = nil, blockPositions: Int = KVCache.defaultBlockPositions) -> KVCache {
        KVCache(layerCount: shape.layerCount, width: shape.kvWidth, budgetBytes: budgetBytes,
                slidingWindows: shape.slidingWindows, blockPositions: blockPositions, storage: shape.kvStorage)
    }
}

/// Loads the architecture a GGUF file declares, its matrix products running at `precision`.
public func loadLanguageModel(_ file: GGUFFile, pool: ComputePool, precision: MatmulPrecision = .float32) throws -> any LanguageModel {
    let architecture = try file.requireString("general.architecture")
    switch architecture {
    case "gemma3": return try Gemma3(file: file, pool: pool, precision: precision)
    case "llama": return try Llama(file: file, pool: pool, precision: precision)
    case "qwen2": return try Qwen2.load(file: file, pool: pool, precision: precision)
    case "qwen3": return try Qwen3.load(file: file, pool: pool, precision: precision)
    default:
        throw ModelLoadError("architecture '\(architecture)' is not supported (supported: gemma3, llama, qwen2, qwen3)")
    }
}

/// Why a model file could not be used.
public struct ModelLoadError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Copies each token's new keys and values (`width` floats per token) into the cache at its
/// placement, in the cache's storage type.
func storeKeysAndValues(_ keys: UnsafePointer<Float>, _ values: UnsafePointer<Float>, width: Int,
                        placements: [TokenPlacement], layer: Int, cache: KVCache) {
    func store<Element: CacheElement>(_: Element.Type) {
        for (t, placement) in placements.enumerated() {
            let view = cache.view(slot: placement.slot).layer(layer)
            Element.store(keys + t * width, into: view.key(placement.position, as: Element.self), count: width)
            Element.store(values + t * width, into: view.value(placement.position, as: Element.self), count: width)
        }
    }
    switch cache.storage {
    case .float32: store(Float.self)
    case .float16: store(Float16.self)
    }
}

/// The final norm and output projection, shared by every architecture.
struct OutputHead: @unchecked Sendable {
    // Sendable: written once in init, read-only afterwards.
    let norm: [Float]
    let epsilon: Float
    let matrix: WeightMatrix
    /// Greedy rows' tokens without every logit at two bytes per activation (`int16` only:
    /// at `int8` the full product is already the cheap one).
    let argmaxHead: ArgmaxHead?

    init(norm: [Float], epsilon: Float, matrix: WeightMatrix, pool: ComputePool) {
        self.norm = norm
        self.epsilon = epsilon
        self.matrix = matrix
        argmaxHead = matrix.precision == .int16 ? matrix.int8.map { ArgmaxHead($0, pool: pool) } : nil
    }

    /// Projects the batch rows at `logitRows` of the residual stream `x`: logits into
    /// `logits` (row i at `i * vocabulary`), or for rows flagged in `argmaxRows` the chosen
    /// token only. Prompt rows skip the projection: it is the largest matrix of a small model.
    func project(_ x: UnsafePointer<Float>, width: Int, logitRows: [Int], argmaxRows: ArgmaxRows?,
                 into logits: UnsafeMutablePointer<Float>, pool: ComputePool) -> [Int32?] {
        let count = logitRows.count, vocabulary = matrix.rows
        var chosen = [Int32?](repeating: nil, count: count)
        guard count > 0 else { return chosen }
        let flags = argmaxRows?.flags ?? Array(repeating: false, count: count)
        precondition(flags.count == count, "one argmax flag per logit row")
        // Full rows first, then greedy ones, so each group is one contiguous batch.
        let order = logitRows.indices.filter { !flags[$0] } + logitRows.indices.filter { flags[$0] }
        let selected = Activations(count * width)
        normalize(x, width: width, rows: order.map { logitRows[$0] }, into: selected.pointer, pool: pool)
        let fullCount = flags.lazy.filter { !$0 }.count
        if let argmaxHead, let argmaxRows, fullCount < count {
            matmul(selected.pointer, tokens: fullCount, matrix, into: logits, pool: pool)
            let tokens = argmaxHead.argmax(selected.pointer + fullCount * width, tokens: count - fullCount,
                                           usable: argmaxRows.usableVocabulary, scratch: logits + fullCount * vocabulary, pool: pool)
            for (i, token) in tokens.enumerated() { chosen[order[fullCount + i]] = token }
        } else {
            matmul(selected.pointer, tokens: count, matrix, into: logits, pool: pool)
            for i in fullCount..<count {
                chosen[order[i]] = Sampler.argmax(logits + i * vocabulary, count: argmaxRows?.usableVocabulary ?? vocabulary)
            }
        }
        // Full rows to their own places, last first: each moves to a place at or after its own.
        for i in (0..<fullCount).reversed() where order[i] != i {
            (logits + order[i] * vocabulary).update(from: logits + i * vocabulary, count: vocabulary)
        }
        return chosen
    }

    /// The batch rows at `rows` of the residual stream `x`, after the final norm, into `states`
    /// (`width` floats each, in that order): the hidden states the projection reads.
    func normalize(_ x: UnsafePointer<Float>, width: Int, rows: [Int], into states: UnsafeMutablePointer<Float>, pool: ComputePool) {
        guard !rows.isEmpty else { return }
        for (i, row) in rows.enumerated() {
            (states + i * width).update(from: x + row * width, count: width)
        }
        rmsNorm(states, rows: rows.count, width: width, weight: norm, epsilon: epsilon, into: states, pool: pool)
    }
}

/// A scratch matrix of floats that frees itself.
final class Activations {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int

    init(_ count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { pointer.deallocate() }
}
