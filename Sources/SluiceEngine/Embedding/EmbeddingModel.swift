import Foundation
import SluiceCore

/// How `EmbeddingModel` loads a model: what `sluice work --pooling` and `--precision` say.
public struct EmbeddingModelSettings: Sendable, Equatable {
    /// nil: the model's own (a BERT folder: its `1_Pooling/config.json`; a GGUF decoder: its
    /// `pooling_type` where it names mean or last, else last).
    public var pooling: EmbeddingPooling?
    /// How a GGUF decoder's matrix products treat activations (BERT always runs in float32); nil:
    /// the model's automatic choice (`MatmulPrecision.automatic(for:)`).
    public var precision: MatmulPrecision?

    public init(pooling: EmbeddingPooling? = nil, precision: MatmulPrecision? = nil) {
        self.pooling = pooling
        self.precision = precision
    }
}

/// A sentence-embedding model as the embedding engine runs it: either a Hugging Face folder as
/// sentence-transformers saves it (`config.json`, `model.safetensors`, `tokenizer.json`,
/// `1_Pooling/config.json`, `sentence_bert_config.json`), run by `BertSentenceEncoder`, or a GGUF
/// decoder model file, run by `DecoderEncoder`.
///
/// The folder is read directly rather than converted to GGUF: it is what the package ships, the
/// safetensors layout is a JSON header plus raw tensors (mapped and checked like GGUF), and the
/// tokenizer and pooling settings are read from the very files the reference reads.
public final class EmbeddingModel: @unchecked Sendable {
    // Sendable: immutable after init.

    /// The name written into responses when the request names no model: the folder's or file's name.
    public let name: String
    public let encoder: any SentenceEncoder
    /// Tokens per input at most, special tokens included; longer texts are truncated.
    public var maxSequenceLength: Int { encoder.maxSequenceLength }
    /// The vector length.
    public var dimensions: Int { encoder.dimensions }
    /// Token ids an input may hold: `0..<vocabularySize`.
    public var vocabularySize: Int { encoder.vocabularySize }
    /// Whether vectors may be cut to fewer `dimensions` (Matryoshka models).
    public var truncatableDimensions: Bool { encoder.truncatableDimensions }
    /// What the vectors depend on (see `SentenceEncoder.outputIdentity`).
    public var outputIdentity: String { encoder.outputIdentity }

    public init(encoder: any SentenceEncoder, name: String) {
        self.encoder = encoder
        self.name = name
    }

    /// A sentence-transformers folder, pooling as the folder says.
    public convenience init(directory: String) throws {
        try self.init(path: directory)
    }

    /// The model at `path`: a folder is a BERT sentence-transformers model, a file a GGUF decoder
    /// model, which is loaded onto a compute pool of `threads` threads of its own.
    public convenience init(path: String, settings: EmbeddingModelSettings = EmbeddingModelSettings(),
                            threads: Int = ComputePool.availableCores) throws {
        let encoder: any SentenceEncoder
        if Self.isFolder(path) {
            encoder = try BertSentenceEncoder(directory: path, pooling: settings.pooling)
        } else {
            encoder = try DecoderEncoder(path: path, pooling: settings.pooling, precision: settings.precision,
                                         pool: ComputePool(threads: threads))
        }
        self.init(encoder: encoder, name: Self.name(path))
    }

    /// The `outputIdentity` the model at `path` would load with, from its headers and configs alone:
    /// what the result cache keys embeddings by, without loading a model a job may never use.
    public static func outputIdentity(path: String, settings: EmbeddingModelSettings = EmbeddingModelSettings()) throws -> String {
        if isFolder(path) { return try BertSentenceEncoder.outputIdentity(directory: path, pooling: settings.pooling) }
        return try DecoderEncoder.outputIdentity(path: path, pooling: settings.pooling, precision: settings.precision)
    }

    /// The token ids of `text` (see `SentenceEncoder.tokenize`).
    public func tokenize(_ text: String) -> [Int32] { encoder.tokenize(text) }

    static func isFolder(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    static func name(_ path: String) -> String {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        return isFolder(path) ? url.lastPathComponent : url.deletingPathExtension().lastPathComponent
    }
}
