import Foundation
import SluiceCore
import Testing
@testable import SluiceQueue

@Suite struct ClaimTests {
    @Test(arguments: StoreKind.all) func claimLeasesInLineOrderWithIncreasingGenerations(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let clock = TestClock()
        let store = try openTestStore(kind, dir, clock: clock)
        let job = try #require(try store.enqueue(file: try inputFile(dir, count: 10)).jobID)
        let worker = try store.registerWorker(host: "h", pid: 1, description: "test")

        let first = try store.claim(worker: worker, job: nil, limit: 4, leaseSeconds: 30)
        #expect(first.map(\.lineNumber) == [1, 2, 3, 4])
        #expect(first.map(\.customID) == ["r1", "r2", "r3", "r4"])
        #expect(first.allSatisfy { $0.leaseGeneration == 1 && $0.jobID == job && $0.failedAttempts == 0 && $0.checkpoint == nil })
        #expect(first[0].endpoint == .chatCompletions)
        #expect(first[0].body["messages"]?.arrayValue?.first?["content"] == .string("hello 1"))

        let second = try store.claim(worker: worker, job: job, limit: 100, leaseSeconds: 30)
        #expect(second.map(\.lineNumber) == Array(5...10))
        #expect(try store.claim(worker: worker, job: nil, limit: 10, leaseSeconds: 30).isEmpty)
        #expect(try store.hasUnfinishedWork(job: job))
    }

    @Test(arguments: StoreKind.all) func expiredLeaseIsTakenOverAndOldOwnersWritesAreDropped(_ kind: StoreKind) throws {
        let (dir, clock, store, a, b) = try twoWorkers(kind, requests: 3)
        defer { withExtendedLifetime(dir) {} }

        let claimedByA = try store.claim(worker: a, job: nil, limit: 3, leaseSeconds: 30)
        #expect(claimedByA.count == 3)
        // Not expired yet: nothing for B.
        clock.advance(29)
        #expect(try store.claim(worker: b, job: nil, limit: 3, leaseSeconds: 30).isEmpty)
        clock.advance(2)
        let claimedByB = try store.claim(worker: b, job: nil, limit: 3, leaseSeconds: 30)
        #expect(claimedByB.map(\.id) == claimedByA.map(\.id))
        #expect(claimedByB.allSatisfy { $0.leaseGeneration == 2 })

        // B finishes line 1; A (stale) tries to finish all three, checkpoint and release.
        try store.commit(results([(claimedByB[0].lease, okOutcome("from B"))]), worker: b)
        var stale = results(claimedByA.map { ($0.lease, okOutcome("from A")) })
        stale.checkpoints = [(lease: claimedByA[1].lease, checkpoint: Checkpoint(generatedTokens: 1, payload: [1]))]
        stale.releases = [.init(lease: claimedByA[2].lease, countsAsFailure: true)]
        let report = try store.commit(stale, worker: a)
        #expect(Set(report.lostLeases) == Set(claimedByA.map(\.lease)))
        #expect(report.lostLeases.count == 5)

        // B's result stands; B still holds lines 2 and 3 and can finish them.
        let second = try store.commit(results(claimedByB[1...].map { ($0.lease, okOutcome("from B")) }), worker: b)
        #expect(second.lostLeases.isEmpty)
        let out = dir.file("out.jsonl")
        let job = try store.resolveJob("1")
        _ = try store.export(job: job, to: out)
        let lines = try readLines(out)
        #expect(lines.count == 3)
        #expect(lines.allSatisfy { $0.contains(#""text":"from B""#) && !$0.contains("from A") })
    }

    @Test(arguments: StoreKind.all) func sameWorkerCannotCommitAnOlderGenerationOfItsOwnLease(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let clock = TestClock()
        let store = try openTestStore(kind, dir, clock: clock)
        _ = try store.enqueue(file: try inputFile(dir, count: 1))
        let w = try store.registerWorker(host: "h", pid: 1, description: "w")
        let old = try #require(try store.claim(worker: w, job: nil, limit: 1, leaseSeconds: 5).first)
        clock.advance(6)
        let new = try #require(try store.claim(worker: w, job: nil, limit: 1, leaseSeconds: 5).first)
        #expect(new.leaseGeneration == old.leaseGeneration + 1)
        #expect(try store.commit(results([(old.lease, okOutcome("old"))]), worker: w).lostLeases == [old.lease])
        #expect(try store.commit(results([(new.lease, okOutcome("new"))]), worker: w).lostLeases.isEmpty)
    }

