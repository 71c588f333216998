import Foundation
import SluiceCore

/// A sentence-embedding model with its tokenizer: a Hugging Face folder as sentence-transformers
/// saves it (`config.json`, `model.safetensors`, `tokenizer.json`, `1_Pooling/config.json`,
/// `sentence_bert_config.json`).
///
/// Read directly rather than converted to GGUF: the folder is what the package ships, the
/// safetensors layout is a JSON header plus raw tensors (mapped and checked like GGUF), and the
/// tokenizer and pooling settings are read from the very files the reference reads.
public final class EmbeddingModel: @unchecked Sendable {
    public let name: String
    public let encoder: BertModel
    public let tokenizer: WordPieceTokenizer
    /// Tokens per input at most, `[CLS]` and `[SEP]` included; longer texts are truncated.
    public var maxSequenceLength: Int { tokenizer.maxLength }
    /// The vector length.
    public var dimensions: Int { encoder.shape.hidden }
    /// Lengths the vectors may be cut to (Matryoshka models); empty when only the full length is meaningful.
    public let truncatableDimensions: Bool
    /// What the vectors depend on: the weights' content, the pooling and the truncation length.
    /// Recorded in checkpoints, so vectors of another model are never mixed into a response.
    public let outputIdentity: String

    public init(directory: String) throws {
        encoder = try BertModel(directory: directory)
        let maxLength = try Self.maxSequenceLength(directory: directory, positions: encoder.shape.maxPositions)
        tokenizer = try WordPieceTokenizer(tokenizerJSON: directory + "/tokenizer.json", maxLength: maxLength)
        guard tokenizer.vocabularySize <= encoder.shape.vocabularySize else {
            throw ModelLoadError("\(directory): the tokenizer has \(tokenizer.vocabularySize) tokens but the model only \(encoder.shape.vocabularySize)")
        }
        let config = try BertModel.readJSON(directory + "/config.json")
        truncatableDimensions = config["is_matryoshka"]?.boolValue == true || config["matryoshka_dimensions"]?.arrayValue != nil
        name = URL(fileURLWithPath: directory).standardizedFileURL.lastPathComponent
        outputIdentity = "embedding-model=\(String(encoder.contentFingerprint, radix: 16)) pooling=\(encoder.pooling.rawValue) max-length=\(maxLength) revision=1"
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
