import Foundation
import SluiceCore
import SluiceQueue
@testable import SluiceRunner
import Synchronization
import Testing

/// A cache keying for scripted requests: the body decides; the adapted body names the request it answers.
struct BodyKeying: ResultCacheKeying {
    func material(for request: EngineRequest) -> String? {
        request.body["nocache"] == nil ? request.body.serialized : nil
    }
    func adapt(_ body: JSON, to request: EngineRequest) -> JSON {
        guard case var .object(fields) = body else { return body }
        fields.removeAll { $0.key == "for" }
        fields.append((key: "for", value: .string(request.customID)))
        return .object(fields)
    }
}

@Suite(.serialized) struct PreemptionWorkerTests {
    func stalledRun(_ configure: (inout WorkerConfiguration) -> Void, seconds: Double) async throws -> MemoryStore {
        let store = MemoryStore(requests: 4)
        let engine = ScriptedEngine(capacity: 8, checkpoints: true) { _ in .stall }
        var configuration = fastConfiguration()
        configure(&configuration)
        let worker = Worker(store: store, engine: engine, configuration: configuration, log: .silent)
        let run = Task { try await worker.run() }
        try await waitUntil { engine.snapshot.inFlight.count == 4 }
        try await Task.sleep(for: .seconds(seconds))
        worker.requestDrain(.requested)
        _ = try await run.value
        return store
    }

    @Test func checkpointsFollowTheIntervalTheTokenThresholdOrNeither() async throws {
        // Every 0.4 s: about three checkpoint commits of 4 requests in 1.3 s (the scripted engine advances a token per pull).
        let timed = try await stalledRun({ $0.checkpointInterval = 0.4; $0.checkpointTokens = 100_000 }, seconds: 1.3)
        // At least every interval, but not at every pull (26 pulls of 4 requests in 1.3 s).
        #expect((4...24).contains(timed.recorded.checkpointWrites), "checkpoint writes: \(timed.recorded.checkpointWrites)")
        // Every 5 tokens (pulled every 50 ms): the 100 s interval alone would write nothing before the drain,
        // so any periodic write is the token threshold's (a starved machine pulls less often than every 50 ms).
        let byTokens = try await stalledRun({ $0.checkpointInterval = 100; $0.checkpointTokens = 5 }, seconds: 1.3)
        #expect(byTokens.recorded.checkpointWrites >= 4, "checkpoint writes: \(byTokens.recorded.checkpointWrites)")
        // Off: nothing periodic, but the drain still hands back partial output.
        let off = try await stalledRun({ $0.checkpointInterval = 0 }, seconds: 0.6)
        #expect(off.recorded.checkpointWrites == 0)
        #expect(off.recorded.releases.count == 4 && off.recorded.releases.allSatisfy { $0.checkpoint != nil })
    }

    @Test func identicalRequestsAreComputedOnceWithinAndAcrossJobs() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-cache-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // 12 requests with 4 distinct bodies (and one marked not cacheable).
        var text = ""
        for i in 1...12 {
            let extra = i == 12 ? #","nocache":true"# : ""
            text += #"{"custom_id":"c\#(i)","method":"POST","url":"/v1/completions","body":{"prompt":"p\#(i % 4)"\#(extra)}}"# + "\n"
        }
        let input = dir.appendingPathComponent("in.jsonl").path
        try text.write(toFile: input, atomically: true, encoding: .utf8)
        let store = try SQLiteStore(path: dir.appendingPathComponent("q.db").path)
        _ = try store.enqueue(file: input)

