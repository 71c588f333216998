import Foundation
import SluiceCore
import SluiceQueue
@testable import SluiceRunner
import Synchronization
import Testing

/// Settings that keep these tests fast: short backoffs, quick polling.
func fastConfiguration() -> WorkerConfiguration {
    var configuration = WorkerConfiguration()
    configuration.leaseSeconds = 5
    configuration.graceSeconds = 2
    configuration.retryBaseDelay = 0.02
    configuration.retryMaxDelay = 0.1
    configuration.idlePollInterval = 0.02
    configuration.commitInterval = 0.1
    configuration.checkpointInterval = 0.05
    return configuration
}

/// Log lines kept for assertions.
final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    var log: WorkerLog { WorkerLog { line in self.lines.withLock { $0.append(line) } } }
    var all: [String] { lines.withLock { $0 } }
}

@Suite struct WorkerTests {
    @Test func completesEveryRequestOnceInBatchedCommits() async throws {
        let store = MemoryStore(requests: 600)
        let engine = ScriptedEngine(capacity: 16) { request in .respond(after: 0.001, okOutcome(request.id)) }
        let worker = Worker(store: store, engine: engine, configuration: fastConfiguration(), log: .silent)

        let exit = try await worker.run()

        #expect(exit == .completed)
        let rows = store.rows
        #expect(rows.allSatisfy { $0.state == .done && $0.resultWrites == 1 })
        #expect(rows.allSatisfy { $0.outcome == okOutcome($0.id) })
        let snapshot = engine.snapshot
        #expect(snapshot.maxInFlight <= 16)
        #expect(snapshot.submissions.values.allSatisfy { $0 == 1 })
        #expect(snapshot.duplicateSubmissions == 0)
        // Batched: far fewer transactions than results.
        let recorded = store.recorded
        #expect(recorded.commits < 600 / 5, "commits: \(recorded.commits)")
        #expect(recorded.committedResults.reduce(0, +) == 600)
        #expect(worker.statistics.completed == 600)
        #expect(worker.statistics.completionTokens == 600 * 5)
    }

    /// Final refusals (a 401 for a bad key) and final failures (a redirect) are told in the log and
    /// counted as failed, as they land in the errors export.
    @Test func finalRefusalsAreLoggedAndCountedAsFailed() async throws {
        let store = MemoryStore(requests: 3)
        let engine = ScriptedEngine(capacity: 4) { request in
            switch request.id {
            case 1: .respond(after: 0.001, .response(statusCode: 401, body: .object(["error": .object(["message": .string("bad key")])]),
                                                      usage: Usage(promptTokens: 0, completionTokens: 0)))
            case 2: .respond(after: 0.001, .failure(code: "redirect_not_followed", message: "HTTP 307", retryable: false))
            default: .respond(after: 0.001, okOutcome(request.id))
            }
        }
        let lines = LogLines()
        let worker = Worker(store: store, engine: engine, configuration: fastConfiguration(), log: lines.log)
        #expect(try await worker.run() == .completed)
        #expect(worker.statistics.completed == 3 && worker.statistics.failed == 2)
        #expect(lines.all.contains { $0.contains("answered HTTP 401: bad key") }, "\(lines.all)")
        #expect(lines.all.contains { $0.contains("failed (redirect_not_followed): HTTP 307") }, "\(lines.all)")
    }

    @Test func keepsTheEngineFull() async throws {
        let store = MemoryStore(requests: 64)
        let engine = ScriptedEngine(capacity: 8) { request in .respond(after: 0.05, okOutcome(request.id)) }
        let worker = Worker(store: store, engine: engine, configuration: fastConfiguration(), log: .silent)
        let exit = try await worker.run()
        #expect(exit == .completed)
        #expect(engine.snapshot.maxInFlight == 8)
    }

