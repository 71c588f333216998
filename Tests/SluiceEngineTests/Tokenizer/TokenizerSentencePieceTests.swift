import Testing

@testable import SluiceEngine

/// A small "llama" (SentencePiece BPE) vocabulary whose expected tokenizations
/// follow by hand from llama.cpp's algorithm: merge the adjacent pair whose
/// concatenation is the highest-scoring token, leftmost first on ties; bytes
/// of unknown characters become `<0xNN>` tokens.
private func makeVocabulary(addSpacePrefix: Bool? = nil, name: String? = nil) -> TokenizerVocabulary {
    var texts = ["<unk>", "<s>", "</s>"]
    var types: [Int32] = [2, 3, 3]
    var scores: [Float] = [0, 0, 0]
    let hex = Array("0123456789ABCDEF")
    for byte in 0..<256 {  // ids 3 ... 258
        texts.append("<0x\(hex[byte >> 4])\(hex[byte & 15])>")
        types.append(6)
        scores.append(0)
    }
    let normal: [(String, Float)] = [
        ("▁", -1), ("a", -2), ("b", -2), ("c", -3), ("aa", -1.5), ("ab", -0.5), ("▁a", -1), ("▁b", -1.2),
        ("x", -2), ("y", -2), ("z", -2), ("w", -2),
    ]
    for (text, score) in normal {  // ids 259 ...
        texts.append(text)
        types.append(1)
        scores.append(score)
    }
    for text in ["<tag>", "xy", "yzw"] {  // user-defined: 271, 272, 273
        texts.append(text)
        types.append(4)
        scores.append(0)
    }
    var vocabulary = TokenizerVocabulary(model: "llama", tokens: TokenizerStrings(texts), scores: scores, tokenTypes: types)
    vocabulary.addSpacePrefix = addSpacePrefix
    vocabulary.modelName = name
    return vocabulary
}

private let space: Int32 = 259, a: Int32 = 260, b: Int32 = 261, c: Int32 = 262, aa: Int32 = 263, ab: Int32 = 264
private let spaceA: Int32 = 265, spaceB: Int32 = 266, x: Int32 = 267, y: Int32 = 268, z: Int32 = 269, w: Int32 = 270
private let tag: Int32 = 271, xy: Int32 = 272, yzw: Int32 = 273
private func byteToken(_ byte: UInt8) -> Int32 { 3 + Int32(byte) }