        @Sendable func answer(_ request: EngineRequest) -> EngineOutcome {
            .response(statusCode: 200, body: .object(["echo": request.body, "for": .string(request.customID)]),
                      usage: Usage(promptTokens: 2, completionTokens: 9))
        }
        var configuration = fastConfiguration()
        configuration.resultCache = ResultCachePolicy(namespace: "test", keying: BodyKeying())
        let engine = ScriptedEngine(capacity: 16) { request in .respond(after: 0.05, answer(request)) }
        let worker = Worker(store: store, engine: engine, configuration: configuration, log: .silent)
        #expect(try await worker.run() == .completed)
        // 4 distinct cacheable bodies computed once each, plus the one that may not be cached.
        #expect(engine.snapshot.submissions.count == 5, "submitted: \(engine.snapshot.submissions.keys.sorted())")
        #expect(worker.statistics.cacheHits == 7 && worker.statistics.cacheStores == 4)
        #expect(worker.statistics.completionTokens == 12 * 9 && worker.statistics.cachedCompletionTokens == 7 * 9)
        #expect(try store.cacheHitCounts(job: 1) == CacheHitCounts(hits: 7, completionTokens: 63))
        let output = dir.appendingPathComponent("out.jsonl").path
        _ = try store.export(job: 1, to: output)
        let lines = try String(contentsOfFile: output, encoding: .utf8).split(separator: "\n").map { try JSON.parse(String($0)) }
        #expect(lines.count == 12)
        for line in lines {
            let id = line["custom_id"]?.stringValue ?? ""
            // Each answer is adapted to its own request.
            #expect(line["response"]?["body"]?["for"]?.stringValue == id)
        }

        // The same file as a second job: nothing computed except the uncacheable request.
        _ = try store.enqueue(file: input, allowDuplicate: true)
        let second = ScriptedEngine(capacity: 16) { request in .respond(after: 0.01, answer(request)) }
        let again = Worker(store: store, engine: second, configuration: configuration, log: .silent)
        #expect(try await again.run() == .completed)
        #expect(second.snapshot.submissions.count == 1)
        #expect(try store.cacheHitCounts(job: 2).hits == 11)

        // Without the cache everything is computed.
        _ = try store.enqueue(file: input, allowDuplicate: true)
        let third = ScriptedEngine(capacity: 16) { request in .respond(after: 0.01, answer(request)) }
        #expect(try await Worker(store: store, engine: third, configuration: fastConfiguration(), log: .silent).run() == .completed)
        #expect(third.snapshot.submissions.count == 12)
        #expect(try store.cacheHitCounts(job: 3).hits == 0)
    }

    @Test func untilTimesParse() throws {
        var utc = Calendar(identifier: .gregorian)
        utc.timeZone = TimeZone(identifier: "UTC")!
        let now = utc.date(from: DateComponents(year: 2026, month: 11, day: 27, hour: 2, minute: 30))!
        let zone = TimeZone(identifier: "UTC")!
        #expect(UntilTime.parse("03:15", now: now, timeZone: zone) == now.addingTimeInterval(45 * 60))
        #expect(UntilTime.parse("02:00", now: now, timeZone: zone) == now.addingTimeInterval(23.5 * 3600))
        #expect(UntilTime.parse("2026-11-27T04:00:00Z", now: now) == now.addingTimeInterval(1.5 * 3600))
        #expect(UntilTime.parse("2026-11-27T05:00:00+01:00", now: now) == now.addingTimeInterval(1.5 * 3600))
        #expect(UntilTime.parse("2026-11-27T04:00", now: now, timeZone: zone) == now.addingTimeInterval(1.5 * 3600))
        for bad in ["", "3pm", "24:00", "12:60", "1:5", "tomorrow", "2026-13-01T00:00:00Z"] {
            #expect(UntilTime.parse(bad, now: now, timeZone: zone) == nil, "\(bad)")
        }
    }

    @Test func noticeStyleComesFromThePath() {
        #expect(PreemptionStyle.implied(by: URL(string: "http://169.254.169.254/latest/meta-data/spot/instance-action")!) == .aws)
        #expect(PreemptionStyle.implied(by: URL(string: "http://metadata.google.internal/computeMetadata/v1/instance/preempted")!) == .gcp)
        #expect(PreemptionStyle.implied(by: URL(string: "http://127.0.0.1:9/notice")!) == nil)
    }
}
