import Foundation
import SluiceCore
import Testing
@testable import SluiceQueue

/// Migration 3: claim times, preemptions survived, and the progress and report reads built on them.
@Suite struct TimingAndReportTests {
    @Test(arguments: StoreKind.all) func claimRecordsFirstAndCurrentClaimTimesAndResultsCarryLatency(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let clock = TestClock()
        let store = try openTestStore(kind, dir, clock: clock)
        let job = try #require(try store.enqueue(file: try inputFile(dir, count: 2)).jobID)
        let worker = try store.registerWorker(host: "machine-a", pid: 1, description: "t")
        let start = clock.now
        let claimed = try store.claim(worker: worker, job: nil, limit: 2, leaseSeconds: 30)
        clock.advance(2.5)
        try store.commit(results([(claimed[0].lease, okOutcome("a", prompt: 4, completion: 7))]), worker: worker)
        clock.advance(1)
        try store.commit(results([(claimed[1].lease, .failure(code: "timeout", message: "slow", retryable: false))]), worker: worker)

        let data = try store.reportData(job: job)
        #expect(data.results.count == 2)
        let first = data.results[0], second = data.results[1]
        #expect(first.claimedAt == start && first.firstClaimedAt == start && first.finishedAt == start + 2.5)
        #expect(first.latency == 2.5 && first.statusCode == 200 && first.promptTokens == 4 && first.completionTokens == 7)
        #expect(first.host == "machine-a" && first.preemptions == 0 && !first.fromCache)
        #expect(second.latency == 3.5 && second.statusCode == nil)
        #expect(data.failures == [FailureGroup(code: "timeout", message: "slow", count: 1, badInput: false)])
        #expect(data.counts.done == 1 && data.counts.failed == 1)
    }

    @Test(arguments: StoreKind.all) func preemptionsCountExpiredLeasesDrainsAndCheckpointsButNotRetries(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let clock = TestClock()
        let store = try openTestStore(kind, dir, clock: clock)
        let job = try #require(try store.enqueue(file: try inputFile(dir, count: 4)).jobID)
        let a = try store.registerWorker(host: "h", pid: 1, description: "a")
        let b = try store.registerWorker(host: "h", pid: 2, description: "b")
        let t0 = clock.now
        let byA = try store.claim(worker: a, job: nil, limit: 4, leaseSeconds: 30)
        // r1: handed back by a drain (no failure). r2: handed back with a checkpoint after a failure
        // (resumed from it). r3: a retryable failure without a checkpoint (a retry, not a preemption).
        // r4: A dies; its lease expires.
        var batch = CommitBatch()
        batch.releases = [
            .init(lease: byA[0].lease, countsAsFailure: false),
            .init(lease: byA[1].lease, countsAsFailure: true, checkpoint: Checkpoint(generatedTokens: 3, payload: [1, 2])),
            .init(lease: byA[2].lease, countsAsFailure: true),
        ]
        try store.commit(batch, worker: a)
        clock.advance(31)
        let byB = try store.claim(worker: b, job: nil, limit: 4, leaseSeconds: 30)
        #expect(byB.map(\.lineNumber) == [1, 2, 3, 4])
        try store.commit(results(byB.map { ($0.lease, okOutcome("b")) }), worker: b)

        let data = try store.reportData(job: job)
        #expect(data.results.map(\.preemptions) == [1, 1, 0, 1])
        #expect(data.results.allSatisfy { $0.firstClaimedAt == t0 && $0.claimedAt == t0 + 31 })
        #expect(data.unfinishedPreempted == 0)
    }

    @Test(arguments: StoreKind.all) func unregisteringAWorkerCountsItsLeasesAsPreempted(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        let job = try #require(try store.enqueue(file: try inputFile(dir, count: 2)).jobID)
        let a = try store.registerWorker(host: "h", pid: 1, description: "a")
        _ = try store.claim(worker: a, job: nil, limit: 2, leaseSeconds: 30)
        try store.unregisterWorker(a)
        let b = try store.registerWorker(host: "h", pid: 2, description: "b")
        let again = try store.claim(worker: b, job: nil, limit: 1, leaseSeconds: 30)
        #expect(again.count == 1)
        // One is leased again (preempted once), one still queued but already preempted.
        #expect(try store.reportData(job: job).unfinishedPreempted == 2)
    }

