import Foundation
import SluiceCore
import Testing

@testable import SluiceQueue

@Suite struct ResultCacheStoreTests {
    @Test(arguments: StoreKind.all) func storesLooksUpAndCountsHitsInTheCommitTransaction(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        _ = try store.enqueue(file: try inputFile(dir, count: 3))
        let worker = try store.registerWorker(host: "h", pid: 1, description: "t")
        let claimed = try store.claim(worker: worker, job: nil, limit: 3, leaseSeconds: 60)
        #expect(try store.cachedResponses(for: ["k1", "k2"]).isEmpty)

        let response = CachedResponse(statusCode: 200, body: .object(["text": .string("cached")]), usage: Usage(promptTokens: 7, completionTokens: 11))
        var first = CommitBatch()
        first.results = [(lease: claimed[0].lease, outcome: .response(statusCode: 200, body: response.body, usage: response.usage))]
        var writes = CacheWrites()
        writes.stores = [(key: "k1", response: response)]
        try store.commit(first, worker: worker, cache: writes)
        #expect(try store.cachedResponses(for: ["k1", "k2"]) == ["k1": response])
        #expect(try store.cacheHitCounts(job: 1) == CacheHitCounts(hits: 0, completionTokens: 0))

        // Two hits; the second request's lease was taken over meanwhile, so only one is written and counted.
        store.testingStealLease(claimed[2].id)
        var second = CommitBatch()
        second.results = [claimed[1], claimed[2]].map { (lease: $0.lease, outcome: .response(statusCode: 200, body: response.body, usage: response.usage)) }
        var hits = CacheWrites()
        hits.hits = [(lease: claimed[1].lease, key: "k1"), (lease: claimed[2].lease, key: "k1")]
        // A second store of the same key keeps the first entry.
        hits.stores = [(key: "k1", response: CachedResponse(statusCode: 200, body: .object([:]), usage: Usage(promptTokens: 0, completionTokens: 0)))]
        let report = try store.commit(second, worker: worker, cache: hits)
        #expect(report.lostLeases == [claimed[2].lease])
        #expect(try store.cacheHitCounts(job: 1) == CacheHitCounts(hits: 1, completionTokens: 11))
        #expect(try store.cacheHitCounts(job: nil).hits == 1)
        #expect(try store.cachedResponses(for: ["k1"])["k1"] == response)
        #expect(try store.resultCacheSize() == 1)
        let entryHits = try store.testQueryInt("SELECT hits FROM result_cache WHERE key = 'k1'")
        #expect(entryHits == 1)
    }

    @Test func aMigratedVersionOneDatabaseGetsTheCacheTable() throws {
        let dir = try TempDir()
        let path = dir.file("old.db")
        do {
            let raw = try SQLiteConnection(path: path, busyTimeout: 5)
            try raw.writeTransaction("t") {
                try raw.execute(Schema.migrations[0], operation: "t")
                try raw.execute("PRAGMA user_version = 1", operation: "t")
            }
        }
        let store = try SQLiteStore(path: path)
        #expect(try store.resultCacheSize() == 0)
        #expect(try store.cacheHitCounts(job: nil).hits == 0)
    }
}


