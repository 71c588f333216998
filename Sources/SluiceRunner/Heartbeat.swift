import Dispatch
import SluiceQueue
import Synchronization

/// The leases a worker holds: claimed, and not yet committed, handed back or lost. The worker
/// loop keeps it; the heartbeat renews exactly these.
final class HeldLeases: Sendable {
    private let leases = Mutex<Set<LeaseRef>>([])

    func insert(_ claimed: [LeaseRef]) {
        if !claimed.isEmpty { leases.withLock { $0.formUnion(claimed) } }
    }

    func remove(_ gone: [LeaseRef]) {
        if !gone.isEmpty { leases.withLock { $0.subtract(gone) } }
    }

    var all: [LeaseRef] { leases.withLock { Array($0) } }
}

/// Renews a worker's leases on its own thread, so a busy or blocked worker loop
/// never lets its leases run out.
final class Heartbeat {
    private let timer: any DispatchSourceTimer
    private let queue = DispatchQueue(label: "sluice.heartbeat")

    /// `unusable` is called (once) when a heartbeat fails in a way that cannot heal.
    init(store: any QueueStore, worker: WorkerID, held: HeldLeases, leaseSeconds: Double, log: WorkerLog,
         unusable: @escaping @Sendable (String) -> Void = { _ in }) {
        let interval = leaseSeconds / 3
        timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + interval, repeating: interval, leeway: .milliseconds(Int(interval * 50)))
        let failures = Mutex(0)
        let reported = Mutex(false)
        timer.setEventHandler {
            do {
                try store.heartbeat(worker: worker, leases: held.all, leaseSeconds: leaseSeconds)
                failures.withLock { $0 = 0 }
            } catch {
                do {
                    try WorkerError.stopIfUnhealable(error, during: "heartbeat")
                } catch let stop {
                    if !reported.withLock({ $0 }) {
                        reported.withLock { $0 = true }
                        unusable("\(stop)")
                    }
                    return
                }
                let count = failures.withLock { count -> Int in count += 1; return count }
                // Only the first failures of a streak are worth a line each.
                if count <= 3 || count % 20 == 0 { log("heartbeat failed (\(count) in a row): \(error)") }
            }
        }
    }

    func start() { timer.resume() }

    /// Stops the timer and waits until a heartbeat in progress has finished.
    func stop() {
        timer.cancel()
        queue.sync {}
    }
}
