import CSluiceKernels
import Foundation
import SluiceTestSupport
import Testing

@testable import SluiceEngine

@Suite(.ownThread)
struct SamplerTests {
    let logits: [Float] = [1.0, 3.0, 2.0, 3.0, -1.0, 0.5]

    func sample(_ parameters: SamplingParameters, _ u: Double) -> Int32 {
        logits.withUnsafeBufferPointer { Sampler.sample($0.baseAddress!, count: logits.count, parameters: parameters, uniform: u) }
    }

    @Test func greedyTakesTheLowestIdAmongTies() {
        var p = SamplingParameters()
        p.temperature = 0
        #expect(sample(p, 0.99) == 1)
        p.temperature = 1
        p.topK = 1
        #expect(sample(p, 0.99) == 1)
    }

    @Test func drawsFollowTheDistribution() {
        var p = SamplingParameters()
        p.temperature = 1
        // Candidates sorted by probability (ties by id): 1, 3, 2, 0, 5, 4.
        let weights = [3.0, 3.0, 2.0, 1.0, 0.5, -1.0].map { exp($0 - 3) }
        let total = weights.reduce(0, +)
        let order: [Int32] = [1, 3, 2, 0, 5, 4]
        var running = 0.0
        for (i, weight) in weights.enumerated() {
            #expect(sample(p, (running + weight / 2) / total) == order[i])
            running += weight
        }
    }

    @Test func topKTopPAndMinPFilter() {
        var p = SamplingParameters()
        p.topK = 2
        #expect(Set((0..<50).map { sample(p, Double($0) / 50) }) == [1, 3])
        p.topK = 0
        p.topP = 0.5  // 1 and 3 together hold ~0.58 of the mass
        #expect(Set((0..<50).map { sample(p, Double($0) / 50) }) == [1, 3])
        p.topP = 1
        p.minP = 0.3  // keeps tokens with p >= 0.3 * p(max): 1, 3, 2 (e^-1 = 0.37)
        #expect(Set((0..<50).map { sample(p, Double($0) / 50) }) == [1, 2, 3])
    }

    @Test func counterRandomIsAPureFunctionOfItsKey() {
        let a = CounterRandom.uniform(seed: 7, key: CounterRandom.key(for: "req-1"), index: 5)
        #expect(a == CounterRandom.uniform(seed: 7, key: CounterRandom.key(for: "req-1"), index: 5))
        #expect(a != CounterRandom.uniform(seed: 7, key: CounterRandom.key(for: "req-1"), index: 6))
        #expect(a != CounterRandom.uniform(seed: 8, key: CounterRandom.key(for: "req-1"), index: 5))
        let draws = (0..<10_000).map { CounterRandom.uniform(seed: 1, key: 2, index: UInt64($0)) }
        #expect(draws.allSatisfy { $0 >= 0 && $0 < 1 })
        let mean = draws.reduce(0, +) / Double(draws.count)
        #expect(abs(mean - 0.5) < 0.02)
    }

    @Test func logProbabilitiesAreALogSoftmax() {
        let result = logits.withUnsafeBufferPointer { Sampler.logProbabilities($0.baseAddress!, count: logits.count, token: 2, top: 3) }
        let normalizer = log(logits.reduce(0.0) { $0 + exp(Double($1)) })
        #expect(abs(result.chosen - (2 - normalizer)) < 1e-9)
        #expect(result.top.map(\.token) == [1, 3, 2])
        #expect(abs(result.top[0].logProbability - (3 - normalizer)) < 1e-9)
    }

