import Testing

@testable import SluiceEngine

/// Word splits of the pre-tokenizer named `pre`.
private func words(_ pre: String, _ text: String) throws -> [String] {
    let preTokenizer = try PreTokenizer.named(pre)
    let scalars = Array(text.unicodeScalars)
    let codePoints = scalars.map(\.value)
    let flags = codePoints.map(CodepointFlags.of)
    let lengths = codePoints.withUnsafeBufferPointer { cps in
        flags.withUnsafeBufferPointer { preTokenizer.split(cps, flags: $0) }
    }
    #expect(lengths.reduce(0, +) == scalars.count)
    var result: [String] = []
    var start = 0
    for length in lengths {
        var word = String.UnicodeScalarView()
        word.append(contentsOf: scalars[start..<(start + length)])
        result.append(String(word))
        start += length
    }
    return result
}

/// A byte-level vocabulary: ids 0-255 are the 256 single bytes (in the GPT-2
/// byte alphabet), then merged tokens and two control tokens.
private func makeVocabulary(pre: String) -> TokenizerVocabulary {
    var texts = (0..<256).map { String(decoding: ByteLevelAlphabet.encoded[$0], as: UTF8.self) }
    texts += ["he", "the", "Ġt", "Ġthe", "<|endoftext|>", "<|im_end|>"]  // 256 ... 261
    let types = [Int32](repeating: 1, count: 260) + [3, 3]
    var vocabulary = TokenizerVocabulary(model: "gpt2", preTokenizer: pre, tokens: TokenizerStrings(texts),
                                         tokenTypes: types, merges: TokenizerStrings(["h e", "t he", "Ġ t", "Ġt he"]))
    vocabulary.eosID = 260
    vocabulary.bosID = 260
    return vocabulary
}

private func bytes(_ text: String) -> [Int32] { text.utf8.map { Int32($0) } }

@Suite(.ownThread) struct TokenizerByteLevelBPETests {
    // Expected splits follow from each regular expression (see PreTokenizer).
    static let sample = "Hello world's 12345 don'T  x\n\n y!!\n"

    @Test func llama3PreTokenizer() throws {
        #expect(try words("llama-bpe", Self.sample) == [
            "Hello", " world", "'s", " ", "123", "45", " don", "'T", " ", " x", "\n\n", " y", "!!\n",
        ])
        // \p{N} covers other scripts' digits; combining marks are not \p{L}.
        #expect(try words("llama-bpe", "naïve café 日本 ١٢٣٤") == ["naïve", " café", " 日本", " ", "١٢٣", "٤"])
        #expect(try words("llama-bpe", "e\u{301}x") == ["e", "\u{301}x"])
        #expect(try words("llama-bpe", "a \r\n\tb   ") == ["a", " \r\n", "\tb", "   "])
    }

    @Test func qwen2PreTokenizerSplitsSingleDigits() throws {
        #expect(try words("qwen2", Self.sample) == [
            "Hello", " world", "'s", " ", "1", "2", "3", "4", "5", " don", "'T", " ", " x", "\n\n", " y", "!!\n",
        ])
    }

    @Test func gpt2PreTokenizer() throws {
        // Case-sensitive contractions, " ?\p{N}+", no line-break grouping.
        #expect(try words("gpt-2", Self.sample) == [
            "Hello", " world", "'s", " 12345", " don", "'", "T", " ", " x", "\n\n", " y", "!!", "\n",
        ])
    }

    @Test func defaultAndStarcoderPreTokenizers() throws {
        // Punctuation runs, then GPT-2, then \p{N}+, then ASCII digit triples.
        #expect(try words("default", "a+b 1234567 x.y") == ["a", "+", "b", " ", "123", "456", "7", " x", ".", "y"])
        #expect(try words("smollm", "ab12 c") == ["ab", "1", "2", " c"])
    }

    @Test func unknownPreTokenizerIsAnError() throws {
        var vocabulary = makeVocabulary(pre: "no-such-pre")
        #expect(throws: TokenizerError.self) { try Tokenizer(vocabulary: vocabulary) }
        vocabulary = makeVocabulary(pre: "qwen2")
        vocabulary.merges = nil
        #expect(throws: TokenizerError.self) { try Tokenizer(vocabulary: vocabulary) }
    }

    @Test func mergesApplyInRankOrder() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary(pre: "gpt-2"))
        // "Ġthe": "h e" (rank 0) then "t he" (1); "Ġ t" (2) is stale by then and
        // no merge joins "Ġ" with "the", so "Ġthe" is never reached.
        #expect(tokenizer.encode(" the", addSpecial: false) == [32, 257])
        #expect(tokenizer.encode("the", addSpecial: false) == [257])
        #expect(!tokenizer.addsBOS)
    }

    @Test func llama3TakesWholeWordTokensWithoutMerging() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary(pre: "llama-bpe"))
        #expect(tokenizer.encode(" the", addSpecial: false) == [259])
        #expect(tokenizer.addsBOS)
        #expect(tokenizer.encode(" the") == [260, 259])
    }

    @Test func bytesMapThroughTheByteAlphabet() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary(pre: "qwen2"))
        let text = "é\n\u{0}🙂"
        let ids = tokenizer.encode(text, addSpecial: false)
        #expect(ids == bytes(text))
        #expect(tokenizer.decode(ids) == text)
        #expect(tokenizer.piece(for: 10) == [0x0A])  // "Ċ"
    }

    @Test func specialTokensAndEndOfGeneration() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary(pre: "qwen2"))
        #expect(tokenizer.encode("x<|im_end|>", addSpecial: false, parseSpecial: true) == [120, 261])
        #expect(tokenizer.encode("x<|im_end|>", addSpecial: false, parseSpecial: false) == bytes("x<|im_end|>"))
        #expect(tokenizer.endOfGenerationTokens == [260, 261])
        #expect(tokenizer.eot == 261)  // "<|im_end|>" comes before "<|endoftext|>" in llama.cpp's list
        #expect(tokenizer.decode([120, 261]) == "x<|im_end|>")
        #expect(tokenizer.decode([120, 261], skipSpecial: true) == "x")
    }

    @Test func cleanSpacesDependsOnThePreTokenizer() throws {
        let llama3 = try Tokenizer(vocabulary: makeVocabulary(pre: "llama-bpe"))
        let qwen2 = try Tokenizer(vocabulary: makeVocabulary(pre: "qwen2"))
        let ids = bytes("a . b 's c ' d")
        #expect(llama3.decode(ids) == "a. b's c'd")
        #expect(qwen2.decode(ids) == "a . b 's c ' d")
    }

    @Test func streamingHoldsBackPartialCharacters() throws {
        let tokenizer = try Tokenizer(vocabulary: makeVocabulary(pre: "qwen2"))
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        #expect(decoder.append(0xF0) == "")
        #expect(decoder.append(0x9F) == "")
        #expect(decoder.append(0x99) == "")
        #expect(decoder.pendingByteCount == 3)
        #expect(decoder.append(0x82) == "🙂")
        #expect(decoder.append(0x61) == "a")
        // A byte that can never start a character is not held back.
        #expect(decoder.append(0xFF) == "\u{FFFD}")
        #expect(decoder.append(0xC3) == "")
        #expect(decoder.finish() == "\u{FFFD}")
        #expect(decoder.pendingByteCount == 0)
        // Control tokens are hidden unless rendered.
        #expect(decoder.append(261) == "")
        var rendering = StreamingDecoder(tokenizer: tokenizer, renderSpecial: true)
        #expect(rendering.append(261) == "<|im_end|>")
    }
}
