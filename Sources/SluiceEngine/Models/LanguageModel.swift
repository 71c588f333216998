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
    /// Rows flagged in `argmaxRows` need only their chosen token: for those the result holds
    /// the token `Sampler.argmax` would pick from their logits, or for a row with a draw the
    /// token `Sampler.sample` would draw (their rows of `logits` are left undefined). It holds
    /// nil for the others, whose logits are written, and for drawn rows the projection left to
    /// the caller's sampler, whose logits are written too, or deferred (see `HeadCarry`).
    /// `tokens` may be empty when `argmaxRows` carries rows: their logits are then all the step writes.
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

/// Which logit rows of a step need only their chosen token (greedy or sampled, without
/// log-probabilities or a transform of the logits), so the output projection may skip computing
/// their other logits.
public struct ArgmaxRows: Sendable {
    /// One flag per entry of `logitRows`.
    public var flags: [Bool]
    /// Per entry of `logitRows`: for a flagged row, nil picks the most likely token, a draw the
    /// token `Sampler.sample` draws with it.
    public var draws: [HeadDraw?]
    /// Tokens from here on are never picked (padding rows of the embedding).
    public var usableVocabulary: Int
    /// Rows carried between steps (nil: none are deferred or carried).
    public var carry: HeadCarry?

    public init(flags: [Bool], draws: [HeadDraw?]? = nil, usableVocabulary: Int, carry: HeadCarry? = nil) {
        self.flags = flags
        self.draws = draws ?? Array(repeating: nil, count: flags.count)
        self.usableVocabulary = usableVocabulary
        self.carry = carry
    }
}

/// Drawn rows whose token waits for the next step, so that a step sweeps the output
/// projection's weights once.
///
/// The head's first pass decides most draws. A row it leaves open needs every logit, and
/// computing them at once reads every weight again for a few rows, bound by memory (on the
/// default model at 32 sequences about a tenth of a sampled step). A row the caller marks in
/// `mayDefer` waits instead: the step hands back its hidden state (after the final norm) in
/// `deferred`, and the caller passes it in `incoming` with the next step, whose first pass
/// computes its logits while each stretch of weights is in cache. The token is then drawn from
/// those logits, bit for bit the ones the step would have computed: what waits is when the
/// token arrives, never which token it is.
public final class HeadCarry: @unchecked Sendable {
    // Sendable: the caller fills it before a step and reads it after; the step writes it on the caller's thread.

    /// Per entry of `logitRows`: whether its draw may wait for the next step if the head leaves it open.
    public var mayDefer: [Bool]
    /// Hidden states (after the final norm, `embeddingWidth` floats each) of rows deferred by
    /// earlier steps: the step writes their logits after its own rows', row `logitRows.count + i`
    /// of `logits` for `incoming[i]`.
    public var incoming: [[Float]]
    /// After the step: the entries of `logitRows` it deferred, with their hidden states. Their
    /// result is nil and their rows of `logits` are left undefined.
    public internal(set) var deferred: [Int: [Float]] = [:]

    public init(mayDefer: [Bool], incoming: [[Float]] = []) {
        self.mayDefer = mayDefer
        self.incoming = incoming
    }
}

/// One sampled token's draw: what `Sampler.sample` is given besides the logits.
public struct HeadDraw: Sendable {
    public var parameters: SamplingParameters
    public var uniform: Double

