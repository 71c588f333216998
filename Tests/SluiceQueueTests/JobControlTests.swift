import Foundation
import SluiceCore
import Testing
@testable import SluiceQueue

@Suite struct JobControlTests {
    @Test(arguments: StoreKind.all) func cancelStopsQueuedAndLeasedRequestsAndDropsInFlightCommits(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        let job = try #require(try store.enqueue(file: try inputFile(dir, count: 5)).jobID)
        let other = try #require(try store.enqueue(file: try inputFile(dir, name: "o.jsonl", count: 2, salt: "o")).jobID)
        let w = try store.registerWorker(host: "h", pid: 1, description: "w")
        let claimed = try store.claim(worker: w, job: job, limit: 3, leaseSeconds: 30)
        try store.commit(results([(claimed[0].lease, okOutcome("done"))]), worker: w)

        let report = try store.cancel(job: job)
        #expect(report == CancelReport(cancelledRequests: 4, wasLeased: 2))
        let lost = try store.commit(results(claimed[1...].map { ($0.lease, okOutcome("late")) }), worker: w)
        #expect(Set(lost.lostLeases) == Set(claimed[1...].map(\.lease)))
        #expect(try store.claim(worker: w, job: job, limit: 10, leaseSeconds: 30).isEmpty)
        #expect(!(try store.hasUnfinishedWork(job: job)))
        // Other jobs are untouched.
        #expect(try store.claim(worker: w, job: nil, limit: 10, leaseSeconds: 30).map(\.jobID) == [other, other])

        let status = try #require(try store.status(job: job).first)
        #expect(status.job.state == .cancelled)
        #expect(status.counts == RequestCounts(done: 1, cancelled: 4))
        let out = dir.file("out.jsonl")
        let exported = try store.export(job: job, to: out)
        #expect(exported.cancelled == 4 && exported.succeeded == 1 && exported.written == 5)
        #expect(try readLines(out)[1].contains(#""response":null,"error":{"code":"cancelled""#))

        // retry without --failed brings cancelled requests back.
        let retried = try store.retry(job: job, failedOnly: false)
        #expect(retried.requeued == 4)
        #expect(try store.status(job: job).first?.job.state == .active)
        #expect(try store.claim(worker: w, job: job, limit: 10, leaseSeconds: 30).map(\.lineNumber) == [2, 3, 4, 5])
    }

    @Test(arguments: StoreKind.all) func retryRequeuesFailuresButNotBadInput(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        let text = [requestLine("a"), "not json", requestLine("b"), requestLine("c")].joined(separator: "\n")
        let job = try #require(try store.enqueue(file: try dir.write("in.jsonl", text)).jobID)
        let w = try store.registerWorker(host: "h", pid: 1, description: "w")
        let claimed = try store.claim(worker: w, job: job, limit: 10, leaseSeconds: 30)
        #expect(claimed.map(\.customID) == ["a", "b", "c"])
        // Two failures after retries, one success.
        var batch = CommitBatch()
        batch.results = [
            (lease: claimed[0].lease, outcome: .failure(code: "server_error", message: "HTTP 500", retryable: true)),
            (lease: claimed[1].lease, outcome: okOutcome("ok")),
            (lease: claimed[2].lease, outcome: .failure(code: "timeout", message: "timed out", retryable: true)),
        ]
        try store.commit(batch, worker: w)
        var status = try #require(try store.status(job: job).first)
        #expect(status.counts == RequestCounts(done: 1, failed: 3))
        #expect(status.isFinished)
        #expect(status.finishedAt != nil)

        let report = try store.retry(job: job)
        #expect(report == RetryReport(requeued: 2, skippedBadInput: 1))
        status = try #require(try store.status(job: job).first)
        #expect(status.counts == RequestCounts(queued: 2, done: 1, failed: 1))
        #expect(status.finishedAt == nil && !status.isFinished)
        let again = try store.claim(worker: w, job: job, limit: 10, leaseSeconds: 30)
        #expect(again.map(\.customID) == ["a", "c"])
        #expect(again.allSatisfy { $0.failedAttempts == 0 && $0.leaseGeneration == 2 })
        try store.commit(results(again.map { ($0.lease, okOutcome("second")) }), worker: w)
        let out = dir.file("out.jsonl")
        _ = try store.export(job: job, to: out)
        let lines = try readLines(out)
        #expect(lines.count == 4)
        #expect(lines[0].contains("second") && lines[3].contains("second"))
        #expect(lines[1].contains(#""code":"not_json""#))
    }

