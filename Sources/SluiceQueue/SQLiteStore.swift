import Foundation
import SluiceCore
import Synchronization

/// The one-machine queue: a SQLite database file in WAL mode that several
/// worker processes (and `sluice` commands) share safely.
///
/// Each instance owns one connection behind a mutex; every public method is
/// one transaction (enqueue: several, see `enqueue`).
public final class SQLiteStore: QueueStore {
    /// The database file.
    public let path: String
    /// Longest accepted input line, in bytes, unless `enqueue` is told otherwise.
    public static let defaultMaxLineBytes = 8 << 20
    /// How many bad lines an `EnqueueReport` lists (all are counted and stored).
    public static let maxReportedBadLines = 1000

    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// - Parameters:
    ///   - busyTimeout: seconds to wait for another process's write lock before failing with `QueueError.databaseBusy`.
    ///   - clock: seconds since the Unix epoch; tests inject one to control lease expiry.
    public init(path: String, busyTimeout: Double = 30, clock: (@Sendable () -> Double)? = nil) throws {
        self.path = path
        self.clock = clock ?? { Date().timeIntervalSince1970 }
        let connection = try SQLiteConnection(path: path, busyTimeout: busyTimeout)
        try Schema.migrate(connection)
        self.connection = Mutex(connection)
        try removeAbandonedLoadingJobs()
    }

    let connection: Mutex<SQLiteConnection>
    let clock: @Sendable () -> Double

