import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// The default embedding model (scripts/fetch-model --embedding), loaded once.
final class DefaultEmbeddingModel: @unchecked Sendable {
    static let shared: Result<DefaultEmbeddingModel, any Error> = Result { try DefaultEmbeddingModel() }

    let directory: String
    let model: BertModel
    let tokenizer: WordPieceTokenizer

    private init() throws {
        directory = try ModelCache().resolveEmbeddingModel(nil)
        model = try BertModel(directory: directory)
        tokenizer = try WordPieceTokenizer(tokenizerJSON: directory + "/tokenizer.json",
                                           maxLength: try BertSentenceEncoder.maxSequenceLength(directory: directory, positions: model.shape.maxPositions))
    }

    static func require() throws -> DefaultEmbeddingModel {
        switch shared {
        case .success(let model): return model
        case .failure(let error):
            throw TestFailure("the default embedding model is not usable (scripts/fetch-model --embedding installs it; the test command does): \(error)")
        }
    }
}

/// The corpus of Fixtures/embeddings and what scripts/reference-embeddings computed for it: the
/// `tokenizers` package's ids and float64 numpy vectors (stored as float16).
enum EmbeddingReference {
    static func corpus() throws -> [String] {
        let text = try String(contentsOf: Fixtures.url("embeddings/corpus.jsonl"), encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            guard let s = try JSON.parse(String(line)).stringValue else { throw TestFailure("corpus line is not a string: \(line)") }
            return s
        }
    }

    static func tokenIDs() throws -> [[Int32]] {
        let text = try String(contentsOf: Fixtures.url("embeddings/token-ids.txt"), encoding: .utf8)
        return text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map { line in
            line.split(separator: " ").map { Int32($0)! }
        }
    }

    static func vectors(dimension: Int) throws -> [[Float]] {
        let data = try Data(contentsOf: Fixtures.url("embeddings/vectors-f16.bin"))
        let values: [Float] = data.withUnsafeBytes { raw in
            (0..<(raw.count / 2)).map { Float(Float16(bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)))) }
        }
        return stride(from: 0, to: values.count, by: dimension).map { Array(values[$0..<min(values.count, $0 + dimension)]) }
    }
}

func cosine(_ a: [Float], _ b: [Float]) -> Double {
    var dot = 0.0, na = 0.0, nb = 0.0
    for (x, y) in zip(a, b) {
        dot += Double(x) * Double(y)
        na += Double(x) * Double(x)
        nb += Double(y) * Double(y)
    }
    return dot / max((na * nb).squareRoot(), 1e-300)
}

@Suite(.serialized, .ownThread)
struct BertEmbeddingTests {
    @Test func tokenizationEqualsTheReferenceTokenizerOnTheWholeCorpus() throws {
        let model = try DefaultEmbeddingModel.require()
        let corpus = try EmbeddingReference.corpus()
        let expected = try EmbeddingReference.tokenIDs()
        #expect(corpus.count == 1000 && expected.count == corpus.count)
        var mismatches = 0
        for (text, ids) in zip(corpus, expected) {
            let got = model.tokenizer.encode(text)
            if got != ids {
                mismatches += 1
                if mismatches <= 5 { Issue.record("\(text.debugDescription): got \(got), expected \(ids)") }
            }
        }
        #expect(mismatches == 0)
        // The corpus covers what it claims: very short texts and texts truncated at 256 tokens.
        #expect(expected.contains { $0.count == 2 } && expected.contains { $0.count == 256 })
    }

    @Test func vectorsMatchTheFloat64Reference() throws {
        let model = try DefaultEmbeddingModel.require()
        let ids = try EmbeddingReference.tokenIDs()
        let reference = try EmbeddingReference.vectors(dimension: model.model.shape.hidden)
        #expect(reference.count == ids.count)
        let pool = ComputePool(threads: ComputePool.availableCores)
        var worst = 1.0
        var start = 0
        while start < ids.count {
            let batch = Array(ids[start..<min(ids.count, start + 64)])
            let vectors = model.model.embed(batch, pool: pool)
            for (offset, vector) in vectors.enumerated() {
                let similarity = cosine(vector, reference[start + offset])
                worst = min(worst, similarity)
                if similarity < 0.9999 { Issue.record("sentence \(start + offset): cosine \(similarity) to the float64 reference") }
            }
            start += batch.count
        }
        #expect(worst >= 0.9999)
        print("BertEmbeddingTests: worst cosine to the float64 reference over \(ids.count) sentences: \(worst)")
    }

