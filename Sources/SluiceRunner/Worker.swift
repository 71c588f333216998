import Foundation
import SluiceCore
import SluiceQueue
import Synchronization

/// Drains the queue through one engine: claims requests as the engine has room,
/// commits results in batches, renews leases, retries transient failures, and
/// stops cleanly when asked.
///
/// The worker knows engines only through `InferenceEngine`, so the built-in
/// engine and remote servers plug in alike. Call `run()` once.
public final class Worker: Sendable {
    public let store: any QueueStore
    public let engine: any InferenceEngine
    public let configuration: WorkerConfiguration
    /// Where the worker writes its lines (and its owner may add its own).
    public let log: WorkerLog

    private let inputs: AsyncStream<WorkerInput>
    private let inputContinuation: AsyncStream<WorkerInput>.Continuation
    private let registration = Mutex<WorkerID?>(nil)
    private let finalStatistics = Mutex(WorkerStatistics())

    public init(store: any QueueStore, engine: any InferenceEngine, configuration: WorkerConfiguration,
                log: WorkerLog = .standardError) {
        self.store = store
        self.engine = engine
        self.configuration = configuration
        self.log = log
        (inputs, inputContinuation) = AsyncStream.makeStream(of: WorkerInput.self)
    }

    /// Asks the worker to drain: stop claiming, finish or release what is in flight, and return.
    /// Safe to call from any thread, any number of times.
    public func requestDrain(_ reason: DrainReason) {
        inputContinuation.yield(.drain(reason))
    }

    /// For an immediate exit (a second SIGINT): hands every lease back to the queue
    /// without waiting for the engine. Safe to call from any thread.
    public func releaseLeasesNow() {
        guard let worker = registration.withLock({ $0 }) else { return }
        do { try store.unregisterWorker(worker) } catch { log("could not release leases: \(error)") }
    }

    /// What the worker has done so far (final once `run` returned).
    public var statistics: WorkerStatistics { finalStatistics.withLock { $0 } }