    /// Runs `body` with exclusive use of the connection, once the database path is known to still
    /// name the file the connection opened (`QueueError.databaseReplaced` otherwise).
    func withConnection<T: Sendable>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        try connection.withLock { connection throws -> T in
            try connection.checkFileIdentity()
            return try body(connection)
        }
    }

    // MARK: QueueStore

    public func registerWorker(host: String, pid: Int32, description: String) throws -> WorkerID {
        let now = clock()
        let id = "\(host)-\(pid)-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try withConnection { db in
            try db.writeTransaction("register worker") {
                let insert = try db.cached(
                    "INSERT INTO workers (id, host, pid, description, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    operation: "register worker")
                insert.bind(1, id)
                insert.bind(2, host)
                insert.bind(3, Int64(pid))
                insert.bind(4, description)
                insert.bind(5, now)
                try insert.run()
            }
        }
        return id
    }

    public func heartbeat(worker: WorkerID, leases: [LeaseRef], leaseSeconds: Double) throws {
        let now = clock()
        try withConnection { db in
            try db.writeTransaction("heartbeat") {
                let touch = try db.cached("UPDATE workers SET heartbeat_at = ?1 WHERE id = ?2", operation: "heartbeat")
                touch.bind(1, now)
                touch.bind(2, worker)
                try touch.run()
                let renew = try db.cached("""
                    UPDATE requests SET lease_expires_at = ?1
                    WHERE id = ?3 AND state = 'leased' AND lease_owner = ?2 AND lease_generation = ?4
                    """, operation: "renew leases")
                for lease in leases {
                    renew.bind(1, now + leaseSeconds)
                    renew.bind(2, worker)
                    renew.bind(3, lease.requestID)
                    renew.bind(4, Int64(lease.leaseGeneration))
                    try renew.run()
                }
            }
        }
    }

    public func claim(worker: WorkerID, job: JobID?, limit: Int, leaseSeconds: Double,
                      maxLostLeases: Int) throws -> [ClaimedRequest] {
        guard limit > 0 else { return [] }
        let now = clock()
        return try withConnection { db in
            try db.writeTransaction("claim requests") {
                try failWornOutLeases(db, maxLostLeases: maxLostLeases, now: now)
                let statement = try db.cached(job == nil ? Self.claimSQL(oneJob: false) : Self.claimSQL(oneJob: true),
                                              operation: "claim requests")
                defer { statement.reset() }
                statement.bind(1, worker)
                statement.bind(2, now + leaseSeconds)
                statement.bind(3, now)
                statement.bind(4, limit)
                if let job { statement.bind(5, job) }
                var claimed: [ClaimedRequest] = []
                var unreadable: [(id: Int64, reason: String)] = []
                claimed.reserveCapacity(limit)
                while try statement.step() {
                    let id = statement.int64(0)
                    let body: JSON
                    do {
                        body = try JSON.parse(statement.textBytes(5))
                    } catch {
                        unreadable.append((id, "stored body is not valid JSON: \(error)"))
                        continue
                    }
                    guard let endpoint = StoredEndpoint.endpoint(code: statement.int(4)) else {
                        unreadable.append((id, "stored endpoint code \(statement.int(4)) is unknown"))
                        continue
                    }
                    let checkpoint = statement.isNull(8) ? nil
                        : Checkpoint(generatedTokens: statement.int(8), payload: statement.blob(9) ?? [])
                    claimed.append(ClaimedRequest(
                        id: id, jobID: statement.int64(1), lineNumber: statement.int(2),
                        customID: statement.text(3) ?? "", endpoint: endpoint, body: body,
                        leaseGeneration: statement.int(6), failedAttempts: statement.int(7), checkpoint: checkpoint))
                }
                statement.reset()
                // A row this build cannot read would be claimed forever: fail it instead.
                for row in unreadable {
                    try failCorruptRequest(db, id: row.id, reason: row.reason, now: now)
                }
                claimed.sort { $0.id < $1.id }
                var startedJobs = Set<JobID>()
                for request in claimed where startedJobs.insert(request.jobID).inserted {
                    let start = try db.cached("UPDATE jobs SET started_at = ?1 WHERE id = ?2 AND started_at IS NULL",
                                              operation: "record job start")
                    start.bind(1, now)
                    start.bind(2, request.jobID)
                    try start.run()
                }
                return claimed
            }
        }
    }

    /// One statement picks and leases the requests: the first `limit` of (queued and due)
    /// plus (leased with an expired lease), by job priority, job and line. The two halves
    /// each walk an index in order, so a claim touches about `limit` rows whatever the queue size.
    static func claimSQL(oneJob: Bool) -> String {
        let jobFilter = oneJob ? "AND j.id = ?5" : ""
        return """
        UPDATE requests
        SET state = 'leased', lease_owner = ?1, lease_expires_at = ?2, lease_generation = lease_generation + 1,
            first_claimed_at = coalesce(first_claimed_at, ?3), claimed_at = ?3,
            -- Right-hand sides read the row as it was: an expired lease, a lease handed back
            -- unfinished, or a checkpoint to resume from means the request survived a preemption.
            preemptions = preemptions
                + (CASE WHEN state = 'leased' OR interrupted <> 0 OR checkpoint_tokens IS NOT NULL THEN 1 ELSE 0 END),
            interrupted = 0,
            lost_leases = lost_leases
                + (CASE WHEN state = 'leased' AND coalesce(checkpoint_tokens, -1) <= claimed_checkpoint_tokens THEN 1 ELSE 0 END),
            claimed_checkpoint_tokens = coalesce(checkpoint_tokens, -1)
        WHERE id IN (
            SELECT id FROM (
                SELECT * FROM (
                    SELECT j.priority AS priority, r.id AS id
                    FROM jobs AS j JOIN requests AS r ON r.job_id = j.id
                    WHERE j.state = 'active' \(jobFilter) AND r.state = 'queued' AND r.not_before <= ?3
                    ORDER BY j.priority DESC, j.id, r.id LIMIT ?4)
                UNION ALL
                SELECT * FROM (
                    SELECT j.priority AS priority, r.id AS id
                    FROM jobs AS j JOIN requests AS r ON r.job_id = j.id
                    WHERE j.state = 'active' \(jobFilter) AND r.state = 'leased' AND r.lease_expires_at <= ?3
                    ORDER BY j.priority DESC, j.id, r.id LIMIT ?4)
            )
            ORDER BY priority DESC, id LIMIT ?4)
        RETURNING id, job_id, line, custom_id, endpoint, body, lease_generation, failed_attempts,
                  checkpoint_tokens, checkpoint_payload
        """
    }

    /// Fails the expired leases that would be the request's `maxLostLeases`-th lost lease
    /// (`worker_lost`), inside the claim's transaction, so the claim never hands them out again.
    private func failWornOutLeases(_ db: SQLiteConnection, maxLostLeases: Int, now: Double) throws {
        let limit = max(1, maxLostLeases)
        let fail = try db.cached("""
            UPDATE requests
            SET state = 'failed', lease_owner = NULL, lease_expires_at = NULL, lost_leases = lost_leases + 1,
                checkpoint_tokens = NULL, checkpoint_payload = NULL
            WHERE state = 'leased' AND lease_expires_at <= ?1 AND lost_leases + 1 >= ?2
              AND coalesce(checkpoint_tokens, -1) <= claimed_checkpoint_tokens
              AND job_id IN (SELECT id FROM jobs WHERE state = 'active')
            RETURNING id, job_id, lost_leases
            """, operation: "fail requests whose workers were lost")
        fail.bind(1, now)
        fail.bind(2, limit)
        var failed: [(id: Int64, job: JobID, lost: Int)] = []
        while try fail.step() { failed.append((fail.int64(0), fail.int64(1), fail.int(2))) }
        fail.reset()
        guard !failed.isEmpty else { return }
        let insert = try db.cached("""
            INSERT OR REPLACE INTO results (request_id, job_id, error_code, error_message, finished_at)
            VALUES (?1, ?2, ?3, ?4, ?5)
            """, operation: "fail requests whose workers were lost")
        for row in failed {
            insert.bind(1, row.id)
            insert.bind(2, row.job)
            insert.bind(3, QueueDefaults.workerLostCode)
            insert.bind(4, Self.workerLostMessage(lostLeases: row.lost))
            insert.bind(5, now)
            try insert.run()
        }
        for job in Set(failed.map(\.job)).sorted() { try markFinishedIfDone(db, job: job, now: now) }
    }

    /// The error message of a request given up after `lostLeases` lost leases.
    static func workerLostMessage(lostLeases: Int) -> String {
        "the request's lease expired \(lostLeases) times without progress (its worker was lost each time); "
            + "gave up after --max-lost-leases \(lostLeases)"
    }

    private func failCorruptRequest(_ db: SQLiteConnection, id: Int64, reason: String, now: Double) throws {
        let update = try db.cached(
            "UPDATE requests SET state = 'failed', lease_owner = NULL, lease_expires_at = NULL WHERE id = ?1",
            operation: "fail unreadable request")
        update.bind(1, id)
        try update.run()
        let insert = try db.cached("""
            INSERT OR REPLACE INTO results (request_id, job_id, error_code, error_message, finished_at)
            VALUES (?1, ?2, 'corrupt_request', ?3, ?4)
            """, operation: "fail unreadable request")
        insert.bind(1, id)
        insert.bind(2, RequestKey.job(of: id))
        insert.bind(3, reason)
        insert.bind(4, now)
        try insert.run()
    }

    @discardableResult
    public func commit(_ batch: CommitBatch, worker: WorkerID) throws -> CommitReport {
        if batch.isEmpty { return CommitReport() }
        let now = clock()
        return try withConnection { db in
            try db.writeTransaction("commit results") {
                try applyCommit(db, batch, worker: worker, now: now)
            }
        }
    }

    /// The writes of `commit`, inside a transaction the caller holds.
    func applyCommit(_ db: SQLiteConnection, _ batch: CommitBatch, worker: WorkerID, now: Double) throws -> CommitReport {
        var lost: [LeaseRef] = []
        var touchedJobs = Set<JobID>()
        let finish = try db.cached("""
            UPDATE requests
            SET state = ?1, lease_owner = NULL, lease_expires_at = NULL,
                checkpoint_tokens = NULL, checkpoint_payload = NULL
            WHERE id = ?2 AND state = 'leased' AND lease_owner = ?3 AND lease_generation = ?4
            """, operation: "commit results")
        let insertResult = try db.cached("""
            INSERT INTO results (request_id, job_id, status_code, error_code, error_message,
                                 prompt_tokens, completion_tokens, finished_at, worker_id, lease_generation, body)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
            """, operation: "commit results")
        for (lease, outcome) in batch.results {
            let isResponse: Bool
            if case .response = outcome { isResponse = true } else { isResponse = false }
            finish.bind(1, isResponse ? "done" : "failed")
            finish.bind(2, lease.requestID)
            finish.bind(3, worker)
            finish.bind(4, lease.leaseGeneration)
            try finish.run()
            guard db.changes == 1 else { lost.append(lease); continue }
            let job = RequestKey.job(of: lease.requestID)
            touchedJobs.insert(job)
            insertResult.bind(1, lease.requestID)
            insertResult.bind(2, job)
            switch outcome {
            case let .response(statusCode, body, usage):
                insertResult.bind(3, statusCode)
                insertResult.bind(6, usage.promptTokens)
                insertResult.bind(7, usage.completionTokens)
                insertResult.bind(11, body.serialized)
            case let .failure(code, message, _, _):
                insertResult.bind(4, code)
                insertResult.bind(5, message)
                insertResult.bind(6, 0)
                insertResult.bind(7, 0)
            }
            insertResult.bind(8, now)
            insertResult.bind(9, worker)
            insertResult.bind(10, lease.leaseGeneration)
            try insertResult.run()
        }

        let saveCheckpoint = try db.cached("""
            UPDATE requests SET checkpoint_tokens = ?1, checkpoint_payload = ?2
            WHERE id = ?3 AND state = 'leased' AND lease_owner = ?4 AND lease_generation = ?5
            """, operation: "commit checkpoints")
        for (lease, checkpoint) in batch.checkpoints {
            saveCheckpoint.bind(1, checkpoint.generatedTokens)
            saveCheckpoint.bind(2, blob: checkpoint.payload)
            saveCheckpoint.bind(3, lease.requestID)
            saveCheckpoint.bind(4, worker)
            saveCheckpoint.bind(5, lease.leaseGeneration)
            try saveCheckpoint.run()
            if db.changes != 1 { lost.append(lease) }
        }

        let release = try db.cached("""
            UPDATE requests
            SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                failed_attempts = failed_attempts + ?1, not_before = ?2, interrupted = 1 - ?1,
                checkpoint_tokens = CASE WHEN ?3 THEN ?4 ELSE checkpoint_tokens END,
                checkpoint_payload = CASE WHEN ?3 THEN ?5 ELSE checkpoint_payload END
            WHERE id = ?6 AND state = 'leased' AND lease_owner = ?7 AND lease_generation = ?8
            """, operation: "release leases")
        for item in batch.releases {
            release.bind(1, item.countsAsFailure ? 1 : 0)
            release.bind(2, item.notBefore ?? 0)
            release.bind(3, item.checkpoint == nil ? 0 : 1)
            if let checkpoint = item.checkpoint {
                release.bind(4, checkpoint.generatedTokens)
                release.bind(5, blob: checkpoint.payload)
            }
            release.bind(6, item.lease.requestID)
            release.bind(7, worker)
            release.bind(8, item.lease.leaseGeneration)
            try release.run()
            if db.changes != 1 { lost.append(item.lease) }
        }

        for job in touchedJobs.sorted() {
            try markFinishedIfDone(db, job: job, now: now)
        }
        return CommitReport(lostLeases: lost)
    }

    /// Records the job's finish time once nothing in it is queued or leased.
    func markFinishedIfDone(_ db: SQLiteConnection, job: JobID, now: Double) throws {
        let mark = try db.cached("""
            UPDATE jobs SET finished_at = ?1
            WHERE id = ?2 AND finished_at IS NULL AND state <> 'loading'
              AND NOT EXISTS (SELECT 1 FROM requests WHERE job_id = ?2 AND state IN ('queued', 'leased'))
            """, operation: "record job finish")
        mark.bind(1, now)
        mark.bind(2, job)
        try mark.run()
    }

    public func unregisterWorker(_ worker: WorkerID) throws {
        let now = clock()
        try withConnection { db in
            try db.writeTransaction("unregister worker") {
                let release = try db.cached("""
                    UPDATE requests SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL, interrupted = 1
                    WHERE state = 'leased' AND lease_owner = ?1
                    """, operation: "release worker's leases")
                release.bind(1, worker)
                try release.run()
                let stop = try db.cached("UPDATE workers SET stopped_at = ?1, heartbeat_at = ?1 WHERE id = ?2",
                                         operation: "unregister worker")
                stop.bind(1, now)
                stop.bind(2, worker)
                try stop.run()
            }
        }
    }

    public func hasUnfinishedWork(job: JobID?) throws -> Bool {
        try withConnection { db in
            let sql = """
                SELECT EXISTS (
                    SELECT 1 FROM jobs AS j JOIN requests AS r ON r.job_id = j.id
                    WHERE j.state = 'active' \(job == nil ? "" : "AND j.id = ?1") AND r.state IN ('queued', 'leased'))
                """
            let statement = try db.cached(sql, operation: "look for unfinished work")
            defer { statement.reset() }
            if let job { statement.bind(1, job) }
            guard try statement.step() else { return false }
            return statement.int(0) != 0
        }
    }
}
