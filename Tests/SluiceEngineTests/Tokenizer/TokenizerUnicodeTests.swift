import Foundation
import Testing

@testable import SluiceEngine

@Suite(.ownThread) struct TokenizerUnicodeTests {
    /// The pre-tokenizers' `\p{L}`, `\p{N}`, `\s` … come from the standard
    /// library; llama.cpp has its own table (Unicode 15.1). They must agree on
    /// every code point, or words would split differently.
    @Test func categoriesMatchLlamaCppForEveryCodePoint() throws {
        let root = try #require(try TokenizerFixtures.json("tokenizer/unicode-flags.json") as? [String: Any])
        let runs = try #require(root["runs"] as? [[Int]])
        #expect(runs.first?.first == 0)
        var mismatches: [String] = []
        for (index, run) in runs.enumerated() {
            let end = index + 1 < runs.count ? runs[index + 1][0] : 0x110000
            for codePoint in run[0]..<end {
                let mine = CodepointFlags.of(UInt32(codePoint)).rawValue
                if mine != UInt16(run[1]) && mismatches.count < 20 {
                    mismatches.append("U+\(String(codePoint, radix: 16, uppercase: true)): \(mine) vs \(run[1])")
                }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches)")
    }

    @Test func byteAlphabetIsGPT2s() {
        // Printable Latin-1 maps to itself; the rest shifts up from U+0100 in byte order.
        #expect(ByteLevelAlphabet.codePoint(for: 0x41) == 0x41)
        #expect(ByteLevelAlphabet.codePoint(for: 0x00) == 0x100)
        #expect(ByteLevelAlphabet.codePoint(for: 0x20) == 0x120)  // "Ġ"
        #expect(ByteLevelAlphabet.codePoint(for: 0x0A) == 0x10A)  // "Ċ"
        #expect(ByteLevelAlphabet.codePoint(for: 0xAD) == 0x143)
        #expect(Set((0...255).map { ByteLevelAlphabet.codePoint(for: UInt8($0)) }).count == 256)
        for byte in 0...255 {
            #expect(ByteLevelAlphabet.decoded[ByteLevelAlphabet.codePoint(for: UInt8(byte))] == UInt8(byte))
        }
    }

    @Test func incompleteUTF8IsHeldBackOnlyWhenItCanComplete() {
        #expect(StreamingDecoder.completePrefixLength([0x61, 0xE2, 0x96]) == 1)
        #expect(StreamingDecoder.completePrefixLength([0xE2, 0x96, 0x81]) == 3)
        #expect(StreamingDecoder.completePrefixLength([0xF0, 0x9F]) == 0)
        #expect(StreamingDecoder.completePrefixLength([0x80, 0x80]) == 2)  // stray continuations
        #expect(StreamingDecoder.completePrefixLength([0xED, 0xA0]) == 2)  // a surrogate can never complete
        #expect(StreamingDecoder.completePrefixLength([0xC0]) == 1)  // never a lead byte
        #expect(StreamingDecoder.completePrefixLength([]) == 0)
    }
}
