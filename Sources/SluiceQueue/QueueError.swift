/// Errors of the queue. Every case says what failed and where, in words a user can act on.
public enum QueueError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The database stayed locked by another connection for longer than the busy timeout.
    case databaseBusy(path: String, operation: String, waitedSeconds: Double)
    /// The disk (or the file system's quota) is full; the failed transaction was rolled back.
    case diskFull(path: String, operation: String)
    /// The database was written by a newer Sluice whose schema this build does not know.
    case newerSchema(path: String, found: Int, supported: Int)
    /// Any other SQLite failure, with SQLite's own code and message.
    case sqlite(path: String, operation: String, code: Int32, message: String)
    /// The input file could not be opened or read.
    case cannotReadInput(path: String, reason: String)
    /// The input file holds no non-blank line.
    case emptyInput(path: String)
    /// The same bytes were enqueued before as `job`.
    case duplicateInput(path: String, sha256: String, job: JobID, jobName: String?)
    /// A job with this name already exists.
    case duplicateJobName(name: String, job: JobID)
    /// Job names may not look like numbers (they would be read as job ids).
    case invalidJobName(name: String, reason: String)
    /// No job with this id or name.
    case noSuchJob(String)
    /// An output file could not be written.
    case cannotWriteOutput(path: String, reason: String)
    /// An argument was out of range.
    case invalidArgument(String)
    /// The database file was deleted or replaced (`how`) while this process had it open.
    case databaseReplaced(path: String, how: String)
    /// Placeholder for the API-first commit: the implementation follows.
    case notImplemented(String)

    public var description: String {
        switch self {
        case let .databaseBusy(path, operation, waited):
            return "database \(path) is locked by another process (waited \(formatSeconds(waited)) during \(operation)); try again, or raise the busy timeout"
        case let .diskFull(path, operation):
            return "disk full while writing database \(path) (\(operation)); nothing from this operation was committed, earlier data is intact"
        case let .newerSchema(path, found, supported):
            return "database \(path) has schema version \(found), made by a newer Sluice; this Sluice knows versions up to \(supported). Upgrade Sluice to use this database."
        case let .sqlite(path, operation, code, message):
            return "database \(path): \(operation) failed: \(message) (SQLite code \(code))"
        case let .cannotReadInput(path, reason):
            return "cannot read \(path): \(reason)"
        case let .emptyInput(path):
            return "\(path) holds no requests (the file is empty or only blank lines); no job was created"
        case let .duplicateInput(path, sha256, job, name):
            let label = name.map { "job \(job) (\"\($0)\")" } ?? "job \(job)"
            return "\(path) has the same content (sha256 \(sha256.prefix(16))…) as \(label), which was enqueued before; nothing was created. Use --allow-duplicate to enqueue it again."
        case let .duplicateJobName(name, job):
            return "a job named \"\(name)\" already exists (job \(job)); choose another name"
        case let .invalidJobName(name, reason):
            return "invalid job name \"\(name)\": \(reason)"
        case let .noSuchJob(reference):
            return "no job \(reference) in this database"
        case let .cannotWriteOutput(path, reason):
            return "cannot write \(path): \(reason)"
        case let .invalidArgument(message):
            return message
        case let .databaseReplaced(path, how):
            return "database \(path) was \(how) while this process had it open; stopping so that nothing is written into a file nobody else reads"
        case let .notImplemented(what):
            return "\(what) is not implemented yet"
        }
    }
}

func formatSeconds(_ seconds: Double) -> String {
    if seconds < 1 { return "\(Int((seconds * 1000).rounded())) ms" }
    return "\((seconds * 10).rounded() / 10) s"
}
