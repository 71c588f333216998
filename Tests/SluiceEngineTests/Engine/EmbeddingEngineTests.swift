import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// The embedding engine: OpenAI's request and response shapes, refusals, and checkpoints that
/// resume a long input list where it stopped, with the same bytes as an uninterrupted run.
@Suite(.serialized, .ownThread)
struct EmbeddingEngineTests {
    static func engine(threads: Int = 2, budget: Int = 2048) throws -> EmbeddingEngine {
        let shared = try DefaultEmbeddingModel.require()
        var options = EmbeddingEngineOptions()
        options.threads = threads
        options.tokenBudget = budget
        options.checkpointInterval = .milliseconds(1)
        return try EmbeddingEngine(directory: shared.directory, options: options)
    }

    static func request(_ id: Int64, _ body: String, resumeFrom: Checkpoint? = nil) throws -> EngineRequest {
        EngineRequest(id: id, customID: "c\(id)", endpoint: .embeddings, body: try JSON.parse(body), resumeFrom: resumeFrom)
    }

    /// Submits every request and waits for each one's event.
    static func run(_ engine: EmbeddingEngine, _ requests: [EngineRequest]) async -> [Int64: EngineEvent] {
        for request in requests { engine.submit(request) }
        var events: [Int64: EngineEvent] = [:]
        for await event in engine.events {
            switch event {
            case .finished(let id, _), .stopped(let id, _): events[id] = event
            }
            if events.count == requests.count { break }
        }
        return events
    }

    static func body(_ event: EngineEvent?) -> JSON? {
        if case .finished(_, .response(200, let body, _))? = event { return body }
        return nil
    }