    @Test(arguments: StoreKind.all) func statusReportsCountsTokensThroughputETAAndWorkers(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let clock = TestClock()
        let store = try openTestStore(kind, dir, clock: clock)
        let job = try #require(try store.enqueue(file: try inputFile(dir, count: 10), name: "n").jobID)
        var status = try #require(try store.status(job: job).first)
        #expect(status.counts.queued == 10 && status.startedAt == nil && status.elapsedSeconds == 0 && status.etaSeconds == nil)
        #expect(status.job.name == "n" && status.job.requestCount == 10 && status.job.inputPath.hasSuffix("input.jsonl"))

        let w = try store.registerWorker(host: "box", pid: 42, description: "openai")
        let start = clock.now
        let claimed = try store.claim(worker: w, job: job, limit: 4, leaseSeconds: 30)
        clock.advance(2)
        try store.commit(results(claimed.map { ($0.lease, okOutcome("x", prompt: 10, completion: 20)) }), worker: w)
        _ = try store.claim(worker: w, job: job, limit: 2, leaseSeconds: 30)
        status = try #require(try store.status(job: job).first)
        #expect(status.counts == RequestCounts(queued: 4, leased: 2, done: 4))
        #expect(status.promptTokens == 40 && status.completionTokens == 80)
        #expect(status.startedAt == start)
        #expect(status.elapsedSeconds == 2)
        #expect(status.requestsPerSecond == 2)
        #expect(status.completionTokensPerSecond == 40)
        #expect(status.etaSeconds == 3)
        #expect(status.workers.count == 1)
        #expect(status.workers.first?.leasesHeld == 2 && status.workers.first?.host == "box" && status.workers.first?.pid == 42)
        #expect(try store.status(job: nil).map(\.job.id) == [job])
        #expect(throws: QueueError.noSuchJob("99")) { try store.status(job: 99) }
    }
}

@Suite struct ListingTests {
    @Test(arguments: StoreKind.all) func jobsListsEveryJobWithItsStateAndWorkersListsRecentOnes(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let clock = TestClock()
        let store = try openTestStore(kind, dir, clock: clock)
        let a = try #require(try store.enqueue(file: try inputFile(dir, name: "a.jsonl", count: 2, salt: "a"), name: "alpha", priority: 3).jobID)
        let b = try #require(try store.enqueue(file: try dir.write("b.jsonl", requestLine("x") + "\n{}\n")).jobID)
        try store.cancel(job: a)
        let jobs = try store.jobs()
        #expect(jobs.map(\.id) == [a, b])
        #expect(jobs[0].name == "alpha" && jobs[0].state == .cancelled && jobs[0].priority == 3 && jobs[0].requestCount == 2)
        #expect(jobs[1].name == nil && jobs[1].state == .active && jobs[1].requestCount == 2 && jobs[1].badLineCount == 1)
        #expect(jobs[1].inputSHA256 == SHA256.hex(Array((requestLine("x") + "\n{}\n").utf8)))
        #expect(jobs[1].createdAt == clock.now)

        let stopped = try store.registerWorker(host: "h1", pid: 1, description: "one")
        try store.unregisterWorker(stopped)
        let running = try store.registerWorker(host: "h2", pid: 2, description: "two")
        let claimed = try store.claim(worker: running, job: nil, limit: 5, leaseSeconds: 30)
        clock.advance(1)
        try store.heartbeat(worker: running, leases: claimed.map(\.lease), leaseSeconds: 30)
        let workers = try store.workers()
        #expect(workers.map(\.id) == [running])
        #expect(workers[0].leasesHeld == 1 && workers[0].description == "two" && workers[0].stoppedAt == nil)
        #expect(workers[0].lastHeartbeat == clock.now)
        // A worker that vanished without unregistering stays listed while it holds leases,
        // and drops off an hour after its last heartbeat once it holds none.
        clock.advance(3601)
        #expect(try store.workers().map(\.id) == [running])
        let other = try store.registerWorker(host: "h3", pid: 3, description: "three")
        let taken = try store.claim(worker: other, job: nil, limit: 5, leaseSeconds: 30)
        #expect(taken.count == 1)
        #expect(try store.workers().map(\.id) == [other])
    }
}
