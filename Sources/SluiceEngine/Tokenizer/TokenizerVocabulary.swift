/// Strings kept as raw bytes in one buffer: `ends[i]` is where string `i` ends
/// in `storage` (it starts where string `i - 1` ends). GGUF strings are byte
/// strings; keeping them as bytes preserves invalid UTF-8 and avoids one
/// allocation per vocabulary entry.
public struct TokenizerStrings: Sendable, Equatable {
    public var storage: [UInt8]
    public var ends: [Int]

    public init(storage: [UInt8], ends: [Int]) {
        self.storage = storage
        self.ends = ends
    }

    public init(_ strings: [String]) {
        var storage: [UInt8] = []
        var ends: [Int] = []
        ends.reserveCapacity(strings.count)
        for string in strings {
            storage.append(contentsOf: string.utf8)
            ends.append(storage.count)
        }
        self.init(storage: storage, ends: ends)
    }

    public var count: Int { ends.count }

    public func byteRange(at index: Int) -> Range<Int> {
        (index == 0 ? 0 : ends[index - 1])..<ends[index]
    }

    public func bytes(at index: Int) -> ArraySlice<UInt8> { storage[byteRange(at: index)] }
}

/// Everything a tokenizer needs from a model's `tokenizer.ggml.*` metadata,
/// as plain values. `Tokenizer(vocabulary:)` applies llama.cpp's defaults for
/// whatever is nil here, so a nil means "the key is absent from the file".
public struct TokenizerVocabulary: Sendable {
    /// `tokenizer.ggml.model`: "llama" (SentencePiece-style BPE over scores) or "gpt2" (byte-level BPE).
    public var model: String
    /// `tokenizer.ggml.pre`: the pre-tokenizer of a "gpt2" model ("llama-bpe", "qwen2", "default" …).
    public var preTokenizer: String?
    /// `tokenizer.ggml.tokens`.
    public var tokens: TokenizerStrings
    /// `tokenizer.ggml.scores` (at least one per token when present).
    public var scores: [Float]?
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    public var tokenTypes: [Int32]?
    /// `tokenizer.ggml.merges` ("first second" per line), required for "gpt2".
    public var merges: TokenizerStrings?

    public var bosID: Int?
    public var eosID: Int?
    public var eotID: Int?
    public var eomID: Int?
    public var unknownID: Int?
    public var separatorID: Int?
    public var paddingID: Int?
    public var maskID: Int?
    public var fimPrefixID: Int?
    public var fimSuffixID: Int?
    public var fimMiddleID: Int?
    public var fimPadID: Int?
    public var fimRepoID: Int?
    public var fimSeparatorID: Int?

    /// `tokenizer.ggml.add_bos_token`.
    public var addBOS: Bool?
    /// `tokenizer.ggml.add_eos_token`.
    public var addEOS: Bool?
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece's add_dummy_prefix).
    public var addSpacePrefix: Bool?
    /// `tokenizer.ggml.remove_extra_whitespaces`: read for completeness; llama.cpp
    /// ignores it for "llama" and "gpt2" models, and so does this tokenizer.
    public var removeExtraWhitespaces: Bool?

    /// `general.name`: llama.cpp marks special tokens of Phi-3 models as right-stripping by name.
    public var modelName: String?

    public init(
        model: String,
        preTokenizer: String? = nil,
        tokens: TokenizerStrings,
        scores: [Float]? = nil,
        tokenTypes: [Int32]? = nil,
        merges: TokenizerStrings? = nil
    ) {
        self.model = model
        self.preTokenizer = preTokenizer
        self.tokens = tokens
        self.scores = scores
        self.tokenTypes = tokenTypes
        self.merges = merges
    }
}

/// Why a vocabulary cannot make a tokenizer.
public struct TokenizerError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "tokenizer: \(message)" }
}
