import Foundation
import SluiceCore

extension SQLiteStore {
    /// The job a user means by `reference`: a numeric id, or a job name.
    /// - Throws: `QueueError.noSuchJob`.
    public func resolveJob(_ reference: String) throws -> JobID {
        let trimmed = reference.trimmingCharacters(in: .whitespaces)
        return try withConnection { db in
            if let id = JobID(trimmed) {
                let statement = try db.cached("SELECT id FROM jobs WHERE id = ?1 AND state <> 'loading'", operation: "find job")
                defer { statement.reset() }
                statement.bind(1, id)
                if try statement.step() { return id }
                throw QueueError.noSuchJob(trimmed)
            }
            let statement = try db.cached("SELECT id FROM jobs WHERE name = ?1 AND state <> 'loading'", operation: "find job")
            defer { statement.reset() }
            statement.bind(1, trimmed)
            if try statement.step() { return statement.int64(0) }
            throw QueueError.noSuchJob("\"\(trimmed)\"")
        }
    }

    static let jobColumns = """
        id, name, state, priority, input_path, input_sha256, request_count, bad_line_count, created_at, started_at, finished_at
        """

    static func readJob(_ statement: Statement) -> JobInfo {
        JobInfo(id: statement.int64(0), name: statement.text(1),
                state: JobState(rawValue: statement.text(2) ?? "") ?? .active,
                priority: statement.int(3), inputPath: statement.text(4) ?? "", inputSHA256: statement.text(5) ?? "",
                createdAt: statement.double(8), requestCount: statement.int(6), badLineCount: statement.int(7))
    }

    /// All jobs, oldest first (loading ones included, with state `.loading`).
    public func jobs() throws -> [JobInfo] {
        try withConnection { db in
            let statement = try db.cached("SELECT \(Self.jobColumns) FROM jobs ORDER BY id", operation: "list jobs")
            defer { statement.reset() }
            var jobs: [JobInfo] = []
            while try statement.step() { jobs.append(Self.readJob(statement)) }
            return jobs
        }
    }

    /// Progress of one job, or of every job that is not loading when `job` is nil (oldest first).
    /// - Throws: `QueueError.noSuchJob` when `job` does not exist.
    public func status(job: JobID?) throws -> [JobStatus] {
        let now = clock()
        return try withConnection { db in
            try db.readTransaction("read job status") {
                let select = try db.cached("""
                    SELECT \(Self.jobColumns) FROM jobs
                    WHERE state <> 'loading' AND (?1 IS NULL OR id = ?1) ORDER BY id
                    """, operation: "read job status")
                select.bind(1, job)
                var rows: [(info: JobInfo, startedAt: Double?, finishedAt: Double?)] = []
                while try select.step() {
                    rows.append((Self.readJob(select), select.optionalDouble(9), select.optionalDouble(10)))
                }
                select.reset()
                if let job, rows.isEmpty { throw QueueError.noSuchJob(String(job)) }
                return try rows.map { row in
                    try jobStatus(db, job: row.info, startedAt: row.startedAt, finishedAt: row.finishedAt, now: now)
                }
            }
        }
    }

