import Foundation
import SluiceCore
import Testing
@testable import SluiceQueue

/// `sluice db copy`: a job moves between stores with its results, checkpoints and cache.
@Suite struct TransferTests {
    @Test(arguments: StoreKind.all) func aCopiedJobContinuesWhereItWasAndExportsTheSameBytes(_ kind: StoreKind) throws {
        let laptop = try TempDir()
        let source = try openTestStore(.sqlite, laptop)
        let job = try #require(try source.enqueue(file: try inputFile(laptop, count: 5), name: "nightly").jobID)
        let worker = try source.registerWorker(host: "laptop", pid: 1, description: "w")
        let claimed = try source.claim(worker: worker, job: nil, limit: 4, leaseSeconds: 60)
        var batch = results([(claimed[0].lease, okOutcome("one")),
                             (claimed[1].lease, .failure(code: "bad", message: "no", retryable: false))])
        batch.checkpoints = [(lease: claimed[2].lease, checkpoint: Checkpoint(generatedTokens: 7, payload: [0, 92, 9, 255]))]
        var cache = CacheWrites()
        cache.stores = [(key: "k\t\\1", response: CachedResponse(statusCode: 200, body: .object(["a": .string("b\n")]),
                                                                 usage: Usage(promptTokens: 1, completionTokens: 2)))]
        try source.commit(batch, worker: worker, cache: cache)
        let sourceExport = laptop.file("source.jsonl")
        _ = try source.export(job: job, to: sourceExport)

        // The laptop's worker is gone; the job moves to the fleet's store (and back, for PostgreSQL).
        let fleet = try TempDir()
        let target = try openTestStore(kind, fleet)
        let report = try copyJobs(from: source, to: target, job: job)
        #expect(report.copied.count == 1 && report.copied[0].requests == 5 && report.copied[0].results == 2)
        #expect(report.cacheEntriesAdded == 1)
        let copied = try target.resolveJob("nightly")
        let targetExport = fleet.file("target.jsonl")
        _ = try target.export(job: copied, to: targetExport)
        #expect(try readLines(targetExport).map(withoutIDs) == readLines(sourceExport).map(withoutIDs))
        #expect(try target.cachedResponses(for: ["k\t\\1"])["k\t\\1"]?.body == .object(["a": .string("b\n")]))
        #expect(throws: QueueError.self) { try copyJobs(from: source, to: target, job: job) } // the name is taken

        let fleetWorker = try target.registerWorker(host: "spot", pid: 2, description: "w")
        let resumed = try target.claim(worker: fleetWorker, job: nil, limit: 10, leaseSeconds: 60)
        #expect(resumed.map(\.lineNumber) == [3, 4, 5])
        #expect(resumed[0].checkpoint == Checkpoint(generatedTokens: 7, payload: [0, 92, 9, 255]))
        try target.commit(results(resumed.map { ($0.lease, okOutcome("fleet \($0.lineNumber)")) }), worker: fleetWorker)
        #expect(try target.status(job: copied).first?.isFinished == true)

        let back = try TempDir()
        let home = try openTestStore(.sqlite, back)
        _ = try copyJobs(from: target, to: home, job: nil)
        let homeExport = back.file("home.jsonl")
        let finalExport = fleet.file("final.jsonl")
        _ = try target.export(job: copied, to: finalExport)
        _ = try home.export(job: try home.resolveJob("nightly"), to: homeExport)
        #expect(try readLines(homeExport).count == 5)
        #expect(try readLines(homeExport).map(withoutIDs) == readLines(finalExport).map(withoutIDs))
    }

    /// A line with its ids (which derive from the job's id, new in each store) blanked.
    private func withoutIDs(_ line: String) -> String {
        line.replacingOccurrences(of: "req_[0-9a-f]{16}", with: "req_*", options: .regularExpression)
    }
}
