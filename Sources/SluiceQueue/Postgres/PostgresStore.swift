import Foundation
import SluiceCore
import Synchronization

/// The fleet queue: a PostgreSQL database that workers on many hosts share. Same semantics
/// as `SQLiteStore` (the conformance suite runs on both); lease times come from the server's
/// clock (`now()`), so hosts with skewed clocks cannot take each other's leases.
///
/// Claims and commit batches are one round trip each (server-side functions); enqueue
/// streams through `COPY`. Each instance owns one connection behind a mutex; a broken
/// connection is reopened on the next call.
public final class PostgresStore: JobStore {
    /// The URL without its password.
    public let location: String
    let url: String
    let connection: Mutex<PGConnection>
    /// This process's clock: only used to turn a worker's absolute retry times into delays.
    let clock: @Sendable () -> Double
    /// For tests: what the server's clock reads instead of `now()` (`sluice.test_now`).
    let testClock: (@Sendable () -> Double)?

    /// Connects to `url` and brings the schema up to date.
    /// - Parameters:
    ///   - clock: this host's clock (seconds since the Unix epoch); it only turns a worker's
    ///     absolute retry times into delays, which the server adds to its own clock.
    ///   - testClock: for tests of lease expiry only: the time the server's clock reads for this
    ///     store's statements (seconds since the Unix epoch), in place of `now()`.
    ///   - answerTimeoutSeconds: how long a statement may wait for the server (see `PGConnection`).
    public init(url: String, clock: (@Sendable () -> Double)? = nil, testClock: (@Sendable () -> Double)? = nil,
                answerTimeoutSeconds: Int32 = 30) throws {
        self.url = url
        self.location = redactedURL(url)
        self.clock = clock ?? { Date().timeIntervalSince1970 }
        self.testClock = testClock
        let db = try PGConnection(url: url, answerTimeoutSeconds: answerTimeoutSeconds)
        try Self.migrate(db)
        self.connection = Mutex(db)
        try removeAbandonedLoadingJobs()
    }

    /// Runs `body` with exclusive use of the connection, reconnecting first if it broke.
    @discardableResult
    func withConnection<T: Sendable>(_ body: (PGConnection) throws -> T) throws -> T {
        try connection.withLock { db throws -> T in
            if db.isBroken { try db.reconnect() }
            if let testClock {
                try db.execute("SELECT set_config('sluice.test_now', $1, false)", [PG.number(testClock())],
                               operation: "set the test clock")
            }
            return try body(db)
        }
    }

    // MARK: Schema

    /// Applies missing migrations under an advisory lock (so concurrent openers apply each once).
    static func migrate(_ db: PGConnection) throws {
        if try schemaVersion(db) == PostgresSchema.currentVersion { return }
        try db.execute("SELECT pg_advisory_lock($1)", [String(PostgresSchema.migrationLock)], operation: "lock schema")
        defer { _ = try? db.execute("SELECT pg_advisory_unlock($1)", [String(PostgresSchema.migrationLock)], operation: "unlock schema") }
        var version: Int
        if let found = try schemaVersion(db) {
            version = found
        } else {
            let tables = try db.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()", operation: "inspect database")
            if tables.int(0, 0) > 0 { throw PostgresError.notSluiceDatabase(url: db.label) }
            try db.transaction("create schema version table") {
                try db.execute("CREATE TABLE sluice_schema_version (version integer NOT NULL)", operation: "create schema version table")
                try db.execute("INSERT INTO sluice_schema_version VALUES (0)", operation: "create schema version table")
            }
            version = 0
        }
        if version > PostgresSchema.currentVersion {
            throw PostgresError.newerSchema(url: db.label, found: version, supported: PostgresSchema.currentVersion)
        }
        while version < PostgresSchema.currentVersion {
            try db.transaction("migrate schema to version \(version + 1)") {
                try db.execute(PostgresSchema.migrations[version], operation: "migrate schema to version \(version + 1)")
                try db.execute("UPDATE sluice_schema_version SET version = $1", [String(version + 1)],
                               operation: "record schema version \(version + 1)")
            }
            version += 1
        }
    }

