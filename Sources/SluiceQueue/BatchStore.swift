import SluiceCore

/// The lifecycle of an OpenAI-style batch (`sluice serve`), with OpenAI's names.
public enum BatchStatus: String, Sendable, CaseIterable {
    case validating, failed, inProgress = "in_progress", finalizing, completed, expired, cancelling, cancelled

    /// The batch will not change any more.
    public var isTerminal: Bool { self == .failed || self == .completed || self == .expired || self == .cancelled }
}

/// An uploaded (or produced) file: its bytes live on disk under the server's data folder, at a
/// name the server chose (`storageName`), never one derived from what a client sent.
public struct StoredFile: Sendable, Equatable {
    /// `file-` and random hex.
    public var id: String
    /// The API key's project that owns it.
    public var project: String
    /// `batch` (uploaded input), `batch_output` (a batch's output or error file).
    public var purpose: String
    /// The name the client gave (shown back, never used as a path).
    public var filename: String
    public var bytes: Int
    /// Non-blank lines.
    public var lines: Int
    /// Seconds since the Unix epoch.
    public var createdAt: Double
    public var expiresAt: Double?
    /// The file's name inside the data folder.
    public var storageName: String

    public init(id: String, project: String, purpose: String, filename: String, bytes: Int, lines: Int,
                createdAt: Double, expiresAt: Double?, storageName: String) {
        self.id = id
        self.project = project
        self.purpose = purpose
        self.filename = filename
        self.bytes = bytes
        self.lines = lines
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.storageName = storageName
    }
}

/// What became of a batch's input file (see `BatchStore.enqueueBatchInput`).
public enum BatchEnqueueOutcome: Sendable, Equatable {
    /// The batch's job.
    case enqueued(JobID)
    /// Strict validation refused the file (nothing was created): `lines` non-blank lines, of which
    /// `badLineCount` were bad; `badLines` are the first of them, in file order.
    case rejected(lines: Int, badLineCount: Int, badLines: [BadLine])
}

/// How many requests of a batch finished which way (OpenAI's `request_counts`).
public struct BatchRequestCounts: Sendable, Equatable {
    public var total = 0
    /// Answered with status 200.
    public var completed = 0
    /// Failed, answered with another status, cancelled or expired.
    public var failed = 0

    public init(total: Int = 0, completed: Int = 0, failed: Int = 0) {
        self.total = total
        self.completed = completed
        self.failed = failed
    }
}

/// A batch as stored: what was asked, its job in the queue, and when each status was reached.
public struct StoredBatch: Sendable, Equatable {
    /// `batch_` and random hex.
    public var id: String
    public var project: String
    public var status: BatchStatus
    /// e.g. `/v1/chat/completions`: every line of the input must use it.
    public var endpoint: String
    public var inputFileID: String
    /// As the client wrote it (`24h`).
    public var completionWindow: String
    /// `created_at` plus the window: unfinished requests then expire.
    public var deadline: Double
    /// The client's `metadata` object as JSON text.
    public var metadata: String?
    /// Seconds after the batch's end that its output and error files expire.
    public var outputExpiresAfter: Double?
    /// The queue job running the batch, once validated.
    public var jobID: JobID?
    /// Ids reserved at creation; visible only once `filesReady`.
    public var outputFileID: String
    public var errorFileID: String
    /// Which of the two files exist (set with the final status, in one transaction).
    public var hasOutputFile = false
    public var hasErrorFile = false
    /// OpenAI's `errors` object as JSON text (input validation problems).
    public var errors: String?
    /// Counts frozen when the batch ended (while it runs, they are read from the queue).
    public var finalCounts: BatchRequestCounts?
    public var createdAt: Double
    public var inProgressAt: Double?
    public var finalizingAt: Double?
    public var completedAt: Double?
    public var failedAt: Double?
    public var expiredAt: Double?
    public var cancellingAt: Double?
    public var cancelledAt: Double?

    public init(id: String, project: String, status: BatchStatus, endpoint: String, inputFileID: String,
                completionWindow: String, deadline: Double, metadata: String?, outputExpiresAfter: Double?,
                outputFileID: String, errorFileID: String, createdAt: Double) {
        self.id = id
        self.project = project
        self.status = status
        self.endpoint = endpoint
        self.inputFileID = inputFileID
        self.completionWindow = completionWindow
        self.deadline = deadline
        self.metadata = metadata
        self.outputExpiresAfter = outputExpiresAfter
        self.outputFileID = outputFileID
        self.errorFileID = errorFileID
        self.createdAt = createdAt
    }
}