    @Test(arguments: StoreKind.all) func progressCountsStatesTokensAndCacheHitsOfTheNamedJobs(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        let first = try #require(try store.enqueue(file: try inputFile(dir, name: "a.jsonl", count: 3)).jobID)
        let second = try #require(try store.enqueue(file: try inputFile(dir, name: "b.jsonl", count: 2, salt: "x"), name: "second").jobID)
        #expect(try store.jobsWithUnfinishedWork() == [first, second])
        #expect(try store.jobsWithUnfinishedWork(job: second) == [second])
        let worker = try store.registerWorker(host: "h", pid: 1, description: "t")
        let claimed = try store.claim(worker: worker, job: first, limit: 3, leaseSeconds: 30)
        var cache = CacheWrites()
        cache.hits = [(lease: claimed[1].lease, key: "k")]
        try store.commit(results([(claimed[0].lease, okOutcome("x", prompt: 2, completion: 9)),
                                  (claimed[1].lease, okOutcome("y", prompt: 1, completion: 4))]),
                         worker: worker, cache: cache)

        let progress = try store.progress(jobs: [second, first, 999])
        #expect(progress.map(\.job) == [first, second])
        #expect(progress[0].counts == RequestCounts(leased: 1, done: 2))
        #expect(progress[0].promptTokens == 3 && progress[0].completionTokens == 13 && progress[0].cacheHits == 1)
        #expect(progress[1].name == "second" && progress[1].counts == RequestCounts(queued: 2) && !progress[1].isFinished)
        #expect(try store.progress(jobs: []).isEmpty)
    }

    @Test(arguments: StoreKind.all) func failuresAreGroupedByCodeAndMessageWithBadLinesAndErrorAnswers(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        let lines = [
            requestLine("ok1"), "not json", "{\"custom_id\": \"x\"}", "also not json",
            requestLine("err1"), requestLine("err2"),
        ]
        let job = try #require(try store.enqueue(file: try dir.write("in.jsonl", lines.joined(separator: "\n") + "\n")).jobID)
        let worker = try store.registerWorker(host: "h", pid: 1, description: "t")
        let claimed = try store.claim(worker: worker, job: nil, limit: 3, leaseSeconds: 30)
        let badRequest = JSON.object(["error": .object(["message": .string("max_tokens is too large"), "type": .string("invalid_request_error")])])
        try store.commit(results([
            (claimed[0].lease, okOutcome("fine")),
            (claimed[1].lease, .response(statusCode: 400, body: badRequest, usage: Usage(promptTokens: 0, completionTokens: 0))),
            (claimed[2].lease, .response(statusCode: 400, body: badRequest, usage: Usage(promptTokens: 0, completionTokens: 0))),
        ]), worker: worker)
        let failures = try store.reportData(job: job).failures
        #expect(failures.first == FailureGroup(code: "http_400", message: "max_tokens is too large", count: 2, badInput: false))
        // The two unparsable lines fail at different characters: two messages, two groups.
        #expect(failures.filter { $0.code == "not_json" && $0.badInput }.map(\.count) == [1, 1])
        #expect(failures.contains { $0.code == "missing_method" && $0.count == 1 && $0.badInput })
        #expect(failures.reduce(0) { $0 + $1.count } == 5)
    }

    @Test func aDatabaseFromBeforeTheTimingMigrationIsUpgradedInPlace() throws {
        let kind = StoreKind.sqlite
        let dir = try TempDir()
        do {
            let store = try openTestStore(kind, dir)
            _ = try store.enqueue(file: try inputFile(dir, count: 2))
            try (store as! SQLiteStore).withConnection { db in
                // Back to version 2: drop what migration 3 added (SQLite 3.35+ can drop columns).
                for column in ["first_claimed_at", "claimed_at", "preemptions", "interrupted", "lost_leases",
                               "claimed_checkpoint_tokens"] {
                    try db.execute("ALTER TABLE requests DROP COLUMN \(column)", operation: "t")
                }
                try db.execute("PRAGMA user_version = 2", operation: "t")
            }
        }
        let store = try openTestStore(kind, dir)
        #expect(try store.testSchemaVersion() == Int64(Schema.currentVersion))
        let worker = try store.registerWorker(host: "h", pid: 1, description: "t")
        let claimed = try store.claim(worker: worker, job: nil, limit: 2, leaseSeconds: 30)
        #expect(claimed.count == 2)
        try store.commit(results(claimed.map { ($0.lease, okOutcome("z")) }), worker: worker)
        #expect(try store.reportData(job: claimed[0].jobID).results.allSatisfy { $0.claimedAt != nil })
    }
}
