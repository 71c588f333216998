import Foundation
import SluiceCore
import SluiceTestSupport
import Testing

@testable import SluiceEngine

/// Where spreading elementwise kernels over the pool starts to pay, run by hand:
///   SLUICE_ELEMENTWISE_BENCH=1 swift test -c release -Xswiftc -enable-testing --filter ElementwiseBenchmark
/// For Gemma 3 270M's shapes at several batch sizes, prints each kernel's time per call on the
/// calling thread alone and split into as many chunks as the pool allows (2 threads).
@Suite(.enabled(if: ProcessInfo.processInfo.environment["SLUICE_ELEMENTWISE_BENCH"] != nil))
struct ElementwiseBenchmarkTests {
    /// The best of several rounds of `repetitions` calls, in microseconds per call.
    func microseconds(_ repetitions: Int, _ body: () -> Void) -> Double {
        let clock = ContinuousClock()
        var best = Duration.seconds(1000)
        for _ in 0..<7 {
            best = min(best, clock.measure { for _ in 0..<repetitions { body() } })
        }
        return best.inSeconds / Double(repetitions) * 1e6
    }

    @Test func breakEven() {
        let pool = ComputePool(threads: 2)
        let (width, feedForward, queryWidth, kvWidth, headSize) = (640, 2048, 1024, 256, 256)
        var generator = SplitMix64(seed: 1)
        func buffer(_ count: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: count)
            for i in 0..<count { p[i] = Float.random(in: -2...2, using: &generator) }
            return p
        }
        let maxTokens = 512
        let a = buffer(maxTokens * feedForward), b = buffer(maxTokens * feedForward)
        let c = buffer(maxTokens * feedForward)
        let weight = buffer(feedForward)
        let rotary = RotaryEmbedding(dimensions: headSize, base: 10_000, style: .halves)
        rotary.reserve(positions: 64)
        defer { for p in [a, b, c, weight] { p.deallocate() } }
        print("tokens | kernel | one thread µs | split µs")
        for tokens in [1, 2, 4, 8, 16, 32, 64, 128, 512] {
            let repetitions = max(20, 4000 / tokens)
            func compare(_ name: String, units: Int, granule: Int = 1, _ body: (Range<Int>) -> Void) {
                let single = microseconds(repetitions) { body(0..<units) }
                let split = microseconds(repetitions) { forEachRange(units, minimumPerChunk: 1, granule: granule, pool: pool, body) }
                print("\(tokens) | \(name) | \(String(format: "%.2f", single)) | \(String(format: "%.2f", split))")
            }
            // The gates start from a fresh copy each call: applied to their own output over and over,
            // values would sink into subnormals, which cost the FPU ten times more.
            compare("copy", units: tokens * feedForward, granule: 16) { r in
                (c + r.lowerBound).update(from: a + r.lowerBound, count: r.count)
            }
            compare("copy+gelu gate", units: tokens * feedForward, granule: 16) { r in
                (c + r.lowerBound).update(from: a + r.lowerBound, count: r.count)
                geluTanhGate(c + r.lowerBound, b + r.lowerBound, count: r.count)
            }
            compare("copy+silu gate", units: tokens * feedForward, granule: 16) { r in
                (c + r.lowerBound).update(from: a + r.lowerBound, count: r.count)
                siluGate(c + r.lowerBound, b + r.lowerBound, count: r.count)
            }
            compare("add", units: tokens * width, granule: 16) { r in
                addInPlace(a + r.lowerBound, b + r.lowerBound, count: r.count)
            }
            compare("rmsNorm rows", units: tokens) { r in
                rmsNorm(a + r.lowerBound * width, rows: r.count, width: width, weight: weight, epsilon: 1e-6, into: b + r.lowerBound * width)
            }
            compare("norm+add+norm rows", units: tokens) { r in
                let o = r.lowerBound * width
                rmsNorm(b + o, rows: r.count, width: width, weight: weight, epsilon: 1e-6, into: b + o)
                addInPlace(a + o, b + o, count: r.count * width)
                rmsNorm(a + o, rows: r.count, width: width, weight: weight, epsilon: 1e-6, into: b + o)
            }
            compare("q/k norm+rope+scale tokens", units: tokens) { r in
                for t in r {
                    let (q, k) = (a + t * queryWidth, b + t * kvWidth)
                    rmsNorm(q, rows: 4, width: headSize, weight: weight, epsilon: 1e-6, into: q)
                    rmsNorm(k, rows: 1, width: headSize, weight: weight, epsilon: 1e-6, into: k)
                    rotary.apply(q, heads: 4, position: t % 64)
                    rotary.apply(k, heads: 1, position: t % 64)
                    scaleInPlace(q, by: 0.0625, count: queryWidth)
                }
            }
        }
    }
}
