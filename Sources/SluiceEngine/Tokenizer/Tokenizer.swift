/// Text ⇄ token ids for a GGUF model, matching llama.cpp's tokenizer.
///
/// Two tokenizer models are supported, chosen by `tokenizer.ggml.model`:
/// - "llama": SentencePiece-style BPE over token scores, spaces escaped as
///   U+2581, optional space prefix, `<0xNN>` byte fallback (Gemma, Llama 2,
///   Mistral, TinyLlama);
/// - "gpt2": byte-level BPE over merge ranks after the pre-tokenizer named by
///   `tokenizer.ggml.pre` (Llama 3, Qwen 2, SmolLM, GPT-2).
///
/// Special tokens (control, unknown and user-defined) are split out of the text
/// first: user-defined ones always, control ones (`<start_of_turn>` …) only
/// when `parseSpecial` is true. Immutable after init, so one instance can be
/// shared by every thread.
public final class Tokenizer: Sendable {
    /// The tokenizer models this type implements.
    public enum Model: String, Sendable {
        case sentencePiece = "llama"
        case byteLevelBPE = "gpt2"
    }

    /// "llama" or "gpt2".
    public let model: Model
    /// The pre-tokenizer's name for "gpt2" models; nil for "llama" ones.
    public var preTokenizerName: String? { preTokenizer?.name }
    /// Number of tokens in the vocabulary (token ids are 0 ..< vocabularySize).
    public let vocabularySize: Int

    /// Beginning-of-sequence token, if the model has one.
    public let bos: Int32?
    /// End-of-sequence token, if the model has one.
    public let eos: Int32?
    /// End-of-turn token (`<end_of_turn>`, `<|eot_id|>`, `<|im_end|>` …), from metadata or found by its text.
    public let eot: Int32?
    /// Unknown token (also SentencePiece's last resort for a byte with no `<0xNN>` token).
    public let unknown: Int32?
    /// Padding token, if the metadata names one.
    public let padding: Int32?
    /// Whether `encode(_:addSpecial: true, …)` starts with BOS.
    public let addsBOS: Bool
    /// Whether `encode(_:addSpecial: true, …)` ends with EOS.
    public let addsEOS: Bool
    /// Whether text after the start or after a special token gets a leading space ("llama" models).
    public let addsSpacePrefix: Bool
    /// Tokens that end generation (llama.cpp's EOG set: EOS, EOT, EOM and tokens
    /// such as `<end_of_turn>`, `<|im_end|>`, `<|eot_id|>`, `<|endoftext|>` by text).
    public let endOfGenerationTokens: Set<Int32>

    let tokenTable: ByteStringTable
    private let scores: [Float]
    private let tokenAttributes: [TokenAttributes]
    private let merges: MergeRankTable?
    private let preTokenizer: PreTokenizer?
    private let specialTokens: SpecialTokenMatcher
    /// SentencePiece byte fallback: the token for each byte, or -1.
    private let byteTokens: [Int32]
    private let cleansSpaces: Bool

    var tokenStorage: [UInt8] { tokenTable.storage }
    var tokenEnds: [Int] { tokenTable.ends }

