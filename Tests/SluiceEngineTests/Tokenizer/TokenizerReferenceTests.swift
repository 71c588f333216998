import Foundation
import Testing

@testable import SluiceEngine

/// The default model's tokenizer, loaded once for all tokenizer tests.
enum DefaultTokenizer {
    private static let loaded: Result<Tokenizer, any Error> = Result {
        let file = try GGUFFile(path: DefaultModelLocation.path)
        return try Tokenizer(gguf: file)
    }

    static func load() throws -> Tokenizer { try loaded.get() }
}

/// Test fixtures copied into the test bundle.
enum TokenizerFixtures {
    static func url(_ relativePath: String) throws -> URL {
        let base = try #require(Bundle.module.resourceURL, "test bundle has no resources")
        let url = base.appendingPathComponent("Fixtures").appendingPathComponent(relativePath)
        #expect(FileManager.default.fileExists(atPath: url.path), "missing fixture \(relativePath)")
        return url
    }

    static func json(_ relativePath: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(contentsOf: url(relativePath)))
    }
}

/// One string of ../shared/reference/tokenize.json: llama.cpp's ids for the
/// four combinations of BOS and special-token parsing, and its detokenization.
struct TokenizeReferenceRecord: CustomTestStringConvertible, Sendable {
    let text: String
    let ids: [String: [Int32]]
    let detokenized: [String: String]
    let pieces: [(id: Int32, piece: String)]

    var testDescription: String { text.debugDescription }

    static let variants = ["no_bos_parse_special", "no_bos_no_parse_special", "with_bos_parse_special", "with_bos_no_parse_special"]

    static func all() throws -> [TokenizeReferenceRecord] {
        let root = try #require(try TokenizerFixtures.json("reference/tokenize.json") as? [String: Any])
        let records = try #require(root["records"] as? [[String: Any]])
        return try records.map { record in
            var ids: [String: [Int32]] = [:]
            var detokenized: [String: String] = [:]
            for variant in variants {
                ids[variant] = try #require(record["ids_\(variant)"] as? [Int]).map { Int32($0) }
                detokenized[variant] = try #require(record["detok_\(variant)"] as? String)
            }
            let pieces = try #require(record["pieces_no_bos_no_parse_special"] as? [[String: Any]]).map { entry in
                (Int32(entry["id"] as! Int), entry["piece"] as! String)
            }
            return TokenizeReferenceRecord(text: try #require(record["text"] as? String), ids: ids,
                                           detokenized: detokenized, pieces: pieces)
        }
    }
}

@Suite(.ownThread) struct TokenizerReferenceTests {
    static let records = (try? TokenizeReferenceRecord.all()) ?? []

    @Test func referenceFileIsComplete() throws {
        let records = try TokenizeReferenceRecord.all()
        // Same strings, in the same order, as tokenize-strings.txt (taken literally).
        let lines = try String(contentsOf: TokenizerFixtures.url("reference/tokenize-strings.txt"), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
        #expect(records.map(\.text) == lines)
        #expect(records.count == 10)
    }

    @Test(arguments: records)
    func idsMatchLlamaCpp(_ record: TokenizeReferenceRecord) throws {
        let tokenizer = try DefaultTokenizer.load()
        for variant in TokenizeReferenceRecord.variants {
            let ids = tokenizer.encode(record.text, addSpecial: variant.hasPrefix("with_bos"),
                                       parseSpecial: !variant.hasSuffix("no_parse_special"))
            #expect(ids == record.ids[variant], "\(variant)")
        }
    }

    @Test(arguments: records)
    func detokenizationMatchesLlamaCpp(_ record: TokenizeReferenceRecord) throws {
        let tokenizer = try DefaultTokenizer.load()
        for variant in TokenizeReferenceRecord.variants {
            let ids = try #require(record.ids[variant])
            // llama.cpp's /detokenize renders special tokens: "<bos>Hello world".
            #expect(tokenizer.decode(ids) == record.detokenized[variant], "\(variant)")
            // Without special tokens the text comes back exactly.
            #expect(tokenizer.decode(ids, skipSpecial: true) == record.text.replacingOccurrences(
                of: "<start_of_turn>", with: variant.hasSuffix("no_parse_special") ? "<start_of_turn>" : ""), "\(variant)")
        }
        for (id, piece) in record.pieces {
            #expect(String(decoding: tokenizer.piece(for: id), as: UTF8.self) == piece)
        }
    }

    @Test(arguments: records)
    func streamingDecoderEqualsFullDecode(_ record: TokenizeReferenceRecord) throws {
        let tokenizer = try DefaultTokenizer.load()
        for variant in TokenizeReferenceRecord.variants {
            let ids = try #require(record.ids[variant])
            var decoder = StreamingDecoder(tokenizer: tokenizer, renderSpecial: true)
            var streamed = ""
            for id in ids { streamed += decoder.append(id) }
            streamed += decoder.finish()
            #expect(streamed == tokenizer.decode(ids))
        }
    }

    @Test func defaultModelSpecialTokens() throws {
        let tokenizer = try DefaultTokenizer.load()
        #expect(tokenizer.model == .sentencePiece)
        #expect(tokenizer.vocabularySize == 262_144)
        #expect(tokenizer.bos == 2)
        #expect(tokenizer.eos == 1)
        #expect(tokenizer.unknown == 3)
        #expect(tokenizer.padding == 0)
        #expect(tokenizer.addsBOS)
        #expect(!tokenizer.addsEOS)
        #expect(!tokenizer.addsSpacePrefix)
        #expect(tokenizer.token(for: "<start_of_turn>") == 105)
        #expect(tokenizer.token(for: "<end_of_turn>") == 106)
        #expect(tokenizer.token(for: "<no such token>") == nil)
        // llama.cpp's EOG set for this file: <eos>, <end_of_turn> (also the EOT
        // token, found by its text) and "</s>", a user-defined token its list of
        // end-of-generation texts names.
        #expect(tokenizer.eot == 106)
        #expect(tokenizer.endOfGenerationTokens == [1, 106, 212])
        #expect(tokenizer.isEndOfGeneration(106))
        #expect(!tokenizer.isEndOfGeneration(105))
        #expect(!tokenizer.isEndOfGeneration(-1))
        #expect(tokenizer.isControl(105) && tokenizer.isControl(2) && !tokenizer.isControl(9259))
        #expect(tokenizer.tokenAttributes(107) == .userDefined)  // "\n"
        #expect(tokenizer.tokenAttributes(238) == .byte)  // <0x00>
    }

    @Test func loadingTheVocabularyIsFast() throws {
        let file = try GGUFFile(path: DefaultModelLocation.path)
        let clock = ContinuousClock()
        var best = Duration.seconds(1000)
        for _ in 0..<3 {
            let start = clock.now
            let tokenizer = try Tokenizer(gguf: file)
            let elapsed = clock.now - start
            #expect(tokenizer.vocabularySize == 262_144)
            best = min(best, elapsed)
        }
        print("tokenizer: building the default model's tokenizer from parsed metadata took \(best) (best of 3)")
        // Not a benchmark: a bound that only a pathological (say quadratic) build step would cross,
        // even on a loaded 2-core machine. The measured figure is printed above.
        #expect(best < .seconds(10))
    }
}
