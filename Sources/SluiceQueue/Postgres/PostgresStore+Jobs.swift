import Foundation
import SluiceCore

extension PostgresStore {
    public func resolveJob(_ reference: String) throws -> JobID {
        let trimmed = reference.trimmingCharacters(in: .whitespaces)
        return try withConnection { db in
            if let id = JobID(trimmed) {
                let row = try db.execute("SELECT id FROM jobs WHERE id = $1 AND state <> 'loading'", [String(id)],
                                         operation: "find job")
                if row.rowCount == 1 { return id }
                throw QueueError.noSuchJob(trimmed)
            }
            let row = try db.execute("SELECT id FROM jobs WHERE name = $1 AND state <> 'loading'", [trimmed],
                                     operation: "find job")
            if row.rowCount == 1 { return row.int64(0, 0) }
            throw QueueError.noSuchJob("\"\(trimmed)\"")
        }
    }

    static let jobColumns = """
        id, name, state, priority, input_path, input_sha256, request_count, bad_line_count, created_at, started_at, finished_at
        """

    static func readJob(_ rows: PGResult, _ row: Int) -> JobInfo {
        JobInfo(id: rows.int64(row, 0), name: rows.string(row, 1),
                state: JobState(rawValue: rows.string(row, 2) ?? "") ?? .active,
                priority: rows.int(row, 3), inputPath: rows.string(row, 4) ?? "", inputSHA256: rows.string(row, 5) ?? "",
                createdAt: rows.double(row, 8), requestCount: rows.int(row, 6), badLineCount: rows.int(row, 7))
    }

    public func jobs() throws -> [JobInfo] {
        try withConnection { db in
            let rows = try db.execute("SELECT \(Self.jobColumns) FROM jobs ORDER BY id", operation: "list jobs")
            return (0..<rows.rowCount).map { Self.readJob(rows, $0) }
        }
    }

    /// Requests of `job` by state.
    func requestCounts(_ db: PGConnection, job: JobID) throws -> RequestCounts {
        let rows = try db.execute("SELECT state, count(*) FROM requests WHERE job_id = $1 GROUP BY state", [String(job)],
                                  operation: "count requests")
        var counts = RequestCounts()
        for row in 0..<rows.rowCount {
            let n = rows.int(row, 1)
            switch RequestState(rawValue: rows.string(row, 0) ?? "") {
            case .queued: counts.queued = n
            case .leased: counts.leased = n
            case .done: counts.done = n
            case .failed: counts.failed = n
            case .cancelled: counts.cancelled = n
            case nil: break
            }
        }
        return counts
    }

    public func status(job: JobID?) throws -> [JobStatus] {
        try withConnection { db in
            try db.readOnlyTransaction("read job status") {
                let now = try db.execute("SELECT sluice_now()", operation: "read the server's clock").double(0, 0)
                let rows = try db.execute("""
                    SELECT \(Self.jobColumns) FROM jobs WHERE state <> 'loading' AND ($1::bigint IS NULL OR id = $1) ORDER BY id
                    """, [job.map { String($0) }], operation: "read job status")
                if let job, rows.rowCount == 0 { throw QueueError.noSuchJob(String(job)) }
                return try (0..<rows.rowCount).map { row in
                    let info = Self.readJob(rows, row)
                    return try jobStatus(db, job: info, startedAt: rows.optionalDouble(row, 9),
                                         finishedAt: rows.optionalDouble(row, 10), now: now)
                }
            }
        }
    }

    private func jobStatus(_ db: PGConnection, job: JobInfo, startedAt: Double?, finishedAt: Double?,
                           now: Double) throws -> JobStatus {
        let counts = try requestCounts(db, job: job.id)
        let sums = try db.execute("""
            SELECT coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0) FROM results WHERE job_id = $1
            """, [String(job.id)], operation: "sum tokens")
        let promptTokens = sums.int(0, 0)
        let completionTokens = sums.int(0, 1)
        let workers = try workerStatuses(db, job: job.id, now: now)
        return .derived(job: job, counts: counts, promptTokens: promptTokens, completionTokens: completionTokens,
                        startedAt: startedAt, finishedAt: finishedAt, now: now, workers: workers)
    }