    @Test func retriesTransientFailuresWithBackoffThenSucceeds() async throws {
        let store = MemoryStore(requests: 20)
        let engine = ScriptedEngine(capacity: 4) { request in
            request.attempt < 3
                ? .respond(after: 0.001, .failure(code: "http_503", message: "busy", retryable: true))
                : .respond(after: 0.001, okOutcome(request.id))
        }
        var configuration = fastConfiguration()
        configuration.maxAttempts = 5
        let worker = Worker(store: store, engine: engine, configuration: configuration, log: .silent)

        let exit = try await worker.run()

        #expect(exit == .completed)
        #expect(store.rows.allSatisfy { $0.state == .done && $0.failedAttempts == 2 && $0.resultWrites == 1 })
        #expect(engine.snapshot.submissions.values.allSatisfy { $0 == 3 })
        let releases = store.recorded.releases
        #expect(releases.count == 40)
        #expect(releases.allSatisfy { $0.countsAsFailure })
        // Backoff between attempts: at least half the exponential delay (jitter), never less.
        let snapshot = engine.snapshot
        for (id, submitted) in snapshot.submissionTimes {
            let failed = snapshot.finishTimes[id] ?? []
            #expect(submitted.count == 3 && failed.count == 3)
            guard submitted.count == 3, failed.count == 3 else { continue }
            #expect(submitted[1] - failed[0] >= .seconds(0.02 * 0.5), "first backoff \(submitted[1] - failed[0])")
            #expect(submitted[2] - failed[1] >= .seconds(0.04 * 0.5), "second backoff \(submitted[2] - failed[1])")
        }
        for release in releases {
            let delay = (release.notBefore ?? 0) - release.at
            #expect(delay <= 0.1 + 0.01, "delay \(delay) above the cap")
        }
        #expect(worker.statistics.retried == 40)
    }

    @Test func honoursRetryAfterAsAFloor() async throws {
        let store = MemoryStore(requests: 2)
        let engine = ScriptedEngine(capacity: 2) { request in
            request.attempt == 1
                ? .respond(after: 0.001, .failure(code: "rate_limited", message: "429", retryable: true, retryAfterSeconds: 0.4))
                : .respond(after: 0.001, okOutcome(request.id))
        }
        let started = Date()
        let exit = try await Worker(store: store, engine: engine, configuration: fastConfiguration(), log: .silent).run()
        #expect(exit == .completed)
        #expect(Date().timeIntervalSince(started) >= 0.4)
        let snapshot = engine.snapshot
        for (id, submitted) in snapshot.submissionTimes {
            #expect(submitted.count == 2)
            if submitted.count == 2, let failedAt = snapshot.finishTimes[id]?.first {
                #expect(submitted[1] - failedAt >= .seconds(0.4))
            }
        }
    }

    @Test func aRequestFailsFinallyAtTheAttemptLimit() async throws {
        let store = MemoryStore(requests: 5)
        let engine = ScriptedEngine(capacity: 4) { _ in
            .respond(after: 0.001, .failure(code: "http_500", message: "HTTP 500: boom", retryable: true))
        }
        var configuration = fastConfiguration()
        configuration.maxAttempts = 3
        let lines = LogLines()
        let worker = Worker(store: store, engine: engine, configuration: configuration, log: lines.log)

        let exit = try await worker.run()

        #expect(exit == .completed)
        for row in store.rows {
            #expect(row.state == .failed)
            #expect(row.failedAttempts == 2)
            guard case let .failure(code, message, retryable, _) = row.outcome else {
                Issue.record("no failure stored for \(row.customID)")
                continue
            }
            #expect(code == "http_500")
            #expect(message.contains("boom") && message.contains("gave up after 3 attempts"))
            #expect(!retryable)
        }
        #expect(engine.snapshot.submissions.values.allSatisfy { $0 == 3 })
        #expect(worker.statistics.failed == 5)
        #expect(lines.all.contains { $0.contains("failed after 3 attempts") })
    }

    @Test func finalAnswersAreNotRetried() async throws {
        let store = MemoryStore(requests: 3)
        let badRequest = EngineOutcome.response(statusCode: 400, body: .object(["error": .object(["message": .string("bad")])]),
                                                usage: Usage(promptTokens: 0, completionTokens: 0))
        let engine = ScriptedEngine(capacity: 4) { request in
            request.id == 2 ? .respond(after: 0.001, badRequest)
                : request.id == 3 ? .respond(after: 0.001, .failure(code: "invalid_request", message: "nope", retryable: false))
                : .respond(after: 0.001, okOutcome(request.id))
        }
        let exit = try await Worker(store: store, engine: engine, configuration: fastConfiguration(), log: .silent).run()
        #expect(exit == .completed)
        let rows = store.rows
        #expect(rows[1].state == .done && rows[1].outcome == badRequest)
        #expect(rows[2].state == .failed)
        #expect(engine.snapshot.submissions.values.allSatisfy { $0 == 1 })
    }