    /// The recorded schema version; nil when the database has no version table.
    static func schemaVersion(_ db: PGConnection) throws -> Int? {
        let exists = try db.execute("SELECT to_regclass('sluice_schema_version') IS NOT NULL", operation: "read schema version")
        guard exists.bool(0, 0) else { return nil }
        let row = try db.execute("SELECT max(version) FROM sluice_schema_version", operation: "read schema version")
        let version = row.int(0, 0)
        if version > PostgresSchema.currentVersion {
            throw PostgresError.newerSchema(url: db.label, found: version, supported: PostgresSchema.currentVersion)
        }
        return version
    }

    // MARK: QueueStore

    public func registerWorker(host: String, pid: Int32, description: String) throws -> WorkerID {
        let id = "\(host)-\(pid)-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try withConnection { db in
            try db.execute("""
                INSERT INTO workers (id, host, pid, description, started_at, heartbeat_at)
                VALUES ($1, $2, $3, $4, sluice_now(), sluice_now())
                """, [id, host, String(pid), description], operation: "register worker")
        }
        return id
    }

    public func heartbeat(worker: WorkerID, leases: [LeaseRef], leaseSeconds: Double) throws {
        let ids = "{" + leases.map { String($0.requestID) }.joined(separator: ",") + "}"
        let generations = "{" + leases.map { String($0.leaseGeneration) }.joined(separator: ",") + "}"
        try withConnection { db in
            try db.execute("""
                WITH touch AS (UPDATE workers SET heartbeat_at = sluice_now() WHERE id = $1)
                UPDATE requests AS r SET lease_expires_at = sluice_now() + $2
                FROM unnest($3::bigint[], $4::integer[]) AS held(id, generation)
                WHERE r.id = held.id AND r.lease_generation = held.generation AND r.state = 'leased' AND r.lease_owner = $1
                """, [worker, PG.number(leaseSeconds), ids, generations], operation: "heartbeat")
        }
    }

    public func claim(worker: WorkerID, job: JobID?, limit: Int, leaseSeconds: Double,
                      maxLostLeases: Int) throws -> [ClaimedRequest] {
        guard limit > 0 else { return [] }
        let rows = try withConnection { db in
            try db.execute("SELECT * FROM sluice_claim($1, $2, $3, $4, $5)",
                           [worker, job.map { String($0) }, String(min(limit, Int(Int32.max))), PG.number(leaseSeconds),
                            String(max(1, min(maxLostLeases, Int(Int32.max))))],
                           operation: "claim requests")
        }
        var claimed: [ClaimedRequest] = []
        var unreadable: [(id: Int64, reason: String)] = []
        claimed.reserveCapacity(rows.rowCount)
        for row in 0..<rows.rowCount {
            let id = rows.int64(row, 0)
            let body: JSON
            do {
                body = try JSON.parse(rows.bytes(row, 5))
            } catch {
                unreadable.append((id, "stored body is not valid JSON: \(error)"))
                continue
            }
            guard let endpoint = StoredEndpoint.endpoint(code: rows.int(row, 4)) else {
                unreadable.append((id, "stored endpoint code \(rows.int(row, 4)) is unknown"))
                continue
            }
            let checkpoint = rows.isNull(row, 8) ? nil
                : Checkpoint(generatedTokens: rows.int(row, 8), payload: rows.byteArray(row, 9) ?? [])
            claimed.append(ClaimedRequest(
                id: id, jobID: rows.int64(row, 1), lineNumber: rows.int(row, 2), customID: rows.string(row, 3) ?? "",
                endpoint: endpoint, body: body, leaseGeneration: rows.int(row, 6), failedAttempts: rows.int(row, 7),
                checkpoint: checkpoint))
        }
        if !unreadable.isEmpty {
            // A row this build cannot read would be claimed forever: fail it instead.
            var batch = CommitBatch()
            for row in unreadable {
                let generation = (0..<rows.rowCount).first { rows.int64($0, 0) == row.id }.map { rows.int($0, 6) } ?? 0
                batch.results.append((lease: LeaseRef(requestID: row.id, leaseGeneration: generation),
                                      outcome: .failure(code: "corrupt_request", message: row.reason, retryable: false)))
            }
            try commit(batch, worker: worker)
        }
        claimed.sort { $0.id < $1.id }
        return claimed
    }

    @discardableResult
    public func commit(_ batch: CommitBatch, worker: WorkerID) throws -> CommitReport {
        if batch.isEmpty { return CommitReport() }
        return try commit(batch, worker: worker, cache: CacheWrites())
    }

    @discardableResult
    public func commit(_ batch: CommitBatch, worker: WorkerID, cache: CacheWrites) throws -> CommitReport {
        if batch.isEmpty && cache.isEmpty { return CommitReport() }
        let payload = encode(batch, cache: cache)
        let rows = try withConnection { db in
            try db.execute("SELECT * FROM sluice_commit($1, $2::jsonb)", [worker, payload], operation: "commit results")
        }
        var lost: [LeaseRef] = []
        for row in 0..<rows.rowCount {
            lost.append(LeaseRef(requestID: rows.int64(row, 0), leaseGeneration: rows.int(row, 1)))
        }
        return CommitReport(lostLeases: lost)
    }

    /// The batch as the JSON document `sluice_commit` reads. Retry times become delays from now
    /// on this host's clock, which the server adds to its own.
    func encode(_ batch: CommitBatch, cache: CacheWrites) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(4096)
        func key(_ name: String) { JSON.writeString(name, into: &out); out.append(UInt8(ascii: ":")) }
        func number(_ value: Int64) { out.append(contentsOf: String(value).utf8) }
        func lease(_ lease: LeaseRef) {
            key("id"); number(lease.requestID); out.append(UInt8(ascii: ","))
            key("gen"); number(Int64(lease.leaseGeneration))
        }
        func list<T>(_ name: String, _ items: [T], _ item: (T) -> Void) {
            if out.count > 1 { out.append(UInt8(ascii: ",")) }
            key(name)
            out.append(UInt8(ascii: "["))
            for (index, element) in items.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                out.append(UInt8(ascii: "{"))
                item(element)
                out.append(UInt8(ascii: "}"))
            }
            out.append(UInt8(ascii: "]"))
        }
        out.append(UInt8(ascii: "{"))
        list("results", batch.results) { entry in
            lease(entry.lease)
            switch entry.outcome {
            case let .response(statusCode, body, usage):
                out.append(contentsOf: ",".utf8); key("status"); number(Int64(statusCode))
                out.append(contentsOf: ",".utf8); key("prompt"); number(Int64(usage.promptTokens))
                out.append(contentsOf: ",".utf8); key("completion"); number(Int64(usage.completionTokens))
                out.append(contentsOf: ",".utf8); key("body"); JSON.writeString(body.serialized, into: &out)
            case let .failure(code, message, _, _):
                out.append(contentsOf: ",".utf8); key("code"); JSON.writeString(code, into: &out)
                out.append(contentsOf: ",".utf8); key("message"); JSON.writeString(message, into: &out)
            }
        }
        list("checkpoints", batch.checkpoints) { entry in
            lease(entry.lease)
            out.append(contentsOf: ",".utf8); key("tokens"); number(Int64(entry.checkpoint.generatedTokens))
            out.append(contentsOf: ",".utf8); key("payload"); JSON.writeString(Self.hex(entry.checkpoint.payload), into: &out)
        }
        let now = clock()
        list("releases", batch.releases) { entry in
            lease(entry.lease)
            out.append(contentsOf: ",".utf8); key("failure"); out.append(contentsOf: (entry.countsAsFailure ? "true" : "false").utf8)
            if let notBefore = entry.notBefore, notBefore.isFinite {
                let delay = max(0, min(notBefore - now, 1e9))
                out.append(contentsOf: ",".utf8); key("delay"); out.append(contentsOf: "\(delay)".utf8)
            }
            if let checkpoint = entry.checkpoint {
                out.append(contentsOf: ",".utf8); key("tokens"); number(Int64(checkpoint.generatedTokens))
                out.append(contentsOf: ",".utf8); key("payload"); JSON.writeString(Self.hex(checkpoint.payload), into: &out)
            }
        }
        list("cache_stores", cache.stores) { entry in
            key("key"); JSON.writeString(entry.key, into: &out)
            out.append(contentsOf: ",".utf8); key("status"); number(Int64(entry.response.statusCode))
            out.append(contentsOf: ",".utf8); key("body"); JSON.writeString(entry.response.body.serialized, into: &out)
            out.append(contentsOf: ",".utf8); key("prompt"); number(Int64(entry.response.usage.promptTokens))
            out.append(contentsOf: ",".utf8); key("completion"); number(Int64(entry.response.usage.completionTokens))
        }
        list("cache_hits", cache.hits) { entry in
            lease(entry.lease)
            out.append(contentsOf: ",".utf8); key("key"); JSON.writeString(entry.key, into: &out)
        }
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public func unregisterWorker(_ worker: WorkerID) throws {
        try withConnection { db in
            try db.execute("""
                WITH released AS (
                    UPDATE requests SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL, interrupted = 1
                    WHERE state = 'leased' AND lease_owner = $1)
                UPDATE workers SET stopped_at = sluice_now(), heartbeat_at = sluice_now() WHERE id = $1
                """, [worker], operation: "unregister worker")
        }
    }

    public func hasUnfinishedWork(job: JobID?) throws -> Bool {
        try withConnection { db in
            try db.execute("""
                SELECT EXISTS (
                    SELECT 1 FROM jobs AS j JOIN requests AS r ON r.job_id = j.id
                    WHERE j.state = 'active' AND ($1::bigint IS NULL OR j.id = $1) AND r.state IN ('queued', 'leased'))
                """, [job.map { String($0) }], operation: "look for unfinished work").bool(0, 0)
        }
    }

    // MARK: Result cache

    public func cachedResponses(for keys: [String]) throws -> [String: CachedResponse] {
        guard !keys.isEmpty else { return [:] }
        let list = "{" + Set(keys).map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\")
            .replacingOccurrences(of: "\"", with: "\\\"") + "\"" }.joined(separator: ",") + "}"
        let rows = try withConnection { db in
            try db.execute("""
                SELECT key, status_code, body, prompt_tokens, completion_tokens FROM result_cache WHERE key = ANY ($1::text[])
                """, [list], operation: "look up result cache")
        }
        var found: [String: CachedResponse] = [:]
        for row in 0..<rows.rowCount {
            // An entry that no longer parses is ignored: the request is computed again.
            guard let key = rows.string(row, 0), let body = try? JSON.parse(rows.bytes(row, 2)) else { continue }
            found[key] = CachedResponse(statusCode: rows.int(row, 1), body: body,
                                        usage: Usage(promptTokens: rows.int(row, 3), completionTokens: rows.int(row, 4)))
        }
        return found
    }

    public func cacheHitCounts(job: JobID?) throws -> CacheHitCounts {
        try withConnection { db in
            let row = try db.execute("""
                SELECT count(*), coalesce(sum(completion_tokens), 0) FROM results
                WHERE from_cache = 1 AND ($1::bigint IS NULL OR job_id = $1)
                """, [job.map { String($0) }], operation: "count cache hits")
            return CacheHitCounts(hits: row.int(0, 0), completionTokens: row.int(0, 1))
        }
    }

    public func resultCacheSize() throws -> Int {
        try withConnection { db in try db.execute("SELECT count(*) FROM result_cache", operation: "count result cache").int(0, 0) }
    }
}
