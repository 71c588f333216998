import Foundation
import SluiceCore
import Synchronization

/// What one worker process measures as it goes: throughput over a sliding window, latency
/// histograms and counters. The worker loop records into it; progress displays and metrics
/// exporters read snapshots from other threads. Counts of requests by state come from the
/// store instead (they must be right after a resume and across workers); these figures are
/// this process's own, and start from zero with it.
public final class WorkerTelemetry: Sendable {
    /// Length of the sliding window for rates, in seconds.
    public let windowSeconds: Double
    private let state: Mutex<State>

    struct State {
        var workerID: String?
        var engineDescription = ""
        var engineCheckpoints = false
        var startedAt: Double?
        var succeeded = 0
        var failed = 0
        var promptTokens = 0
        var completionTokens = 0
        var cacheHits = 0
        var retries = 0
        var lostLeases = 0
        var inFlight = 0
        var lastCheckpointCommit: ContinuousClock.Instant?
        var requestLatency = MetricsHistogram(bounds: MetricsHistogram.requestLatencyBounds)
        var stepSeconds = MetricsHistogram(bounds: MetricsHistogram.stepBounds)
        /// Per-second totals of committed results inside the window, oldest first.
        var recent: [Second] = []
        var firstRecordAt: ContinuousClock.Instant?
    }

    struct Second {
        var instant: ContinuousClock.Instant
        var results: Int
        var completionTokens: Int
    }

    /// - Parameter windowSeconds: how far back rates look (at least 1 s).
    public init(windowSeconds: Double = 30) {
        self.windowSeconds = max(1, windowSeconds)
        state = Mutex(State())
    }

    // MARK: Recording (the worker loop)

    func started(worker: String, engine: String, checkpoints: Bool, now: ContinuousClock.Instant) {
        state.withLock {
            $0.workerID = worker
            $0.engineDescription = engine
            $0.engineCheckpoints = checkpoints
            $0.startedAt = Date().timeIntervalSince1970
            $0.firstRecordAt = now
        }
    }

    /// A result this worker committed.
    func recordResult(succeeded: Bool, promptTokens: Int, completionTokens: Int, fromCache: Bool,
                      latencySeconds: Double?, now: ContinuousClock.Instant) {
        state.withLock { state in
            if succeeded { state.succeeded += 1 } else { state.failed += 1 }
            state.promptTokens.add(saturating: promptTokens)
            state.completionTokens.add(saturating: completionTokens)
            if fromCache { state.cacheHits += 1 }
            if let latencySeconds { state.requestLatency.observe(latencySeconds) }
            if let last = state.recent.last, now - last.instant < .seconds(1) {
                state.recent[state.recent.count - 1].results += 1
                state.recent[state.recent.count - 1].completionTokens.add(saturating: completionTokens)
            } else {
                state.recent.append(Second(instant: now, results: 1, completionTokens: completionTokens))
            }
            prune(&state, now: now)
        }
    }

    func recordRetry() { state.withLock { $0.retries += 1 } }
    func recordLostLeases(_ count: Int) { state.withLock { $0.lostLeases += count } }
    func setInFlight(_ count: Int) { state.withLock { $0.inFlight = count } }
    func checkpointsCommitted(at instant: ContinuousClock.Instant) { state.withLock { $0.lastCheckpointCommit = instant } }

    /// `steps` engine steps took `seconds` altogether (recorded as that many steps of the mean length).
    func recordSteps(_ steps: Int, seconds: Double) {
        guard steps > 0, seconds >= 0 else { return }
        state.withLock { $0.stepSeconds.observe(seconds / Double(steps), times: steps) }
    }

    private func prune(_ state: inout State, now: ContinuousClock.Instant) {
        let cutoff = now - .seconds(windowSeconds)
        if let keep = state.recent.firstIndex(where: { $0.instant >= cutoff }) {
            if keep > 0 { state.recent.removeFirst(keep) }
        } else {
            state.recent.removeAll()
        }
    }

    // MARK: Reading

