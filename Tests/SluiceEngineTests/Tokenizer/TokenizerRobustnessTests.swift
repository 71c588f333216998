import Foundation
import SluiceCore
import SluiceTestSupport
import Testing

@testable import SluiceEngine

/// Odd and hostile input against the default model's tokenizer: never a
/// crash, and text without special tokens always comes back exactly.
@Suite(.ownThread) struct TokenizerRobustnessTests {
    @Test func emptyText() throws {
        let tokenizer = try DefaultTokenizer.load()
        #expect(tokenizer.encode("", addSpecial: false) == [])
        #expect(tokenizer.encode("", addSpecial: true) == [2])
        #expect(tokenizer.decode([]) == "")
    }

    @Test func charactersOutsideTheVocabularyFallBackToBytes() throws {
        let tokenizer = try DefaultTokenizer.load()
        // U+16A0 RUNIC LETTER FEHU is no token of Gemma 3: its three UTF-8 bytes
        // become <0xE1> <0x9A> <0xA0>, which are ids 238 + byte.
        let ids = tokenizer.encode("ᚠ", addSpecial: false)
        let byteTokens: [Int32] = [0xE1, 0x9A, 0xA0].map { 238 + $0 }
        #expect(ids == byteTokens)
        #expect(tokenizer.decode(ids) == "ᚠ")
        // Streaming emits the character only when its last byte arrives.
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        #expect(decoder.append(ids[0]) == "")
        #expect(decoder.append(ids[1]) == "")
        #expect(decoder.append(ids[2]) == "ᚠ")
    }

    @Test func userDefinedWhitespaceTokens() throws {
        let tokenizer = try DefaultTokenizer.load()
        // "\n", "\n\n" … and runs of spaces and tabs are user-defined tokens,
        // matched longest first before the BPE runs.
        let a: [Int32] = tokenizer.encode("a", addSpecial: false)
        let b: [Int32] = tokenizer.encode("b", addSpecial: false)
        let expected: [Int32] = a + [109] + b
        #expect(tokenizer.encode("a\n\n\nb", addSpecial: false) == expected)
        let spaces = String(repeating: " ", count: 40)  // 31 + 9
        #expect(tokenizer.encode(spaces, addSpecial: false) == [167, 145])
    }

    @Test(arguments: [
        "\u{0}", "a\u{0}b", "e\u{301}\u{301}\u{301}", "\u{301}", "👩‍👩‍👧‍👦🏳️‍🌈", "\u{FEFF}\u{200B}\u{202E}rtl",
        "\u{10FFFD}\u{E000}", "𓀀𓀁", "\r\n\r\n", "<start_of_turn", "<<start_of_turn>>", "</s><eos>", "<0x41>",
        "\t\t\t\n \n", "ﷺ", "Z̤̈ă̴l̶g̵o̸",
    ])
    func oddTextRoundTrips(_ text: String) throws {
        let tokenizer = try DefaultTokenizer.load()
        let plain = tokenizer.encode(text, addSpecial: false, parseSpecial: false)
        #expect(tokenizer.decode(plain) == text)
        #expect(plain.allSatisfy { $0 >= 0 && Int($0) < tokenizer.vocabularySize })
        let parsed = tokenizer.encode(text, addSpecial: true, parseSpecial: true)
        #expect(tokenizer.decode(parsed) == "<bos>" + text)
    }

    @Test func literalSpaceMarksReadAsSpaces() throws {
        // U+2581 is how SentencePiece writes a space, so text that contains it
        // cannot round-trip (the same holds for llama.cpp).
        let tokenizer = try DefaultTokenizer.load()
        let ids = tokenizer.encode("a▁b", addSpecial: false)
        #expect(ids == tokenizer.encode("a b", addSpecial: false))
        #expect(tokenizer.decode(ids) == "a b")
    }

    @Test func randomTextRoundTrips() throws {
        let tokenizer = try DefaultTokenizer.load()
        var generator = SplitMix64(seed: 0x5EED)
        let pools: [ClosedRange<UInt32>] = [0x20...0x7E, 0xA0...0x24F, 0x300...0x36F, 0x3040...0x30FF, 0x4E00...0x9FFF,
                                            0x1F300...0x1FAFF, 0x0...0x20, 0x10000...0x10FFFF]
        for _ in 0..<300 {
            var scalars = String.UnicodeScalarView()
            for _ in 0..<Int(generator.next() % 40) {
                let pool = pools[Int(generator.next() % UInt64(pools.count))]
                let value = pool.lowerBound + UInt32(generator.next() % UInt64(pool.count))
                if let scalar = Unicode.Scalar(value) { scalars.append(scalar) }
            }
            let text = String(scalars)
            let ids = tokenizer.encode(text, addSpecial: false, parseSpecial: false)
            #expect(tokenizer.decode(ids) == text)
            var decoder = StreamingDecoder(tokenizer: tokenizer, renderSpecial: true)
            var streamed = ""
            for id in ids { streamed += decoder.append(id) }
            #expect(decoder.pendingByteCount == 0)
            #expect(streamed + decoder.finish() == text)
        }
    }

