import CSluiceKernels
import Foundation
import SluiceTestSupport
import Testing

@testable import SluiceEngine

/// The sampler as it was before it stopped sorting every candidate: the definition of the
/// tokens it must keep giving (checkpoints and exports depend on them).
private enum ReferenceSampler {
    static func sample(_ logits: UnsafePointer<Float>, count: Int, parameters: SamplingParameters, uniform: Double) -> Int32 {
        if parameters.isGreedy { return Sampler.argmax(logits, count: count) }
        let inverseTemperature = 1 / parameters.temperature
        var maximum = logits[0]
        for i in 1..<count { maximum = max(maximum, logits[i]) }
        let cutoff = Double(maximum) - 40 * parameters.temperature
        var candidates: [(token: Int32, weight: Double)] = []
        for i in 0..<count where Double(logits[i]) >= cutoff {
            candidates.append((Int32(i), exp((Double(logits[i]) - Double(maximum)) * inverseTemperature)))
        }
        candidates.sort { $0.weight != $1.weight ? $0.weight > $1.weight : $0.token < $1.token }
        if parameters.topK > 0 && candidates.count > parameters.topK {
            candidates.removeLast(candidates.count - parameters.topK)
        }
        var total = candidates.reduce(0) { $0 + $1.weight }
        if parameters.topP < 1 {
            var running = 0.0
            var keep = candidates.count
            for (i, c) in candidates.enumerated() {
                running += c.weight
                if running >= parameters.topP * total { keep = i + 1; break }
            }
            candidates.removeLast(candidates.count - keep)
            total = candidates.reduce(0) { $0 + $1.weight }
        }
        if parameters.minP > 0 {
            let threshold = parameters.minP * candidates[0].weight
            candidates.removeAll { $0.weight < threshold }
            total = candidates.reduce(0) { $0 + $1.weight }
        }
        let target = uniform * total
        var running = 0.0
        for c in candidates {
            running += c.weight
            if running > target { return c.token }
        }
        return candidates[candidates.count - 1].token
    }

    static func logProbabilities(_ logits: UnsafePointer<Float>, count: Int, token: Int32, top: Int)
        -> (chosen: Double, top: [TokenLogProbability]) {
        var maximum = logits[0]
        for i in 1..<count { maximum = max(maximum, logits[i]) }
        // The normalizer's definition: terms at or above e^-50 of the largest, element i in running
        // sum i mod 8, the eight added as a balanced tree; the sampler's own exp and log.
        var lanes = [Double](repeating: 0, count: 8)
        for i in 0..<count {
            let x = Double(logits[i] - maximum)
            if !(x < -50) { lanes[i % 8] += sluice_exp(x) }
        }
        let sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
        let logNormalizer = Double(maximum) + sluice_log(sum)
        var best: [TokenLogProbability] = []
        if top > 0 {
            for i in 0..<count {
                let value = Double(logits[i])
                if best.count == top, value <= best[top - 1].logProbability { continue }
                let entry = TokenLogProbability(token: Int32(i), logProbability: value)
                let position = best.firstIndex { $0.logProbability < value } ?? best.count
                best.insert(entry, at: position)
                if best.count > top { best.removeLast() }
            }
            for i in best.indices { best[i].logProbability -= logNormalizer }
        }
        return (Double(logits[Int(token)]) - logNormalizer, best)
    }
}

/// Random logit rows of several shapes: peaked, flat-tailed (most of the row within 40 nats),
/// coarsely rounded (many exact ties), and wide.
private func logitRow(_ random: inout SplitMix64, count: Int, shape: Int) -> [Float] {
    func gaussian() -> Double {
        let u = Double(random.next() >> 11) * 0x1p-53 + 0x1p-54, v = Double(random.next() >> 11) * 0x1p-53
        return (-2 * log(u)).squareRoot() * cos(2 * Double.pi * v)
    }
    switch shape {
    case 0: return (0..<count).map { _ in Float(3 * gaussian()) }
    case 1: return (0..<count).map { _ in Float(gaussian()) }
    case 2: return (0..<count).map { _ in Float((2 * gaussian()).rounded() / 2) }
    case 3:
        var row = (0..<count).map { _ in Float(2 * gaussian() - 8) }
        for _ in 0..<min(5, count) { row[Int(random.next() % UInt64(count))] = Float(8 + gaussian()) }
        return row
    default: return (0..<count).map { _ in Float(20 * gaussian()) }
    }
}

@Suite(.ownThread)
struct SamplerEquivalenceTests {
    static let temperatures: [Double] = [1e-300, 1e-4, 0.1, 0.5, 0.8, 1, 1.3, 2]
    static let topKs = [0, 1, 2, 7, 40, 1000]
    static let topPs: [Double] = [1, 0.95, 0.9, 0.5, 0.1, 1e-9]
    static let minPs: [Double] = [0, 0.05, 0.5, 1]

