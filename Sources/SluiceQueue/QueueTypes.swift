import SluiceCore

/// The lifecycle of a job as stored. Whether an `active` job is finished is
/// derived from its requests (see `JobStatus.isFinished`).
public enum JobState: String, Sendable, CaseIterable {
    /// Being enqueued: invisible to claims. A loading job whose creator died is
    /// deleted the next time the database is opened.
    case loading
    /// Workers may claim its queued requests.
    case active
    /// Cancelled: no request of it will be claimed again.
    case cancelled
}

/// The state of one request.
public enum RequestState: String, Sendable, CaseIterable {
    case queued, leased, done, failed, cancelled
}

/// A job as listed by `SQLiteStore.jobs()`.
public struct JobInfo: Sendable, Equatable {
    public var id: JobID
    public var name: String?
    public var state: JobState
    public var priority: Int
    /// The path the input was read from, as given to `enqueue`.
    public var inputPath: String
    /// Lower-case hex SHA-256 of the input file's bytes.
    public var inputSHA256: String
    /// Seconds since the Unix epoch.
    public var createdAt: Double
    /// Non-blank input lines (good and bad).
    public var requestCount: Int
    /// Lines that failed validation; they are `failed` requests that can never succeed.
    public var badLineCount: Int

    public init(id: JobID, name: String?, state: JobState, priority: Int, inputPath: String, inputSHA256: String,
                createdAt: Double, requestCount: Int, badLineCount: Int) {
        self.id = id
        self.name = name
        self.state = state
        self.priority = priority
        self.inputPath = inputPath
        self.inputSHA256 = inputSHA256
        self.createdAt = createdAt
        self.requestCount = requestCount
        self.badLineCount = badLineCount
    }
}

/// How many requests of a job are in each state.
public struct RequestCounts: Sendable, Equatable {
    public var queued = 0
    public var leased = 0
    public var done = 0
    public var failed = 0
    public var cancelled = 0

    public init(queued: Int = 0, leased: Int = 0, done: Int = 0, failed: Int = 0, cancelled: Int = 0) {
        self.queued = queued
        self.leased = leased
        self.done = done
        self.failed = failed
        self.cancelled = cancelled
    }

    public var total: Int { queued + leased + done + failed + cancelled }
    /// Requests that still need work.
    public var unfinished: Int { queued + leased }
    /// Requests with a final outcome.
    public var finished: Int { done + failed }
}

/// A worker as seen by `status`.
public struct WorkerStatus: Sendable, Equatable {
    public var id: WorkerID
    public var host: String
    public var pid: Int32
    public var description: String
    /// Seconds since the Unix epoch.
    public var startedAt: Double
    public var lastHeartbeat: Double
    /// Set once the worker unregistered (stopped cleanly).
    public var stoppedAt: Double?
    /// Leases the worker holds now (in the job asked about, or in all jobs).
    public var leasesHeld: Int

    public init(id: WorkerID, host: String, pid: Int32, description: String, startedAt: Double, lastHeartbeat: Double,
                stoppedAt: Double?, leasesHeld: Int) {
        self.id = id
        self.host = host
        self.pid = pid
        self.description = description
        self.startedAt = startedAt
        self.lastHeartbeat = lastHeartbeat
        self.stoppedAt = stoppedAt
        self.leasesHeld = leasesHeld
    }
}

/// Progress of one job.
public struct JobStatus: Sendable, Equatable {
    public var job: JobInfo
    public var counts: RequestCounts
    /// Sums of `usage` over the job's results.
    public var promptTokens: Int
    public var completionTokens: Int
    /// When the first request was claimed (seconds since the Unix epoch), if any was.
    public var startedAt: Double?
    /// When the last request got its outcome, once none is queued or leased.
    public var finishedAt: Double?
    /// Working time: from the first claim to the finish (or to now while unfinished).
    public var elapsedSeconds: Double
    /// Finished requests per second of working time.
    public var requestsPerSecond: Double
    /// Completion tokens per second of working time.
    public var completionTokensPerSecond: Double
    /// Estimated seconds until no request is unfinished, at the current rate; nil when unknown.
    public var etaSeconds: Double?
    /// Workers that hold leases in this job or are registered and not stopped.
    public var workers: [WorkerStatus]

    public init(job: JobInfo, counts: RequestCounts, promptTokens: Int, completionTokens: Int, startedAt: Double?,
                finishedAt: Double?, elapsedSeconds: Double, requestsPerSecond: Double,
                completionTokensPerSecond: Double, etaSeconds: Double?, workers: [WorkerStatus]) {
        self.job = job
        self.counts = counts
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.elapsedSeconds = elapsedSeconds
        self.requestsPerSecond = requestsPerSecond
        self.completionTokensPerSecond = completionTokensPerSecond
        self.etaSeconds = etaSeconds
        self.workers = workers
    }

    /// Nothing is queued or leased (and the job is not still loading).
    public var isFinished: Bool { job.state != .loading && counts.unfinished == 0 }