    /// The figures as of `now`.
    public func snapshot(now: ContinuousClock.Instant = .now) -> TelemetrySnapshot {
        state.withLock { state in
            prune(&state, now: now)
            // Early on the window is only as long as the worker has been running.
            let covered = state.firstRecordAt.map { min(windowSeconds, max(0.001, (now - $0) / .seconds(1))) } ?? windowSeconds
            let results = state.recent.reduce(0) { $0 + $1.results }
            let tokens = state.recent.reduce(0) { $0.adding(saturating: $1.completionTokens) }
            var lag: Double = 0
            if state.engineCheckpoints, state.inFlight > 0, let last = state.lastCheckpointCommit {
                lag = max(0, (now - last) / .seconds(1))
            }
            return TelemetrySnapshot(
                workerID: state.workerID, engineDescription: state.engineDescription, startedAt: state.startedAt,
                succeeded: state.succeeded, failed: state.failed, promptTokens: state.promptTokens,
                completionTokens: state.completionTokens, cacheHits: state.cacheHits, retries: state.retries,
                lostLeases: state.lostLeases, inFlight: state.inFlight,
                resultsPerSecond: Double(results) / covered, completionTokensPerSecond: Double(tokens) / covered,
                windowSeconds: covered, engineCheckpoints: state.engineCheckpoints, checkpointLagSeconds: lag,
                requestLatency: state.requestLatency, stepSeconds: state.stepSeconds)
        }
    }
}

/// A worker's own figures at one moment (see `WorkerTelemetry`).
public struct TelemetrySnapshot: Sendable, Equatable {
    public var workerID: String?
    public var engineDescription: String
    /// Seconds since the Unix epoch when the worker registered; nil before.
    public var startedAt: Double?
    /// Results committed by this process: 200-or-other responses, and failures.
    public var succeeded: Int
    public var failed: Int
    public var promptTokens: Int
    public var completionTokens: Int
    public var cacheHits: Int
    public var retries: Int
    public var lostLeases: Int
    public var inFlight: Int
    /// Rates over the last `windowSeconds`.
    public var resultsPerSecond: Double
    public var completionTokensPerSecond: Double
    public var windowSeconds: Double
    /// Whether the engine checkpoints partial output (the lag means nothing otherwise).
    public var engineCheckpoints: Bool
    /// Seconds since checkpoints were last committed while requests are in flight; 0 when nothing is at risk.
    public var checkpointLagSeconds: Double
    /// From a request's claim to the commit of its result.
    public var requestLatency: MetricsHistogram
    /// Mean engine step length between checkpoint observations (see `WorkerLoop`).
    public var stepSeconds: MetricsHistogram

    public init(workerID: String? = nil, engineDescription: String = "", startedAt: Double? = nil, succeeded: Int = 0,
                failed: Int = 0, promptTokens: Int = 0, completionTokens: Int = 0, cacheHits: Int = 0, retries: Int = 0,
                lostLeases: Int = 0, inFlight: Int = 0, resultsPerSecond: Double = 0, completionTokensPerSecond: Double = 0,
                windowSeconds: Double = 0, engineCheckpoints: Bool = false, checkpointLagSeconds: Double = 0,
                requestLatency: MetricsHistogram = MetricsHistogram(bounds: MetricsHistogram.requestLatencyBounds),
                stepSeconds: MetricsHistogram = MetricsHistogram(bounds: MetricsHistogram.stepBounds)) {
        self.workerID = workerID
        self.engineDescription = engineDescription
        self.startedAt = startedAt
        self.succeeded = succeeded
        self.failed = failed
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cacheHits = cacheHits
        self.retries = retries
        self.lostLeases = lostLeases
        self.inFlight = inFlight
        self.resultsPerSecond = resultsPerSecond
        self.completionTokensPerSecond = completionTokensPerSecond
        self.windowSeconds = windowSeconds
        self.engineCheckpoints = engineCheckpoints
        self.checkpointLagSeconds = checkpointLagSeconds
        self.requestLatency = requestLatency
        self.stepSeconds = stepSeconds
    }
}
