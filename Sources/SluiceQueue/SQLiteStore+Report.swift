import SluiceCore

/// One finished request of a job, as a report needs it.
public struct ReportResult: Sendable, Equatable {
    /// When the lease that produced the result was claimed (nil for bad input lines and rows
    /// written before the store recorded claim times).
    public var claimedAt: Double?
    /// When the request was first claimed (earlier than `claimedAt` after a preemption).
    public var firstClaimedAt: Double?
    /// When the result was committed.
    public var finishedAt: Double
    /// 200 for success; another code for a final non-200 answer; nil for failures.
    public var statusCode: Int?
    public var promptTokens: Int
    public var completionTokens: Int
    public var fromCache: Bool
    /// Leases of the request that ended without an outcome before this one.
    public var preemptions: Int
    /// The host of the worker that wrote the result (nil for bad input lines).
    public var host: String?

    public init(claimedAt: Double?, firstClaimedAt: Double?, finishedAt: Double, statusCode: Int?, promptTokens: Int,
                completionTokens: Int, fromCache: Bool, preemptions: Int, host: String?) {
        self.claimedAt = claimedAt
        self.firstClaimedAt = firstClaimedAt
        self.finishedAt = finishedAt
        self.statusCode = statusCode
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.fromCache = fromCache
        self.preemptions = preemptions
        self.host = host
    }

    /// Seconds from the claim to the result, when the claim time is known.
    public var latency: Double? { claimedAt.map { max(0, finishedAt - $0) } }
}

/// Requests that did not succeed, grouped by what went wrong.
public struct FailureGroup: Sendable, Equatable {
    /// The error code (`not_json`, `timeout`, …), or `http_<status>` for a final non-200 answer.
    public var code: String
    /// The message (for a non-200 answer, the body's `error.message` when it has one), shortened.
    public var message: String
    public var count: Int
    /// Whether these were input lines rejected at enqueue.
    public var badInput: Bool

    public init(code: String, message: String, count: Int, badInput: Bool) {
        self.code = code
        self.message = message
        self.count = count
        self.badInput = badInput
    }
}

/// Everything `sluice report` shows about one job, read in one transaction.
public struct JobReportData: Sendable {
    public var job: JobInfo
    public var counts: RequestCounts
    public var startedAt: Double?
    public var finishedAt: Double?
    /// Finished requests in finish order.
    public var results: [ReportResult]
    /// Largest groups first, at most `SQLiteStore.maxFailureGroups`.
    public var failures: [FailureGroup]
    /// Requests not finished yet that already survived a preemption (still queued or leased).
    public var unfinishedPreempted: Int

    public init(job: JobInfo, counts: RequestCounts, startedAt: Double?, finishedAt: Double?, results: [ReportResult],
                failures: [FailureGroup], unfinishedPreempted: Int) {
        self.job = job
        self.counts = counts
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.results = results
        self.failures = failures
        self.unfinishedPreempted = unfinishedPreempted
    }
}

extension SQLiteStore {
    /// How many failure groups a report lists (the rest are summed into one "other" line by the caller).
    public static let maxFailureGroups = 40
    /// Failure messages are grouped on (and shortened to) this many characters.
    public static let failureMessageLength = 160

    /// The data of a job report.
    /// - Throws: `QueueError.noSuchJob`.
    public func reportData(job: JobID) throws -> JobReportData {
        try withConnection { db in
            try db.readTransaction("read job report") {
                let select = try db.cached("SELECT \(Self.jobColumns) FROM jobs WHERE id = ?1 AND state <> 'loading'",
                                           operation: "read job report")
                select.bind(1, job)
                guard try select.step() else { select.reset(); throw QueueError.noSuchJob(String(job)) }
                let info = Self.readJob(select)
                let startedAt = select.optionalDouble(9), finishedAt = select.optionalDouble(10)
                select.reset()

                var counts = RequestCounts()
                var unfinishedPreempted = 0
                let countStates = try db.prepare(
                    "SELECT state, count(*), sum(preemptions > 0 OR interrupted <> 0) FROM requests WHERE job_id = ?1 GROUP BY state",
                    operation: "count requests")
                countStates.bind(1, job)
                while try countStates.step() {
                    let n = countStates.int(1)
                    switch RequestState(rawValue: countStates.text(0) ?? "") {
                    case .queued: counts.queued = n; unfinishedPreempted += countStates.int(2)
                    case .leased: counts.leased = n; unfinishedPreempted += countStates.int(2)
                    case .done: counts.done = n
                    case .failed: counts.failed = n
                    case .cancelled: counts.cancelled = n
                    case nil: break
                    }
                }

                let rows = try db.prepare("""
                    SELECT r.claimed_at, r.first_claimed_at, res.finished_at, res.status_code, res.prompt_tokens,
                           res.completion_tokens, res.from_cache, r.preemptions, w.host
                    FROM results AS res JOIN requests AS r ON r.id = res.request_id
                    LEFT JOIN workers AS w ON w.id = res.worker_id
                    WHERE res.job_id = ?1
                    ORDER BY res.finished_at, res.request_id
                    """, operation: "read job results")
                rows.bind(1, job)
                var results: [ReportResult] = []
                while try rows.step() {
                    results.append(ReportResult(
                        claimedAt: rows.optionalDouble(0), firstClaimedAt: rows.optionalDouble(1), finishedAt: rows.double(2),
                        statusCode: rows.optionalInt(3), promptTokens: rows.int(4), completionTokens: rows.int(5),
                        fromCache: rows.int(6) != 0, preemptions: rows.int(7), host: rows.text(8)))
                }

                // The body of a non-200 answer is the server's JSON; its error.message says what was wrong.
                let groups = try db.prepare("""
                    SELECT code, message, count(*), bad FROM (
                        SELECT coalesce(res.error_code, 'http_' || res.status_code) AS code,
                               substr(coalesce(res.error_message,
                                               CASE WHEN json_valid(res.body) THEN json_extract(res.body, '$.error.message') END,
                                               ''), 1, ?2) AS message,
                               r.input_error IS NOT NULL AS bad
                        FROM results AS res JOIN requests AS r ON r.id = res.request_id
                        WHERE res.job_id = ?1 AND (res.status_code IS NULL OR res.status_code <> 200))
                    GROUP BY code, message, bad ORDER BY count(*) DESC, code, message LIMIT ?3
                    """, operation: "group job failures")
                groups.bind(1, job)
                groups.bind(2, Self.failureMessageLength)
                groups.bind(3, Self.maxFailureGroups)
                var failures: [FailureGroup] = []
                while try groups.step() {
                    failures.append(FailureGroup(code: groups.text(0) ?? "unknown", message: groups.text(1) ?? "",
                                                 count: groups.int(2), badInput: groups.int(3) != 0))
                }
                return JobReportData(job: info, counts: counts, startedAt: startedAt, finishedAt: finishedAt,
                                     results: results, failures: failures, unfinishedPreempted: unfinishedPreempted)
            }
        }
    }
}