    private func compare(_ row: [Float], _ random: inout SplitMix64, cases: Int, workspace: SamplerWorkspace) {
        for _ in 0..<cases {
            var p = SamplingParameters()
            p.temperature = Self.temperatures[Int(random.next() % UInt64(Self.temperatures.count))]
            p.topK = random.next() % 3 == 0 ? Self.topKs[Int(random.next() % UInt64(Self.topKs.count))] : 0
            p.topP = random.next() % 2 == 0 ? Self.topPs[Int(random.next() % UInt64(Self.topPs.count))] : 1
            p.minP = random.next() % 3 == 0 ? Self.minPs[Int(random.next() % UInt64(Self.minPs.count))] : 0
            let draws = [0, Double(1).nextDown, Double(random.next() >> 11) * 0x1p-53, Double(random.next() >> 11) * 0x1p-53]
            let uniform = draws[Int(random.next() % 4)]
            let (fast, reference) = row.withUnsafeBufferPointer { logits in
                (Sampler.sample(logits.baseAddress!, count: row.count, parameters: p, uniform: uniform, workspace: workspace),
                 ReferenceSampler.sample(logits.baseAddress!, count: row.count, parameters: p, uniform: uniform))
            }
            #expect(fast == reference, "T=\(p.temperature) k=\(p.topK) p=\(p.topP) minP=\(p.minP) u=\(uniform) n=\(row.count)")
        }
    }

    /// The same token as the reference, for every shape of row and filter, including ties,
    /// the extreme temperatures and the draws at both ends of [0, 1).
    @Test func drawsEqualTheReferenceOnSmallAndMediumRows() {
        var random = SplitMix64(seed: 14)
        let workspace = SamplerWorkspace()
        for trial in 0..<600 {
            let count = [1, 2, 6, 100, 1000, 5000][trial % 6]
            let row = logitRow(&random, count: count, shape: trial % 5)
            compare(row, &random, cases: 12, workspace: workspace)
        }
    }

    /// Vocabulary-sized rows, where the prefix the sampler sorts is a small part of the candidates.
    @Test func drawsEqualTheReferenceOnVocabularySizedRows() {
        var random = SplitMix64(seed: 1414)
        let workspace = SamplerWorkspace()
        for trial in 0..<20 {
            let row = logitRow(&random, count: 262_144, shape: trial % 5)
            compare(row, &random, cases: 6, workspace: workspace)
        }
    }

