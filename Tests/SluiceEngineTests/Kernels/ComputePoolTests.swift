import Foundation
import Synchronization
import Testing

@testable import SluiceEngine

/// The pool's loops: every item runs exactly once, each thread streams the front of its own
/// contiguous segment, and a thread that stalls never stalls the loop (the others take its items
/// from the back of its segment).
@Suite(.ownThread) struct ComputePoolTests {
    /// How often each item ran, and the items the calling thread ran, in its order.
    final class Record: @unchecked Sendable {
        // Sendable: each item writes only its own slot, and only the caller appends to its order;
        // the loop's end orders the writes before the reads.
        let runs: UnsafeMutableBufferPointer<Int>
        /// Where each item leaves the result of its busy work, so that the work is done.
        let sink: UnsafeMutableBufferPointer<Int>
        var callerOrder: [Int] = []
        let caller = pthread_self()

        init(count: Int) {
            runs = .allocate(capacity: count)
            runs.initialize(repeating: 0)
            sink = .allocate(capacity: count)
            sink.initialize(repeating: 0)
        }

        deinit {
            runs.deallocate()
            sink.deallocate()
        }
    }

    @Test func everyItemRunsOnceInEveryLoop() {
        for threads in [1, 2, 3, 5] {
            let pool = ComputePool(threads: threads)
            // Back-to-back loops of every size, from none to many more items than threads.
            for count in [0, 1, 2, 3, 4, 5, 7, 64, 1000, 20_000] {
                for _ in 0..<3 {
                    var runs = [Int](repeating: 0, count: count)
                    runs.withUnsafeMutableBufferPointer { runs in
                        let runs = runs.baseAddress
                        pool.parallelFor(count) { runs![$0] += 1 }
                    }
                    #expect(runs.allSatisfy { $0 == 1 }, "threads \(threads), \(count) items")
                }
            }
        }
    }

    @Test func theCallerStreamsTheFrontOfItsSegmentInOrder() {
        for threads in [2, 3] {
            let pool = ComputePool(threads: threads)
            for count in [10, 1000] {
                let record = Record(count: count)
                pool.parallelFor(count) { item in
                    record.runs[item] += 1
                    let onCaller = pthread_equal(pthread_self(), record.caller) != 0
                    if onCaller { record.callerOrder.append(item) }
                    // Work enough that every thread takes part, and more on the caller, so that the others
                    // run out of items first and take some of the caller's.
                    var spin = item
                    for k in 0..<(onCaller ? 20_000 : 1_000) { spin = spin &* 6_364_136_223_846_793_005 &+ k }
                    record.sink[item] = spin
                }
                #expect(record.runs.allSatisfy { $0 == 1 })
                // The caller owns items 0 ..< count / threads: it takes them from the front, one after
                // another, before any other; what it leaves there others took from the back.
                let ownEnd = count / threads
                let own = record.callerOrder.prefix { $0 < ownEnd }
                #expect(Array(own) == Array(0..<own.count), "threads \(threads), \(count) items: \(record.callerOrder.prefix(20))")
                #expect(record.callerOrder.dropFirst(own.count).allSatisfy { $0 >= ownEnd },
                        "the caller returned to its own segment after leaving it")
            }
        }
    }

    @Test func aStalledThreadsItemsAreTakenByTheOthers() {
        // Item `held` is the front of the worker's segment, which the worker claims first. While it
        // holds it, the caller must run every other item, the rest of that segment included.
        let pool = ComputePool(threads: 2)
        let count = 100, held = 50
        let others = Atomic<Int>(0)
        let waitedOut = Atomic<Bool>(false)
        pool.parallelFor(count) { item in
            if item == held {
                let deadline = Date().addingTimeInterval(30)
                while others.load(ordering: .acquiring) < count - 1 {
                    if Date() > deadline {
                        waitedOut.store(true, ordering: .relaxed)
                        return
                    }
                    sched_yield()
                }
            } else {
                others.add(1, ordering: .releasing)
            }
        }
        let ranOthers = others.load(ordering: .relaxed), timedOut = waitedOut.load(ordering: .relaxed)
        #expect(ranOthers == count - 1)
        #expect(!timedOut, "the other items waited for the stalled one")
    }
}
