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
/// MEASURED.md) would cost more than the work. Workers spin briefly waiting for
/// the next loop, which makes back-to-back loops nearly free, and then park on a
/// condition variable so an idle engine does not burn the cores.
///
/// Items are claimed from one atomic ticket, and the caller claims too: when
/// other processes keep a worker off its core, the caller simply does more of
/// the items and waits only for items already running, never for a worker to
/// wake up. Which thread computes an item never affects its result: kernels
/// write each output element from one item only.
public final class ComputePool: @unchecked Sendable {
    /// Threads taking part in each loop, the caller included.
    public let threadCount: Int
    private let shared: PoolShared
    private let turn = Mutex(())
    private var workers: [pthread_t] = []

    /// Creates a pool using `threads` threads (the caller plus `threads - 1` workers).
    public init(threads: Int) {
        threadCount = max(1, threads)
        shared = PoolShared()
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
            withoutActuallyEscaping(body) { escapable in
                var start = 0
                while start < count {
                    let chunk = min(count - start, PoolShared.maxItems)
                    let offset = start
                    shared.run(chunk) { escapable(offset + $0) }
                    start += chunk
                }
            }
        }
    }
}

/// State shared between the pool's owner and its worker threads.
///
/// The ticket packs (generation, item count, next item) into one atomic word, so
/// a successful claim proves the loop it belongs to is still the current one and
/// its body still alive: the owner changes the body only after every item of
/// the loop has completed.
private final class PoolShared: @unchecked Sendable {
    static let countBits: UInt64 = 20
    static let maxItems = 1 << 20 - 1
    private static let mask: UInt64 = (1 << countBits) - 1

    let ticket = Atomic<UInt64>(0)
    let completed = Atomic<Int>(0)
    let sleepers = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)
    var body: ((Int) -> Void)?
    private var generation: UInt64 = 0
    var mutex = pthread_mutex_t()
    var wake = pthread_cond_t()
    /// How long an idle worker polls for the next loop before parking.
    let spinIterations = 20_000

    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
    }

    deinit {
        pthread_cond_destroy(&wake)
        pthread_mutex_destroy(&mutex)
    }

    static func pack(generation: UInt64, count: Int, next: Int) -> UInt64 {
        generation << (2 * countBits) | UInt64(count) << countBits | UInt64(next)
    }

    func run(_ count: Int, _ body: @escaping (Int) -> Void) {
        self.body = body
        completed.store(0, ordering: .relaxed)
        generation = (generation + 1) & ((1 << (64 - 2 * Self.countBits)) - 1)
        ticket.store(Self.pack(generation: generation, count: count, next: 0), ordering: .releasing)
        if sleepers.load(ordering: .acquiring) > 0 { broadcast() }
        claimItems()
        while completed.load(ordering: .acquiring) < count {}
        // Every item has run, so no claim can succeed until the next loop: nobody reads `body` now.
        self.body = nil
    }

    func stop() {
        stopping.store(true, ordering: .releasing)
        broadcast()
    }

    private func broadcast() {
        pthread_mutex_lock(&mutex)
        pthread_cond_broadcast(&wake)
        pthread_mutex_unlock(&mutex)
    }

    /// Claims and runs items of the current loop until none is left. Returns whether it ran any.
    @discardableResult
    private func claimItems() -> Bool {
        var ranAny = false
        var current = ticket.load(ordering: .acquiring)
        while true {
            let count = Int((current >> Self.countBits) & Self.mask)
            let next = Int(current & Self.mask)
            if next >= count { return ranAny }
            let (exchanged, original) = ticket.compareExchange(expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if !exchanged {
                current = original
                continue
            }
            body!(next)
            completed.add(1, ordering: .releasing)
            ranAny = true
            current = ticket.load(ordering: .acquiring)
        }
    }

    private func hasWork() -> Bool {
        let current = ticket.load(ordering: .acquiring)
        return Int(current & Self.mask) < Int((current >> Self.countBits) & Self.mask)
    }

    func workerLoop() {
        while !stopping.load(ordering: .acquiring) {
            if claimItems() { continue }
            var spins = 0
            while spins < spinIterations && !hasWork() && !stopping.load(ordering: .relaxed) { spins += 1 }
            if hasWork() { continue }
            pthread_mutex_lock(&mutex)
            sleepers.add(1, ordering: .acquiringAndReleasing)
            while !hasWork() && !stopping.load(ordering: .acquiring) {
                pthread_cond_wait(&wake, &mutex)
            }
            sleepers.subtract(1, ordering: .acquiringAndReleasing)
            pthread_mutex_unlock(&mutex)
        }
    }
}
