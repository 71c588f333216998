import Foundation
import SluiceCore

/// BERT's WordPiece tokenizer, read from a Hugging Face `tokenizer.json`, giving the same ids
/// as the `tokenizers` library for a single sequence:
///
/// 1. the special tokens (`added_tokens`, e.g. `[CLS]`, `[SEP]`) are found in the raw text,
///    leftmost-longest, and keep their ids;
/// 2. the rest is normalized (`BertNormalizer`), split at whitespace and around every
///    punctuation character (`BertPreTokenizer`);
/// 3. each word becomes the longest vocabulary prefix, then `##`-prefixed longest pieces of
///    the remainder; a word with a piece the vocabulary lacks, or longer than
///    `maxInputCharactersPerWord`, becomes `[UNK]`;
/// 4. truncated to `maxLength` including `[CLS]` first and `[SEP]` last.
public struct WordPieceTokenizer: Sendable {
    public let normalizer: BertNormalizer
    public let vocabularySize: Int
    public let unknownID: Int32
    public let classID: Int32
    public let separatorID: Int32
    public let continuationPrefix: String
    public let maxInputCharactersPerWord: Int
    /// Tokens per sequence at most, `[CLS]` and `[SEP]` included.
    public let maxLength: Int

    private let vocabulary: [String: Int32]
    /// Special tokens matched in the raw text, longest first.
    private let specialTokens: [(text: [Unicode.Scalar], id: Int32)]

