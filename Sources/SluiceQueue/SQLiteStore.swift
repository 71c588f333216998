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
        throw QueueError.notImplemented("SQLiteStore")
    }

    // MARK: QueueStore

    public func registerWorker(host: String, pid: Int32, description: String) throws -> WorkerID {
        throw QueueError.notImplemented("registerWorker")
    }

    public func heartbeat(worker: WorkerID, leaseSeconds: Double) throws {
        throw QueueError.notImplemented("heartbeat")
    }

    public func claim(worker: WorkerID, job: JobID?, limit: Int, leaseSeconds: Double) throws -> [ClaimedRequest] {
        throw QueueError.notImplemented("claim")
    }

    @discardableResult
    public func commit(_ batch: CommitBatch, worker: WorkerID) throws -> CommitReport {
        throw QueueError.notImplemented("commit")
    }

    public func unregisterWorker(_ worker: WorkerID) throws {
        throw QueueError.notImplemented("unregisterWorker")
    }

    public func hasUnfinishedWork(job: JobID?) throws -> Bool {
        throw QueueError.notImplemented("hasUnfinishedWork")
    }

    // MARK: Jobs

    /// Streams the OpenAI Batch input file at `path` into a new job, validating every line.
    ///
    /// Good lines become queued requests; bad lines become failed requests (line number,
    /// custom_id if readable, reason) that appear in the errors export. With `strict`, any bad
    /// line rejects the whole file: nothing is created and the report has `rejected == true`.
    /// Memory stays constant whatever the file size. The job is invisible to claims until
    /// the whole file is in; a crash part-way leaves nothing visible.
    /// - Throws: `QueueError.emptyInput`, `.duplicateInput` (same content enqueued before,
    ///   unless `allowDuplicate`), `.duplicateJobName`, `.invalidJobName`, `.cannotReadInput`, database errors.
    public func enqueue(file path: String, name: String? = nil, priority: Int = 0, strict: Bool = false,
                        allowDuplicate: Bool = false,
                        maxLineBytes: Int = SQLiteStore.defaultMaxLineBytes) throws -> EnqueueReport {
        throw QueueError.notImplemented("enqueue")
    }

    /// The job a user means by `reference`: a numeric id, or a job name.
    /// - Throws: `QueueError.noSuchJob`.
    public func resolveJob(_ reference: String) throws -> JobID {
        throw QueueError.notImplemented("resolveJob")
    }

    /// All jobs, oldest first (loading ones included, with state `.loading`).
    public func jobs() throws -> [JobInfo] {
        throw QueueError.notImplemented("jobs")
    }

    /// Progress of one job, or of every job that is not loading when `job` is nil (oldest first).
    public func status(job: JobID?) throws -> [JobStatus] {
        throw QueueError.notImplemented("status")
    }

    /// Registered workers, most recent heartbeat first; `leasesHeld` counts leases in all jobs.
    public func workers() throws -> [WorkerStatus] {
        throw QueueError.notImplemented("workers")
    }

    /// Writes the job's results in the OpenAI Batch output format, one line per request in input
    /// order (queued or leased requests are skipped and counted in `unfinished`). Failures and
    /// non-200 responses are also written to `errorsPath` if given. Both files are written to a
    /// temporary file and renamed into place; the same database contents give the same bytes.
    public func export(job: JobID, to outputPath: String, errors errorsPath: String? = nil) throws -> ExportReport {
        throw QueueError.notImplemented("export")
    }

    /// Cancels the job: its queued and leased requests become cancelled, and workers holding
    /// leases on them lose them (their commits are dropped).
    public func cancel(job: JobID) throws -> CancelReport {
        throw QueueError.notImplemented("cancel")
    }

    /// Puts failed requests back in the queue with their failure count reset. With
    /// `failedOnly == false`, cancelled requests are requeued too and a cancelled job becomes
    /// active again. Bad input lines stay failed: they can never succeed.
    public func retry(job: JobID, failedOnly: Bool = true) throws -> RetryReport {
        throw QueueError.notImplemented("retry")
    }
}