    private func workerStatuses(_ db: PGConnection, job: JobID?, now: Double) throws -> [WorkerStatus] {
        let rows = try db.execute("""
            SELECT * FROM (
                SELECT w.id, w.host, w.pid, w.description, w.started_at, w.heartbeat_at, w.stopped_at,
                       (SELECT count(*) FROM requests AS r
                        WHERE r.state = 'leased' AND r.lease_owner = w.id AND ($1::bigint IS NULL OR r.job_id = $1)) AS leases
                FROM workers AS w) AS listed
            WHERE leases > 0 OR (stopped_at IS NULL AND heartbeat_at > $2)
            ORDER BY heartbeat_at DESC, id
            """, [job.map { String($0) }, PG.number(now - 3600)], operation: "list workers")
        return (0..<rows.rowCount).map { row in
            WorkerStatus(id: rows.string(row, 0) ?? "", host: rows.string(row, 1) ?? "",
                         pid: Int32(truncatingIfNeeded: rows.int64(row, 2)), description: rows.string(row, 3) ?? "",
                         startedAt: rows.double(row, 4), lastHeartbeat: rows.double(row, 5),
                         stoppedAt: rows.optionalDouble(row, 6), leasesHeld: rows.int(row, 7))
        }
    }

    public func workers() throws -> [WorkerStatus] {
        try withConnection { db in
            let now = try db.execute("SELECT sluice_now()", operation: "read the server's clock").double(0, 0)
            return try workerStatuses(db, job: nil, now: now)
        }
    }

    @discardableResult
    public func cancel(job: JobID) throws -> CancelReport {
        try withConnection { db in
            try db.transaction("cancel job \(job)") {
                try requireVisibleJob(db, job, lock: true)
                try db.execute("UPDATE jobs SET state = 'cancelled' WHERE id = $1", [String(job)], operation: "cancel job")
                let rows = try db.execute("""
                    WITH cancelled AS (
                        UPDATE requests AS r SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL
                        FROM (SELECT id, state FROM requests WHERE job_id = $1 AND state IN ('queued', 'leased') FOR UPDATE) AS old
                        WHERE r.id = old.id
                        RETURNING old.state)
                    SELECT count(*), count(*) FILTER (WHERE state = 'leased') FROM cancelled
                    """, [String(job)], operation: "cancel requests")
                try db.execute("SELECT sluice_mark_finished($1, sluice_now())", [String(job)], operation: "cancel job")
                return CancelReport(cancelledRequests: rows.int(0, 0), wasLeased: rows.int(0, 1))
            }
        }
    }

    @discardableResult
    public func retry(job: JobID, failedOnly: Bool) throws -> RetryReport {
        try withConnection { db in
            try db.transaction("retry job \(job)") {
                try requireVisibleJob(db, job, lock: true)
                let skipped = try db.execute(
                    "SELECT count(*) FROM requests WHERE job_id = $1 AND state = 'failed' AND input_error IS NOT NULL",
                    [String(job)], operation: "retry job").int(0, 0)
                let states = failedOnly ? "('failed')" : "('failed', 'cancelled')"
                try db.execute("""
                    DELETE FROM results WHERE request_id IN (
                        SELECT id FROM requests WHERE job_id = $1 AND state IN \(states) AND input_error IS NULL)
                    """, [String(job)], operation: "retry job")
                let requeued = try db.execute("""
                    UPDATE requests
                    SET state = 'queued', failed_attempts = 0, not_before = 0, lease_owner = NULL, lease_expires_at = NULL,
                        lost_leases = 0
                    WHERE job_id = $1 AND state IN \(states) AND input_error IS NULL
                    """, [String(job)], operation: "retry job").affectedRows
                if requeued > 0 {
                    try db.execute("UPDATE jobs SET state = 'active', finished_at = NULL WHERE id = $1", [String(job)],
                                   operation: "retry job")
                }
                return RetryReport(requeued: requeued, skippedBadInput: skipped)
            }
        }
    }

    private func requireVisibleJob(_ db: PGConnection, _ job: JobID, lock: Bool) throws {
        let row = try db.execute("SELECT state FROM jobs WHERE id = $1\(lock ? " FOR UPDATE" : "")", [String(job)],
                                 operation: "find job")
        guard row.rowCount == 1, row.string(0, 0) != JobState.loading.rawValue else {
            throw QueueError.noSuchJob(String(job))
        }
    }