    /// Reads `tokenizer.json`. `maxLength` is the truncation length (sentence-transformers'
    /// `max_seq_length`), at most `maxPositions`.
    public init(tokenizerJSON path: String, maxLength: Int) throws {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ModelLoadError("cannot read '\(path)': \(error.localizedDescription)")
        }
        let json: JSON
        do { json = try data.withUnsafeBytes { try JSON.parse(Array($0.bindMemory(to: UInt8.self))) } } catch {
            throw ModelLoadError("'\(path)' is not JSON: \(error)")
        }
        try self.init(json: json, source: path, maxLength: maxLength)
    }

    public init(json: JSON, source: String, maxLength: Int) throws {
        func bad(_ what: String) -> ModelLoadError { ModelLoadError("'\(source)': \(what)") }
        guard let model = json["model"], model["type"]?.stringValue == "WordPiece" else {
            throw bad("model.type is \(json["model"]?["type"]?.serialized ?? "missing"), expected \"WordPiece\"")
        }
        guard let entries = model["vocab"]?.objectValue, !entries.isEmpty, entries.count < Int(Int32.max) else {
            throw bad("model.vocab is missing or empty")
        }
        var vocabulary: [String: Int32] = [:]
        vocabulary.reserveCapacity(entries.count)
        var largest = -1
        for (token, value) in entries {
            guard let id = value.intValue, id >= 0, id < entries.count + 1024 else { throw bad("model.vocab[\"\(token)\"] is not a valid id") }
            vocabulary[token] = Int32(id)
            largest = max(largest, id)
        }
        let unknown = model["unk_token"]?.stringValue ?? "[UNK]"
        guard let unknownID = vocabulary[unknown] else { throw bad("the unknown token \(unknown) is not in the vocabulary") }
        continuationPrefix = model["continuing_subword_prefix"]?.stringValue ?? "##"
        let maxChars = model["max_input_chars_per_word"]?.intValue ?? 100
        guard (1...100_000).contains(maxChars) else { throw bad("max_input_chars_per_word \(maxChars) is out of range") }
        maxInputCharactersPerWord = maxChars

        let normalizerConfig = json["normalizer"]
        if let config = normalizerConfig, !config.isNull {
            guard config["type"]?.stringValue == "BertNormalizer" else {
                throw bad("normalizer \(config["type"]?.serialized ?? "?") is not supported (BertNormalizer is)")
            }
            let lowercase = config["lowercase"]?.boolValue ?? true
            normalizer = BertNormalizer(cleanText: config["clean_text"]?.boolValue ?? true,
                                        handleChineseCharacters: config["handle_chinese_chars"]?.boolValue ?? true,
                                        stripAccents: config["strip_accents"]?.boolValue ?? lowercase,
                                        lowercase: lowercase)
        } else {
            normalizer = BertNormalizer(cleanText: false, handleChineseCharacters: false, stripAccents: false, lowercase: false)
        }
        if let pre = json["pre_tokenizer"], !pre.isNull, pre["type"]?.stringValue != "BertPreTokenizer" {
            throw bad("pre_tokenizer \(pre["type"]?.serialized ?? "?") is not supported (BertPreTokenizer is)")
        }
        var specials: [(text: [Unicode.Scalar], id: Int32)] = []
        for token in json["added_tokens"]?.arrayValue ?? [] {
            guard let content = token["content"]?.stringValue, !content.isEmpty, let id = token["id"]?.intValue,
                  id >= 0, id < Int(Int32.max) else { throw bad("an added token has no content or id") }
            specials.append((Array(content.unicodeScalars), Int32(id)))
            largest = max(largest, id)
        }
        specialTokens = specials.sorted { $0.text.count > $1.text.count }
        let classID = vocabulary["[CLS]"], separatorID = vocabulary["[SEP]"]
        guard let classID, let separatorID else { throw bad("the vocabulary has no [CLS] or [SEP]") }
        self.classID = classID
        self.separatorID = separatorID
        self.unknownID = unknownID
        self.vocabulary = vocabulary
        vocabularySize = largest + 1
        guard maxLength >= 2 else { throw bad("the maximum length \(maxLength) leaves no room for [CLS] and [SEP]") }
        self.maxLength = maxLength
    }

    /// The ids of `text` as one sequence: `[CLS]`, the text's tokens (truncated), `[SEP]`.
    public func encode(_ text: String) -> [Int32] {
        var ids: [Int32] = [classID]
        let limit = maxLength - 1
        appendTokens(of: text, to: &ids, limit: limit)
        if ids.count > limit { ids.removeLast(ids.count - limit) }
        ids.append(separatorID)
        return ids
    }

    /// Appends the tokens of `text` (no `[CLS]`/`[SEP]`), stopping once `ids` holds `limit`.
    private func appendTokens(of text: String, to ids: inout [Int32], limit: Int) {
        let scalars = Array(text.unicodeScalars)
        var segmentStart = 0
        var i = 0
        while i < scalars.count {
            if let special = specialToken(at: i, in: scalars) {
                if segmentStart < i { appendWords(of: scalars[segmentStart..<i], to: &ids, limit: limit) }
                if ids.count >= limit { return }
                ids.append(special.id)
                i += special.length
                segmentStart = i
            } else {
                i += 1
            }
        }
        if segmentStart < scalars.count { appendWords(of: scalars[segmentStart...], to: &ids, limit: limit) }
    }

    private func specialToken(at position: Int, in scalars: [Unicode.Scalar]) -> (id: Int32, length: Int)? {
        // Every special token of BERT starts with "[", so most positions are settled at once.
        for token in specialTokens where token.text.count <= scalars.count - position && token.text[0] == scalars[position] {
            var match = true
            for (k, s) in token.text.enumerated() where scalars[position + k] != s { match = false; break }
            if match { return (token.id, token.text.count) }
        }
        return nil
    }

    private func appendWords(of segment: ArraySlice<Unicode.Scalar>, to ids: inout [Int32], limit: Int) {
        var text = String.UnicodeScalarView()
        text.append(contentsOf: segment)
        let normalized = normalizer.normalize(Substring(String(text)))
        var word: [Unicode.Scalar] = []
        func flush() {
            if !word.isEmpty, ids.count < limit { appendPieces(of: word, to: &ids) }
            word.removeAll(keepingCapacity: true)
        }
        for scalar in normalized {
            if ids.count >= limit { return }
            if BertNormalizer.isWhitespace(scalar) {
                flush()
            } else if BertNormalizer.isPunctuation(scalar) {
                flush()
                word.append(scalar)
                flush()
            } else {
                word.append(scalar)
            }
        }
        flush()
    }

    /// Greedy longest-match WordPiece of one word.
    private func appendPieces(of word: [Unicode.Scalar], to ids: inout [Int32]) {
        if word.count > maxInputCharactersPerWord {
            ids.append(unknownID)
            return
        }
        var pieces: [Int32] = []
        var start = 0
        while start < word.count {
            var end = word.count
            var found: Int32?
            while start < end {
                var piece = start > 0 ? continuationPrefix : ""
                piece.unicodeScalars.append(contentsOf: word[start..<end])
                if let id = vocabulary[piece] {
                    found = id
                    break
                }
                end -= 1
            }
            guard let id = found else {
                ids.append(unknownID)
                return
            }
            pieces.append(id)
            start = end
        }
        ids.append(contentsOf: pieces)
    }
}
