import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// The embedding engine on a GGUF decoder model: OpenAI's shapes and refusals as on BERT, the
/// vocabulary and context checks of the decoder, and checkpoints that only continue on an engine
/// with the same model, pooling and precision.
@Suite(.serialized, .ownThread)
struct DecoderEmbeddingEngineTests {
    static let model = "gemma3-swa-f16"

    static func engine(pooling: EmbeddingPooling? = nil, threads: Int = 2, budget: Int = 2048) throws -> EmbeddingEngine {
        var options = EmbeddingEngineOptions()
        options.threads = threads
        options.tokenBudget = budget
        options.checkpointInterval = .milliseconds(1)
        return try EmbeddingEngine(path: Fixtures.url("tiny/\(model).gguf").path,
                                   settings: EmbeddingModelSettings(pooling: pooling, precision: .float32), options: options)
    }

    static func vectors(_ body: JSON?) -> [[Float]] {
        (body?["data"]?.arrayValue ?? []).map { item in
            (item["embedding"]?.arrayValue ?? []).compactMap { $0.doubleValue.map(Float.init) }
        }
    }

    @Test func answersInOpenAIShapeAndChecksTheDecodersVocabularyAndContext() async throws {
        let engine = try Self.engine()
        #expect(engine.model.encoder.pooling == .last && engine.model.name == Self.model)
        #expect(engine.description.contains("gemma3 decoder") && engine.description.contains("last pooling"))
        let width = engine.model.dimensions, vocabulary = engine.model.vocabularySize
        let hello = engine.model.tokenize("Hello world")
        #expect(hello.first == (engine.model.encoder as? DecoderEncoder)?.tokenizer.bos, "BOS first, as for a raw prompt")
        let long = String(repeating: "many words make a long text ", count: 80)
        let cut = engine.model.tokenize(long)
        #expect(cut.count == engine.model.maxSequenceLength)
        let list = { (ids: [Int32]) in ids.map(String.init).joined(separator: ",") }
        let requests = [
            try EmbeddingEngineTests.request(1, #"{"input":"Hello world","dimensions":\#(width)}"#),
            try EmbeddingEngineTests.request(2, #"{"input":[\#(list(hello))]}"#),
            try EmbeddingEngineTests.request(3, JSON.object(["input": .string(long)]).serialized),
            try EmbeddingEngineTests.request(4, #"{"input":[[\#(list(cut))]],"encoding_format":"float"}"#),
            try EmbeddingEngineTests.request(5, #"{"input":[1,2,\#(vocabulary)]}"#),
            try EmbeddingEngineTests.request(6, #"{"input":[\#(list(Array(repeating: 1, count: engine.model.maxSequenceLength + 1)))]}"#),
            try EmbeddingEngineTests.request(7, #"{"input":"x","dimensions":\#(width / 2)}"#),
        ]
        let events = await EmbeddingEngineTests.run(engine, requests)
        await engine.shutdown()
        let one = Self.vectors(EmbeddingEngineTests.body(events[1]))
        #expect(one.count == 1 && one[0].count == width)
        #expect(abs(one[0].reduce(0.0) { $0 + Double($1) * Double($1) } - 1) < 1e-5)
        #expect(EmbeddingEngineTests.body(events[1])?["model"]?.stringValue == Self.model)
        #expect(EmbeddingEngineTests.body(events[1])?["usage"]?["prompt_tokens"]?.intValue == hello.count)
        // Token ids are the same input as the text they encode; a long text is its first tokens.
        #expect(Self.vectors(EmbeddingEngineTests.body(events[2])) == one)
        let truncated = Self.vectors(EmbeddingEngineTests.body(events[3]))
        #expect(!truncated.isEmpty && truncated == Self.vectors(EmbeddingEngineTests.body(events[4])))
        for (id, parameter) in [(5, "input"), (6, "input"), (7, "dimensions")] {
            guard case .finished(_, .response(400, let answer, _))? = events[Int64(id)] else {
                Issue.record("request \(id): expected a 400, got \(String(describing: events[Int64(id)]))")
                continue
            }
            #expect(answer["error"]?["param"]?.stringValue == parameter, "\(answer.serialized)")
        }
    }

    @Test func checkpointsContinueOnlyOnTheSameModelPoolingAndPrecision() async throws {
        let body = JSON.object(["input": .array((0..<12).map { .string("sentence number \($0) of a list") })]).serialized
        func answer(_ engine: EmbeddingEngine, resumeFrom: Checkpoint? = nil) async throws -> [[Float]] {
            let events = await EmbeddingEngineTests.run(engine, [try EmbeddingEngineTests.request(1, body, resumeFrom: resumeFrom)])
            await engine.shutdown()
            return Self.vectors(EmbeddingEngineTests.body(events[1]))
        }
        let lastEngine = try Self.engine(pooling: .last), meanEngine = try Self.engine(pooling: .mean)
        let (lastIdentity, meanIdentity) = (lastEngine.model.outputIdentity, meanEngine.model.outputIdentity)
        #expect(lastIdentity != meanIdentity)
        let last = try await answer(lastEngine)
        let mean = try await answer(meanEngine)
        #expect(last.count == 12 && mean.count == 12 && last != mean)

        // A checkpoint holding four (marked) vectors of the last-pooling engine.
        let marked = Array(repeating: [Float](repeating: 0.5, count: last[0].count), count: 4)
        let checkpoint = Checkpoint(generatedTokens: 4,
                                    payload: EmbeddingCheckpoint(engine: lastIdentity, dimensions: last[0].count, vectors: marked).encoded())
        // The same identity continues after the checkpoint's vectors (marked, so it is seen to be used)…
        let continued = try await answer(try Self.engine(pooling: .last, threads: 1, budget: 8), resumeFrom: checkpoint)
        #expect(Array(continued.prefix(4)) == marked && Array(continued.dropFirst(4)) == Array(last.dropFirst(4)))
        // …another pooling starts over: no last-pooled vector enters a mean-pooled answer.
        let restarted = try await answer(try Self.engine(pooling: .mean), resumeFrom: checkpoint)
        #expect(restarted == mean)
    }
}
