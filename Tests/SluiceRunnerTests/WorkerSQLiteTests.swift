import Foundation
import SluiceCore
import SluiceQueue
@testable import SluiceRunner
import Synchronization
import Testing

/// The worker against the real store: a temporary SQLite database per test.
@Suite struct WorkerSQLiteTests {
    final class Database: @unchecked Sendable {
        let directory: URL
        var path: String { directory.appendingPathComponent("queue.db").path }
        init() throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-runner-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        }
        deinit { try? FileManager.default.removeItem(at: directory) }

        /// A job of `count` completion requests.
        func enqueue(_ store: SQLiteStore, count: Int) throws -> JobID {
            let file = directory.appendingPathComponent("input-\(UUID().uuidString).jsonl").path
            let lines = (1...count).map { #"{"custom_id":"c\#($0)","method":"POST","url":"/v1/completions","body":{"prompt":"p\#($0)"}}"# }
            try (lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
            return try #require(try store.enqueue(file: file).jobID)
        }

        func export(_ store: SQLiteStore, job: JobID) throws -> [JSON] {
            let file = directory.appendingPathComponent("export-\(UUID().uuidString).jsonl").path
            _ = try store.export(job: job, to: file)
            return try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").map { try JSON.parse(String($0)) }
        }
    }

    @Test func everyRequestGetsOneResultInFewCommits() async throws {
        let database = try Database()
        let store = try SQLiteStore(path: database.path)
        let job = try database.enqueue(store, count: 500)
        let engine = ScriptedEngine(capacity: 32) { request in .respond(after: 0.001, okOutcome(request.id)) }
        let worker = Worker(store: store, engine: engine, configuration: fastConfiguration(), log: .silent)

        #expect(try await worker.run() == .completed)

        let status = try #require(try store.status(job: job).first)
        #expect(status.counts.done == 500 && status.counts.unfinished == 0)
        #expect(status.completionTokens == 500 * 5)
        #expect(worker.statistics.commits < 100, "commits: \(worker.statistics.commits)")
        let lines = try database.export(store, job: job)
        #expect(lines.map { $0["custom_id"]?.stringValue } == (1...500).map { "c\($0)" })
        #expect(engine.snapshot.submissions.values.allSatisfy { $0 == 1 })
        #expect(try await Worker(store: store, engine: engine, configuration: fastConfiguration(), log: .silent).run() == .nothingToDo)
    }

    @Test func retriesThenFinalFailureCarriesTheLastError() async throws {
        let database = try Database()
        let store = try SQLiteStore(path: database.path)
        let job = try database.enqueue(store, count: 4)
        // c1..c3 succeed on their third attempt; c4 always fails.
        let engine = ScriptedEngine(capacity: 4) { request in
            request.customID != "c4" && request.attempt >= 3
                ? .respond(after: 0.001, okOutcome(request.id))
                : .respond(after: 0.001, .failure(code: "http_502", message: "HTTP 502: bad gateway \(request.attempt)", retryable: true))
        }
        var configuration = fastConfiguration()
        configuration.maxAttempts = 3
        let worker = Worker(store: store, engine: engine, configuration: configuration, log: .silent)

        #expect(try await worker.run() == .completed)

        let lines = try database.export(store, job: job)
        #expect(lines.prefix(3).allSatisfy { $0["response"]?["status_code"]?.intValue == 200 })
        let failed = lines[3]
        #expect(failed["response"] == .null)
        #expect(failed["error"]?["code"]?.stringValue == "http_502")
        #expect(failed["error"]?["message"]?.stringValue?.contains("bad gateway 3 (gave up after 3 attempts)") == true)
        #expect(engine.snapshot.submissions.values.allSatisfy { $0 == 3 })
    }

    @Test func aWorkerWhoseLeaseWasTakenOverCannotOverwriteTheNewResult() async throws {
        let database = try Database()
        let store = try SQLiteStore(path: database.path)
        let job = try database.enqueue(store, count: 1)
        // The slow worker answers after 1.5 s; meanwhile a second store whose clock runs 120 s ahead
        // sees its lease as expired, takes the request over and commits its own answer.
        let slow = ScriptedEngine(capacity: 1) { _ in
            .respond(after: 1.5, .response(statusCode: 200, body: .object(["by": .string("slow")]), usage: Usage(promptTokens: 1, completionTokens: 1)))
        }
        let worker = Worker(store: store, engine: slow, configuration: fastConfiguration(), log: .silent)
        let run = Task { try await worker.run() }
        try await waitUntil { slow.snapshot.inFlight.count == 1 }

        let ahead = try SQLiteStore(path: database.path, clock: { Date().timeIntervalSince1970 + 120 })
        let thief = try ahead.registerWorker(host: "h", pid: 2, description: "thief")
        let taken = try ahead.claim(worker: thief, job: job, limit: 1, leaseSeconds: 600)
        #expect(taken.count == 1)
        var batch = CommitBatch()
        batch.results = [(lease: LeaseRef(requestID: taken[0].id, leaseGeneration: taken[0].leaseGeneration),
                          outcome: .response(statusCode: 200, body: .object(["by": .string("thief")]), usage: Usage(promptTokens: 1, completionTokens: 1)))]
        #expect(try ahead.commit(batch, worker: thief).lostLeases.isEmpty)

        #expect(try await run.value == .completed)
        #expect(worker.statistics.lostLeases == 1 && worker.statistics.completed == 0)
        let lines = try database.export(store, job: job)
        #expect(lines.first?["response"]?["body"]?["by"]?.stringValue == "thief")
    }

    @Test func drainStoresCheckpointsAndTheNextWorkerResumesThem() async throws {
        let database = try Database()
        let store = try SQLiteStore(path: database.path)
        let job = try database.enqueue(store, count: 5)
        let stalling = ScriptedEngine(capacity: 8, checkpoints: true) { _ in .stall }
        let worker = Worker(store: store, engine: stalling, configuration: fastConfiguration(), log: .silent)
        let run = Task { try await worker.run() }
        try await waitUntil { worker.statistics.checkpointsStored >= 5 }
        worker.requestDrain(.signal("SIGTERM"))
        #expect(try await run.value == .drained(.signal("SIGTERM"), workRemains: true))
        let counts = try #require(try store.status(job: job).first).counts
        #expect(counts.queued == 5 && counts.leased == 0 && counts.failed == 0)

        let resuming = ScriptedEngine(capacity: 8, checkpoints: true) { request in .respond(after: 0.001, okOutcome(request.id)) }
        #expect(try await Worker(store: store, engine: resuming, configuration: fastConfiguration(), log: .silent).run() == .completed)
        let resumed = resuming.snapshot.resumedFrom
        #expect(resumed.count == 5)
        #expect(resumed.values.allSatisfy { $0.generatedTokens >= 1 && $0.payload == [UInt8($0.generatedTokens & 0xFF)] })
        // Resumed requests were not counted as failed attempts.
        #expect(resuming.snapshot.submissions.values.allSatisfy { $0 == 1 })
    }
}