    @Test func aResultForALostLeaseIsDroppedNotWritten() async throws {
        let store = MemoryStore(requests: 3)
        let engine = ScriptedEngine(capacity: 4) { request in
            // Another worker takes request 2 over as this one starts working on it, so the steal lands
            // before the result however starved the machine (a timed steal once came after it).
            if request.id == 2 { store.steal(2) }
            return .respond(after: 0.001, okOutcome(request.id))
        }
        let worker = Worker(store: store, engine: engine, configuration: fastConfiguration(), log: .silent)
        let run = Task { try await worker.run() }
        // The thief never finishes, so the job is not done: stop the worker once it found out.
        try await waitUntil { worker.statistics.lostLeases > 0 }
        worker.requestDrain(.requested)
        let exit = try await run.value
        #expect(exit == .drained(.requested, workRemains: true))
        let stolen = store.rows[1]
        #expect(stolen.owner == "thief" && stolen.resultWrites == 0 && stolen.outcome == nil)
        #expect(worker.statistics.lostLeases == 1)
    }

    @Test func aLostLeaseIsCancelledInACheckpointingEngine() async throws {
        let store = MemoryStore(requests: 1)
        let engine = ScriptedEngine(capacity: 2, checkpoints: true) { _ in .stall }
        let worker = Worker(store: store, engine: engine, configuration: fastConfiguration(), log: .silent)
        let run = Task { try await worker.run() }
        try await waitUntil { store.recorded.checkpointWrites > 0 }
        store.steal(1)
        try await waitUntil { engine.snapshot.cancels == 1 }
        worker.requestDrain(.requested)
        let exit = try await run.value
        #expect(exit == .drained(.requested, workRemains: true))
        #expect(engine.snapshot.inFlight.isEmpty)
        #expect(store.rows[0].owner == "thief")
        #expect(worker.statistics.lostLeases == 1)
    }

    @Test func drainLetsRequestsInFlightFinishWithoutCheckpoints() async throws {
        let store = MemoryStore(requests: 40)
        let engine = ScriptedEngine(capacity: 4) { request in .respond(after: 0.3, okOutcome(request.id)) }
        var configuration = fastConfiguration()
        configuration.graceSeconds = 3
        let worker = Worker(store: store, engine: engine, configuration: configuration, log: .silent)
        let run = Task { try await worker.run() }
        try await waitUntil { engine.snapshot.inFlight.count == 4 }
        worker.requestDrain(.signal("SIGTERM"))
        let exit = try await run.value

        #expect(exit == .drained(.signal("SIGTERM"), workRemains: true))
        let rows = store.rows
        // The four in flight finished and were stored; nothing else was claimed; nothing counted as a failure.
        #expect(rows.filter { $0.state == .done }.count == 4)
        #expect(rows.filter { $0.state == .queued }.count == 36)
        #expect(rows.allSatisfy { $0.failedAttempts == 0 && $0.owner == nil })
        #expect(engine.snapshot.submissions.count == 4)
    }

    @Test func drainCancelsStalledRequestsWithinGraceAndReleasesThem() async throws {
        let store = MemoryStore(requests: 10)
        let engine = ScriptedEngine(capacity: 8) { _ in .stall }
        var configuration = fastConfiguration()
        configuration.graceSeconds = 1.5
        let worker = Worker(store: store, engine: engine, configuration: configuration, log: .silent)
        let run = Task { try await worker.run() }
        try await waitUntil { engine.snapshot.inFlight.count == 8 }
        let drainStarted = ContinuousClock.now
        worker.requestDrain(.signal("SIGTERM"))
        let exit = try await run.value
        let took = ContinuousClock.now - drainStarted

        #expect(exit == .drained(.signal("SIGTERM"), workRemains: true))
        // The worker aims to be done by the grace period (the end-to-end test holds the real process to
        // --grace); the slack here only absorbs a starved test machine, where a step can wait a second.
        #expect(took < .seconds(1.5 + 6), "drain took \(took)")
        #expect(took >= .seconds(1.5 - configuration.drainMargin - 0.05), "requests were not given time to finish: \(took)")
        let rows = store.rows
        #expect(rows.allSatisfy { $0.state == .queued && $0.failedAttempts == 0 && $0.owner == nil })
        #expect(store.recorded.releases.count == 8)
        #expect(store.recorded.releases.allSatisfy { !$0.countsAsFailure })
        #expect(engine.snapshot.cancels == 8)
    }