/// How a batch ends: the final status, the files its export produced, the frozen counts.
public struct BatchEnding: Sendable {
    public var status: BatchStatus
    public var at: Double
    public var counts: BatchRequestCounts
    /// File rows to insert with the status change (their bytes are already in place on disk).
    public var outputFile: StoredFile?
    public var errorFile: StoredFile?
    /// OpenAI's `errors` object as JSON text (for `failed`).
    public var errors: String?

    public init(status: BatchStatus, at: Double, counts: BatchRequestCounts, outputFile: StoredFile? = nil,
                errorFile: StoredFile? = nil, errors: String? = nil) {
        self.status = status
        self.at = at
        self.counts = counts
        self.outputFile = outputFile
        self.errorFile = errorFile
        self.errors = errors
    }
}

/// What a batch export wrote (OpenAI's split: 200 answers to the output, everything else to the errors).
public struct BatchExportReport: Sendable, Equatable {
    public var outputLines = 0
    public var errorLines = 0
    public var outputBytes = 0
    public var errorBytes = 0
    public var counts = BatchRequestCounts()
    public init() {}
}

/// The storage `sluice serve` needs beside the queue: files and batches, each belonging to a project.
/// Lookups take the project, so one project can never read another's rows. Every method is one
/// transaction. `SQLiteStore` implements it; a store for many hosts can implement the same protocol.
public protocol BatchStore: Sendable {
    func insertFile(_ file: StoredFile) throws
    /// The file, if it exists and belongs to `project`.
    func file(id: String, project: String) throws -> StoredFile?
    /// Newest first (or oldest first with `ascending`), starting after the file `after`, which may have
    /// been deleted since (its place is remembered for a week); nil when `after` names no file of the project.
    func files(project: String, purpose: String?, after: String?, limit: Int, ascending: Bool) throws -> [StoredFile]?
    /// Removes the row and returns it (the caller removes the bytes).
    func deleteFile(id: String, project: String) throws -> StoredFile?
    /// Files whose `expiresAt` has passed (any project).
    func expiredFiles(now: Double, limit: Int) throws -> [StoredFile]

    func insertBatch(_ batch: StoredBatch) throws
    func batch(id: String, project: String) throws -> StoredBatch?
    /// Newest first, starting after the batch `after`; `project` nil means every project (operator view).
    /// Nil when `after` names no batch (of the project).
    func batches(project: String?, after: String?, limit: Int) throws -> [StoredBatch]?
    /// Batches in a status that still needs work from the reconciler.
    func activeBatches() throws -> [StoredBatch]
    /// Moves the batch from one of `from` to `to`, recording the time; false when it was in no status of `from`.
    func transitionBatch(id: String, from: Set<BatchStatus>, to: BatchStatus, at: Double, jobID: JobID?) throws -> Bool
    /// Ends the batch (from a non-terminal status): inserts the produced files' rows and records the status,
    /// time, counts and errors, all in one transaction. False when the batch had already ended.
    func endBatch(id: String, _ ending: BatchEnding) throws -> Bool

    /// Creates the batch's job from its input file, validated exactly as `sluice enqueue --strict`
    /// validates (the job is named after the batch; a job of that name is returned as it is).
    func enqueueBatchInput(path: String, batchID: String, maxLineBytes: Int) throws -> BatchEnqueueOutcome
    /// Live counts of the job's requests.
    func batchCounts(job: JobID) throws -> (counts: BatchRequestCounts, unfinished: Int)
    /// Cancels the job's queued and leased requests (idempotent).
    func cancelBatchJob(_ job: JobID) throws
    /// Writes the job's results: 200 answers to `outputPath`, everything else to `errorPath` (unfinished
    /// requests with `unfinishedCode`), each file atomically, in input order.
    func exportBatch(job: JobID, outputPath: String, errorPath: String, unfinishedCode: String,
                     unfinishedMessage: String) throws -> BatchExportReport
}
