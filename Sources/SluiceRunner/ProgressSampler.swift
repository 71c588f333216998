import Foundation
import SluiceQueue
import Synchronization

/// Job counts as of one read of the store.
public struct ProgressSample: Sendable, Equatable {
    public var jobs: [JobProgress]
    /// Finished (done, failed or cancelled) requests per second over the recent samples, whoever
    /// finished them: the rate at which the jobs progress with every worker counted.
    public var finishedPerSecond: Double?
    /// Why the last read failed, if it did (the jobs are then the last good read's).
    public var error: String?

    public init(jobs: [JobProgress], finishedPerSecond: Double? = nil, error: String? = nil) {
        self.jobs = jobs
        self.finishedPerSecond = finishedPerSecond
        self.error = error
    }
}

/// Reads the progress of the jobs a worker works on from the store, for progress displays and
/// metrics. Counts come from the store, so they are right after a resume and count every worker.
///
/// The jobs followed are `job` if given, else every job that had unfinished work at some read
/// (finished jobs from long ago do not dilute the figures). Reads are spaced by at least twenty
/// times the last read's duration, so a huge queue never spends more than ~5 % of a core on them.
public final class ProgressSampler: Sendable {
    private let discover: @Sendable () throws -> [JobID]
    private let read: @Sendable ([JobID]) throws -> [JobProgress]
    private let rateWindow: Double
    private let state = Mutex(State())

    private struct State {
        var followed = Set<JobID>()
        var last: ProgressSample?
        var lastReadAt: ContinuousClock.Instant?
        var lastReadSeconds: Double = 0
        /// (when, finished requests) of recent reads, for the rate.
        var history: [(instant: ContinuousClock.Instant, finished: Int)] = []
    }

    /// Follows `job`, or every job with unfinished work, in `store` (use a store of its own: reads
    /// then never wait for the worker's connection).
    public convenience init(store: any JobStore, job: JobID?, rateWindow: Double = 30) {
        self.init(discover: { try store.jobsWithUnfinishedWork(job: job) },
                  read: { try store.progress(jobs: $0) }, rateWindow: rateWindow)
    }

    init(discover: @escaping @Sendable () throws -> [JobID], read: @escaping @Sendable ([JobID]) throws -> [JobProgress],
         rateWindow: Double = 30) {
        self.discover = discover
        self.read = read
        self.rateWindow = rateWindow
    }

    /// The latest figures: read again if the last read is older than `maxAge` seconds (and the
    /// spacing rule allows), else the last read's.
    /// - Parameter force: read now whatever the spacing rule says (for final figures).
    public func sample(maxAge: Double, force: Bool = false, now: ContinuousClock.Instant = .now) -> ProgressSample {
        state.withLock { state in
            if !force, let last = state.last, let at = state.lastReadAt {
                let age = (now - at) / .seconds(1)
                if age < max(maxAge, state.lastReadSeconds * 20) { return last }
            }
            let started = ContinuousClock.now
            var sample: ProgressSample
            do {
                state.followed.formUnion(try discover())
                let jobs = try read(state.followed.sorted())
                sample = ProgressSample(jobs: jobs)
                let finished = jobs.reduce(0) { $0 + $1.counts.finished + $1.counts.cancelled }
                state.history.append((now, finished))
                let cutoff = now - .seconds(rateWindow)
                state.history.removeAll { $0.instant < cutoff }
                if let first = state.history.first, state.history.count >= 2 {
                    let seconds = (now - first.instant) / .seconds(1)
                    if seconds > 0 { sample.finishedPerSecond = Double(finished - first.finished) / seconds }
                }
            } catch {
                sample = ProgressSample(jobs: state.last?.jobs ?? [], finishedPerSecond: state.last?.finishedPerSecond,
                                        error: "\(error)")
            }
            state.lastReadSeconds = (ContinuousClock.now - started) / .seconds(1)
            state.lastReadAt = now
            state.last = sample
            return sample
        }
    }
}
