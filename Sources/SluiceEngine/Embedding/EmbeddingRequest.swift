import Foundation
import SluiceCore

/// A `/v1/embeddings` body, checked and tokenized (OpenAI's format).
///
/// `input` is a string, a list of strings, a list of token ids or a list of such lists (at most
/// `maxInputs`); texts are truncated to the model's length as sentence-transformers does, token
/// lists are taken as they are and must fit. `encoding_format` is `float` (default) or `base64`
/// (little-endian float32 bytes); `dimensions` cuts Matryoshka vectors (then renormalized) and is
/// refused by other models unless it is their own length; `model` and `user` are accepted.
public struct EmbeddingRequest: Sendable {
    public enum Format: String, Sendable { case float, base64 }

    public var inputs: [[Int32]]
    public var format: Format = .float
    public var dimensions: Int?
    public var model: String?

    static let knownFields: Set<String> = ["input", "model", "encoding_format", "dimensions", "user"]
    /// OpenAI's limit on inputs per request.
    public static let maxInputs = 2048

    public init(body: JSON, model: EmbeddingModel) throws(RequestError) {
        guard let fields = body.objectValue else { throw RequestError("the request body must be a JSON object") }
        for (key, _) in fields where !Self.knownFields.contains(key) {
            throw RequestError("unrecognized request argument supplied: \(key)", parameter: key)
        }
        if let value = body["model"], !value.isNull {
            guard let name = value.stringValue else { throw RequestError("'model' must be a string", parameter: "model") }
            self.model = name
        }
        if let value = body["user"], !value.isNull, value.stringValue == nil {
            throw RequestError("'user' must be a string", parameter: "user")
        }
        if let value = body["encoding_format"], !value.isNull {
            guard let text = value.stringValue, let format = Format(rawValue: text) else {
                throw RequestError("'encoding_format' must be \"float\" or \"base64\"", parameter: "encoding_format")
            }
            self.format = format
        }
        if let value = body["dimensions"], !value.isNull {
            guard let n = value.intValue, n >= 1 else { throw RequestError("'dimensions' must be a positive integer", parameter: "dimensions") }
            if n != model.dimensions {
                guard model.truncatableDimensions else {
                    throw RequestError("this model (\(model.name)) does not support 'dimensions' other than its own \(model.dimensions)", parameter: "dimensions")
                }
                guard n <= model.dimensions else {
                    throw RequestError("'dimensions' must be at most \(model.dimensions) for \(model.name)", parameter: "dimensions")
                }
                dimensions = n
            }
        }
        guard let input = body["input"], !input.isNull else { throw RequestError("missing required parameter: 'input'", parameter: "input") }
        inputs = try Self.parseInput(input, model: model)
    }

    static func parseInput(_ input: JSON, model: EmbeddingModel) throws(RequestError) -> [[Int32]] {
        func text(_ s: String) throws(RequestError) -> [Int32] {
            guard !s.isEmpty else { throw RequestError("'input' cannot contain an empty string", parameter: "input") }
            let ids = model.tokenize(s)
            // A decoder without BOS could find no token in a text of ignored characters: nothing to embed.
            guard !ids.isEmpty else { throw RequestError("an input of 'input' tokenizes to no tokens", parameter: "input") }
            return ids
        }
        func tokens(_ items: [JSON]) throws(RequestError) -> [Int32] {
            guard !items.isEmpty else { throw RequestError("'input' cannot contain an empty list of tokens", parameter: "input") }
            guard items.count <= model.maxSequenceLength else {
                throw RequestError("an input of \(items.count) tokens is longer than the model's \(model.maxSequenceLength)", parameter: "input")
            }
            var ids: [Int32] = []
            ids.reserveCapacity(items.count)
            for item in items {
                guard let id = item.intValue, id >= 0, id < model.vocabularySize else {
                    throw RequestError("token \(item.serialized) is not an id of the model's vocabulary (0 to \(model.vocabularySize - 1))", parameter: "input")
                }
                ids.append(Int32(id))
            }
            return ids
        }
        switch input {
        case .string(let s):
            return [try text(s)]
        case .array(let items):
            guard !items.isEmpty else { throw RequestError("'input' cannot be an empty list", parameter: "input") }
            guard items.count <= maxInputs else { throw RequestError("'input' has \(items.count) items; at most \(maxInputs) are allowed", parameter: "input") }
            switch items[0] {
            case .number: return [try tokens(items)]
            case .string:
                var result: [[Int32]] = []
                for item in items {
                    guard let s = item.stringValue else { throw RequestError("'input' mixes strings with other values", parameter: "input") }
                    result.append(try text(s))
                }
                return result
            case .array:
                var result: [[Int32]] = []
                for item in items {
                    guard let list = item.arrayValue else { throw RequestError("'input' mixes lists of tokens with other values", parameter: "input") }
                    result.append(try tokens(list))
                }
                return result
            default:
                throw RequestError("'input' must be a string, a list of strings, a list of token ids or a list of such lists", parameter: "input")
            }
        default:
            throw RequestError("'input' must be a string, a list of strings, a list of token ids or a list of such lists", parameter: "input")
        }
    }

    /// The OpenAI response body for the finished `vectors` (one per input, in order).
    public func responseBody(vectors: [[Float]], modelName: String) -> JSON {
        let promptTokens = inputs.reduce(0) { $0 + $1.count }
        let data: [JSON] = vectors.enumerated().map { index, full in
            var vector = full
            if let dimensions, dimensions < full.count {
                vector = Array(full.prefix(dimensions))
                let norm = max(vector.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot(), 1e-12)
                vector = vector.map { Float(Double($0) / norm) }
            }
            let embedding: JSON
            switch format {
            case .float:
                embedding = .array(vector.map { .number(Self.text($0)) })
            case .base64:
                var bytes = [UInt8]()
                bytes.reserveCapacity(vector.count * 4)
                for value in vector { withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
                embedding = .string(Data(bytes).base64EncodedString())
            }
            return .object(["object": .string("embedding"), "index": .int(index), "embedding": embedding])
        }
        return .object([
            "object": .string("list"),
            "data": .array(data),
            "model": .string(model ?? modelName),
            "usage": .object(["prompt_tokens": .int(promptTokens), "total_tokens": .int(promptTokens)]),
        ])
    }

    /// The shortest decimal text that reads back to the same float (valid JSON).
    static func text(_ value: Float) -> String {
        guard value.isFinite else { return "0" }
        return value.description
    }
}