    public init(parameters: SamplingParameters, uniform: Double) {
        self.parameters = parameters
        self.uniform = uniform
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
    /// Greedy and sampled rows' tokens without every logit at two bytes per activation (`int16`
    /// only: at `int8` the full product is already the cheap one).
    let argmaxHead: ArgmaxHead?

    /// The fewest drawn rows in a step for which the head draws them: a few rows' full product is
    /// bound by memory, reading the weights no slower than the first pass does, and the rows the
    /// bounds leave open would read them twice. Measured on the default model at 0.8 / 0.95: one
    /// sequence 71-76 tokens/s through the head against 80 without, 8 sequences 1-2% slower,
    /// 16 even, 32 about 13% faster.
    static let fewestDrawnRows = 16

    init(norm: [Float], epsilon: Float, matrix: WeightMatrix, pool: ComputePool) {
        self.norm = norm
        self.epsilon = epsilon
        self.matrix = matrix
        argmaxHead = matrix.precision == .int16 ? matrix.int8.map { ArgmaxHead($0, pool: pool) } : nil
    }

    /// Projects the batch rows at `logitRows` of the residual stream `x`: logits into
    /// `logits` (row i at `i * vocabulary`), or for rows flagged in `argmaxRows` the chosen
    /// token only (see `LanguageModel.forward`), and after them the logits of rows carried
    /// from earlier steps (see `HeadCarry`). Prompt rows skip the projection: it is the
    /// largest matrix of a small model.
    func project(_ x: UnsafePointer<Float>, width: Int, logitRows: [Int], argmaxRows: ArgmaxRows?,
                 into logits: UnsafeMutablePointer<Float>, pool: ComputePool) -> [Int32?] {
        let count = logitRows.count, vocabulary = matrix.rows
        var chosen = [Int32?](repeating: nil, count: count)
        let carry = argmaxRows?.carry
        let carried = carry?.incoming ?? []
        carry?.deferred = [:]
        guard count + carried.count > 0 else { return chosen }
        var flags = argmaxRows?.flags ?? Array(repeating: false, count: count)
        let draws = argmaxRows?.draws ?? Array(repeating: nil, count: count)
        precondition(flags.count == count && draws.count == count, "one argmax flag and draw per logit row")
        precondition(carry.map { $0.mayDefer.count == count && $0.incoming.allSatisfy { $0.count == width } } ?? true,
                     "one deferral flag per logit row, and carried rows of the model's width")
        let drawnCount = (0..<count).lazy.filter { flags[$0] && draws[$0] != nil }.count
        if let argmaxHead, drawnCount > 0, drawnCount < Self.fewestDrawnRows || !argmaxHead.drawsPay() {
            // Too few drawn rows for the head's first pass to pay, or a model whose draws it mostly
            // leaves open: they get their full logits.
            for i in 0..<count where draws[i] != nil { flags[i] = false }
        }
        // The rows as computed: this step's full rows, the carried rows, then the flagged rows,
        // so that each group is one contiguous batch.
        let order = logitRows.indices.filter { !flags[$0] } + logitRows.indices.filter { flags[$0] }
        let fullCount = flags.lazy.filter { !$0 }.count, withCarried = fullCount + carried.count
        let selected = Activations((count + carried.count) * width)
        normalize(x, width: width, rows: order[..<fullCount].map { logitRows[$0] }, into: selected.pointer, pool: pool)
        for (i, state) in carried.enumerated() {
            state.withUnsafeBufferPointer { (selected.pointer + (fullCount + i) * width).update(from: $0.baseAddress!, count: width) }
        }
        normalize(x, width: width, rows: order[fullCount...].map { logitRows[$0] }, into: selected.pointer + withCarried * width,
                  pool: pool)
        // Rows of logits to move to their own places: (place in the batch as computed, row).
        var moves = (0..<fullCount).map { (from: $0, to: order[$0]) } + carried.indices.map { (from: fullCount + $0, to: count + $0) }
        if let argmaxHead, let argmaxRows, fullCount < count {
            let headDraws = order[fullCount...].map { draws[$0] }
            // The full and carried rows' logits come out of the head's first pass, which reads every
            // weight anyway: a step mixing them (log-probabilities, a transform, draws the head skips,
            // draws deferred from the step before) with flagged rows sweeps the weights once.
            let picks = argmaxHead.choose(selected.pointer + withCarried * width, tokens: count - fullCount,
                                          usable: argmaxRows.usableVocabulary, draws: headDraws,
                                          scratch: logits + withCarried * vocabulary,
                                          full: .init(x: selected.pointer, count: withCarried, output: logits), pool: pool)
            for (i, token) in picks.enumerated() { chosen[order[fullCount + i]] = token }
            let open = picks.indices.filter { picks[$0] == nil }
            argmaxHead.recordDraws(drawn: headDraws.lazy.filter { $0 != nil }.count, open: open.count)
            // Drawn rows the head left open wait for the next step where the caller allows; the others
            // get their full logits now, batched after the full and carried rows, for the caller's sampler.
            var computed: [Int] = []
            for i in open {
                if let carry, carry.mayDefer[order[fullCount + i]] {
                    let state = selected.pointer + (withCarried + i) * width
                    carry.deferred[order[fullCount + i]] = Array(UnsafeBufferPointer(start: state, count: width))
                } else {
                    computed.append(i)
                }
            }
            if !computed.isEmpty {
                let openRows = Activations(computed.count * width)
                for (k, i) in computed.enumerated() {
                    (openRows.pointer + k * width).update(from: selected.pointer + (withCarried + i) * width, count: width)
                }
                matmul(openRows.pointer, tokens: computed.count, matrix, into: logits + withCarried * vocabulary, pool: pool)
                moves += computed.enumerated().map { (from: withCarried + $0.offset, to: order[fullCount + $0.element]) }
            }
        } else {
            matmul(selected.pointer, tokens: count + carried.count, matrix, into: logits, pool: pool)
            for i in fullCount..<count where draws[order[i]] == nil {
                chosen[order[i]] = Sampler.argmax(logits + (carried.count + i) * vocabulary,
                                                  count: argmaxRows?.usableVocabulary ?? vocabulary)
            }
            // Drawn rows keep their logits, for the caller's sampler.
            moves += (fullCount..<count).filter { draws[order[$0]] != nil }.map { (from: carried.count + $0, to: order[$0]) }
        }
        moveRows(logits, vocabulary: vocabulary, moves)
        return chosen
    }

    /// Moves each row `from` of `logits` to row `to` (distinct destinations, anywhere in the
    /// buffer): a row whose destination holds no row still to move goes first, and a cycle is
    /// broken through a copy of one row.
    private func moveRows(_ logits: UnsafeMutablePointer<Float>, vocabulary: Int, _ moves: [(from: Int, to: Int)]) {
        var pending = moves.filter { $0.from != $0.to }
        // The places that hold a row still to move.
        var occupied = Set(pending.map(\.from))
        var parked: (to: Int, copy: [Float])?
        while !pending.isEmpty || parked != nil {
            if let i = pending.firstIndex(where: { !occupied.contains($0.to) }) {
                let move = pending.remove(at: i)
                (logits + move.to * vocabulary).update(from: logits + move.from * vocabulary, count: vocabulary)
                occupied.remove(move.from)
            } else if let (to, copy) = parked, !occupied.contains(to) {
                copy.withUnsafeBufferPointer { (logits + to * vocabulary).update(from: $0.baseAddress!, count: vocabulary) }
                parked = nil
            } else {
                // Every destination still holds a row to move: a cycle. (Destinations are distinct,
                // so the rows it leaves behind can always move until the parked one's place is free.)
                let move = pending.removeFirst()
                parked = (move.to, Array(UnsafeBufferPointer(start: logits + move.from * vocabulary, count: vocabulary)))
                occupied.remove(move.from)
            }
        }
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
