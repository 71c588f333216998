import Foundation
import SluiceCore

/// A GGUF decoder model (gemma3, llama, qwen2, qwen3) as a sentence encoder: what vLLM does with
/// a generative model asked to embed, and llama.cpp's `llama-embedding --pooling last|mean`.
///
/// An input is tokenized with the model's own tokenizer as a raw prompt is on the generation path
/// (BOS first where the model asks for it, EOS last where it asks for that, control tokens written
/// in the text recognised), which is also what `llama-embedding` does. It runs through the
/// decoder's causal forward pass alone, in a KV cache slot of its own from position 0; its final
/// hidden states after the output norm (llama.cpp's `t_embd`, what the output projection reads)
/// are pooled, in Double, into the last token's state or the mean of all of them, and scaled to
/// unit length (llama.cpp's `--embd-normalize 2`, vLLM's default for embedding models).
///
/// The inputs of one `embed` call are laid end to end in forward passes of at most
/// `tokensPerPass` tokens; a long input spans several passes, its later tokens reading the earlier
/// ones' keys and values from the cache as chunked prefill does. Every matrix product computes a
/// token's row in a fixed order whatever else is in the batch, the rest is per token, and attention
/// reads only the token's own slot, so a vector is the same bit for bit alone or packed, in one
/// pass or several, and on any number of threads.
public final class DecoderEncoder: SentenceEncoder, @unchecked Sendable {
    // Sendable: immutable after init but for the model's rotary tables, which a forward pass grows
    // in place; `embed` holds `lock` so that only one pass runs at a time.

    public let model: any LanguageModel
    public let tokenizer: Tokenizer
    public let pooling: EmbeddingPooling
    public let precision: MatmulPrecision
    public let outputIdentity: String
    /// The model's context: longer texts are cut to it (keeping a trailing EOS the tokenizer adds).
    public let maxSequenceLength: Int
    public var architecture: String { model.architecture }
    public var dimensions: Int { model.shape.embeddingWidth }
    public var truncatableDimensions: Bool { false }
    public var vocabularySize: Int { tokenizer.vocabularySize }
    public var computePool: ComputePool? { pool }
    /// Tokens per forward pass at most: bounds the activations whatever the inputs' lengths.
    public let tokensPerPass: Int

    private let file: GGUFFile
    private let pool: ComputePool
    private let lock = NSLock()

    /// Loads the GGUF file at `path` onto `pool`, its matrix products at `precision` (nil: the
    /// model's automatic choice, `MatmulPrecision.automatic(for:)`).
    ///
    /// - Parameters:
    ///   - pooling: nil: the file's `<architecture>.pooling_type` where it names mean or last
    ///     (embedding fine-tunes such as Qwen3-Embedding do), else last. CLS pooling is refused: under
    ///     causal attention the first token sees only itself, so every input would get the same vector.
    ///   - tokensPerPass: tokens per forward pass at most (the vectors are the same for any value).
    public init(path: String, pooling: EmbeddingPooling? = nil, precision: MatmulPrecision? = nil,
                pool: ComputePool, tokensPerPass: Int = 2048) throws {
        precondition(tokensPerPass >= 1, "at least one token per pass")
        self.tokensPerPass = tokensPerPass
        file = try GGUFFile(path: path)
        // Before loading: the load releases the file's pages as it repacks them.
        let fingerprint = file.contentFingerprint
        self.pooling = try Self.choosePooling(pooling, file: file)
        try CPUKernels.requireUsable()
        let precision = precision ?? MatmulPrecision.automatic(for: file)
        if precision.isInteger && !MatmulPrecision.int8Available {
            throw ModelLoadError("--precision \(precision.rawValue) needs the avx2 kernels or better; this process runs the \(CPUKernels.variant ?? "none") ones: use --precision f32")
        }
        self.precision = precision
        self.pool = pool
        model = try loadLanguageModel(file, pool: pool, precision: precision)
        tokenizer = try Tokenizer(gguf: file)
        guard tokenizer.vocabularySize <= model.shape.vocabularySize else {
            throw ModelLoadError("the tokenizer has \(tokenizer.vocabularySize) tokens but the model's embedding has \(model.shape.vocabularySize) rows")
        }
        maxSequenceLength = model.shape.contextLength
        outputIdentity = Self.identity(fingerprint: fingerprint, pooling: self.pooling, precision: precision)
    }

    /// The `outputIdentity` the file at `path` would load with, from its header alone (for the
    /// result cache, before the model is needed).
    public static func outputIdentity(path: String, pooling: EmbeddingPooling? = nil,
                                      precision: MatmulPrecision? = nil) throws -> String {
        let file = try GGUFFile(path: path)
        return identity(fingerprint: file.contentFingerprint, pooling: try choosePooling(pooling, file: file),
                        precision: precision ?? MatmulPrecision.automatic(for: file))
    }