    /// A job's status from what a store read: the working time, the rates and the ETA are derived
    /// here, the same way for every store.
    static func derived(job: JobInfo, counts: RequestCounts, promptTokens: Int, completionTokens: Int,
                        startedAt: Double?, finishedAt: Double?, now: Double, workers: [WorkerStatus]) -> JobStatus {
        let finished = counts.unfinished == 0 ? finishedAt : nil
        let elapsed = startedAt.map { max(0, (finished ?? now) - $0) } ?? 0
        // Bad input lines are failed from the start: they are not work done.
        let processed = max(0, counts.finished - job.badLineCount)
        let requestRate = elapsed > 0 ? Double(processed) / elapsed : 0
        let tokenRate = elapsed > 0 ? Double(completionTokens) / elapsed : 0
        let eta: Double?
        if counts.unfinished == 0 {
            eta = 0
        } else if job.state == .cancelled {
            eta = nil
        } else {
            eta = requestRate > 0 ? Double(counts.unfinished) / requestRate : nil
        }
        return JobStatus(job: job, counts: counts, promptTokens: promptTokens, completionTokens: completionTokens,
                         startedAt: startedAt, finishedAt: finished, elapsedSeconds: elapsed,
                         requestsPerSecond: requestRate, completionTokensPerSecond: tokenRate, etaSeconds: eta,
                         workers: workers)
    }
}

/// Why an input line was rejected.
public enum BadLineReason: String, Sendable, CaseIterable {
    case notJSON = "not_json"
    case invalidUTF8 = "invalid_utf8"
    case notObject = "not_object"
    case lineTooLong = "line_too_long"
    case missingCustomID = "missing_custom_id"
    case emptyCustomID = "empty_custom_id"
    case customIDNotString = "custom_id_not_string"
    case duplicateCustomID = "duplicate_custom_id"
    case missingMethod = "missing_method"
    case unsupportedMethod = "unsupported_method"
    case missingURL = "missing_url"
    case unsupportedURL = "unsupported_url"
    case missingBody = "missing_body"
    case bodyNotObject = "body_not_object"
    case unknownField = "unknown_field"
    case duplicateField = "duplicate_field"
}

/// One rejected input line.
public struct BadLine: Sendable, Equatable, CustomStringConvertible {
    /// 1-based physical line number in the file (blank lines count).
    public var lineNumber: Int
    /// The line's `custom_id` when one could be read.
    public var customID: String?
    public var reason: BadLineReason
    /// A human sentence, e.g. `unknown field "foo"` or `not JSON: invalid JSON at byte 3: …`.
    public var message: String

    public init(lineNumber: Int, customID: String?, reason: BadLineReason, message: String) {
        self.lineNumber = lineNumber
        self.customID = customID
        self.reason = reason
        self.message = message
    }

    public var description: String { "line \(lineNumber): \(message)" }
}

/// What `enqueue` did.
public struct EnqueueReport: Sendable, Equatable {
    /// The new job; nil when `strict` rejected the file (then nothing was created).
    public var jobID: JobID?
    public var name: String?
    /// Lower-case hex SHA-256 of the file's bytes.
    public var sha256: String
    public var bytesRead: Int
    /// Non-blank lines seen.
    public var lines: Int
    public var blankLines: Int
    /// Lines that became queued requests.
    public var accepted: Int
    /// Number of bad lines (all of them, even past `badLines`' cap).
    public var badLineCount: Int
    /// The first bad lines, in file order (at most `SQLiteStore.maxReportedBadLines`;
    /// all of them are in the database as failed requests unless the file was rejected).
    public var badLines: [BadLine]
    /// `strict` was set and at least one line was bad: no job was created.
    public var rejected: Bool
    /// Wall time of the enqueue in seconds.
    public var seconds: Double

    public init(jobID: JobID?, name: String?, sha256: String, bytesRead: Int, lines: Int, blankLines: Int, accepted: Int,
                badLineCount: Int, badLines: [BadLine], rejected: Bool, seconds: Double) {
        self.jobID = jobID
        self.name = name
        self.sha256 = sha256
        self.bytesRead = bytesRead
        self.lines = lines
        self.blankLines = blankLines
        self.accepted = accepted
        self.badLineCount = badLineCount
        self.badLines = badLines
        self.rejected = rejected
        self.seconds = seconds
    }
}

/// What `export` wrote.
public struct ExportReport: Sendable, Equatable {
    /// Lines in the output file (every request with a final outcome or cancelled).
    public var written: Int
    /// 200 responses.
    public var succeeded: Int
    /// Failures and non-200 responses (these also went to the errors file, if one was given).
    public var errors: Int
    /// Cancelled requests (written with error code `cancelled`).
    public var cancelled: Int
    /// Requests still queued or leased: not written.
    public var unfinished: Int

    public init(written: Int, succeeded: Int, errors: Int, cancelled: Int, unfinished: Int) {
        self.written = written
        self.succeeded = succeeded
        self.errors = errors
        self.cancelled = cancelled
        self.unfinished = unfinished
    }
}

/// What `cancel` did.
public struct CancelReport: Sendable, Equatable {
    /// Queued or leased requests that became cancelled (leased ones' workers lose their leases).
    public var cancelledRequests: Int
    /// Of those, how many were leased by a worker at the time.
    public var wasLeased: Int

    public init(cancelledRequests: Int, wasLeased: Int) {
        self.cancelledRequests = cancelledRequests
        self.wasLeased = wasLeased
    }
}

/// What `retry` did.
public struct RetryReport: Sendable, Equatable {
    /// Requests put back in the queue (failure count reset, old result deleted).
    public var requeued: Int
    /// Failed requests that were bad input lines: they can never succeed and were left failed.
    public var skippedBadInput: Int

    public init(requeued: Int, skippedBadInput: Int) {
        self.requeued = requeued
        self.skippedBadInput = skippedBadInput
    }
}