    /// The usual request: temperature 0.8 and top-p 0.95, many draws over one flat row.
    @Test func usualParametersOverManyDraws() {
        var random = SplitMix64(seed: 95)
        let workspace = SamplerWorkspace()
        let row = logitRow(&random, count: 50_000, shape: 1)
        var p = SamplingParameters()
        p.temperature = 0.8
        p.topP = 0.95
        row.withUnsafeBufferPointer { logits in
            for i in 0..<200 {
                let u = CounterRandom.uniform(seed: 1, key: 2, index: UInt64(i))
                #expect(Sampler.sample(logits.baseAddress!, count: row.count, parameters: p, uniform: u, workspace: workspace)
                        == ReferenceSampler.sample(logits.baseAddress!, count: row.count, parameters: p, uniform: u))
            }
        }
    }

    /// Non-finite rows take the literal path and agree too.
    @Test func nonFiniteRowsAgree() {
        var p = SamplingParameters()
        p.temperature = 0.7
        for row: [Float] in [[1, .infinity, 2, .infinity], [-.infinity, 0, 1, -.infinity], [3, .nan, 1, 2]] {
            let (fast, reference) = row.withUnsafeBufferPointer { logits in
                (Sampler.sample(logits.baseAddress!, count: row.count, parameters: p, uniform: 0.3),
                 ReferenceSampler.sample(logits.baseAddress!, count: row.count, parameters: p, uniform: 0.3))
            }
            #expect(fast == reference)
        }
    }

    /// The vectorized argmax picks what the old loop picked: the lowest id among ties, NaNs passed over
    /// (a NaN first logit gives 0).
    @Test func argmaxEqualsTheLoop() {
        var random = SplitMix64(seed: 8)
        for trial in 0..<300 {
            let count = [1, 2, 15, 16, 17, 1000, 262_144][trial % 7]
            var row = logitRow(&random, count: count, shape: 2)
            if trial % 5 == 1 { row[Int(random.next() % UInt64(count))] = .nan }
            if trial % 25 == 3 { row[0] = .nan }
            if trial % 7 == 4 { row = row.map { $0 > 0 ? -0.0 : $0 } }
            var best = 0
            for i in 1..<count where row[i] > row[best] { best = i }
            #expect(row.withUnsafeBufferPointer { Sampler.argmax($0.baseAddress!, count: count) } == Int32(best))
        }
    }

    /// Log-probabilities: bit for bit the reference's (it skips only terms that cannot change the sum).
    @Test func logProbabilitiesEqualTheReference() {
        var random = SplitMix64(seed: 5)
        for trial in 0..<60 {
            let count = [6, 1000, 262_144][trial % 3]
            let row = logitRow(&random, count: count, shape: trial % 5)
            let token = Int32(random.next() % UInt64(count))
            let top = [0, 1, 5, 20][trial % 4]
            let (fast, reference) = row.withUnsafeBufferPointer { logits in
                (Sampler.logProbabilities(logits.baseAddress!, count: count, token: token, top: top),
                 ReferenceSampler.logProbabilities(logits.baseAddress!, count: count, token: token, top: top))
            }
            #expect(fast.chosen.bitPattern == reference.chosen.bitPattern)
            #expect(fast.top == reference.top)
        }
    }

    /// Every kernel variant this CPU runs (portable, AVX2, AVX-512) gives the sampling kernels'
    /// results bit for bit: maxima, histograms, masses, collected candidates, normalizers, the
    /// head's weight sums, and so the drawn tokens, on vocabulary-sized rows of every shape.
    @Test func kernelVariantsGiveTheSameBits() {
        struct Results: Equatable {
            var maximum: UInt32, found: Int32, histogram: [Int32], mass: UInt64
            var collected: Int32, tokens: [Int32], scaled: [UInt64], normalizer: UInt64
            var reference: UInt32, weightSum: UInt64, tokensDrawn: [Int32]
        }
        var random = SplitMix64(seed: 2026)
        let count = 262_144, buckets = 2048
        let variants = (Int32(0)...sluice_cpu_variant()).filter { $0 <= 2 }
        #expect(variants.count >= 2 || sluice_cpu_variant() == 0, "an x86-64 CPU with AVX2 runs more than one variant")
        for trial in 0..<10 {
            var row = logitRow(&random, count: count, shape: trial % 5)
            if trial == 9 { row[77] = .infinity }
            let temperature = [0.3, 0.8, 1, 1.7][trial % 4]
            let uniforms = (0..<8).map { _ in Double(random.next() >> 11) * 0x1p-53 }
            let results = variants.map { variant -> Results in
                sluice_sampling_use_variant(variant)
                defer { sluice_sampling_use_variant(-1) }
                return row.withUnsafeBufferPointer { buffer in
                    let logits = buffer.baseAddress!
                    let maximum = sluice_sampling_maximum(logits, Int32(count))
                    let cutoff = Double(maximum) - 40 * temperature
                    var histogram = [Int32](repeating: 0, count: buckets + 1)
                    var mass = 0.0
                    let found = sluice_sampling_scan(logits, Int32(count), maximum, cutoff, 1 / temperature, Double(buckets) / 40,
                                                     Int32(buckets), &histogram, &mass)
                    var tokens = [Int32](repeating: 0, count: count), scaled = [Double](repeating: 0, count: count)
                    let collected = sluice_sampling_collect(logits, Int32(count), maximum, cutoff, 1 / temperature,
                                                            Double(buckets) / 40, Int32(buckets), 400, &tokens, &scaled)
                    var reference: Float = -.infinity, weightSum = 0.0
                    sluice_accumulate_weights(logits, Int32(count), 1 / temperature, &reference, &weightSum)
                    var parameters = SamplingParameters()
                    parameters.temperature = temperature
                    parameters.topP = 0.95
                    let drawn = uniforms.map { Sampler.sample(logits, count: count, parameters: parameters, uniform: $0) }
                    return Results(maximum: maximum.bitPattern, found: found, histogram: histogram, mass: mass.bitPattern,
                                   collected: collected, tokens: Array(tokens[..<Int(collected)]),
                                   scaled: scaled[..<Int(collected)].map(\.bitPattern),
                                   normalizer: sluice_logit_exp_sum(logits, Int32(count), maximum).bitPattern,
                                   reference: reference.bitPattern, weightSum: weightSum.bitPattern, tokensDrawn: drawn)
                }
            }
            for (variant, result) in zip(variants, results).dropFirst() {
                #expect(result == results[0], "trial \(trial): variant \(variant) differs from the portable kernels")
            }
        }
    }

    /// The scan's polynomial stays far inside the 2e-13 the sampler's bounds allow it.
    @Test func scanExponentialIsAccurate() {
        var random = SplitMix64(seed: 3)
        var worst = 0.0
        for i in 0..<200_000 {
            let a = i < 100 ? -Double(i) * 0.41 : -Double(random.next() >> 11) * 0x1p-53 * 42
            let exact = exp(a)
            worst = max(worst, abs(sluice_sampling_exp(a) - exact) / exact)
        }
        #expect(worst < 1e-14)
    }
}
