#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization

/// A persistent pool of compute threads for the forward pass.
///
/// A step of the model runs a few hundred parallel loops of 20–500 µs each, so
/// handing work to Dispatch or a TaskGroup (100–200 µs per hand-off, see
/// MEASURED.md) would cost more than the work. Workers spin briefly on an
/// atomic generation counter, which makes back-to-back loops nearly free, and
/// then park on a condition variable so an idle engine (or a loaded machine)
/// does not burn the cores.
///
/// Work items are claimed dynamically, so which thread computes an item never
/// affects its result: kernels write each output element from one item only.
public final class ComputePool: @unchecked Sendable {
    /// Threads taking part in each loop, the caller included.
    public let threadCount: Int
    private let shared: PoolShared
    private let turn = Mutex(())
    private var workers: [pthread_t] = []

    /// Creates a pool using `threads` threads (the caller plus `threads - 1` workers).
    public init(threads: Int) {
        threadCount = max(1, threads)
        shared = PoolShared(workerCount: threadCount - 1)
        for _ in 1..<threadCount {
            // Workers retain only the shared state, so the pool's deinit can stop and join them.
            let retained = Unmanaged.passRetained(shared).toOpaque()
            var thread = pthread_t()
            let status = pthread_create(&thread, nil, { raw in
                let shared = Unmanaged<PoolShared>.fromOpaque(raw!).takeRetainedValue()
                shared.workerLoop()
                return nil
            }, retained)
            if status == 0 {
                workers.append(thread)
            } else {
                Unmanaged<PoolShared>.fromOpaque(retained).release()
            }
        }
        shared.workerCount = workers.count
    }

    deinit {
        shared.stop()
        for thread in workers { pthread_join(thread, nil) }
    }

    /// The number of cores this process may run on.
    public static var availableCores: Int { max(1, ProcessInfo.processInfo.activeProcessorCount) }

    /// Runs `body(i)` for every `i` in `0..<count`, spread over the pool, and
    /// returns when all have finished. Calls from several threads take turns;
    /// `body` must not call back into the pool.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || workers.isEmpty {
            for i in 0..<count { body(i) }
            return
        }
        turn.withLock { _ in
            withoutActuallyEscaping(body) { escapable in shared.run(escapable, count: count) }
        }
    }
}

/// State shared between the pool's owner and its worker threads.
private final class PoolShared: @unchecked Sendable {
    var workerCount: Int
    let generation = Atomic<Int>(0)
    let nextItem = Atomic<Int>(0)
    let running = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)
    var itemCount = 0
    var body: ((Int) -> Void)?
    var mutex = pthread_mutex_t()
    var wake = pthread_cond_t()
    /// How long a worker spins for the next loop before parking (iterations of an atomic load).
    let spinIterations = 40_000

    init(workerCount: Int) {
        self.workerCount = workerCount
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
    }

    deinit {
        pthread_cond_destroy(&wake)
        pthread_mutex_destroy(&mutex)
    }

    func run(_ body: @escaping (Int) -> Void, count: Int) {
        self.body = body
        itemCount = count
        nextItem.store(0, ordering: .relaxed)
        running.store(workerCount, ordering: .relaxed)
        publish()
        runItems(body, count: count)
        while running.load(ordering: .acquiring) != 0 {}
        self.body = nil
    }

    func stop() {
        stopping.store(true, ordering: .releasing)
        publish()
    }

    private func publish() {
        pthread_mutex_lock(&mutex)
        generation.add(1, ordering: .releasing)
        pthread_cond_broadcast(&wake)
        pthread_mutex_unlock(&mutex)
    }

    private func runItems(_ body: (Int) -> Void, count: Int) {
        while true {
            let i = nextItem.add(1, ordering: .relaxed).oldValue
            if i >= count { return }
            body(i)
        }
    }

    func workerLoop() {
        var seen = 0
        while true {
            var current = generation.load(ordering: .acquiring)
            var spins = 0
            while current == seen && spins < spinIterations {
                spins += 1
                current = generation.load(ordering: .acquiring)
            }
            if current == seen {
                pthread_mutex_lock(&mutex)
                while generation.load(ordering: .acquiring) == seen {
                    pthread_cond_wait(&wake, &mutex)
                }
                current = generation.load(ordering: .acquiring)
                pthread_mutex_unlock(&mutex)
            }
            seen = current
            if stopping.load(ordering: .acquiring) { return }
            if let body { runItems(body, count: itemCount) }
            running.subtract(1, ordering: .releasing)
        }
    }
}