    @Test func oneTokenizerServesManyTasksAtOnce() async throws {
        let tokenizer = try DefaultTokenizer.load()
        let texts = (0..<16).map { "<start_of_turn>user\nTask \($0): naïve café, 日本語 🚀\n<end_of_turn>\n" }
        let expected = texts.map { tokenizer.encode($0, parseSpecial: true) }
        let results = try await withThrowingTaskGroup(of: (Int, [Int32], String).self) { group in
            for (index, text) in texts.enumerated() {
                group.addTask {
                    var ids: [Int32] = []
                    for _ in 0..<50 { ids = tokenizer.encode(text, parseSpecial: true) }
                    return (index, ids, tokenizer.decode(ids, skipSpecial: true))
                }
            }
            var results: [(Int, [Int32], String)] = []
            for try await result in group { results.append(result) }
            return results
        }
        #expect(results.count == texts.count)
        for (index, ids, text) in results {
            #expect(ids == expected[index])
            #expect(text == texts[index].replacingOccurrences(of: "<start_of_turn>", with: "")
                .replacingOccurrences(of: "<end_of_turn>", with: ""))
        }
    }

    @Test func invalidTokenIdsDecodeToNothing() throws {
        let tokenizer = try DefaultTokenizer.load()
        #expect(tokenizer.piece(for: -1) == [])
        #expect(tokenizer.piece(for: 262_144) == [])
        #expect(tokenizer.decode([-7, 9259, Int32.max, 1902, Int32.min]) == "Hello world")
        #expect(tokenizer.text(of: 262_144) == nil)
        #expect(tokenizer.text(of: 1902) == "▁world")
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        #expect(decoder.append(-3) == "")
    }

    @Test func longTextEncodesInLinearishTime() throws {
        let tokenizer = try DefaultTokenizer.load()
        let paragraph = """
            The quick brown fox jumps over the lazy dog. Sluice runs batches of prompts through a model \
            on the CPU, checkpointing as it goes; if the machine is preempted, work resumes where it stopped.
            Numbers like 3.14159 and 2,718 appear, with "quotes", émigré café naïveté, 日本語, and emoji 🚀.\n\n
            """
        let small = String(repeating: paragraph, count: 12)  // ~4 KB
        let large = String(repeating: paragraph, count: 480)  // ~160 KB
        let clock = ContinuousClock()
        var smallBest = Duration.seconds(1000)
        var smallCount = 0
        for _ in 0..<5 {
            let start = clock.now
            smallCount = tokenizer.encode(small, parseSpecial: true).count
            smallBest = min(smallBest, clock.now - start)
        }
        let start = clock.now
        let largeCount = tokenizer.encode(large, parseSpecial: true).count
        let largeTime = clock.now - start
        func rate(_ count: Int, _ time: Duration) -> Int {
            Int(Double(count) / time.inSeconds)
        }
        print("tokenizer: \(small.utf8.count) bytes → \(smallCount) tokens in \(smallBest) (\(rate(smallCount, smallBest)) tokens/s); "
              + "\(large.utf8.count) bytes → \(largeCount) tokens in \(largeTime) (\(rate(largeCount, largeTime)) tokens/s)")
        let largeIDs = tokenizer.encode(large, parseSpecial: true)
        let decodeStart = clock.now
        let decoded = tokenizer.decode(largeIDs, skipSpecial: true)
        let decodeTime = clock.now - decodeStart
        #expect(decoded == large)
        print("tokenizer: decoding \(largeIDs.count) tokens took \(decodeTime) (\(rate(largeIDs.count, decodeTime)) tokens/s)")
        #expect(largeCount > 40 * smallCount - 40)
        // 40× the text must not take anywhere near 40² × the time; the bound is loose because the two
        // timings may see different loads on a shared machine.
        let bound: Duration = smallBest * 400 + .seconds(5)
        #expect(largeTime < bound)
        // One character repeated: a single fragment of 100,000 symbols.
        let start2 = clock.now
        let repeated = tokenizer.encode(String(repeating: "ab", count: 50_000), addSpecial: false)
        #expect(!repeated.isEmpty)
        #expect(tokenizer.decode(repeated) == String(repeating: "ab", count: 50_000))
        #expect(clock.now - start2 < .seconds(30))
    }
}