    @Test func vectorsDoNotDependOnBatchOrThreads() throws {
        let model = try DefaultEmbeddingModel.require()
        let ids = Array(try EmbeddingReference.tokenIDs().prefix(40)) + Array(try EmbeddingReference.tokenIDs().suffix(3))
        let one = ComputePool(threads: 1), three = ComputePool(threads: 3)
        let together = model.model.embed(ids, pool: three)
        let reversed = Array(model.model.embed(ids.reversed(), pool: one).reversed())
        for (i, sequence) in ids.enumerated() {
            let alone = model.model.embed([sequence], pool: i % 2 == 0 ? one : three)[0]
            #expect(alone.map(\.bitPattern) == together[i].map(\.bitPattern), "sequence \(i) alone vs batched")
            #expect(reversed[i].map(\.bitPattern) == together[i].map(\.bitPattern), "sequence \(i) in another batch order")
        }
    }

    @Test func poolingOverridesTheFoldersOwnAndIsInTheIdentity() throws {
        let directory = try DefaultEmbeddingModel.require().directory
        let own = try BertSentenceEncoder(directory: directory)
        // Unchanged from before decoders could embed, so earlier checkpoints and cached results still match.
        #expect(own.outputIdentity.hasPrefix("embedding-model=") && own.outputIdentity.hasSuffix(" pooling=mean max-length=256 revision=1"))
        #expect(try EmbeddingModel.outputIdentity(path: directory) == own.outputIdentity)
        let ids = Array(try EmbeddingReference.tokenIDs().prefix(3))
        let pool = ComputePool(threads: 2)
        let reference = own.embed(ids, pool: pool)
        for pooling in [EmbeddingPooling.cls, .last] {
            let other = try BertSentenceEncoder(directory: directory, pooling: pooling)
            #expect(other.pooling == pooling && other.outputIdentity.contains("pooling=\(pooling.rawValue)"))
            #expect(try EmbeddingModel.outputIdentity(path: directory, settings: EmbeddingModelSettings(pooling: pooling)) == other.outputIdentity)
            let vectors = other.embed(ids, pool: pool)
            for (a, b) in zip(vectors, reference) { #expect(cosine(a, b) < 0.9999, "\(pooling) pooling gave the mean-pooled vector") }
        }
    }

    @Test func hostileSafetensorsHeadersAreRefusedWithAReason() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-safetensors-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func file(_ header: String, data: Int = 16, claimedLength: UInt64? = nil) -> String {
            var bytes = [UInt8]()
            let json = Array(header.utf8)
            withUnsafeBytes(of: (claimedLength ?? UInt64(json.count)).littleEndian) { bytes.append(contentsOf: $0) }
            bytes.append(contentsOf: json)
            bytes.append(contentsOf: [UInt8](repeating: 0, count: data))
            let path = directory.appendingPathComponent("t\(bytes.count)-\(header.hashValue).safetensors").path
            FileManager.default.createFile(atPath: path, contents: Data(bytes))
            return path
        }
        let cases: [(String, String)] = [
            (file("{}", claimedLength: 1 << 40), "header claims"),
            (file("not json"), "not JSON"),
            (file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,32]}}"#), "outside"),
            (file(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#), "needs"),
            (file(#"{"a":{"dtype":"F32","shape":[9223372036854775807,4],"data_offsets":[0,8]}}"#), "larger than the file"),
            (file(#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#), "not supported"),
            (file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#), "overlap"),
            (file(#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}"#), "non-negative"),
        ]
        for (path, reason) in cases {
            do {
                _ = try SafeTensorsFile(path: path)
                Issue.record("accepted a hostile file (\(reason))")
            } catch {
                #expect(error.description.contains(reason), "\(error)")
            }
        }
        let good = try SafeTensorsFile(path: file(#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#))
        #expect(good.tensors.count == 1 && good.tensors[0].shape == [2, 2] && good.metadata["format"] == "pt")
    }
}
