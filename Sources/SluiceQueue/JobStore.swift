import Foundation
import SluiceCore

/// Everything the CLI, the scheduler and servers do with a queue beside working it: enqueue,
/// status, export, cancel, retry, reports, the result cache and retention. `SQLiteStore`
/// (one machine) and `PostgresStore` (a fleet) implement it with the same semantics; the
/// conformance suite in SluiceQueueTests runs against both.
public protocol JobStore: ResultCacheStore {
    /// Where the queue lives, for messages: a file path or a URL without its password.
    var location: String { get }
    /// Streams an OpenAI Batch input file into a new job (see `SQLiteStore.enqueue`).
    func enqueue(file path: String, options: EnqueueOptions) throws -> EnqueueReport
    /// Writes the job's results in the OpenAI Batch output format, in input order.
    func export(job: JobID, to outputPath: String, errors errorsPath: String?) throws -> ExportReport
    /// The job a user means by `reference`: a numeric id, or a job name.
    func resolveJob(_ reference: String) throws -> JobID
    /// All jobs, oldest first.
    func jobs() throws -> [JobInfo]
    /// Progress of one job, or of every job that is not loading.
    func status(job: JobID?) throws -> [JobStatus]
    /// Registered workers seen in the last hour or holding leases.
    func workers() throws -> [WorkerStatus]
    /// Cancels the job's queued and leased requests.
    @discardableResult
    func cancel(job: JobID) throws -> CancelReport
    /// Puts failed (and, with `failedOnly == false`, cancelled) requests back in the queue.
    @discardableResult
    func retry(job: JobID, failedOnly: Bool) throws -> RetryReport
    /// Progress counts of the given jobs, read in one snapshot.
    func progress(jobs: [JobID]) throws -> [JobProgress]
    /// Jobs that have queued or leased requests (of `job` only, when given).
    func jobsWithUnfinishedWork(job: JobID?) throws -> [JobID]
    /// The data of a job report.
    func reportData(job: JobID) throws -> JobReportData
    /// Results of `job` (or of every job) answered from the result cache.
    func cacheHitCounts(job: JobID?) throws -> CacheHitCounts
    /// How many entries the result cache holds.
    func resultCacheSize() throws -> Int
    /// Deletes a finished job and everything of it; false when it still has work or does not exist.
    @discardableResult
    func deleteFinishedJob(_ job: JobID) throws -> Bool
}

/// How `enqueue` reads a file.
public struct EnqueueOptions: Sendable {
    public var name: String?
    public var priority: Int = 0
    /// Any bad line rejects the whole file.
    public var strict = false
    /// Enqueue even if the same bytes were enqueued before.
    public var allowDuplicate = false
    public var maxLineBytes = SQLiteStore.defaultMaxLineBytes
    /// An object merged under each good line's body (the body's own keys win).
    public var bodyDefaults: JSON?

    public init(name: String? = nil, priority: Int = 0, strict: Bool = false, allowDuplicate: Bool = false,
                maxLineBytes: Int = SQLiteStore.defaultMaxLineBytes, bodyDefaults: JSON? = nil) {
        self.name = name
        self.priority = priority
        self.strict = strict
        self.allowDuplicate = allowDuplicate
        self.maxLineBytes = maxLineBytes
        self.bodyDefaults = bodyDefaults
    }
}

extension JobStore {
    public func enqueue(file path: String, name: String? = nil, priority: Int = 0, strict: Bool = false,
                        allowDuplicate: Bool = false, maxLineBytes: Int = SQLiteStore.defaultMaxLineBytes,
                        bodyDefaults: JSON? = nil) throws -> EnqueueReport {
        try enqueue(file: path, options: EnqueueOptions(name: name, priority: priority, strict: strict,
                                                        allowDuplicate: allowDuplicate, maxLineBytes: maxLineBytes,
                                                        bodyDefaults: bodyDefaults))
    }

    public func export(job: JobID, to outputPath: String) throws -> ExportReport {
        try export(job: job, to: outputPath, errors: nil)
    }

    @discardableResult
    public func retry(job: JobID) throws -> RetryReport { try retry(job: job, failedOnly: true) }

    public func jobsWithUnfinishedWork() throws -> [JobID] { try jobsWithUnfinishedWork(job: nil) }
}

extension SQLiteStore: JobStore {
    public var location: String { path }

    public func enqueue(file path: String, options: EnqueueOptions) throws -> EnqueueReport {
        try enqueue(file: path, name: options.name, priority: options.priority, strict: options.strict,
                    allowDuplicate: options.allowDuplicate, maxLineBytes: options.maxLineBytes,
                    bodyDefaults: options.bodyDefaults)
    }
}

/// Opens the queue named by `location`: a `postgresql://` or `postgres://` URL opens the
/// PostgreSQL store; anything else is a SQLite file path. Both bring their schema up to date.
public func openStore(_ location: String) throws -> any JobStore {
    if isPostgresURL(location) { return try PostgresStore(url: location) }
    return try SQLiteStore(path: location)
}