    /// The file's content (which fixes the architecture, tokenizer and context length), the pooling
    /// and the arithmetic: integer precisions with the revision of their rounding, as the generation
    /// engine names them. `revision` counts changes to this encoder's own arithmetic.
    static func identity(fingerprint: UInt64, pooling: EmbeddingPooling, precision: MatmulPrecision) -> String {
        let arithmetic = precision.rawValue + (precision.isInteger ? "." + String(MatmulPrecision.integerArithmeticRevision) : "")
        return "decoder-embedding-model=\(String(fingerprint, radix: 16)) pooling=\(pooling.rawValue) precision=\(arithmetic) revision=1"
    }

    /// The pooling asked for, else the file's own (llama.cpp's `pooling_type`: 1 mean, 3 last), else last.
    static func choosePooling(_ requested: EmbeddingPooling?, file: GGUFFile) throws -> EmbeddingPooling {
        let architecture = file.architecture ?? "?"
        if (try? file.boolIfPresent(architecture + ".attention.causal")) == false {
            throw ModelLoadError("\(architecture): the model file declares non-causal attention, which Sluice's decoder models do not run")
        }
        if let requested {
            guard requested != .cls else {
                throw ModelLoadError("--pooling cls is for BERT models: under a decoder's causal attention the first token sees only itself, so every input would get the same vector (use last or mean)")
            }
            return requested
        }
        return (try? file.intIfPresent(architecture + ".pooling_type")) == 1 ? .mean : .last
    }

    public func tokenize(_ text: String) -> [Int32] {
        let ids = tokenizer.encode(text, addSpecial: true, parseSpecial: true)
        guard ids.count > maxSequenceLength else { return ids }
        // An EOS the model asks for closes the input (embedding fine-tunes pool it): keep it.
        if tokenizer.addsEOS, let eos = tokenizer.eos, ids.last == eos {
            return Array(ids.prefix(maxSequenceLength - 1)) + [eos]
        }
        return Array(ids.prefix(maxSequenceLength))
    }

    public func embed(_ sequences: [[Int32]], pool: ComputePool) -> [[Float]] {
        precondition(pool === self.pool, "a decoder encoder computes on the pool it was loaded with")
        lock.lock()
        defer { lock.unlock() }
        let width = dimensions
        for sequence in sequences {
            precondition(!sequence.isEmpty && sequence.count <= maxSequenceLength, "sequence length out of range")
            precondition(sequence.allSatisfy { $0 >= 0 && Int($0) < model.shape.vocabularySize }, "token id out of range")
        }
        // Unlimited: the engine bounds the tokens per call; the cache lives for this call only.
        let cache = model.makeCache()
        for (slot, sequence) in sequences.enumerated() {
            cache.reserve(slot: slot, positions: sequence.count)
        }
        var pooled = sequences.map { _ in [Double](repeating: 0, count: width) }
        let perPass = tokensPerPass
        let states = UnsafeMutablePointer<Float>.allocate(capacity: perPass * width)
        defer { states.deallocate() }

        var tokens: [Int32] = [], placements: [TokenPlacement] = [], rows: [Int] = [], owners: [Int] = []
        func runPass() {
            guard !tokens.isEmpty else { return }
            model.hiddenStates(tokens: tokens, placements: placements, rows: rows, cache: cache, into: states)
            // Rows come in position order within a sequence, pass after pass: the same sums every time.
            for (i, owner) in owners.enumerated() {
                let state = states + i * width
                switch pooling {
                case .mean: for k in 0..<width { pooled[owner][k] += Double(state[k]) }
                case .last, .cls: for k in 0..<width { pooled[owner][k] = Double(state[k]) }
                }
            }
            tokens.removeAll(keepingCapacity: true)
            placements.removeAll(keepingCapacity: true)
            rows.removeAll(keepingCapacity: true)
            owners.removeAll(keepingCapacity: true)
        }
        for (slot, sequence) in sequences.enumerated() {
            for (position, token) in sequence.enumerated() {
                if tokens.count == perPass { runPass() }
                // Only the rows pooling reads go through the output norm.
                if pooling == .mean || position == sequence.count - 1 {
                    rows.append(tokens.count)
                    owners.append(slot)
                }
                tokens.append(token)
                placements.append(TokenPlacement(slot: slot, position: position))
            }
        }
        runPass()

        return sequences.indices.map { s in
            if pooling == .mean {
                let n = Double(sequences[s].count)
                for k in 0..<width { pooled[s][k] /= n }
            }
            return unitLength(pooled[s])
        }
    }
}
