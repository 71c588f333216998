import Foundation
import SluiceCore

/// A job with all its rows, in a form either store can read and write (for `sluice db copy`).
public struct JobDump: Sendable {
    public var job: JobInfo
    public var startedAt: Double?
    public var finishedAt: Double?
    public var requests: [Request]
    public var results: [Result]

    /// One request row; `line` is its line number (its id is derived from the job's id in the target).
    public struct Request: Sendable {
        public var line: Int
        public var state: RequestState
        public var endpoint: Int?
        public var failedAttempts: Int
        public var inputError: String?
        public var customID: String?
        public var checkpointTokens: Int?
        public var checkpointPayload: [UInt8]?
        public var body: String?
        public var firstClaimedAt: Double?
        public var claimedAt: Double?
        public var preemptions: Int
        public var interrupted: Int
        public var lostLeases: Int
    }

    public struct Result: Sendable {
        public var line: Int
        public var statusCode: Int?
        public var errorCode: String?
        public var errorMessage: String?
        public var promptTokens: Int
        public var completionTokens: Int
        public var finishedAt: Double
        public var workerID: String?
        public var leaseGeneration: Int
        public var body: String?
        public var fromCache: Int
    }
}

/// One result-cache entry.
public struct CacheEntryDump: Sendable {
    public var key: String
    public var statusCode: Int
    public var body: String
    public var promptTokens: Int
    public var completionTokens: Int
    public var createdAt: Double
    public var hits: Int
}

/// Reading and writing whole jobs, for moving work between stores.
public protocol JobTransfer: JobStore {
    /// The job and every row of it. A leased request is read as queued (a lease means nothing
    /// in another store), keeping its checkpoint.
    func dumpJob(_ job: JobID) throws -> JobDump
    /// Creates the job under a new id, with its rows, in one transaction. A job of the same
    /// name already there is an error (`QueueError.duplicateJobName`).
    func loadJob(_ dump: JobDump) throws -> JobID
    /// Every result-cache entry.
    func dumpResultCache() throws -> [CacheEntryDump]
    /// Adds the entries the cache lacks; returns how many were added.
    func loadResultCache(_ entries: [CacheEntryDump]) throws -> Int
}

/// What `copyJobs` did.
public struct JobCopyReport: Sendable {
    public var copied: [(from: JobID, to: JobID, requests: Int, results: Int)] = []
    public var cacheEntriesAdded = 0
}

/// Copies jobs (all, or one) with their requests, checkpoints and results, and the result
/// cache, from one store to another. Stop the source's workers first: requests leased there
/// arrive queued, and continue from their checkpoints in the target.
public func copyJobs(from source: any JobStore, to target: any JobStore, job: JobID?) throws -> JobCopyReport {
    guard let source = source as? any JobTransfer, let target = target as? any JobTransfer else {
        throw QueueError.invalidArgument("these stores cannot copy jobs")
    }
    var report = JobCopyReport()
    let jobs = try job.map { [$0] } ?? source.jobs().filter { $0.state != .loading }.map(\.id)
    for id in jobs {
        let dump = try source.dumpJob(id)
        let newID = try target.loadJob(dump)
        report.copied.append((id, newID, dump.requests.count, dump.results.count))
    }
    report.cacheEntriesAdded = try target.loadResultCache(try source.dumpResultCache())
    return report
}