    /// The job's requests by state.
    func requestCounts(_ db: SQLiteConnection, job: JobID) throws -> RequestCounts {
        let countStates = try db.cached("SELECT state, count(*) FROM requests WHERE job_id = ?1 GROUP BY state",
                                        operation: "count requests")
        defer { countStates.reset() }
        countStates.bind(1, job)
        var counts = RequestCounts()
        while try countStates.step() {
            let n = countStates.int(1)
            switch RequestState(rawValue: countStates.text(0) ?? "") {
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

    private func jobStatus(_ db: SQLiteConnection, job: JobInfo, startedAt: Double?, finishedAt: Double?,
                           now: Double) throws -> JobStatus {
        let counts = try requestCounts(db, job: job.id)

        let sumTokens = try db.cached("""
            SELECT coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0) FROM results WHERE job_id = ?1
            """, operation: "sum tokens")
        sumTokens.bind(1, job.id)
        _ = try sumTokens.step()
        let promptTokens = sumTokens.int(0)
        let completionTokens = sumTokens.int(1)
        sumTokens.reset()

        let workers = try workerStatuses(db, job: job.id, now: now)
        return .derived(job: job, counts: counts, promptTokens: promptTokens, completionTokens: completionTokens,
                        startedAt: startedAt, finishedAt: finishedAt, now: now, workers: workers)
    }

    /// Workers seen recently (running, heartbeat within the last hour) or holding leases;
    /// leases counted in `job`, or in all jobs when nil.
    private func workerStatuses(_ db: SQLiteConnection, job: JobID?, now: Double) throws -> [WorkerStatus] {
        let statement = try db.cached("""
            SELECT * FROM (
                SELECT w.id, w.host, w.pid, w.description, w.started_at, w.heartbeat_at, w.stopped_at,
                       (SELECT count(*) FROM requests AS r
                        WHERE r.state = 'leased' AND r.lease_owner = w.id AND (?1 IS NULL OR r.job_id = ?1)) AS leases
                FROM workers AS w)
            WHERE leases > 0 OR (stopped_at IS NULL AND heartbeat_at > ?2)
            ORDER BY heartbeat_at DESC, id
            """, operation: "list workers")
        defer { statement.reset() }
        statement.bind(1, job)
        statement.bind(2, now - 3600)
        var workers: [WorkerStatus] = []
        while try statement.step() {
            workers.append(WorkerStatus(
                id: statement.text(0) ?? "", host: statement.text(1) ?? "", pid: Int32(truncatingIfNeeded: statement.int64(2)),
                description: statement.text(3) ?? "", startedAt: statement.double(4), lastHeartbeat: statement.double(5),
                stoppedAt: statement.optionalDouble(6), leasesHeld: statement.int(7)))
        }
        return workers
    }

    /// Registered workers seen in the last hour or holding leases, most recent heartbeat first;
    /// `leasesHeld` counts leases in all jobs.
    public func workers() throws -> [WorkerStatus] {
        let now = clock()
        return try withConnection { db in try workerStatuses(db, job: nil, now: now) }
    }

    /// Cancels the job: its queued and leased requests become cancelled, and workers holding
    /// leases on them lose them (their commits are dropped).
    @discardableResult
    public func cancel(job: JobID) throws -> CancelReport {
        let now = clock()
        return try withConnection { db in
            try db.writeTransaction("cancel job \(job)") {
                try requireVisibleJob(db, job)
                let setState = try db.cached("UPDATE jobs SET state = 'cancelled' WHERE id = ?1", operation: "cancel job")
                setState.bind(1, job)
                try setState.run()
                let leased = try db.cached("SELECT count(*) FROM requests WHERE job_id = ?1 AND state = 'leased'",
                                           operation: "cancel job")
                leased.bind(1, job)
                _ = try leased.step()
                let wasLeased = leased.int(0)
                leased.reset()
                let cancelRequests = try db.cached("""
                    UPDATE requests SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL
                    WHERE job_id = ?1 AND state IN ('queued', 'leased')
                    """, operation: "cancel requests")
                cancelRequests.bind(1, job)
                try cancelRequests.run()
                let cancelled = db.changes
                try markFinishedIfDone(db, job: job, now: now)
                return CancelReport(cancelledRequests: cancelled, wasLeased: wasLeased)
            }
        }
    }

    /// Puts failed requests back in the queue with their failure count reset. With
    /// `failedOnly == false`, cancelled requests are requeued too. A cancelled job with
    /// requeued requests becomes active again. Bad input lines stay failed: they can never succeed.
    @discardableResult
    public func retry(job: JobID, failedOnly: Bool = true) throws -> RetryReport {
        try withConnection { db in
            try db.writeTransaction("retry job \(job)") {
                try requireVisibleJob(db, job)
                let countBad = try db.cached(
                    "SELECT count(*) FROM requests WHERE job_id = ?1 AND state = 'failed' AND input_error IS NOT NULL",
                    operation: "retry job")
                countBad.bind(1, job)
                _ = try countBad.step()
                let skipped = countBad.int(0)
                countBad.reset()

                let states = failedOnly ? "('failed')" : "('failed', 'cancelled')"
                let deleteResults = try db.cached("""
                    DELETE FROM results WHERE request_id IN (
                        SELECT id FROM requests WHERE job_id = ?1 AND state IN \(states) AND input_error IS NULL)
                    """, operation: "retry job")
                deleteResults.bind(1, job)
                try deleteResults.run()
                let requeue = try db.cached("""
                    UPDATE requests
                    SET state = 'queued', failed_attempts = 0, not_before = 0, lease_owner = NULL, lease_expires_at = NULL,
                        lost_leases = 0
                    WHERE job_id = ?1 AND state IN \(states) AND input_error IS NULL
                    """, operation: "retry job")
                requeue.bind(1, job)
                try requeue.run()
                let requeued = db.changes
                if requeued > 0 {
                    let reopen = try db.cached(
                        "UPDATE jobs SET state = 'active', finished_at = NULL WHERE id = ?1", operation: "retry job")
                    reopen.bind(1, job)
                    try reopen.run()
                }
                return RetryReport(requeued: requeued, skippedBadInput: skipped)
            }
        }
    }

    private func requireVisibleJob(_ db: SQLiteConnection, _ job: JobID) throws {
        let statement = try db.cached("SELECT state FROM jobs WHERE id = ?1", operation: "find job")
        defer { statement.reset() }
        statement.bind(1, job)
        guard try statement.step(), statement.text(0) != JobState.loading.rawValue else {
            throw QueueError.noSuchJob(String(job))
        }
    }

    // MARK: Leftovers of crashed enqueues

    /// Deletes loading jobs whose creator is gone: a process on this host that no longer
    /// exists, or (any host) one that has not advanced the load for ten minutes.
    func removeAbandonedLoadingJobs() throws {
        let now = clock()
        let host = SystemInfo.hostName
        let candidates: [JobID] = try withConnection { db in
            let statement = try db.cached(
                "SELECT id, creator_host, creator_pid, loading_heartbeat FROM jobs WHERE state = 'loading'",
                operation: "find abandoned enqueues")
            defer { statement.reset() }
            var dead: [JobID] = []
            while try statement.step() {
                let creatorHost = statement.text(1) ?? ""
                let pid = Int32(truncatingIfNeeded: statement.int64(2))
                let heartbeat = statement.optionalDouble(3) ?? 0
                let creatorGone = creatorHost == host && pid != getpid() && !SystemInfo.processExists(pid)
                if creatorGone || now - heartbeat > 600 { dead.append(statement.int64(0)) }
            }
            return dead
        }
        for job in candidates {
            try withConnection { db in
                try db.writeTransaction("remove abandoned enqueue of job \(job)") {
                    try deleteJob(db, job, onlyIfLoading: true)
                }
            }
        }
    }

    /// Deletes a job and everything of it (inside the caller's transaction).
    func deleteJob(_ db: SQLiteConnection, _ job: JobID, onlyIfLoading: Bool) throws {
        if onlyIfLoading {
            let check = try db.cached("SELECT state FROM jobs WHERE id = ?1", operation: "delete job")
            defer { check.reset() }
            check.bind(1, job)
            guard try check.step(), check.text(0) == JobState.loading.rawValue else { return }
        }
        let range = RequestKey.range(of: job)
        let deleteResults = try db.cached("DELETE FROM results WHERE job_id = ?1", operation: "delete job")
        deleteResults.bind(1, job)
        try deleteResults.run()
        let deleteRequests = try db.cached("DELETE FROM requests WHERE id BETWEEN ?1 AND ?2", operation: "delete job")
        deleteRequests.bind(1, range.lowerBound)
        deleteRequests.bind(2, range.upperBound)
        try deleteRequests.run()
        let deleteJob = try db.cached("DELETE FROM jobs WHERE id = ?1", operation: "delete job")
        deleteJob.bind(1, job)
        try deleteJob.run()
    }
}

/// Facts about this process and machine, read without name lookups.
enum SystemInfo {
    static let hostName: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }()

    /// Whether a process with this id exists on this machine (EPERM still means it exists).
    static func processExists(_ pid: Int32) -> Bool {
        guard pid > 0 else { return false }
        if kill(pid, 0) == 0 { return true }
        return errno == EPERM
    }
}