    @Test(arguments: StoreKind.all) func heartbeatKeepsLeasesAlive(_ kind: StoreKind) throws {
        let (dir, clock, store, a, b) = try twoWorkers(kind, requests: 2)
        defer { withExtendedLifetime(dir) {} }
        let held = try store.claim(worker: a, job: nil, limit: 2, leaseSeconds: 10)
        for _ in 0..<5 {
            clock.advance(8)
            try store.heartbeat(worker: a, leases: held.map(\.lease), leaseSeconds: 10)
            #expect(try store.claim(worker: b, job: nil, limit: 2, leaseSeconds: 10).isEmpty)
        }
        let workers = try store.workers()
        let statusA = try #require(workers.first { $0.id == a })
        #expect(statusA.leasesHeld == 2)
        #expect(statusA.lastHeartbeat == clock.now)
        #expect(statusA.host == "h" && statusA.pid == 1)
        // Heartbeats stop: B takes over after the lease runs out.
        clock.advance(10)
        #expect(try store.claim(worker: b, job: nil, limit: 2, leaseSeconds: 10).map(\.id) == held.map(\.id))
    }

    /// A claim the store committed but whose answer never reached the worker (the connection broke)
    /// leaves a request leased to a worker that does not know it: its heartbeat, which lists what
    /// it holds, does not renew that lease, so the request expires and is claimed again, by anyone.
    @Test(arguments: StoreKind.all) func heartbeatRenewsOnlyTheLeasesItLists(_ kind: StoreKind) throws {
        let (dir, clock, store, a, b) = try twoWorkers(kind, requests: 3)
        defer { withExtendedLifetime(dir) {} }
        let known = try store.claim(worker: a, job: nil, limit: 1, leaseSeconds: 10)
        let lost = try store.claim(worker: a, job: nil, limit: 1, leaseSeconds: 10)  // its answer "lost"
        // A lease at an older generation is not renewed either: the request was claimed again since.
        let stale = LeaseRef(requestID: known[0].id, leaseGeneration: known[0].leaseGeneration - 1)
        for _ in 0..<2 {
            clock.advance(8)
            try store.heartbeat(worker: a, leases: known.map(\.lease) + [stale], leaseSeconds: 10)
        }
        // The unlisted lease ran out at 10 s; the listed one was renewed to 26 s.
        let taken = try store.claim(worker: b, job: nil, limit: 3, leaseSeconds: 10)
        let ids = taken.map(\.id)
        #expect(ids.count == 2 && ids.contains(lost[0].id) && !ids.contains(known[0].id), "\(ids)")
        // Another worker's heartbeat renews nothing of A's (B lists A's lease beside its own).
        clock.advance(9)
        try store.heartbeat(worker: b, leases: known.map(\.lease) + taken.map(\.lease), leaseSeconds: 10)
        clock.advance(2)
        #expect(try store.claim(worker: b, job: nil, limit: 3, leaseSeconds: 10).map(\.id) == known.map(\.id))
    }

    @Test(arguments: StoreKind.all) func resultIsWrittenExactlyOnce(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        _ = try store.enqueue(file: try inputFile(dir, count: 1))
        let w = try store.registerWorker(host: "h", pid: 1, description: "w")
        let claimed = try #require(try store.claim(worker: w, job: nil, limit: 1, leaseSeconds: 30).first)
        #expect(try store.commit(results([(claimed.lease, okOutcome("first"))]), worker: w).lostLeases.isEmpty)
        // The same commit again (a retry after an ambiguous error) changes nothing.
        #expect(try store.commit(results([(claimed.lease, okOutcome("second"))]), worker: w).lostLeases == [claimed.lease])
        let status = try #require(try store.status(job: claimed.jobID).first)
        #expect(status.counts.done == 1 && status.counts.total == 1)
        #expect(status.promptTokens == 3 && status.completionTokens == 5)
        #expect(status.isFinished)
        #expect(!(try store.hasUnfinishedWork(job: nil)))
    }