    @Test func answersInOpenAIShapeForEveryInputForm() async throws {
        let engine = try Self.engine()
        let model = try DefaultEmbeddingModel.require()
        let helloIDs = model.tokenizer.encode("Hello world")
        let requests = [
            try Self.request(1, #"{"model":"m","input":"Hello world","user":"u1"}"#),
            try Self.request(2, #"{"input":["Hello world","Bonjour le monde"],"encoding_format":"float"}"#),
            try Self.request(3, #"{"input":[\#(helloIDs.map(String.init).joined(separator: ","))]}"#),
            try Self.request(4, #"{"input":[[\#(helloIDs.map(String.init).joined(separator: ","))],[101,102]],"encoding_format":"base64"}"#),
            try Self.request(5, #"{"input":"Hello world","dimensions":384}"#),
        ]
        let events = await Self.run(engine, requests)
        await engine.shutdown()
        let one = try #require(Self.body(events[1]))
        #expect(one["object"]?.stringValue == "list" && one["model"]?.stringValue == "m")
        let data = try #require(one["data"]?.arrayValue)
        #expect(data.count == 1 && data[0]["object"]?.stringValue == "embedding" && data[0]["index"]?.intValue == 0)
        let vector = try #require(data[0]["embedding"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) })
        #expect(vector.count == 384)
        #expect(abs(vector.reduce(0) { $0 + Double($1) * Double($1) } - 1) < 1e-5)
        #expect(one["usage"]?["prompt_tokens"]?.intValue == helloIDs.count && one["usage"]?["total_tokens"]?.intValue == helloIDs.count)
        let two = try #require(Self.body(events[2]))
        #expect(two["data"]?.arrayValue?.map { $0["index"]?.intValue } == [0, 1])
        #expect(two["data"]?.arrayValue?.first?["embedding"] == data[0]["embedding"])
        #expect(two["model"]?.stringValue == "all-minilm-l6-v2")
        // Token ids are the same input as the text they encode.
        #expect(Self.body(events[3])?["data"]?.arrayValue?.first?["embedding"] == data[0]["embedding"])
        let four = try #require(Self.body(events[4])?["data"]?.arrayValue)
        let decoded = try #require(Data(base64Encoded: four[0]["embedding"]?.stringValue ?? ""))
        let floats = decoded.withUnsafeBytes { raw in (0..<(raw.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) } }
        #expect(floats == vector)
        #expect(Self.body(events[5])?["data"] == one["data"])
    }

    @Test func refusesBadBodiesWith400NamingTheParameter() async throws {
        let engine = try Self.engine()
        let cases: [(String, String)] = [
            (#"{"input":"x","dimensions":128}"#, "dimensions"),
            (#"{"input":"x","encoding_format":"int8"}"#, "encoding_format"),
            (#"{"input":""}"#, "input"),
            (#"{"input":[]}"#, "input"),
            (#"{"input":[1,2,99999999]}"#, "input"),
            (#"{"input":[[101],"text"]}"#, "input"),
            (#"{"input":[\#(Array(repeating: "1000", count: 300).joined(separator: ","))]}"#, "input"),
            (#"{"input":{"a":1}}"#, "input"),
            (#"{"model":"m"}"#, "input"),
            (#"{"input":"x","temperature":0}"#, "temperature"),
        ]
        let events = await Self.run(engine, try cases.enumerated().map { try Self.request(Int64($0.offset + 1), $0.element.0) })
        await engine.shutdown()
        for (index, (body, parameter)) in cases.enumerated() {
            guard case .finished(_, .response(400, let answer, _))? = events[Int64(index + 1)] else {
                Issue.record("\(body): expected a 400, got \(String(describing: events[Int64(index + 1)]))")
                continue
            }
            #expect(answer["error"]?["param"]?.stringValue == parameter, "\(body): \(answer.serialized)")
        }
    }

    @Test func aStoppedLongListResumesFromItsCheckpointWithTheSameBytes() async throws {
        let corpus = try EmbeddingReference.corpus().filter { !$0.isEmpty }.prefix(300)
        let body = JSON.object(["input": .array(corpus.map { .string($0) })]).serialized
        let reference = try Self.engine(threads: 2)
        let uninterrupted = try #require(Self.body(await Self.run(reference, [try Self.request(1, body)])[1]))
        await reference.shutdown()

        // Stopped part way, three times, each time resumed on a new engine (other threads and budget).
        var checkpoint: Checkpoint?
        var resumedCounts: [Int] = []
        for round in 0..<3 {
            let engine = try Self.engine(threads: round % 2 + 1, budget: 256 + 300 * round)
            engine.submit(try Self.request(1, body, resumeFrom: checkpoint))
            // Wait for progress beyond the checkpoint, then stop.
            let before = checkpoint?.generatedTokens ?? 0
            var progressed = false
            for _ in 0..<20_000 where !progressed {
                progressed = engine.collectCheckpoints().contains { $0.checkpoint.generatedTokens > before }
                if !progressed { try await Task.sleep(for: .milliseconds(5)) }
            }
            #expect(progressed, "round \(round): no progress")
            engine.cancel(requestID: 1)
            for await event in engine.events {
                if case .stopped(_, let stoppedAt) = event { checkpoint = stoppedAt; break }
                if case .finished = event { Issue.record("round \(round): finished before the stop"); break }
            }
            await engine.shutdown()
            resumedCounts.append(checkpoint?.generatedTokens ?? 0)
        }
        #expect(resumedCounts == resumedCounts.sorted() && (resumedCounts.last ?? 0) > 0 && (resumedCounts.last ?? 0) < corpus.count,
                "vectors kept at each stop: \(resumedCounts)")
        let final = try Self.engine(threads: 2, budget: 512)
        let resumed = try #require(Self.body(await Self.run(final, [try Self.request(1, body, resumeFrom: checkpoint)])[1]))
        await final.shutdown()
        #expect(resumed.serialized == uninterrupted.serialized)

        // A checkpoint of another engine identity is not continued: the request starts over, same answer.
        var foreign = try #require(checkpoint)
        var state = try #require(EmbeddingCheckpoint(decoding: foreign.payload))
        state.engine = "another model"
        state.vectors = state.vectors.map { $0.map { _ in 0 } }
        foreign.payload = state.encoded()
        let other = try Self.engine()
        let restarted = try #require(Self.body(await Self.run(other, [try Self.request(1, body, resumeFrom: foreign)])[1]))
        await other.shutdown()
        #expect(restarted.serialized == uninterrupted.serialized)
    }
}
