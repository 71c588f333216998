/// Why a worker was asked to stop before the work was done.
public enum DrainReason: Sendable, Equatable, CustomStringConvertible {
    /// SIGTERM or SIGINT (the signal's name).
    case signal(String)
    /// `--max-runtime` ran out.
    case maxRuntime
    /// Asked by the embedding program.
    case requested
    /// A preemption notice: the metadata endpoint or the file named (`--preemption-notice`, `--preemption-file`).
    case preemptionNotice(String)
    /// The `--until` deadline passed.
    case deadline

    public var description: String {
        switch self {
        case let .signal(name): return "received \(name)"
        case .maxRuntime: return "--max-runtime reached"
        case .requested: return "stop requested"
        case let .preemptionNotice(source): return "preemption notice from \(source)"
        case .deadline: return "--until deadline reached"
        }
    }
}

/// How a worker's run ended (errors are thrown instead).
public enum WorkerExit: Sendable, Equatable {
    /// No request was left queued or leased (in the job, or in any job).
    case completed
    /// There was nothing to do when the worker started.
    case nothingToDo
    /// The worker drained and stopped; `workRemains` tells whether requests are still queued or leased.
    case drained(DrainReason, workRemains: Bool)
}

/// What a worker did, for its last log line and for tests.
public struct WorkerStatistics: Sendable, Equatable {
    /// Requests that got a final outcome committed by this worker.
    public var completed = 0
    /// Of those, failures (final retryable failures after the attempt limit, and non-retryable failures).
    public var failed = 0
    /// Retryable failures handed back to the queue for a later attempt.
    public var retried = 0
    /// Leases handed back without counting a failure (drain).
    public var released = 0
    /// Leases found taken over by another worker (or cancelled with their job).
    public var lostLeases = 0
    public var claims = 0
    public var claimed = 0
    public var commits = 0
    public var checkpointsStored = 0
    public var promptTokens = 0
    public var completionTokens = 0
    /// Results answered from the result cache (their usage is counted in the token totals above).
    public var cacheHits = 0
    /// Responses this worker computed and added to the result cache.
    public var cacheStores = 0

    /// The tokens of `completionTokens` that came from the cache rather than the engine.
    public var cachedCompletionTokens = 0

    public init() {}
}
