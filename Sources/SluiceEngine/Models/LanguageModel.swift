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
    func forward(tokens: [Int32], placements: [TokenPlacement], logitRows: [Int],
                 cache: KVCache, logits: UnsafeMutablePointer<Float>)
}

extension LanguageModel {
    /// A cache sized for this model's layers and windows, holding at most `budgetBytes` (nil: unlimited).
    public func makeCache(budgetBytes: Int? = nil, blockPositions: Int = KVCache.defaultBlockPositions) -> KVCache {
        KVCache(layerCount: shape.layerCount, width: shape.kvWidth, budgetBytes: budgetBytes,
                slidingWindows: shape.slidingWindows, blockPositions: blockPositions)
    }
}

/// Loads the architecture a GGUF file declares, its matrix products running at `precision`.
public func loadLanguageModel(_ file: GGUFFile, pool: ComputePool, precision: MatmulPrecision = .float32) throws -> any LanguageModel {
    let architecture = try file.requireString("general.architecture")
    switch architecture {
    case "gemma3": return try Gemma3(file: file, pool: pool, precision: precision)
    case "llama": return try Llama(file: file, pool: pool, precision: precision)
    case "qwen2": return try Qwen2.load(file: file, pool: pool, precision: precision)
    default:
        throw ModelLoadError("architecture '\(architecture)' is not supported (supported: gemma3, llama, qwen2)")
    }
}

/// Why a model file could not be used.
public struct ModelLoadError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Copies each token's new keys and values (`width` floats per token) into the cache at its placement.
func storeKeysAndValues(_ keys: UnsafePointer<Float>, _ values: UnsafePointer<Float>, width: Int,
                        placements: [TokenPlacement], layer: Int, cache: KVCache) {
    for (t, placement) in placements.enumerated() {
        let view = cache.view(slot: placement.slot)
        view.key(layer: layer, position: placement.position).update(from: keys + t * width, count: width)
        view.value(layer: layer, position: placement.position).update(from: values + t * width, count: width)
    }
}

/// The final norm and output projection, for the batch rows that sample a token only:
/// the projection is the largest matrix of a small model, so prompt rows skip it.
func projectLogits(_ x: UnsafePointer<Float>, width: Int, logitRows: [Int], norm: [Float], epsilon: Float,
                   output: WeightMatrix, into logits: UnsafeMutablePointer<Float>, pool: ComputePool) {
    let selected = Activations(logitRows.count * width)
    for (i, row) in logitRows.enumerated() {
        (selected.pointer + i * width).update(from: x + row * width, count: width)
    }
    rmsNorm(selected.pointer, rows: logitRows.count, width: width, weight: norm, epsilon: epsilon, into: selected.pointer)
    matmul(selected.pointer, tokens: logitRows.count, output, into: logits, pool: pool)
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