    /// Builds a tokenizer from a model's tokenizer metadata, applying llama.cpp's
    /// defaults and its by-name adjustments (EOG and control tokens found by text).
    public init(vocabulary: TokenizerVocabulary) throws(TokenizerError) {
        let count = vocabulary.tokens.count
        guard count > 0 else { throw TokenizerError("the vocabulary (tokenizer.ggml.tokens) is empty") }
        guard count <= Int(Int32.max) else { throw TokenizerError("the vocabulary has \(count) tokens, more than Int32 ids allow") }
        guard vocabulary.tokens.ends.last ?? 0 <= vocabulary.tokens.storage.count,
              zip(vocabulary.tokens.ends, vocabulary.tokens.ends.dropFirst()).allSatisfy({ $0 <= $1 }),
              (vocabulary.tokens.ends.first ?? 0) >= 0 else {
            throw TokenizerError("the token strings' offsets are inconsistent")
        }
        if let scores = vocabulary.scores, scores.count < count {
            throw TokenizerError("tokenizer.ggml.scores has \(scores.count) entries for \(count) tokens")
        }
        if let types = vocabulary.tokenTypes, types.count < count {
            throw TokenizerError("tokenizer.ggml.token_type has \(types.count) entries for \(count) tokens")
        }

        var defaultBOS: Int?, defaultEOS: Int?, defaultUnknown: Int?
        var addBOS = false
        var addSpacePrefix = false
        switch vocabulary.model {
        case "llama":
            model = .sentencePiece
            preTokenizer = nil
            merges = nil
            defaultBOS = 1; defaultEOS = 2; defaultUnknown = 0
            addBOS = true
            addSpacePrefix = true
            cleansSpaces = false
        case "gpt2":
            model = .byteLevelBPE
            let pre = try PreTokenizer.named(vocabulary.preTokenizer)
            preTokenizer = pre
            guard let mergeLines = vocabulary.merges else {
                throw TokenizerError("a gpt2 tokenizer needs tokenizer.ggml.merges, which is missing")
            }
            guard mergeLines.ends.last ?? 0 <= mergeLines.storage.count,
                  zip(mergeLines.ends, mergeLines.ends.dropFirst()).allSatisfy({ $0 <= $1 }),
                  (mergeLines.ends.first ?? 0) >= 0 else {
                throw TokenizerError("the merge strings' offsets are inconsistent")
            }
            merges = MergeRankTable(storage: mergeLines.storage, ends: mergeLines.ends)
            defaultBOS = 11; defaultEOS = 11
            addBOS = pre.addsBOSByDefault
            cleansSpaces = pre.cleansSpaces
        default:
            throw TokenizerError("unsupported tokenizer model '\(vocabulary.model)' (tokenizer.ggml.model); supported: llama, gpt2")
        }
        vocabularySize = count
        addSpacePrefix = vocabulary.addSpacePrefix ?? addSpacePrefix
        addsSpacePrefix = addSpacePrefix
        addsBOS = vocabulary.addBOS ?? addBOS
        addsEOS = vocabulary.addEOS ?? false

        // llama.cpp renames empty token texts so that they stay distinct.
        var storage = vocabulary.tokens.storage
        var ends = vocabulary.tokens.ends
        if let firstEmpty = ends.indices.first(where: { vocabulary.tokens.byteRange(at: $0).isEmpty }) {
            var rebuilt: [UInt8] = Array(storage[0..<(firstEmpty == 0 ? 0 : ends[firstEmpty - 1])])
            var rebuiltEnds = Array(ends[0..<firstEmpty])
            for index in firstEmpty..<count {
                let range = vocabulary.tokens.byteRange(at: index)
                if range.isEmpty { rebuilt.append(contentsOf: "[EMPTY_\(index)]".utf8) } else { rebuilt.append(contentsOf: storage[range]) }
                rebuiltEnds.append(rebuilt.count)
            }
            storage = rebuilt
            ends = rebuiltEnds
        }
        let table = ByteStringTable(storage: storage, ends: ends, lastWins: true)
        tokenTable = table
        scores = vocabulary.scores.map { Array($0.prefix(count)) } ?? [Float](repeating: 0, count: count)

        var attributes: [TokenAttributes]
        if let types = vocabulary.tokenTypes {
            attributes = types.prefix(count).map(TokenAttributes.fromTokenType)
        } else {
            attributes = [TokenAttributes](repeating: .normal, count: count)
        }

        func valid(_ id: Int?, default fallback: Int?) -> Int32? {
            // llama.cpp keeps the default when the file's id is out of range.
            let fallbackID = fallback.flatMap { $0 >= 0 && $0 < count ? Int32($0) : nil }
            guard let id else { return fallbackID }
            return id >= 0 && id < count ? Int32(id) : fallbackID
        }
        func lookup(_ text: String) -> Int32? { table.lookup(Array(text.utf8)) }
        func firstFound(_ texts: [String]) -> Int32? { texts.lazy.compactMap(lookup).first }
        func markControl(_ id: Int32?) { if let id { attributes[Int(id)].insert(.control) } }

        bos = valid(vocabulary.bosID, default: defaultBOS)
        eos = valid(vocabulary.eosID, default: defaultEOS)
        unknown = valid(vocabulary.unknownID, default: defaultUnknown)
        padding = valid(vocabulary.paddingID, default: nil)
        var eot = valid(vocabulary.eotID, default: nil)
        var eom = valid(vocabulary.eomID, default: nil)
        var fimPad = valid(vocabulary.fimPadID, default: nil)
        var fimRepo = valid(vocabulary.fimRepoID, default: nil)
        var fimSeparator = valid(vocabulary.fimSeparatorID, default: nil)

        // Tokens found by their text when the metadata does not name them; they
        // become control tokens. (llama.cpp takes whichever its hash map yields
        // first when several match; here the earliest text in its list wins, so
        // "<|eot_id|>" beats "<|end_of_text|>" and "<|im_end|>" beats "<|endoftext|>".)
        if eot == nil {
            eot = firstFound(["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
                              "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"])
            markControl(eot)
        }
        if eom == nil { eom = lookup("<|eom_id|>"); markControl(eom) }
        if vocabulary.fimPrefixID == nil {
            markControl(firstFound(["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                                    "<|code_prefix|>", "<|prefix|>"]))
        }
        if vocabulary.fimSuffixID == nil {
            markControl(firstFound(["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                                    "<|code_suffix|>", "<|suffix|>"]))
        }
        if vocabulary.fimMiddleID == nil {
            markControl(firstFound(["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                                    "<|code_middle|>", "<|middle|>"]))
        }
        if fimPad == nil { fimPad = firstFound(["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"]); markControl(fimPad) }
        if fimRepo == nil {
            fimRepo = firstFound(["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"]); markControl(fimRepo)
        }
        if fimSeparator == nil { fimSeparator = lookup("<|file_sep|>"); markControl(fimSeparator) }

        var endOfGeneration = Set([fimPad, fimRepo, fimSeparator].compactMap { $0 })
        for text in ["<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
                     "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
                     "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
                     "<｜end▁of▁sentence｜>", "[e~["] {
            if let id = lookup(text) {
                endOfGeneration.insert(id)
                markControl(id)
            }
        }
        // gpt-oss: these are always rendered.
        for text in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let id = lookup(text) { attributes[Int(id)] = .userDefined }
        }
        for id in [eos, eot, eom].compactMap({ $0 }) { endOfGeneration.insert(id) }
        // o200k_harmony / solar-open: "<|end|>" is not an end of generation there.
        let eogTexts = Set(endOfGeneration.map { String(decoding: storage[table.ends.rangeOf($0)], as: UTF8.self) })
        if eogTexts.contains("<|end|>"),
           (eogTexts.contains("<|return|>") && (eogTexts.contains("<|call|>") || eogTexts.contains("<|calls|>")))
            || ((eogTexts.contains("<|call|>") || eogTexts.contains("<|calls|>")) && eogTexts.contains("<|flush|>")),
           let end = endOfGeneration.first(where: { String(decoding: storage[table.ends.rangeOf($0)], as: UTF8.self) == "<|end|>" }) {
            endOfGeneration.remove(end)
            attributes[Int(end)] = .userDefined
        }
        // Gemma 4 / PLaMo: "</s>" is an ordinary token there.
        if eogTexts.contains("<|tool_response>") || eogTexts.contains("<|plamo:eos|>"),
           let end = endOfGeneration.first(where: { String(decoding: storage[table.ends.rangeOf($0)], as: UTF8.self) == "</s>" }) {
            endOfGeneration.remove(end)
            attributes[Int(end)] = .normal
        }
        self.eot = eot
        endOfGenerationTokens = endOfGeneration

        let special = (0..<Int32(count)).filter { !attributes[Int($0)].isDisjoint(with: TokenAttributes.matchedInText) }
        // Per-model stripping flags that llama.cpp sets by name after building its special-token list.
        let name = (vocabulary.modelName ?? "").lowercased()
        let pre = vocabulary.preTokenizer ?? ""
        if ["jina-v2-de", "jina-v2-es", "jina-v2-code", "mmbert"].contains(where: pre.contains) {
            if let mask = lookup("<mask>") { attributes[Int(mask)].insert(.leftStrip) }
        } else if name.contains("phi-3") || name.contains("phi3") {
            for id in special { attributes[Int(id)].insert(.rightStrip) }
            if let id = lookup("</s>") { attributes[Int(id)].insert(.rightStrip) }
            for text in ["<unk>", "<s>", "<|endoftext|>"] {
                if let id = lookup(text) { attributes[Int(id)].remove(.rightStrip) }
            }
        } else if name.contains("modern-bert") {
            if let mask = lookup("[MASK]") { attributes[Int(mask)].insert(.leftStrip) }
        }
        tokenAttributes = attributes
        specialTokens = SpecialTokenMatcher(tokens: special, storage: storage, ends: ends)

        var bytes = [Int32](repeating: -1, count: 256)
        if model == .sentencePiece {
            let hex = Array("0123456789ABCDEF".utf8)
            for byte in 0..<256 {
                let name: [UInt8] = [0x3C, 0x30, 0x78, hex[byte >> 4], hex[byte & 15], 0x3E]  // <0xNN>
                bytes[byte] = table.lookup(name) ?? table.lookup([UInt8(byte)]) ?? -1
            }
        }
        byteTokens = bytes
    }

    // MARK: Lookups

    @inline(__always)
    func tokenID(bytes: UnsafeBufferPointer<UInt8>) -> Int32? { tokenTable.lookup(bytes) }

    @inline(__always)
    func score(of token: Int32) -> Float { scores[Int(token)] }

    @inline(__always)
    func attributes(of token: Int32) -> TokenAttributes { tokenAttributes[Int(token)] }

    @inline(__always)
    func tokenLength(_ token: Int32) -> Int { tokenTable.ends.rangeOf(token).count }

    /// SentencePiece byte fallback for `byte`: its `<0xNN>` token, else the
    /// one-byte token, else the unknown token (llama.cpp would throw here).
    @inline(__always)
    func byteFallbackToken(_ byte: UInt8) -> Int32? {
        let token = byteTokens[Int(byte)]
        return token >= 0 ? token : unknown
    }

    /// The token whose text is exactly `text` (any token; typically used for
    /// special tokens such as `<start_of_turn>`), or nil.
    public func token(for text: String) -> Int32? { tokenTable.lookup(Array(text.utf8)) }

    /// The raw vocabulary text of `token` (with U+2581 for spaces, or the
    /// byte-level alphabet, as stored in the model), or nil for an invalid id.
    public func text(of token: Int32) -> String? {
        guard token >= 0, Int(token) < vocabularySize else { return nil }
        return String(decoding: tokenTable.storage[tokenTable.ends.rangeOf(token)], as: UTF8.self)
    }

    /// The attributes of `token` (empty for an invalid id).
    public func tokenAttributes(_ token: Int32) -> TokenAttributes {
        guard token >= 0, Int(token) < vocabularySize else { return [] }
        return tokenAttributes[Int(token)]
    }

    /// Whether generating `token` ends the generation (llama.cpp's `is_eog`).
    public func isEndOfGeneration(_ token: Int32) -> Bool { endOfGenerationTokens.contains(token) }

    /// Whether `token` is a control or unknown token (hidden when special tokens are not rendered).
    public func isControl(_ token: Int32) -> Bool {
        !tokenAttributes(token).isDisjoint(with: TokenAttributes.hiddenUnlessSpecial)
    }

    // MARK: Encoding

    /// Token ids for `text`, exactly as llama.cpp's `llama_tokenize`.
    ///
    /// - Parameters:
    ///   - addSpecial: add BOS (and EOS) where the model asks for them (`add_bos_token`, `add_eos_token`).
    ///   - parseSpecial: recognise control tokens written in the text (`<start_of_turn>` …); when false
    ///     they are tokenized as plain text. User-defined tokens are recognised either way.
    public func encode(_ text: String, addSpecial: Bool = true, parseSpecial: Bool = false) -> [Int32] {
        var text = text
        return text.withUTF8 { encode(utf8: $0, addSpecial: addSpecial, parseSpecial: parseSpecial) }
    }

    private func encode(utf8 text: UnsafeBufferPointer<UInt8>, addSpecial: Bool, parseSpecial: Bool) -> [Int32] {
        var output: [Int32] = []
        output.reserveCapacity(text.count / 3 + 2)
        let fragments = specialTokens.partition(
            text, tokenizer: self, excluded: parseSpecial ? [] : TokenAttributes.hiddenUnlessSpecial)
        if addSpecial && addsBOS, let bos { output.append(bos) }
        switch model {
        case .sentencePiece:
            var merger = SentencePieceMerger()
            var escaped: [UInt8] = []
            var previousWasSpecial = true
            for fragment in fragments {
                switch fragment {
                case .token(let token):
                    output.append(token)
                    previousWasSpecial = true
                case .text(let range):
                    escaped.removeAll(keepingCapacity: true)
                    if addsSpacePrefix && previousWasSpecial { escaped.append(contentsOf: [0xE2, 0x96, 0x81]) }
                    for byte in text[range] {
                        if byte == 0x20 { escaped.append(contentsOf: [0xE2, 0x96, 0x81]) } else { escaped.append(byte) }
                    }
                    escaped.withUnsafeBufferPointer { merger.tokenize($0, tokenizer: self, into: &output) }
                    previousWasSpecial = false
                }
            }
        case .byteLevelBPE:
            var merger = ByteLevelBPEMerger()
            for fragment in fragments {
                switch fragment {
                case .token(let token):
                    output.append(token)
                case .text(let range):
                    merger.tokenize(UnsafeBufferPointer(rebasing: text[range]), tokenizer: self,
                                    preTokenizer: preTokenizer!, merges: merges!, into: &output)
                }
            }
        }
        if addSpecial && addsEOS, let eos { output.append(eos) }
        return output
    }

    // MARK: Decoding

    /// The bytes `token` stands for (llama.cpp's `token_to_piece` with no space stripping).
    /// Control and unknown tokens give their text only when `renderSpecial` is true;
    /// an invalid id gives no bytes.
    public func piece(for token: Int32, renderSpecial: Bool = true) -> [UInt8] {
        var bytes: [UInt8] = []
        appendPiece(token, renderSpecial: renderSpecial, stripLeadingSpaces: 0, to: &bytes)
        return bytes
    }

    func appendPiece(_ token: Int32, renderSpecial: Bool, stripLeadingSpaces: Int, to output: inout [UInt8]) {
        guard token >= 0, Int(token) < vocabularySize else { return }
        let attributes = tokenAttributes[Int(token)]
        if !renderSpecial && !attributes.isDisjoint(with: TokenAttributes.hiddenUnlessSpecial) { return }
        let start = output.count
        let text = tokenTable.storage[tokenTable.ends.rangeOf(token)]
        if !attributes.isDisjoint(with: [.unknown, .control, .userDefined]) {
            output.append(contentsOf: text)
        } else if attributes.contains(.normal) {
            switch model {
            case .sentencePiece: appendUnescapingSpaces(text, to: &output)
            case .byteLevelBPE: appendByteLevelDecoded(text, to: &output)
            }
        } else if attributes.contains(.byte) {
            output.append(Self.byteValue(ofByteToken: text))
        }
        var stripped = 0
        while stripped < stripLeadingSpaces && start + stripped < output.count && output[start + stripped] == 0x20 {
            stripped += 1
        }
        if stripped > 0 { output.removeSubrange(start..<(start + stripped)) }
    }

    /// Text for `tokens` (llama.cpp's `llama_detokenize`).
    ///
    /// - Parameter skipSpecial: when true, control and unknown tokens are left
    ///   out and a leading BOS / trailing EOS added by `encode` is removed
    ///   (llama.cpp's `remove_special`, not `unparse_special`); when false (the
    ///   default, as llama.cpp's `/detokenize`), every token is rendered,
    ///   `<bos>` included. Bytes that are not valid UTF-8 become U+FFFD.
    public func decode(_ tokens: [Int32], skipSpecial: Bool = false) -> String {
        String(decoding: decodeBytes(tokens, skipSpecial: skipSpecial), as: UTF8.self)
    }

    /// The pieces of `tokens` concatenated, with no space stripping or
    /// cleaning: what llama.cpp's server returns from `/detokenize` (with
    /// `renderSpecial`) and streams for generated tokens (without it), and what
    /// `StreamingDecoder` emits. Equal to `decode` for Gemma 3.
    public func concatenatedPieces(_ tokens: [Int32], renderSpecial: Bool = true) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(tokens.count * 4)
        for token in tokens { appendPiece(token, renderSpecial: renderSpecial, stripLeadingSpaces: 0, to: &output) }
        return String(decoding: output, as: UTF8.self)
    }

    /// The bytes of `decode(_:skipSpecial:)`, before UTF-8 decoding.
    public func decodeBytes(_ tokens: [Int32], skipSpecial: Bool = false) -> [UInt8] {
        var tokens = tokens[...]
        var removeSpace = addsSpacePrefix
        if skipSpecial && addsBOS, let first = tokens.first, first == bos {
            removeSpace = false
            tokens = tokens.dropFirst()
        }
        if skipSpecial && addsEOS, let last = tokens.last, last == eos {
            tokens = tokens.dropLast()
        }
        var output: [UInt8] = []
        output.reserveCapacity(tokens.count * 4)
        for token in tokens {
            appendPiece(token, renderSpecial: !skipSpecial, stripLeadingSpaces: removeSpace ? 1 : 0, to: &output)
            removeSpace = false
        }
        if cleansSpaces { output = Self.cleanSpaces(output) }
        return output
    }

    private func appendUnescapingSpaces(_ text: ArraySlice<UInt8>, to output: inout [UInt8]) {
        var index = text.startIndex
        while index < text.endIndex {
            if text[index] == 0xE2, index + 2 < text.endIndex, text[index + 1] == 0x96, text[index + 2] == 0x81 {
                output.append(0x20)
                index += 3
            } else {
                output.append(text[index])
                index += 1
            }
        }
    }

    /// Maps byte-level alphabet characters back to bytes; a character outside
    /// the alphabet becomes llama.cpp's "[UNK_BYTE_0x…]" marker.
    private func appendByteLevelDecoded(_ text: ArraySlice<UInt8>, to output: inout [UInt8]) {
        for scalar in String(decoding: text, as: UTF8.self).unicodeScalars {
            if let byte = ByteLevelAlphabet.decoded[scalar.value] {
                output.append(byte)
            } else {
                output.append(contentsOf: "[UNK_BYTE_0x".utf8)
                for byte in String(scalar).utf8 {
                    let hex = Array("0123456789abcdef".utf8)
                    output.append(hex[Int(byte >> 4)])
                    output.append(hex[Int(byte & 15)])
                }
                output.append(contentsOf: text)
                output.append(0x5D)
            }
        }
    }

    /// The byte of a `<0xNN>` token (0 when the text is not of that form).
    static func byteValue(ofByteToken text: ArraySlice<UInt8>) -> UInt8 {
        guard text.count >= 5 else { return 0 }
        func digit(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: c - 0x30
            case 0x41...0x46: c - 0x41 + 10
            case 0x61...0x66: c - 0x61 + 10
            default: nil
            }
        }
        let base = text.startIndex
        guard let high = digit(text[base + 3]) else { return 0 }
        guard let low = digit(text[base + 4]) else { return high }
        return high << 4 | low
    }

    /// llama.cpp's `clean_spaces` passes over detokenized text: drop the space
    /// before ? ! . , and before 's 'm 're 've, and around a lone apostrophe.
    static func cleanSpaces(_ input: [UInt8]) -> [UInt8] {
        var text = input
        guard text.count > 1 else { return text }
        // Pass 1: " ?", " !", " .", " ,"
        var total = 1
        for index in 1..<text.count {
            let x = text[index]
            if text[index - 1] == 0x20 && (x == 0x3F || x == 0x21 || x == 0x2E || x == 0x2C) { total -= 1 }
            text[total] = x
            total += 1
        }
        text.removeSubrange(total...)
        guard text.count > 1 else { return text }
        // Pass 2: " ' " becomes "'"
        var count = text.count
        total = 1
        var index = 1
        while index < count {
            let x = text[index]
            if x == 0x27 && index + 1 < count && text[index - 1] == 0x20 && text[index + 1] == 0x20 {
                total -= 1
                index += 1
                text[index] = 0
            }
            text[total] = x
            total += 1
            index += 1
        }
        text.removeSubrange(total...)
        guard text.count > 1 else { return text }
        // Pass 3: " 's", " 'm", " 're", " 've"
        count = text.count
        total = 1
        for index in 1..<count {
            let x = text[index]
            if text[index - 1] == 0x20 && x == 0x27 && index + 1 < count {
                let x1 = text[index + 1]
                if x1 == 0x73 || x1 == 0x6D {
                    total -= 1
                } else if index + 2 < count {
                    let x2 = text[index + 2]
                    if (x1 == 0x72 && x2 == 0x65) || (x1 == 0x76 && x2 == 0x65) { total -= 1 }
                }
            }
            text[total] = x
            total += 1
        }
        text.removeSubrange(total...)
        return text
    }
}

extension Array where Element == Int {
    /// The byte range of string `id` when `self` holds the strings' end offsets.
    @inline(__always)
    func rangeOf(_ id: Int32) -> Range<Int> {
        (id == 0 ? 0 : self[Int(id) - 1])..<self[Int(id)]
    }
}