    @Test(arguments: StoreKind.all) func releaseCountsFailuresHonoursNotBeforeAndKeepsCheckpoints(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let clock = TestClock()
        let store = try openTestStore(kind, dir, clock: clock)
        _ = try store.enqueue(file: try inputFile(dir, count: 2))
        let w = try store.registerWorker(host: "h", pid: 1, description: "w")
        let claimed = try store.claim(worker: w, job: nil, limit: 2, leaseSeconds: 30)
        let checkpoint = Checkpoint(generatedTokens: 7, payload: [1, 2, 3, 255])
        var batch = CommitBatch()
        batch.checkpoints = [(lease: claimed[1].lease, checkpoint: checkpoint)]
        batch.releases = [.init(lease: claimed[0].lease, countsAsFailure: true, notBefore: clock.now + 5)]
        #expect(try store.commit(batch, worker: w).lostLeases.isEmpty)
        var drain = CommitBatch()
        drain.releases = [.init(lease: claimed[1].lease, countsAsFailure: false)]
        try store.commit(drain, worker: w)

        // Line 1 waits for its back-off; line 2 comes back with its checkpoint.
        let next = try store.claim(worker: w, job: nil, limit: 2, leaseSeconds: 30)
        #expect(next.map(\.lineNumber) == [2])
        #expect(next[0].checkpoint == checkpoint)
        #expect(next[0].failedAttempts == 0)
        clock.advance(5)
        let retried = try store.claim(worker: w, job: nil, limit: 2, leaseSeconds: 30)
        #expect(retried.map(\.lineNumber) == [1])
        #expect(retried[0].failedAttempts == 1)
        #expect(retried[0].leaseGeneration == 2)

        // A release carrying a new checkpoint replaces the old one; a result deletes it.
        var release = CommitBatch()
        let newer = Checkpoint(generatedTokens: 9, payload: [9])
        release.releases = [.init(lease: next[0].lease, countsAsFailure: false, checkpoint: newer)]
        try store.commit(release, worker: w)
        let again = try #require(try store.claim(worker: w, job: nil, limit: 1, leaseSeconds: 30).first)
        #expect(again.checkpoint == newer)
        try store.commit(results([(again.lease, okOutcome("done"))]), worker: w)
        try store.retry(job: again.jobID, failedOnly: false) // nothing failed: no change
        #expect(try store.status(job: again.jobID)[0].counts.done == 1)
    }

    @Test(arguments: StoreKind.all) func unregisterReleasesLeasesWithoutCountingFailures(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        _ = try store.enqueue(file: try inputFile(dir, count: 3))
        let a = try store.registerWorker(host: "h", pid: 1, description: "a")
        _ = try store.claim(worker: a, job: nil, limit: 3, leaseSeconds: 300)
        try store.unregisterWorker(a)
        let b = try store.registerWorker(host: "h", pid: 2, description: "b")
        let claimed = try store.claim(worker: b, job: nil, limit: 3, leaseSeconds: 300)
        #expect(claimed.count == 3)
        #expect(claimed.allSatisfy { $0.failedAttempts == 0 && $0.leaseGeneration == 2 })
        #expect(try store.workers().first { $0.id == a }?.stoppedAt != nil || !(try store.workers().contains { $0.id == a }))
    }

