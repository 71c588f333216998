import Foundation
import Testing

@testable import SluiceEngine

/// The tiny random-weight models of scripts/make-tiny-models (their vocabularies
/// are BPE-trained: a SentencePiece-style "llama" one with a space prefix, and
/// byte-level "gpt2" ones with the llama-bpe and qwen2 pre-tokenizers) against
/// llama.cpp's `llama-tokenize` ids in Fixtures/tiny/tokenize-*.json.
///
/// The .gguf files are generated, not committed (scripts/make-tiny-models
/// Tests/SluiceEngineTests/Fixtures/tiny writes them, byte-identical to the
/// sha256 in each fixture's meta); the test runs when they are present.
@Suite(.ownThread) struct TokenizerTinyModelTests {
    static func modelPath(_ name: String) -> String? {
        guard let base = Bundle.module.resourceURL else { return nil }
        let path = base.appendingPathComponent("Fixtures/tiny/\(name).gguf").path
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    static let variants: [(key: String, addSpecial: Bool, parseSpecial: Bool)] = [
        ("ids_no_bos_no_parse_special", false, false), ("ids_no_bos_parse_special", false, true),
        ("ids_with_bos_no_parse_special", true, false), ("ids_with_bos_parse_special", true, true),
    ]

    @Test(.enabled(if: modelPath("llama-spm-f32") != nil, "tiny models not generated (scripts/make-tiny-models)"),
          arguments: ["llama-spm-f32", "llama3-bpe-f16", "qwen2-bf16"])
    func tinyModelVocabulariesMatchLlamaCpp(_ name: String) throws {
        let path = try #require(Self.modelPath(name), "run scripts/make-tiny-models Tests/SluiceEngineTests/Fixtures/tiny")
        let tokenizer = try Tokenizer(gguf: GGUFFile(path: path))
        let root = try #require(try TokenizerFixtures.json("tiny/tokenize-\(name).json") as? [String: Any])
        let records = try #require(root["records"] as? [[String: Any]])
        var compared = 0
        var detokenizations = 0
        for record in records {
            let text = try #require(record["text"] as? String)
            for variant in Self.variants {
                // null where the CLI could not take the string (the empty one).
                guard let expected = record[variant.key] as? [Int] else { continue }
                let ids = tokenizer.encode(text, addSpecial: variant.addSpecial, parseSpecial: variant.parseSpecial)
                #expect(ids == expected.map { Int32($0) }, "\(name) \(variant.key) \(text.debugDescription)")
                // The server's /detokenize concatenates the pieces, special tokens rendered.
                let detokenizedKey = variant.key.replacingOccurrences(of: "ids_", with: "detok_")
                if let detokenized = record[detokenizedKey] as? String {
                    #expect(tokenizer.concatenatedPieces(expected.map { Int32($0) }) == detokenized,
                            "\(name) \(detokenizedKey) \(text.debugDescription)")
                    detokenizations += 1
                }
                compared += 1
            }
        }
        #expect(compared > 200)
        #expect(detokenizations > 200)
    }
}