@Suite(.ownThread) struct TokenizerSentencePieceTests {
    @Test func defaultsFollowLlamaCpp() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary())
        #expect(tokenizer.model == .sentencePiece)
        #expect(tokenizer.bos == 1 && tokenizer.eos == 2 && tokenizer.unknown == 0)
        #expect(tokenizer.addsBOS && !tokenizer.addsEOS && tokenizer.addsSpacePrefix)
        #expect(tokenizer.endOfGenerationTokens == [2])  // "</s>" by text, and EOS
    }

    @Test func equalScoresMergeLeftmostFirst() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary(addSpacePrefix: false))
        // "aa" scores the same at 0-1 and 1-2: the left pair merges, "aaa" is no token.
        #expect(tokenizer.encode("aaa", addSpecial: false) == [aa, a])
    }

    @Test func higherScoreMergesFirst() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary(addSpacePrefix: false))
        // "ab" (-0.5) beats "aa" (-1.5) although "aa" is further left.
        #expect(tokenizer.encode("aab", addSpecial: false) == [a, ab])
        #expect(tokenizer.encode("abc", addSpecial: false) == [ab, c])
    }

    @Test func spacesAreEscapedAndPrefixed() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary())
        // "a b" → "▁a▁b" with the space prefix; BOS first by default.
        #expect(tokenizer.encode("a b") == [1, spaceA, spaceB])
        #expect(tokenizer.encode("a b", addSpecial: false) == [spaceA, spaceB])
        let unprefixed = try Tokenizer(vocabulary: makeVocabulary(addSpacePrefix: false))
        #expect(unprefixed.encode("a b", addSpecial: false) == [a, spaceB])
        #expect(unprefixed.encode("  ", addSpecial: false) == [space, space])
    }

    @Test func unknownCharactersFallBackToBytes() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary(addSpacePrefix: false))
        let ids = tokenizer.encode("aé🙂", addSpecial: false)
        let expected = [a] + Array("é🙂".utf8).map(byteToken)
        #expect(ids == expected)
        #expect(tokenizer.decode(ids) == "aé🙂")
        #expect(tokenizer.piece(for: byteToken(0xC3)) == [0xC3])
    }

    @Test func userDefinedTokensAreAlwaysMatchedControlOnlyWhenParsing() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary(addSpacePrefix: false))
        #expect(tokenizer.encode("a<tag>b", addSpecial: false, parseSpecial: false) == [a, tag, b])
        // "<s>" is a control token: plain text unless special tokens are parsed.
        let asText = tokenizer.encode("<s>a", addSpecial: false, parseSpecial: false)
        #expect(asText == Array("<s>".utf8).map(byteToken) + [a])
        #expect(tokenizer.encode("<s>a", addSpecial: false, parseSpecial: true) == [1, a])
    }

    @Test func spacePrefixFollowsEachSpecialToken() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary())
        // Text after a special token is a new fragment and gets "▁" again.
        #expect(tokenizer.encode("a<tag>b", addSpecial: false) == [spaceA, tag, spaceB])
    }

    @Test func longerSpecialTokensWinEverywhere() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary(addSpacePrefix: false))
        // llama.cpp tries "yzw" (3 bytes) before "xy" (2 bytes) over the whole
        // text, so "xyzw" gives x + yzw even though "xy" starts first.
        #expect(tokenizer.encode("xyzw", addSpecial: false) == [x, yzw])
        #expect(tokenizer.encode("xyxy", addSpecial: false) == [xy, xy])
    }

    @Test func detokenizationStripsTheSpacePrefixLikeLlamaCpp() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary())
        let ids = tokenizer.encode("a b", addSpecial: false)
        #expect(tokenizer.decode(ids) == "a b")
        // With BOS rendered, the first piece is "<s>" and nothing is stripped.
        #expect(tokenizer.decode([1] + ids) == "<s> a b")
        // llama.cpp keeps the prefix space when it removes a leading BOS.
        #expect(tokenizer.decode([1] + ids, skipSpecial: true) == " a b")
        #expect(tokenizer.decode([0, 1, 2], skipSpecial: true) == "")
        #expect(tokenizer.decode([0, 1, 2], skipSpecial: false) == "<unk><s></s>")
    }

    @Test func phi3SpecialTokensStripWhitespaceToTheirRight() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary(addSpacePrefix: false, name: "Phi-3 mini"))
        // Every special token but <unk>, <s> and <|endoftext|> right-strips for Phi-3.
        #expect(tokenizer.tokenAttributes(tag).contains(.rightStrip))
        #expect(!tokenizer.tokenAttributes(1).contains(.rightStrip))
        #expect(tokenizer.encode("<tag>  a", addSpecial: false) == [tag, a])
        #expect(tokenizer.encode("a <tag> b", addSpecial: false) == [a, space, tag, b])
    }

    @Test func oddVocabulariesWorkWithoutCrashing() throws {
        // Empty texts are renamed "[EMPTY_i]" and duplicates map to their last id,
        // as in llama.cpp; a byte with no <0xNN> token falls back to <unk> (id 0
        // by default), where llama.cpp would throw.
        var vocabulary = TokenizerVocabulary(model: "llama", tokens: TokenizerStrings(["", "a", "a", "ab", ""]))
        vocabulary.addSpacePrefix = false
        let tokenizer = try Tokenizer(vocabulary: vocabulary)
        #expect(tokenizer.encode("ab", addSpecial: false) == [3])
        #expect(tokenizer.encode("a", addSpecial: false) == [2])
        #expect(tokenizer.encode("b", addSpecial: false) == [0])
        #expect(tokenizer.text(of: 4) == "[EMPTY_4]")
        #expect(tokenizer.token(for: "") == nil)
        #expect(tokenizer.decode([0, 3]) == "[EMPTY_0]ab")

        // Merge lines without a separating space are ignored; the rest keep their rank.
        let bytes = (0..<256).map { String(decoding: ByteLevelAlphabet.encoded[$0], as: UTF8.self) }
        let gpt2 = TokenizerVocabulary(model: "gpt2", preTokenizer: "qwen2", tokens: TokenizerStrings(bytes + ["ab"]),
                                       merges: TokenizerStrings(["ab", " ", "", "a b"]))
        let bpe = try Tokenizer(vocabulary: gpt2)
        #expect(bpe.encode("abc", addSpecial: false) == [256, 99])
    }

    @Test func badVocabulariesAreErrors() throws {
        #expect(throws: TokenizerError.self) {
            try Tokenizer(vocabulary: TokenizerVocabulary(model: "llama", tokens: TokenizerStrings([])))
        }
        #expect(throws: TokenizerError.self) {
            try Tokenizer(vocabulary: TokenizerVocabulary(model: "bert", tokens: TokenizerStrings(["a"])))
        }
        #expect(throws: TokenizerError.self) {
            try Tokenizer(vocabulary: TokenizerVocabulary(model: "llama", tokens: TokenizerStrings(["a", "b"]), scores: [0]))
        }
        #expect(throws: TokenizerError.self) {
            try Tokenizer(vocabulary: TokenizerVocabulary(model: "llama", tokens: TokenizerStrings(storage: [0x61], ends: [1, 5])))
        }
        #expect(throws: TokenizerError.self) {
            try Tokenizer(vocabulary: TokenizerVocabulary(model: "llama", tokens: TokenizerStrings(storage: [0x61, 0x62], ends: [2, 1])))
        }
    }
}
