import SluiceCore

/// A response kept in the result cache, with what computing it cost the first time.
public struct CachedResponse: Sendable, Equatable {
    public var statusCode: Int
    public var body: JSON
    public var usage: Usage

    public init(statusCode: Int, body: JSON, usage: Usage) {
        self.statusCode = statusCode
        self.body = body
        self.usage = usage
    }
}

/// Cache writes that go into the same transaction as a `CommitBatch`.
public struct CacheWrites: Sendable {
    /// New entries: responses computed by this worker for cacheable requests (first writer wins).
    public var stores: [(key: String, response: CachedResponse)] = []
    /// Results in the batch that were answered from the cache (marked so, and counted on the entry).
    public var hits: [(lease: LeaseRef, key: String)] = []

    public init() {}
    public var isEmpty: Bool { stores.isEmpty && hits.isEmpty }
}

/// How many results of a job came from the result cache.
public struct CacheHitCounts: Sendable, Equatable {
    public var hits: Int
    /// Completion tokens of those results: reported in usage, but not computed again.
    public var completionTokens: Int

    public init(hits: Int, completionTokens: Int) {
        self.hits = hits
        self.completionTokens = completionTokens
    }
}

/// A store that also keeps a result cache: identical deterministic requests are computed once.
public protocol ResultCacheStore: QueueStore {
    /// The cached responses among `keys`.
    func cachedResponses(for keys: [String]) throws -> [String: CachedResponse]
    /// `commit(_:worker:)` plus the cache writes, in one transaction. A hit whose lease was
    /// lost is neither marked nor counted.
    @discardableResult
    func commit(_ batch: CommitBatch, worker: WorkerID, cache: CacheWrites) throws -> CommitReport
}

extension SQLiteStore: ResultCacheStore {
    public func cachedResponses(for keys: [String]) throws -> [String: CachedResponse] {
        guard !keys.isEmpty else { return [:] }
        return try withConnection { db in
            let lookup = try db.cached(
                "SELECT status_code, body, prompt_tokens, completion_tokens FROM result_cache WHERE key = ?1",
                operation: "look up result cache")
            var found: [String: CachedResponse] = [:]
            for key in Set(keys) {
                lookup.bind(1, key)
                defer { lookup.reset() }
                guard try lookup.step(), let text = lookup.text(1) else { continue }
                // An entry that no longer parses is ignored: the request is computed again.
                guard let body = try? JSON.parse(text) else { continue }
                found[key] = CachedResponse(statusCode: lookup.int(0), body: body,
                                            usage: Usage(promptTokens: lookup.int(2), completionTokens: lookup.int(3)))
            }
            return found
        }
    }

    @discardableResult
    public func commit(_ batch: CommitBatch, worker: WorkerID, cache: CacheWrites) throws -> CommitReport {
        if cache.isEmpty { return try commit(batch, worker: worker) }
        let now = clock()
        return try withConnection { db in
            try db.writeTransaction("commit results and result cache") {
                let report = try applyCommit(db, batch, worker: worker, now: now)
                let store = try db.cached("""
                    INSERT OR IGNORE INTO result_cache (key, status_code, body, prompt_tokens, completion_tokens, created_at)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                    """, operation: "store in result cache")
                for (key, response) in cache.stores {
                    store.bind(1, key)
                    store.bind(2, response.statusCode)
                    store.bind(3, response.body.serialized)
                    store.bind(4, response.usage.promptTokens)
                    store.bind(5, response.usage.completionTokens)
                    store.bind(6, now)
                    try store.run()
                }
                let lost = Set(report.lostLeases)
                let mark = try db.cached("UPDATE results SET from_cache = 1 WHERE request_id = ?1 AND lease_generation = ?2",
                                         operation: "mark cached results")
                let count = try db.cached("UPDATE result_cache SET hits = hits + 1 WHERE key = ?1", operation: "count cache hits")
                for (lease, key) in cache.hits where !lost.contains(lease) {
                    mark.bind(1, lease.requestID)
                    mark.bind(2, lease.leaseGeneration)
                    try mark.run()
                    count.bind(1, key)
                    try count.run()
                }
                return report
            }
        }
    }

    /// Results of `job` (or of every job) answered from the result cache.
    public func cacheHitCounts(job: JobID?) throws -> CacheHitCounts {
        try withConnection { db in
            let statement = try db.cached("""
                SELECT count(*), coalesce(sum(completion_tokens), 0) FROM results
                WHERE from_cache = 1 AND (?1 IS NULL OR job_id = ?1)
                """, operation: "count cache hits")
            defer { statement.reset() }
            statement.bind(1, job)
            guard try statement.step() else { return CacheHitCounts(hits: 0, completionTokens: 0) }
            return CacheHitCounts(hits: statement.int(0), completionTokens: statement.int(1))
        }
    }

    /// How many entries the result cache holds.
    public func resultCacheSize() throws -> Int {
        try withConnection { db in Int(try db.queryInt("SELECT count(*) FROM result_cache", operation: "count result cache")) }
    }
}
