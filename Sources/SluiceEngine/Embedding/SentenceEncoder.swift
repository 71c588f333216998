/// A network that turns texts into one unit-length vector each, as the embedding engine runs it:
/// a BERT sentence-transformers folder (`BertSentenceEncoder`) or a GGUF decoder model
/// (`DecoderEncoder`).
///
/// The engine only tokenizes, packs inputs up to its token budget and calls `embed`; whatever an
/// encoder does inside, a vector must depend on its input alone (not on what shared the call, nor
/// on the thread count), since a request's finished vectors are its checkpoint and the engine
/// packs requests together.
public protocol SentenceEncoder: AnyObject, Sendable {
    /// The kind of network, for descriptions: `bert`, or a GGUF architecture such as `gemma3`.
    var architecture: String { get }
    /// How token states become one vector.
    var pooling: EmbeddingPooling { get }
    /// The vector length.
    var dimensions: Int { get }
    /// Whether a prefix of a vector is itself meaningful (Matryoshka models): only then may a
    /// request ask for fewer `dimensions`.
    var truncatableDimensions: Bool { get }
    /// Tokens per input at most: longer texts are truncated by `tokenize`, longer token lists refused.
    var maxSequenceLength: Int { get }
    /// Token ids an input may hold: `0..<vocabularySize`.
    var vocabularySize: Int { get }
    /// What the vectors depend on: the weights' content, the pooling, the truncation length and
    /// whatever else changes a bit of them. Recorded in checkpoints (and the result cache), so
    /// vectors of another model or setting are never mixed into a response.
    var outputIdentity: String { get }
    /// The pool `embed` computes on when the encoder is bound to one at load (a GGUF model keeps the
    /// pool it was loaded with); nil: any pool may be passed. The engine runs a bound encoder on its pool.
    var computePool: ComputePool? { get }

    /// The token ids of `text`, special tokens included as the model expects, at most
    /// `maxSequenceLength` of them (longer texts are cut at the end); may be empty.
    func tokenize(_ text: String) -> [Int32]

    /// Unit-length embeddings of `sequences` (each 1 to `maxSequenceLength` ids below
    /// `vocabularySize`), one per sequence, in order. `pool` must be `computePool` where that is set.
    func embed(_ sequences: [[Int32]], pool: ComputePool) -> [[Float]]
}

/// Scales a pooled state (in Double) to unit length, as the BERT path and sentence-transformers do;
/// an all-zero state stays zero.
func unitLength(_ pooled: [Double]) -> [Float] {
    let norm = max(pooled.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
    return pooled.map { Float($0 / norm) }
}