    @Test(arguments: StoreKind.all) func higherPriorityJobsAreClaimedFirstThenJobAndLineOrder(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        let low = try #require(try store.enqueue(file: try inputFile(dir, name: "a.jsonl", count: 2, salt: "a"), priority: 0).jobID)
        let high = try #require(try store.enqueue(file: try inputFile(dir, name: "b.jsonl", count: 2, salt: "b"), priority: 5).jobID)
        let low2 = try #require(try store.enqueue(file: try inputFile(dir, name: "c.jsonl", count: 2, salt: "c"), priority: 0).jobID)
        let w = try store.registerWorker(host: "h", pid: 1, description: "w")
        let claimed = try store.claim(worker: w, job: nil, limit: 5, leaseSeconds: 30)
        // Order within the batch is by request id; which requests were chosen follows priority.
        #expect(Set(claimed.map { "\($0.jobID):\($0.lineNumber)" }) == ["\(high):1", "\(high):2", "\(low):1", "\(low):2", "\(low2):1"])
        let onlyLow2 = try store.claim(worker: w, job: low2, limit: 5, leaseSeconds: 30)
        #expect(onlyLow2.map { "\($0.jobID):\($0.lineNumber)" } == ["\(low2):2"])
    }

    @Test func claimQueryUsesIndexesNotASortOfTheQueue() throws {
        let dir = try TempDir()
        let store = try SQLiteStore(path: dir.databasePath)
        let plan = try store.withConnection { db -> String in
            let statement = try db.prepare("EXPLAIN QUERY PLAN " + SQLiteStore.claimSQL(oneJob: false), operation: "plan")
            var lines: [String] = []
            while try statement.step() { lines.append(statement.text(3) ?? "") }
            return lines.joined(separator: "\n")
        }
        // The inner halves must walk indexes in order; only the ≤ 2×limit union may be sorted.
        #expect(plan.contains("requests_job_state"), "\(plan)")
        #expect(!plan.contains("SCAN r"), "\(plan)")
        #expect(!plan.contains("SCAN requests"), "\(plan)")
    }

    // MARK: Lost leases (issue 13, defect 3)

    @Test(arguments: StoreKind.all) func aRequestWhoseWorkerIsLostEveryTimeFailsAsWorkerLostAfterTheLimit(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let clock = TestClock()
        let store = try openTestStore(kind, dir, clock: clock)
        let job = try #require(try store.enqueue(file: try inputFile(dir, count: 2)).jobID)
        let steady = try store.registerWorker(host: "h", pid: 100, description: "finishes line 2")
        for attempt in 1...3 {
            // Each worker claims line 1 and is killed: its lease runs out without progress.
            let worker = try store.registerWorker(host: "h", pid: Int32(attempt), description: "killed")
            let claimed = try store.claim(worker: worker, job: nil, limit: 1, leaseSeconds: 10, maxLostLeases: 3)
            #expect(claimed.map(\.lineNumber) == [1], "claim \(attempt)")
            if attempt == 1 {
                let other = try #require(try store.claim(worker: steady, job: nil, limit: 1, leaseSeconds: 1000, maxLostLeases: 3).first)
                try store.commit(results([(other.lease, okOutcome("fine"))]), worker: steady)
            }
            clock.advance(11)
        }
        let next = try store.registerWorker(host: "h", pid: 4, description: "next")
        #expect(try store.claim(worker: next, job: nil, limit: 5, leaseSeconds: 10, maxLostLeases: 3).isEmpty)
        #expect(!(try store.hasUnfinishedWork(job: job)))
        let status = try #require(try store.status(job: job).first)
        #expect(status.counts.failed == 1 && status.counts.done == 1)
        #expect(status.finishedAt != nil)
        let out = dir.file("out.jsonl")
        _ = try store.export(job: job, to: out)
        let lines = try readLines(out)
        #expect(lines.count == 2)
        #expect(lines[0].contains(#""code":"worker_lost""#) && lines[0].contains("expired 3 times"))
        // A retry gives it a fresh count.
        #expect(try store.retry(job: job).requeued == 1)
        #expect(try store.claim(worker: next, job: nil, limit: 5, leaseSeconds: 10, maxLostLeases: 3).count == 1)
    }