    public func progress(jobs: [JobID]) throws -> [JobProgress] {
        guard !jobs.isEmpty else { return [] }
        return try withConnection { db in
            try db.readOnlyTransaction("read job progress") {
                var result: [JobProgress] = []
                for job in Set(jobs).sorted() {
                    let select = try db.execute("SELECT name, state, bad_line_count FROM jobs WHERE id = $1 AND state <> 'loading'",
                                                [String(job)], operation: "read job progress")
                    guard select.rowCount == 1 else { continue }
                    let counts = try requestCounts(db, job: job)
                    let sums = try db.execute("""
                        SELECT coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), coalesce(sum(from_cache), 0)
                        FROM results WHERE job_id = $1
                        """, [String(job)], operation: "sum job tokens")
                    result.append(JobProgress(
                        job: job, name: select.string(0, 0), state: JobState(rawValue: select.string(0, 1) ?? "") ?? .active,
                        counts: counts, badLineCount: select.int(0, 2), promptTokens: sums.int(0, 0),
                        completionTokens: sums.int(0, 1), cacheHits: sums.int(0, 2)))
                }
                return result
            }
        }
    }

    public func jobsWithUnfinishedWork(job: JobID?) throws -> [JobID] {
        try withConnection { db in
            let rows = try db.execute("""
                SELECT id FROM jobs AS j
                WHERE state = 'active' AND ($1::bigint IS NULL OR id = $1)
                  AND EXISTS (SELECT 1 FROM requests WHERE job_id = j.id AND state IN ('queued', 'leased'))
                ORDER BY id
                """, [job.map { String($0) }], operation: "find jobs with unfinished work")
            return (0..<rows.rowCount).map { rows.int64($0, 0) }
        }
    }

    @discardableResult
    public func deleteFinishedJob(_ job: JobID) throws -> Bool {
        try withConnection { db in
            try db.transaction("delete job \(job)") {
                let check = try db.execute("""
                    SELECT state <> 'loading'
                           AND NOT EXISTS (SELECT 1 FROM requests WHERE job_id = $1 AND state IN ('queued', 'leased'))
                    FROM jobs WHERE id = $1 FOR UPDATE
                    """, [String(job)], operation: "delete job")
                guard check.rowCount == 1, check.bool(0, 0) else { return false }
                try deleteJob(db, job)
                return true
            }
        }
    }

    /// Deletes a job and everything of it (inside the caller's transaction).
    func deleteJob(_ db: PGConnection, _ job: JobID) throws {
        let range = RequestKey.range(of: job)
        try db.execute("DELETE FROM results WHERE job_id = $1", [String(job)], operation: "delete job")
        try db.execute("DELETE FROM requests WHERE id BETWEEN $1 AND $2",
                       [String(range.lowerBound), String(range.upperBound)], operation: "delete job")
        try db.execute("DELETE FROM jobs WHERE id = $1", [String(job)], operation: "delete job")
    }

    /// Deletes loading jobs whose creator is gone: a process on this host that no longer
    /// exists, or (any host) one that has not advanced the load for ten minutes.
    func removeAbandonedLoadingJobs() throws {
        let host = SystemInfo.hostName
        try withConnection { db in
            let rows = try db.execute("""
                SELECT id, creator_host, creator_pid, sluice_now() - coalesce(loading_heartbeat, 0) FROM jobs WHERE state = 'loading'
                """, operation: "find abandoned enqueues")
            for row in 0..<rows.rowCount {
                let pid = Int32(truncatingIfNeeded: rows.int64(row, 2))
                let creatorGone = rows.string(row, 1) == host && pid != getpid() && !SystemInfo.processExists(pid)
                guard creatorGone || rows.double(row, 3) > 600 else { continue }
                let job = rows.int64(row, 0)
                try db.transaction("remove abandoned enqueue of job \(job)") {
                    let still = try db.execute("SELECT 1 FROM jobs WHERE id = $1 AND state = 'loading' FOR UPDATE",
                                               [String(job)], operation: "remove abandoned enqueue")
                    if still.rowCount == 1 { try deleteJob(db, job) }
                }
            }
        }
    }
}

extension PGConnection {
    /// A read-only transaction that sees one snapshot (REPEATABLE READ).
    func readOnlyTransaction<T>(_ operation: String, _ body: () throws -> T) throws -> T {
        try execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", operation: operation)
        do {
            let value = try body()
            try execute("COMMIT", operation: operation)
            return value
        } catch {
            if !isBroken { _ = try? execute("ROLLBACK", operation: operation) }
            throw error
        }
    }
}