    @Test func drainWithCheckpointsStopsAtOnceAndStoresPartialOutput() async throws {
        let store = MemoryStore(requests: 6)
        let engine = ScriptedEngine(capacity: 8, checkpoints: true) { _ in .stall }
        var configuration = fastConfiguration()
        configuration.graceSeconds = 10
        let worker = Worker(store: store, engine: engine, configuration: configuration, log: .silent)
        let run = Task { try await worker.run() }
        try await waitUntil { store.recorded.checkpointWrites >= 6 }
        let drainStarted = ContinuousClock.now
        worker.requestDrain(.signal("SIGINT"))
        let exit = try await run.value

        #expect(exit == .drained(.signal("SIGINT"), workRemains: true))
        // "At once" means well before the 10 s grace a non-checkpointing engine would be given;
        // the bound leaves room for a starved test machine.
        #expect(ContinuousClock.now - drainStarted < .seconds(8))
        for row in store.rows {
            #expect(row.state == .queued && row.failedAttempts == 0)
            #expect((row.checkpoint?.generatedTokens ?? 0) >= 1)
        }
        #expect(store.recorded.releases.allSatisfy { !$0.countsAsFailure && $0.checkpoint != nil })

        // The next worker resumes from the stored checkpoints.
        let resumingEngine = ScriptedEngine(capacity: 8, checkpoints: true) { request in .respond(after: 0.001, okOutcome(request.id)) }
        let next = try await Worker(store: store, engine: resumingEngine, configuration: fastConfiguration(), log: .silent).run()
        #expect(next == .completed)
        let resumed = resumingEngine.snapshot.resumedFrom
        #expect(resumed.count == 6)
        for row in store.rows { #expect(resumed[row.id] == row.checkpoint) }
    }

    @Test func maxRuntimeDrains() async throws {
        let store = MemoryStore(requests: 1000)
        let engine = ScriptedEngine(capacity: 2) { request in .respond(after: 0.05, okOutcome(request.id)) }
        var configuration = fastConfiguration()
        configuration.maxRuntimeSeconds = 0.3
        let exit = try await Worker(store: store, engine: engine, configuration: configuration, log: .silent).run()
        #expect(exit == .drained(.maxRuntime, workRemains: true))
        let rows = store.rows
        #expect(rows.contains { $0.state == .done })
        #expect(rows.allSatisfy { $0.state == .done || $0.state == .queued })
    }

    @Test func nothingToDo() async throws {
        let store = MemoryStore(requests: 0)
        let engine = ScriptedEngine(capacity: 2) { request in .respond(after: 0, okOutcome(request.id)) }
        let exit = try await Worker(store: store, engine: engine, configuration: fastConfiguration(), log: .silent).run()
        #expect(exit == .nothingToDo)
    }

    @Test func waitsForAnotherWorkersExpiredLease() async throws {
        let store = MemoryStore(requests: 3)
        // A dead worker holds request 1 with a lease that expires in 0.3 s.
        let dead = try store.registerWorker(host: "h", pid: 1, description: "dead")
        _ = try store.claim(worker: dead, job: nil, limit: 1, leaseSeconds: 0.3)
        let engine = ScriptedEngine(capacity: 4) { request in .respond(after: 0.001, okOutcome(request.id)) }
        let exit = try await Worker(store: store, engine: engine, configuration: fastConfiguration(), log: .silent).run()
        #expect(exit == .completed)
        #expect(store.rows.allSatisfy { $0.state == .done && $0.resultWrites == 1 })
    }

    /// A claim the store committed but whose answer never arrived (PostgreSQL's connection broke
    /// after the commit) leaves requests leased to this worker without its knowing. Its heartbeat
    /// renews only the leases it knows, so those expire and are claimed again; before, it renewed
    /// them for as long as it lived and waited on them forever.
    @Test func requestsLeasedByAClaimWhoseAnswerWasLostExpireAndAreDone() async throws {
        let store = MemoryStore(requests: 6)
        store.lostClaimAnswers.withLock { $0 = 1 }
        var configuration = fastConfiguration()
        configuration.leaseSeconds = 1
        configuration.maxRuntimeSeconds = 30  // a worker still waiting then drains: the test fails, not hangs
        // Requests 5 and 6, claimed next, take 2.5 leases each: the heartbeat must keep those alive.
        let engine = ScriptedEngine(capacity: 4) { request in .respond(after: request.id >= 5 ? 2.5 : 0.001, okOutcome(request.id)) }
        let lines = LogLines()
        let exit = try await Worker(store: store, engine: engine, configuration: configuration, log: lines.log).run()
        #expect(exit == .completed, "\(lines.all.joined(separator: "\n"))")
        #expect(store.rows.allSatisfy { $0.state == .done && $0.resultWrites == 1 })
        #expect(store.recorded.heartbeats > 0)
        #expect(lines.all.contains { $0.contains("claim failed, will retry") })
        #expect(engine.snapshot.submissions.values.allSatisfy { $0 == 1 }, "\(engine.snapshot.submissions)")
    }

    /// The fleet drill's find: a worker waiting for another's lease polls whether work remains, and
    /// a database restart during that poll must be waited for like a failed claim, not end the worker.
    @Test func aFailedPollForUnfinishedWorkIsRetriedUntilDbTimeout() async throws {
        let store = MemoryStore(requests: 3)
        let dead = try store.registerWorker(host: "h", pid: 1, description: "dead")
        _ = try store.claim(worker: dead, job: nil, limit: 1, leaseSeconds: 0.3)
        // The check at start succeeds; the polls while the dead worker's lease runs out fail three times.
        store.unfinishedWorkFailures.withLock { $0 = (skip: 1, fail: 3) }
        let engine = ScriptedEngine(capacity: 4) { request in .respond(after: 0.001, okOutcome(request.id)) }
        let exit = try await Worker(store: store, engine: engine, configuration: fastConfiguration(), log: .silent).run()
        #expect(exit == .completed)
        #expect(store.rows.allSatisfy { $0.state == .done && $0.resultWrites == 1 })
        #expect(store.unfinishedWorkFailures.withLock { $0.fail } == 0)

        // A database that stays away past --db-timeout ends the worker with storeUnavailable.
        let away = MemoryStore(requests: 2)
        let other = try away.registerWorker(host: "h", pid: 1, description: "dead")
        _ = try away.claim(worker: other, job: nil, limit: 1, leaseSeconds: 30)
        away.unfinishedWorkFailures.withLock { $0 = (skip: 1, fail: .max) }
        var configuration = fastConfiguration()
        configuration.databaseTimeoutSeconds = 1
        do {
            let fresh = ScriptedEngine(capacity: 4) { request in .respond(after: 0.001, okOutcome(request.id)) }
            _ = try await Worker(store: away, engine: fresh, configuration: configuration, log: .silent).run()
            Issue.record("the worker did not give up")
        } catch let error as WorkerError {
            guard case let .storeUnavailable(message) = error else { Issue.record("\(error)"); return }
            #expect(message.contains("--db-timeout") && message.contains("unfinished work"))
        }
    }

    @Test func rejectsNonsenseSettings() async throws {
        var configuration = fastConfiguration()
        configuration.maxAttempts = 0
        let engine = ScriptedEngine(capacity: 1) { request in .respond(after: 0, okOutcome(request.id)) }
        await #expect(throws: WorkerError.self) {
            try await Worker(store: MemoryStore(requests: 1), engine: engine, configuration: configuration, log: .silent).run()
        }
    }
}