    /// The sampler's own exp and log (the same bits on every CPU, unlike libm's) are as accurate as
    /// libm's to within an ulp or two, over the whole range, subnormal results and special values included.
    @Test func deterministicExpAndLogAreWithinTwoUlpsOfLibm() {
        var generator = SplitMix64(seed: 31)
        func ulps(_ a: Double, _ b: Double) -> Double {
            if a == b { return 0 }
            return abs(a - b) / max(b.ulp, Double.leastNonzeroMagnitude)
        }
        var worstExp = 0.0, worstLog = 0.0
        for _ in 0..<200_000 {
            let a = Double.random(in: -745...709.7, using: &generator)
            worstExp = max(worstExp, ulps(sluice_exp(a), Foundation.exp(a)))
            let small = -Double.random(in: 0...40, using: &generator)
            worstExp = max(worstExp, ulps(sluice_exp(small), Foundation.exp(small)))
            let x = Double(sign: .plus, exponent: Int.random(in: -1074...1023, using: &generator),
                           significand: Double.random(in: 1..<2, using: &generator))
            worstLog = max(worstLog, ulps(sluice_log(x), Foundation.log(x)))
            let near1 = 1 + Double.random(in: -0.3...0.4, using: &generator)
            worstLog = max(worstLog, ulps(sluice_log(near1), Foundation.log(near1)))
        }
        #expect(worstExp <= 2, "exp: \(worstExp) ulps")
        #expect(worstLog <= 2, "log: \(worstLog) ulps")
        #expect(sluice_exp(0) == 1 && sluice_exp(-.infinity) == 0 && sluice_exp(800) == .infinity && sluice_exp(-746) == 0)
        #expect(sluice_exp(.nan).isNaN && sluice_log(.nan).isNaN && sluice_log(-1).isNaN)
        #expect(sluice_log(1) == 0 && sluice_log(0) == -.infinity && sluice_log(.infinity) == .infinity)
        #expect(sluice_exp(-744) > 0 && sluice_exp(-744) < Double.leastNormalMagnitude)
        #expect(ulps(sluice_log(.leastNonzeroMagnitude), Foundation.log(.leastNonzeroMagnitude)) <= 1)
    }

    /// The log-softmax normalizer: eight running sums in index order, added as a balanced tree, of
    /// the terms at or above e^-50 (the same bits as that written out one term at a time), and within
    /// 1e-12 of the compensated float64 sum of every term; on a flat 262,144-logit row, one with -infinity
    /// (masked tokens) and a NaN, one whose maximum comes last, and lengths around multiples of 8.
    @Test func theNormalizerIsEightRunningSumsOfTheTermsAboveTheFloor() {
        var generator = SplitMix64(seed: 32)
        var rows: [[Float]] = [(0..<262_144).map { _ in Float.random(in: -60...10, using: &generator) }]
        rows.append(rows[0].enumerated().map { $0.offset % 3 == 0 ? -.infinity : $0.element })
        rows.append((0..<5000).map { Float($0) * 0.02 - 90 })
        rows += [1, 7, 8, 9, 17].map { n in (0..<n).map { _ in Float.random(in: -55...0, using: &generator) } }
        for row in rows {
            let maximum = row.max()!
            var lanes = [Double](repeating: 0, count: 8)
            // Neumaier's compensated sum of every term, as the reference.
            var exact = 0.0, compensation = 0.0
            for (i, logit) in row.enumerated() {
                let x = Double(logit - maximum)
                let term = Foundation.exp(x), total = exact + term
                compensation += abs(exact) >= abs(term) ? (exact - total) + term : (term - total) + exact
                exact = total
                if x >= -50 { lanes[i % 8] += sluice_exp(x) }
            }
            exact += compensation
            let expected = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
            let got = sluice_logit_exp_sum(row, Int32(row.count), maximum)
            #expect(got.bitPattern == expected.bitPattern, "\(row.count) logits: \(got) vs \(expected)")
            #expect(abs(got - exact) <= 1e-12 * exact, "\(row.count) logits: \(got) vs float64 \(exact)")
        }
        var withNaN = rows[0]
        withNaN[12345] = .nan
        #expect(sluice_logit_exp_sum(withNaN, Int32(withNaN.count), 10).isNaN)
    }

    @Test func stopStringsMatchTheEarliestOccurrence() {
        let text = "alpha beta gamma"
        #expect(StopStrings.firstMatch(in: text, stops: ["gamma", "beta"]) == text.range(of: "beta")!.lowerBound)
        #expect(StopStrings.firstMatch(in: text, stops: ["delta"]) == nil)
    }

    @Test func checkpointsRoundTrip() throws {
        let state = CheckpointState(tokens: [5, 6, 7], logprobs: [
            .init(token: 5, logprob: -0.25, top: [TokenLogProbability(token: 5, logProbability: -0.25), TokenLogProbability(token: 9, logProbability: -1.5)]),
        ], engine: "model=1f precision=int16.2 template=gemma")
        let checkpoint = state.encoded()
        #expect(checkpoint.generatedTokens == 3)
        #expect(CheckpointState(checkpoint) == state)
        #expect(CheckpointState(.init(generatedTokens: 1, payload: Array("garbage".utf8))) == nil)
    }
}
