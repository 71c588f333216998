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
/// Each loop's items are split into one contiguous segment per thread (the
/// caller's first). A thread claims its own segment's items from the front, in
/// order, then takes the other segments' items from their back ends. So each
/// thread streams one contiguous stretch of a matrix's weights, as a decode step
/// bound by memory needs: items handed out alternately from one shared ticket
/// made each thread jump ahead every few panels, which cost a one-sequence step
/// on a 4-bit matrix about a sixth of its bandwidth (25 against 30-32 GB/s on
/// the 2-core Zen 4 machine). And when other processes keep a worker off its
/// core, the caller simply takes its items and waits only for items already
/// running, never for a worker to wake up. Which thread computes an item never
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
        shared = PoolShared(threads: threadCount)
        for index in 1..<threadCount {
            // Workers retain only the shared state, so the pool's deinit can stop and join them.
            let retained = Unmanaged.passRetained(WorkerStart(shared: shared, segment: index)).toOpaque()
            var thread = pthread_t()
            let status = pthread_create(&thread, nil, { raw in
                let start = Unmanaged<WorkerStart>.fromOpaque(raw!).takeRetainedValue()
                start.shared.workerLoop(segment: start.segment)
                return nil
            }, retained)
            if status == 0 {
                workers.append(thread)
            } else {
                Unmanaged<WorkerStart>.fromOpaque(retained).release()
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
                    let chunk = min(count - start, Segment.maxItems)
                    let offset = start
                    shared.run(chunk) { escapable(offset + $0) }
                    start += chunk
                }
            }
        }
    }
}

/// What a worker thread starts with: the pool's shared state and the segment it owns.
private final class WorkerStart {
    let shared: PoolShared
    let segment: Int

    init(shared: PoolShared, segment: Int) {
        self.shared = shared
        self.segment = segment
    }
}

/// The items of one segment of the current loop still unclaimed, `next..<end`, with the loop's
/// generation, packed into one atomic word: its owner claims `next` and others claim `end - 1`,
/// each by one compare-and-exchange, so every item is claimed once. A successful claim proves
/// the word belongs to the loop still running, and its body is still alive: the owner of the
/// pool rewrites the words for the next loop only after every item of this one has completed.
private final class Segment: @unchecked Sendable {
    static let countBits: UInt64 = 20
    static let maxItems = 1 << 20 - 1
    private static let mask: UInt64 = (1 << countBits) - 1
    static let generationMask: UInt64 = (1 << (64 - 2 * countBits)) - 1

    let word = Atomic<UInt64>(0)
    // Keeps each segment's word on a cache line of its own, away from its neighbours'.
    private let padding: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)

    static func pack(generation: UInt64, end: Int, next: Int) -> UInt64 {
        generation << (2 * countBits) | UInt64(end) << countBits | UInt64(next)
    }

    /// Starts the segment `range` of the loop `generation`.
    func start(generation: UInt64, _ range: Range<Int>) {
        word.store(Self.pack(generation: generation, end: range.upperBound, next: range.lowerBound), ordering: .releasing)
    }

    var hasItems: Bool {
        let current = word.load(ordering: .acquiring)
        return Int(current & Self.mask) < Int((current >> Self.countBits) & Self.mask)
    }

    /// Claims the first unclaimed item (`fromBack`: the last), or nil when none is left.
    func claim(fromBack: Bool) -> Int? {
        var current = word.load(ordering: .acquiring)
        while true {
            let end = Int((current >> Self.countBits) & Self.mask), next = Int(current & Self.mask)
            if next >= end { return nil }
            let desired = fromBack ? current - (1 << Self.countBits) : current + 1
            let (exchanged, original) = word.compareExchange(expected: current, desired: desired, ordering: .acquiringAndReleasing)
            if exchanged { return fromBack ? end - 1 : next }
            current = original
        }
    }
}

/// State shared between the pool's owner and its worker threads.
private final class PoolShared: @unchecked Sendable {
    /// One per thread: the caller's first, then each worker's.
    let segments: [Segment]
    let completed = Atomic<Int>(0)
    let sleepers = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)
    var body: ((Int) -> Void)?
    private var generation: UInt64 = 0
    var mutex = pthread_mutex_t()
    var wake = pthread_cond_t()
    /// How long an idle worker polls for the next loop before parking.
    let spinIterations = 20_000

    init(threads: Int) {
        segments = (0..<threads).map { _ in Segment() }
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
    }

    deinit {
        pthread_cond_destroy(&wake)
        pthread_mutex_destroy(&mutex)
    }

    /// Items `segment * count / threads ..< (segment + 1) * count / threads`: contiguous, in
    /// thread order, differing in size by at most one.
    static func segmentRange(_ segment: Int, of threads: Int, count: Int) -> Range<Int> {
        (segment * count / threads)..<((segment + 1) * count / threads)
    }

    func run(_ count: Int, _ body: @escaping (Int) -> Void) {
        self.body = body
        completed.store(0, ordering: .relaxed)
        generation = (generation + 1) & Segment.generationMask
        for (index, segment) in segments.enumerated() {
            segment.start(generation: generation, Self.segmentRange(index, of: segments.count, count: count))
        }
        if sleepers.load(ordering: .acquiring) > 0 { broadcast() }
        claimItems(segment: 0)
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

    /// Runs the items of its own segment, front to back, then the others' from their back ends,
    /// until none is left. Returns whether it ran any.
    @discardableResult
    private func claimItems(segment own: Int) -> Bool {
        var ranAny = false
        for offset in 0..<segments.count {
            let segment = segments[(own + offset) % segments.count]
            while let item = segment.claim(fromBack: offset != 0) {
                body!(item)
                completed.add(1, ordering: .releasing)
                ranAny = true
            }
        }
        return ranAny
    }

    private func hasWork() -> Bool {
        segments.contains { $0.hasItems }
    }

    func workerLoop(segment: Int) {
        while !stopping.load(ordering: .acquiring) {
            if claimItems(segment: segment) { continue }
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