@Suite struct RetryPolicyTests {
    @Test func delaysGrowExponentiallyWithJitterAndACap() {
        let policy = RetryPolicy(baseDelay: 1, maxDelay: 30, maxRetryAfter: 120)
        var random = SystemRandomNumberGenerator()
        for attempt in 1...10 {
            let full = min(30, pow(2, Double(attempt - 1)))
            let delays = (0..<200).map { _ in policy.delay(afterFailedAttempts: attempt, retryAfter: nil, using: &random) }
            #expect(delays.allSatisfy { $0 >= full * 0.5 && $0 <= full })
            #expect(Set(delays).count > 1, "no jitter at attempt \(attempt)")
        }
        #expect(policy.delay(afterFailedAttempts: 1, retryAfter: 50, using: &random) == 50)
        #expect(policy.delay(afterFailedAttempts: 1, retryAfter: 1000, using: &random) == 120)
    }
}

/// Polls `condition` until it holds, failing after `seconds`.
func waitUntil(seconds: Double = 120, _ condition: () -> Bool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while !condition() {
        if ContinuousClock.now > deadline {
            Issue.record("condition not met within \(seconds) s", sourceLocation: sourceLocation)
            throw CancellationError()
        }
        try await Task.sleep(for: .milliseconds(5))
    }
}
