import SluiceQueue

/// How a worker paces itself. Times are in seconds.
public struct WorkerConfiguration: Sendable {
    /// Work only on this job; nil works on every job, highest priority first.
    public var job: JobID?
    /// How long a claimed request stays ours without a heartbeat. Heartbeats run every third of it.
    public var leaseSeconds: Double = 60
    /// How long a drain may take, from the signal to the exit.
    public var graceSeconds: Double = 30
    /// Drain by itself after this long; nil runs until the work is done.
    public var maxRuntimeSeconds: Double?
    /// Attempts per request, counting the first, before a retryable failure becomes final.
    public var maxAttempts: Int = 5
    /// Leases of a request that may expire without progress (its worker lost each time) before
    /// the request fails as `worker_lost`.
    public var maxLostLeases: Int = QueueDefaults.maxLostLeases
    /// How long the database may stay unreachable (claims and commits failing) before the worker
    /// gives up; meanwhile it keeps generating and commits what it holds once the database is back.
    public var databaseTimeoutSeconds: Double = 300
    /// Backoff after the first failed attempt; doubles each time, with jitter.
    public var retryBaseDelay: Double = 1
    /// Longest backoff between attempts (a server's Retry-After may ask for more, up to `maxRetryAfter`).
    public var retryMaxDelay: Double = 60
    /// Longest Retry-After honoured.
    public var maxRetryAfter: Double = 600
    /// Results wait at most this long before they are committed.
    public var commitInterval: Double = 0.15
    /// A commit happens as soon as this many results and releases are waiting.
    public var commitBatchSize: Int = 256
    /// Partial output of an engine that checkpoints is committed at least this often
    /// (and whenever a request got `checkpointTokens` tokens further). 0 turns periodic
    /// checkpoints off: partial output is then stored only by a drain.
    public var checkpointInterval: Double = 0.5
    /// A request's checkpoint is committed once it is this many tokens past its last one.
    public var checkpointTokens: Int = 64
    /// Answer identical deterministic requests from the store's result cache (nil: off).
    public var resultCache: ResultCachePolicy?
    /// Where to record generation progress per request (for measuring recomputed work); nil: nowhere.
    public var tokenLedger: TokenLedger?
    /// Most requests claimed in one transaction.
    public var claimBatchSize: Int = 256
    /// How often to look for work again when the queue had none to give.
    public var idlePollInterval: Double = 0.25
    /// How often the worker logs its own progress lines; 0 turns them off (a progress display or
    /// `--no-progress` takes their place).
    public var progressInterval: Double = 10
    /// Where the worker records throughput, latency and counters for progress displays and metrics; nil: nowhere.
    public var telemetry: WorkerTelemetry?

    public init(job: JobID? = nil) { self.job = job }

    /// The longest time any setting may give (100 years): every deadline and timer computed from
    /// one stays far inside what dates, `Duration` and dispatch times can hold.
    public static let longestSeconds: Double = 100 * 365.25 * 86_400

    /// What is wrong with these settings, if anything, in a sentence naming the setting.
    public func validationError() -> String? {
        let times: [(String, Double?)] = [("--lease", leaseSeconds), ("--grace", graceSeconds), ("--max-runtime", maxRuntimeSeconds),
                                          ("--checkpoint-interval", checkpointInterval)]
        for case let (name, seconds?) in times where seconds > Self.longestSeconds {
            return "\(name) must be at most \(Int(Self.longestSeconds)) seconds (100 years; got \(seconds))"
        }
        if !(leaseSeconds >= 1) { return "--lease must be at least 1 second (got \(leaseSeconds))" }
        if !(graceSeconds >= 0.5) { return "--grace must be at least 0.5 seconds (got \(graceSeconds))" }
        if let runtime = maxRuntimeSeconds, !(runtime > 0) { return "--max-runtime must be positive (got \(runtime))" }
        if !(checkpointInterval >= 0) { return "--checkpoint-interval must be 0 (off) or positive (got \(checkpointInterval))" }
        if checkpointTokens < 1 { return "--checkpoint-tokens must be at least 1 (got \(checkpointTokens))" }
        if maxAttempts < 1 { return "--max-attempts must be at least 1 (got \(maxAttempts))" }
        if maxLostLeases < 1 { return "--max-lost-leases must be at least 1 (got \(maxLostLeases))" }
        if !(databaseTimeoutSeconds >= 1) { return "--db-timeout must be at least 1 second (got \(databaseTimeoutSeconds))" }
        return nil
    }

    /// Time kept back from the grace period for cancelling, releasing leases and the last commit.
    var drainMargin: Double { min(3, max(0.2, graceSeconds * 0.25)) }
}
