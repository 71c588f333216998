import Foundation
import SluiceCore

/// A BERT sentence-transformers folder as a `SentenceEncoder`: `BertModel` with its WordPiece
/// tokenizer, truncating texts to `max_seq_length` as sentence-transformers does.
public final class BertSentenceEncoder: SentenceEncoder, @unchecked Sendable {
    // Sendable: immutable after init; `BertModel.embed` allocates its own scratch.

    public let model: BertModel
    public let tokenizer: WordPieceTokenizer
    public let truncatableDimensions: Bool
    public let outputIdentity: String
    public var architecture: String { "bert" }
    public var pooling: EmbeddingPooling { model.pooling }
    public var dimensions: Int { model.shape.hidden }
    /// Tokens per input at most, `[CLS]` and `[SEP]` included.
    public var maxSequenceLength: Int { tokenizer.maxLength }
    public var vocabularySize: Int { tokenizer.vocabularySize }
    public var computePool: ComputePool? { nil }

    /// Loads the folder `directory`, pooling as its `1_Pooling/config.json` says unless `pooling` overrides it.
    public init(directory: String, pooling: EmbeddingPooling? = nil) throws {
        model = try BertModel(directory: directory, pooling: pooling)
        let maxLength = try Self.maxSequenceLength(directory: directory, positions: model.shape.maxPositions)
        tokenizer = try WordPieceTokenizer(tokenizerJSON: directory + "/tokenizer.json", maxLength: maxLength)
        guard tokenizer.vocabularySize <= model.shape.vocabularySize else {
            throw ModelLoadError("\(directory): the tokenizer has \(tokenizer.vocabularySize) tokens but the model only \(model.shape.vocabularySize)")
        }
        let config = try BertModel.readJSON(directory + "/config.json")
        truncatableDimensions = config["is_matryoshka"]?.boolValue == true || config["matryoshka_dimensions"]?.arrayValue != nil
        outputIdentity = Self.identity(fingerprint: model.contentFingerprint, pooling: model.pooling, maxLength: maxLength)
    }

    public func tokenize(_ text: String) -> [Int32] { tokenizer.encode(text) }

    public func embed(_ sequences: [[Int32]], pool: ComputePool) -> [[Float]] { model.embed(sequences, pool: pool) }

    /// The `outputIdentity` the folder `directory` would load with, read from its headers and
    /// configs without loading the weights (for the result cache, before the model is needed).
    public static func outputIdentity(directory: String, pooling: EmbeddingPooling? = nil) throws -> String {
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(path: directory + "/model.safetensors") } catch { throw ModelLoadError(error.description) }
        guard let positions = try BertModel.readJSON(directory + "/config.json")["max_position_embeddings"]?.intValue else {
            throw ModelLoadError("\(directory)/config.json has no integer 'max_position_embeddings'")
        }
        return identity(fingerprint: file.contentFingerprint, pooling: try pooling ?? BertModel.readPooling(directory),
                        maxLength: try maxSequenceLength(directory: directory, positions: positions))
    }

    /// Unchanged since BERT was the only encoder, so checkpoints and cached results made then still match.
    static func identity(fingerprint: UInt64, pooling: EmbeddingPooling, maxLength: Int) -> String {
        "embedding-model=\(String(fingerprint, radix: 16)) pooling=\(pooling.rawValue) max-length=\(maxLength) revision=1"
    }

    /// sentence-transformers' `max_seq_length` (sentence_bert_config.json), else the model's positions.
    static func maxSequenceLength(directory: String, positions: Int) throws -> Int {
        let path = directory + "/sentence_bert_config.json"
        guard FileManager.default.fileExists(atPath: path) else { return positions }
        guard let n = try BertModel.readJSON(path)["max_seq_length"]?.intValue else { return positions }
        guard (2...positions).contains(n) else { throw ModelLoadError("\(path): max_seq_length \(n) is outside 2...\(positions)") }
        return n
    }
}