    @Test(arguments: StoreKind.all) func expiredLeasesWhoseCheckpointAdvancedDoNotCount(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let clock = TestClock()
        let store = try openTestStore(kind, dir, clock: clock)
        _ = try store.enqueue(file: try inputFile(dir, count: 1))
        for attempt in 1...6 {
            // Preempted each time, but only after storing further output.
            let worker = try store.registerWorker(host: "h", pid: Int32(attempt), description: "preempted")
            let claimed = try #require(try store.claim(worker: worker, job: nil, limit: 1, leaseSeconds: 10, maxLostLeases: 2).first,
                                       "claim \(attempt)")
            #expect(claimed.checkpoint?.generatedTokens == (attempt == 1 ? nil : (attempt - 1) * 10))
            var batch = CommitBatch()
            batch.checkpoints = [(lease: claimed.lease, checkpoint: Checkpoint(generatedTokens: attempt * 10, payload: [UInt8(attempt)]))]
            #expect(try store.commit(batch, worker: worker).lostLeases.isEmpty)
            clock.advance(11)
        }
        // Two leases lost without progress then end it.
        for attempt in 7...8 {
            let worker = try store.registerWorker(host: "h", pid: Int32(attempt), description: "killed")
            #expect(try store.claim(worker: worker, job: nil, limit: 1, leaseSeconds: 10, maxLostLeases: 2).count == 1)
            clock.advance(11)
        }
        let last = try store.registerWorker(host: "h", pid: 9, description: "last")
        #expect(try store.claim(worker: last, job: nil, limit: 1, leaseSeconds: 10, maxLostLeases: 2).isEmpty)
        #expect(try store.status(job: nil).first?.counts.failed == 1)
    }

    /// Lease times come from the database's clock: a host whose clock is hours ahead can neither
    /// take a live lease nor shorten a retry delay. (One SQLite file lives on one machine, whose
    /// clock all its workers share; PostgreSQL is reached by hosts with clocks of their own.)
    @Test(.enabled(if: StoreKind.all.contains(.postgres))) func aHostWithAClockHoursAheadCannotTakeLiveLeases() throws {
        let dir = try TempDir()
        let url = try PostgresTestServer.url(for: dir)
        let honest = try PostgresStore(url: url)
        let skewed = try PostgresStore(url: url, clock: { Date().timeIntervalSince1970 + 3 * 3600 })
        _ = try honest.enqueue(file: try inputFile(dir, count: 3))
        let a = try honest.registerWorker(host: "honest", pid: 1, description: "a")
        #expect(try honest.claim(worker: a, job: nil, limit: 2, leaseSeconds: 60).count == 2)
        let b = try skewed.registerWorker(host: "ahead", pid: 2, description: "b")
        let claimed = try skewed.claim(worker: b, job: nil, limit: 10, leaseSeconds: 60)
        #expect(claimed.map(\.lineNumber) == [3])
        // B's retry "5 s from now" (on its clock) is 5 s on the server's.
        var batch = CommitBatch()
        batch.releases = [.init(lease: claimed[0].lease, countsAsFailure: true, notBefore: Date().timeIntervalSince1970 + 3 * 3600 + 5)]
        try skewed.commit(batch, worker: b)
        let wait = try honest.withConnection { db in
            try db.execute("SELECT not_before - sluice_now() FROM requests WHERE id = \(claimed[0].id)", operation: "t").double(0, 0)
        }
        #expect(wait > 3 && wait <= 5.5)
        #expect(try honest.claim(worker: a, job: nil, limit: 10, leaseSeconds: 60).isEmpty)
    }
}

/// A store of `kind` on a test clock, `requests` queued requests, and two registered workers (a, b).
/// Keep `dir` alive for as long as the store is used.
private func twoWorkers(_ kind: StoreKind, requests: Int) throws
    -> (dir: TempDir, clock: TestClock, store: any JobStore, a: WorkerID, b: WorkerID) {
    let dir = try TempDir()
    let clock = TestClock()
    let store = try openTestStore(kind, dir, clock: clock)
    _ = try store.enqueue(file: try inputFile(dir, count: requests))
    let a = try store.registerWorker(host: "h", pid: 1, description: "a")
    let b = try store.registerWorker(host: "h", pid: 2, description: "b")
    return (dir, clock, store, a, b)
}
