import SluiceCore

/// Identifies a job in the store.
public typealias JobID = Int64
/// Identifies a worker process registered with the store.
public typealias WorkerID = String

/// A request a worker holds a lease on.
public struct ClaimedRequest: Sendable {
    public var id: Int64
    public var jobID: JobID
    /// 1-based line number in the job's input file.
    public var lineNumber: Int
    public var customID: String
    public var endpoint: Endpoint
    public var body: JSON
    /// Which lease this is: increases by one every time the request is claimed.
    /// Every write about the request names it, so a worker whose lease was taken
    /// over can never change the request again.
    public var leaseGeneration: Int
    /// How many earlier attempts failed (retryable failures only).
    public var failedAttempts: Int
    /// Partial output an earlier lease left behind.
    public var checkpoint: Checkpoint?

    public init(id: Int64, jobID: JobID, lineNumber: Int, customID: String, endpoint: Endpoint, body: JSON,
                leaseGeneration: Int, failedAttempts: Int, checkpoint: Checkpoint?) {
        self.id = id
        self.jobID = jobID
        self.lineNumber = lineNumber
        self.customID = customID
        self.endpoint = endpoint
        self.body = body
        self.leaseGeneration = leaseGeneration
        self.failedAttempts = failedAttempts
        self.checkpoint = checkpoint
    }
}

/// Names one lease of one request.
public struct LeaseRef: Sendable, Hashable {
    public var requestID: Int64
    public var leaseGeneration: Int

    public init(requestID: Int64, leaseGeneration: Int) {
        self.requestID = requestID
        self.leaseGeneration = leaseGeneration
    }
}

/// Everything a worker writes in one transaction.
public struct CommitBatch: Sendable {
    /// Final outcomes. A `.response` becomes `done` (any status code); a
    /// `.failure` becomes `failed`. Written only if the lease is still the worker's.
    public var results: [(lease: LeaseRef, outcome: EngineOutcome)] = []
    /// Partial output of requests still in flight.
    public var checkpoints: [(lease: LeaseRef, checkpoint: Checkpoint)] = []
    /// Requests handed back to the queue: after a drain (not counted as a failure)
    /// or after a retryable failure (counted, and not claimable before `notBefore`,
    /// seconds since the Unix epoch). A checkpoint given here is kept for the next lease.
    public var releases: [Release] = []

    public struct Release: Sendable {
        public var lease: LeaseRef
        public var countsAsFailure: Bool
        public var notBefore: Double?
        public var checkpoint: Checkpoint?

        public init(lease: LeaseRef, countsAsFailure: Bool, notBefore: Double? = nil, checkpoint: Checkpoint? = nil) {
            self.lease = lease
            self.countsAsFailure = countsAsFailure
            self.notBefore = notBefore
            self.checkpoint = checkpoint
        }
    }

    public init() {}
    public var isEmpty: Bool { results.isEmpty && checkpoints.isEmpty && releases.isEmpty }
}

/// What a commit did.
public struct CommitReport: Sendable, Equatable {
    /// Leases that were no longer this worker's (expired and taken over, or the
    /// job was cancelled): their writes were dropped.
    public var lostLeases: [LeaseRef] = []
    public init(lostLeases: [LeaseRef] = []) { self.lostLeases = lostLeases }
}

/// Defaults shared by every store and the worker.
public enum QueueDefaults {
    /// Lost leases (expired without progress) after which a request fails as `worker_lost`.
    public static let maxLostLeases = 3
    /// The error code of a request given up after too many lost leases.
    public static let workerLostCode = "worker_lost"
}

extension QueueStore {
    /// `claim` with the default lost-lease limit.
    public func claim(worker: WorkerID, job: JobID?, limit: Int, leaseSeconds: Double) throws -> [ClaimedRequest] {
        try claim(worker: worker, job: job, limit: limit, leaseSeconds: leaseSeconds, maxLostLeases: QueueDefaults.maxLostLeases)
    }
}

/// The durable queue the runner works from. `SQLiteStore` is the one-machine
/// implementation; a PostgreSQL store for many hosts can implement the same protocol.
///
/// Every method is one transaction. Implementations must be safe to use from
/// several processes on the same queue at once.
public protocol QueueStore: Sendable {
    /// Registers a worker (host and pid are for `status`).
    func registerWorker(host: String, pid: Int32, description: String) throws -> WorkerID
    /// Records a heartbeat and extends the worker's `leases` (those still its own, at their
    /// generation) to `now + leaseSeconds`. Only the listed ones: a claim the store committed
    /// but whose answer the worker never received (the connection broke) leaves requests leased
    /// to a worker that does not know it holds them, and they must expire and be claimed again
    /// rather than be renewed for as long as that worker lives.
    func heartbeat(worker: WorkerID, leases: [LeaseRef], leaseSeconds: Double) throws
    /// Leases up to `limit` requests that are queued (and past their `notBefore`) or
    /// whose lease expired, highest job priority first, then in job and line order.
    /// `job` restricts the claim to one job.
    ///
    /// A lease that expires without its checkpoint having advanced is a lost lease (its worker
    /// died, or was cut off, without progress). A request whose lost leases reach
    /// `maxLostLeases` is not leased again: it fails with the error code `worker_lost`, so a
    /// request that kills its worker cannot do so forever. Expirations where the checkpoint
    /// advanced (preemptions that made progress) do not count.
    func claim(worker: WorkerID, job: JobID?, limit: Int, leaseSeconds: Double, maxLostLeases: Int) throws -> [ClaimedRequest]
    /// Applies results, checkpoints and releases in one transaction, each only
    /// where the named lease is still the worker's.
    @discardableResult
    func commit(_ batch: CommitBatch, worker: WorkerID) throws -> CommitReport
    /// Marks the worker stopped and releases any leases it still holds (without counting failures).
    func unregisterWorker(_ worker: WorkerID) throws
    /// Whether any request (of `job`, or of any job) is queued or leased: i.e. work remains.
    func hasUnfinishedWork(job: JobID?) throws -> Bool
}