    /// Works until the queue (or the job) has no unfinished request, or until a drain completes.
    public func run() async throws -> WorkerExit {
        if let problem = configuration.validationError() { throw WorkerError.invalidConfiguration(problem) }
        let host = ProcessInfo.processInfo.hostName
        let pid = ProcessInfo.processInfo.processIdentifier
        let workerID = try store.registerWorker(host: host, pid: pid, description: engine.description)
        registration.withLock { $0 = workerID }
        configuration.telemetry?.started(worker: workerID, engine: engine.description,
                                         checkpoints: engine.checkpointsPartialOutput && configuration.checkpointInterval > 0,
                                         now: ContinuousClock.now)
        let jobText = configuration.job.map { "job \($0)" } ?? "all jobs"
        log("worker \(workerID) (pid \(pid)) started on \(jobText): engine \(engine.description), capacity \(engine.capacity), lease \(format(configuration.leaseSeconds)), grace \(format(configuration.graceSeconds))")

        do {
            if try !store.hasUnfinishedWork(job: configuration.job) {
                try store.unregisterWorker(workerID)
                registration.withLock { $0 = nil }
                log("worker \(workerID): nothing to do (no queued or leased request in \(jobText))")
                return .nothingToDo
            }
        } catch {
            try? store.unregisterWorker(workerID)
            throw error
        }

        let continuation = inputContinuation
        let held = HeldLeases()
        let heartbeat = Heartbeat(store: store, worker: workerID, held: held, leaseSeconds: configuration.leaseSeconds, log: log) {
            continuation.yield(.databaseUnusable($0))
        }
        heartbeat.start()
        let engine = self.engine
        let forwarder = Task {
            for await event in engine.events { continuation.yield(.engine(event)) }
            continuation.yield(.engineEnded)
        }
        let tickInterval = max(0.01, min(0.05, configuration.commitInterval / 3))
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(tickInterval))
                continuation.yield(.tick)
            }
        }
        let deadline: Task<Void, Never>? = configuration.maxRuntimeSeconds.map { seconds in
            Task {
                try? await Task.sleep(for: .seconds(seconds))
                if !Task.isCancelled { continuation.yield(.drain(.maxRuntime)) }
            }
        }
        func stopHelpers() {
            ticker.cancel()
            deadline?.cancel()
            heartbeat.stop()
        }

        let loop = WorkerLoop(worker: workerID, store: store, engine: engine, configuration: configuration, log: log, held: held)
        var exit: WorkerExit?
        do {
            try loop.step(now: .now)
            exit = try loop.finish(now: .now)
            if exit == nil {
                for await input in inputs {
                    let now = ContinuousClock.now
                    try loop.handle(input, now: now)
                    try loop.step(now: now)
                    finalStatistics.withLock { $0 = loop.statistics }
                    if let done = try loop.finish(now: now) {
                        exit = done
                        break
                    }
                }
            }
        } catch {
            stopHelpers()
            loop.abandonAll()
            finalStatistics.withLock { $0 = loop.statistics }
            log("worker \(workerID) stopping after an error: \(error)")
            releaseLeasesNow()
            registration.withLock { $0 = nil }
            forwarder.cancel()
            throw error
        }
        stopHelpers()
        forwarder.cancel()
        do {
            try store.unregisterWorker(workerID)
        } catch {
            log("worker \(workerID): could not unregister: \(error) (its leases will expire)")
        }
        registration.withLock { $0 = nil }
        let statistics = loop.statistics
        finalStatistics.withLock { $0 = statistics }
        let result = exit ?? .drained(.requested, workRemains: (try? store.hasUnfinishedWork(job: configuration.job)) ?? true)
        log("worker \(workerID) stopped (\(describe(result))): \(statistics.completed) results (\(statistics.failed) failed), \(statistics.retried) retries, \(statistics.released) released, \(statistics.lostLeases) lost leases, \(statistics.commits) commits, \(statistics.checkpointsStored) checkpoints; \(statistics.completionTokens) completion tokens (\(statistics.cachedCompletionTokens) of them in \(statistics.cacheHits) results from the cache)")
        return result
    }

    private func describe(_ exit: WorkerExit) -> String {
        switch exit {
        case .completed: return "no work left"
        case .nothingToDo: return "nothing to do"
        case let .drained(reason, remains): return "\(reason); " + (remains ? "work remains for the next worker" : "no work left")
        }
    }
}

/// Why a worker gave up.
public enum WorkerError: Error, CustomStringConvertible {
    case invalidConfiguration(String)
    case engineStopped(String)
    case storeUnavailable(String)
    /// The database cannot be used any more (`QueueError.unhealableReason`): the worker stops at once.
    case databaseUnusable(String)

    public var description: String {
        switch self {
        case let .invalidConfiguration(message): return message
        case let .engineStopped(message): return "the engine stopped unexpectedly: \(message)"
        case let .storeUnavailable(message): return message
        case let .databaseUnusable(message): return message
        }
    }

    /// Throws `.databaseUnusable` when `error` cannot heal by trying again; returns otherwise.
    static func stopIfUnhealable(_ error: any Error, during operation: String) throws {
        guard let queueError = error as? QueueError, let reason = queueError.unhealableReason else { return }
        throw WorkerError.databaseUnusable("\(reason), so the worker stops (\(operation) failed: \(queueError)); results committed before are kept, and leases not handed back expire for other workers")
    }
}

enum WorkerInput: Sendable {
    case engine(EngineEvent)
    case engineEnded
    case tick
    case drain(DrainReason)
    /// The heartbeat found the database unusable (see `WorkerError.databaseUnusable`).
    case databaseUnusable(String)
}

func format(_ seconds: Double) -> String {
    seconds == seconds.rounded() && seconds < 1e9 ? "\(Int(seconds)) s" : String(format: "%.2f s", seconds)
}
