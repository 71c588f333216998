import SluiceTestSupport
import Synchronization
import Testing

@testable import SluiceEngine

/// The pooled elementwise kernels (norms, gates, residual and bias additions) split work by rows or
/// by 16-float groups only, so they must equal the single-threaded kernels bit for bit whatever the
/// batch size and thread count.
@Suite(.ownThread) struct ParallelElementwiseTests {
    static let threadCounts = [1, 2, 3]
    /// Batch sizes from one decode token to a prompt chunk large enough to split every kernel.
    static let batchSizes = [1, 2, 7, 32, 129, 700]

    func random(_ count: Int, seed: UInt64, in range: ClosedRange<Float> = -4...4) -> [Float] {
        var generator = SplitMix64(seed: seed)
        return (0..<count).map { _ in Float.random(in: range, using: &generator) }
    }

    /// How many elements differ. (Comparing the arrays with `==` inside `#expect` would make a
    /// failure print a diff of hundreds of thousands of elements, which takes minutes.)
    func differing(_ a: [UInt32], _ b: [UInt32]) -> Int {
        a.count == b.count ? zip(a, b).filter { $0 != $1 }.count : max(a.count, b.count)
    }

    /// Runs `kernel` on a copy of `start` and returns the result's bit patterns.
    func bits(_ start: [Float], _ kernel: (UnsafeMutablePointer<Float>) -> Void) -> [UInt32] {
        var values = start
        values.withUnsafeMutableBufferPointer { kernel($0.baseAddress!) }
        return values.map(\.bitPattern)
    }

    @Test func rangesCoverEveryIndexOnceOnGranuleBounds() {
        for threads in Self.threadCounts {
            let pool = ComputePool(threads: threads)
            for count in [0, 1, 15, 16, 17, 100, 1000, 4099] {
                for (minimum, granule) in [(1, 1), (1, 16), (7, 1), (40, 16), (5000, 1)] {
                    // Each range writes only its own indices, so these need no locking.
                    var hits = [Int](repeating: 0, count: count)
                    var starts = [Bool](repeating: false, count: count)
                    var ends = [Bool](repeating: false, count: count)
                    let ranges = Atomic<Int>(0)
                    hits.withUnsafeMutableBufferPointer { hits in
                        starts.withUnsafeMutableBufferPointer { starts in
                            ends.withUnsafeMutableBufferPointer { ends in
                                forEachRange(count, minimumPerChunk: minimum, granule: granule, pool: pool) { range in
                                    for i in range { hits[i] += 1 }
                                    starts[range.lowerBound] = true
                                    ends[range.upperBound - 1] = true
                                    ranges.add(1, ordering: .relaxed)
                                }
                            }
                        }
                    }
                    let context = "\(count) items, minimum \(minimum), granule \(granule), \(threads) threads"
                    #expect(hits.allSatisfy { $0 == 1 }, "\(context)")
                    #expect(starts.indices.allSatisfy { !starts[$0] || $0 % granule == 0 }, "\(context)")
                    #expect(ends.indices.allSatisfy { !ends[$0] || $0 + 1 == count || ($0 + 1) % granule == 0 }, "\(context)")
                    let rangeCount = ranges.load(ordering: .relaxed)
                    let worthSplitting = count / minimum >= 2 && (count + granule - 1) / granule >= 2
                    if threads == 1 || !worthSplitting {
                        #expect(rangeCount == min(count, 1), "\(context): one range on the calling thread")
                    } else {
                        #expect(rangeCount > 1, "\(context): split")
                        #expect(rangeCount <= threads * ElementwiseSplit.chunksPerThread, "\(context)")
                    }
                }
            }
        }
    }

    @Test func aDecodeTokensNormsAndAdditionsStayOnTheCallingThread() {
        // Gemma 3 270M: 640 wide. One token's residual addition and norm cost well under the
        // microsecond a hand-off costs; a 64-token batch's are worth splitting.
        let pool = ComputePool(threads: 2)
        for (tokens, split) in [(1, false), (64, true)] {
            let additions = Atomic<Int>(0), norms = Atomic<Int>(0)
            forEachRange(tokens * 640, minimumPerChunk: ElementwiseSplit.addElements, granule: 16, pool: pool) { _ in
                additions.add(1, ordering: .relaxed)
            }
            forEachRange(tokens, minimumPerChunk: ElementwiseSplit.rows(ofWidth: 640), pool: pool) { _ in
                norms.add(1, ordering: .relaxed)
            }
            #expect((additions.load(ordering: .relaxed) > 1) == split, "\(tokens) tokens: additions")
            #expect((norms.load(ordering: .relaxed) > 1) == split, "\(tokens) tokens: norms")
        }
    }

    @Test(arguments: batchSizes)
    func pooledRMSNormEqualsSingleThreaded(rows: Int) {
        for width in [640, 256, 37] {
            let x = random(rows * width, seed: UInt64(rows * 31 + width))
            let weight = random(width, seed: 9, in: 0...2)
            let expected = bits(x) { rmsNorm($0, rows: rows, width: width, weight: weight, epsilon: 1e-6, into: $0) }
            for threads in Self.threadCounts {
                let pool = ComputePool(threads: threads)
                let pooled = bits(x) { rmsNorm($0, rows: rows, width: width, weight: weight, epsilon: 1e-6, into: $0, pool: pool) }
                #expect(differing(pooled, expected) == 0, "rmsNorm \(rows)×\(width), \(threads) threads")
                // Out of place too, as the models call it.
                var out = [Float](repeating: .nan, count: rows * width)
                out.withUnsafeMutableBufferPointer { rmsNorm(x, rows: rows, width: width, weight: weight, epsilon: 1e-6, into: $0.baseAddress!, pool: pool) }
                #expect(differing(out.map(\.bitPattern), expected) == 0, "rmsNorm \(rows)×\(width) out of place, \(threads) threads")
            }
        }
    }

    @Test(arguments: batchSizes)
    func pooledGatesEqualSingleThreaded(tokens: Int) {
        // 2048 is Gemma 3 270M's feed-forward width; 1000 + 9 leaves a partial SIMD group at the end.
        for width in [2048, 1009] {
            let count = tokens * width
            let gate = random(count, seed: UInt64(tokens), in: -8...8)
            let up = random(count, seed: UInt64(tokens) + 100)
            let gelu = bits(gate) { geluTanhGate($0, up, count: count) }
            let silu = bits(gate) { siluGate($0, up, count: count) }
            for threads in Self.threadCounts {
                let pool = ComputePool(threads: threads)
                #expect(differing(bits(gate) { geluTanhGate($0, up, count: count, pool: pool) }, gelu) == 0, "GELU \(count), \(threads) threads")
                #expect(differing(bits(gate) { siluGate($0, up, count: count, pool: pool) }, silu) == 0, "SiLU \(count), \(threads) threads")
            }
        }
    }

    @Test(arguments: batchSizes)
    func pooledAdditionsEqualSingleThreaded(rows: Int) {
        for width in [640, 896, 33] {
            let y = random(rows * width, seed: UInt64(rows))
            let x = random(rows * width, seed: UInt64(rows) + 7)
            let bias = random(width, seed: 11)
            let sum = bits(y) { addInPlace($0, x, count: rows * width) }
            let biased = bits(y) { addBias($0, rows: rows, width: width, bias: bias) }
            for threads in Self.threadCounts {
                let pool = ComputePool(threads: threads)
                #expect(differing(bits(y) { addInPlace($0, x, count: rows * width, pool: pool) }, sum) == 0, "add \(rows)×\(width), \(threads) threads")
                #expect(differing(bits(y) { addBias($0, rows: rows, width: width, bias: bias, pool: pool) }, biased) == 0,
                        "bias \(rows)×\(width), \(threads) threads")
            }
        }
    }
}
