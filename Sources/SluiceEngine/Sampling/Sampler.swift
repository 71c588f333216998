import CSluiceKernels
import Foundation

/// How to choose each next token.
public struct SamplingParameters: Sendable, Equatable {
    /// 0 means greedy.
    public var temperature: Double = 1
    /// Keep only the `topK` most likely tokens; 0 keeps all.
    public var topK: Int = 0
    /// Keep the smallest set of most likely tokens whose probability reaches `topP`.
    public var topP: Double = 1
    /// Drop tokens less likely than `minP` times the most likely one.
    public var minP: Double = 0
    /// Seeds the counter-based random stream.
    public var seed: UInt64 = 0

    public init() {}

    public var isGreedy: Bool { temperature == 0 || topK == 1 }
}

/// A counter-based random stream: the number drawn for a token depends only on
/// (seed, stream key, token index), never on what was drawn before or on what
/// else shares the batch. A resumed request therefore draws exactly the numbers
/// it would have drawn had it never stopped.
public enum CounterRandom {
    /// SplitMix64's finalizer: a bijective mix with full avalanche.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform double in [0, 1) for token `index` of stream `key` under `seed`.
    public static func uniform(seed: UInt64, key: UInt64, index: UInt64) -> Double {
        let bits = mix(mix(mix(seed) ^ key) ^ index)
        return Double(bits >> 11) * 0x1.0p-53
    }

    /// A 64-bit key for a string (FNV-1a then mixed): stable across runs and machines.
    public static func key(for text: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return mix(hash)
    }
}

/// The log-probability of one token.
public struct TokenLogProbability: Sendable, Equatable {
    public var token: Int32
    public var logProbability: Double
}

/// Picks tokens from logits.
public enum Sampler {
    /// The revision of the sampler's arithmetic, part of the engine identity: 2 since its exp and
    /// log are `sluice_exp` and `sluice_log` (the same bits on every CPU) instead of libm's, which
    /// changed log-probabilities in their last bits (and could, in principle, a draw).
    public static let arithmeticRevision = 2

    /// The most likely token; the lowest id among exact ties.
    public static func argmax(_ logits: UnsafePointer<Float>, count: Int) -> Int32 {
        if count > 1 && count < Int(Int32.max) {
            // The largest value (a NaN first value: none), then its first occurrence: both vectorized.
            let maximum = sluice_sampling_maximum(logits, Int32(count))
            if maximum.isNaN { return 0 }
            return Int32(sluice_sampling_first_equal(logits, Int32(count), maximum))
        }
        var best = 0
        var bestValue = logits[0]
        for i in 1..<count where logits[i] > bestValue {
            best = i
            bestValue = logits[i]
        }
        return Int32(best)
    }

    /// Chooses the next token: greedy when `parameters.isGreedy`, otherwise
    /// temperature, then top-k, top-p and min-p filtering, then one draw of `uniform`.
    ///
    /// Allocates a workspace; a caller sampling many tokens passes its own.
    public static func sample(_ logits: UnsafePointer<Float>, count: Int, parameters: SamplingParameters, uniform: Double) -> Int32 {
        sample(logits, count: count, parameters: parameters, uniform: uniform, workspace: SamplerWorkspace())
    }

    /// Chooses the next token as the one-line description above says, with `workspace`'s
    /// memory (one workspace per thread sampling at a time).
    ///
    /// The definition: every token within 40 nats (at temperature) of the most likely one is a
    /// candidate, weighted exp((logit − max) / temperature); candidates are ordered by weight,
    /// ties by id; top-k keeps the first k; top-p keeps the shortest prefix whose running sum
    /// (in that order, from 0) reaches `topP` times the sum of all kept so far; min-p drops
    /// weights under `minP` times the largest; the draw is the first candidate whose running
    /// sum exceeds `uniform` times the sum of those kept, or the last one.
    ///
    /// Sorting every candidate (much of a 262,144-token vocabulary) would cost more than the
    /// model's step, so this sorts only the most likely ones: one pass counts the candidates
    /// by weight and bounds their total; the prefix that decides the draw is then collected,
    /// given exact weights and sorted. The sums that decide are those same sorted sums, and
    /// the total of all candidates, which only the top-p threshold or a plain draw needs,
    /// is known within a proven relative error of about 1e-10: when that margin could change
    /// a decision (almost never), every candidate is sorted as before. The token is always
    /// the one the definition gives.
    public static func sample(_ logits: UnsafePointer<Float>, count: Int, parameters: SamplingParameters, uniform: Double,
                              workspace: SamplerWorkspace) -> Int32 {
        if parameters.isGreedy { return argmax(logits, count: count) }
        let inverseTemperature = 1 / parameters.temperature
        let maximum = sluice_sampling_maximum(logits, Int32(clamping: count))
        let cutoff = Double(maximum) - 40 * parameters.temperature
        guard maximum.isFinite, inverseTemperature.isFinite, cutoff.isFinite, count < Int(Int32.max) else {
            return sortEverything(logits, count: count, maximum: maximum, parameters: parameters, uniform: uniform,
                                  workspace: workspace)
        }
        let buckets = SamplerWorkspace.buckets
        let bucketScale = Double(buckets) / 40
        workspace.reserve(count)
        let histogram = workspace.histogram
        histogram.update(repeating: 0, count: buckets + 1)
        var mass = 0.0
        let candidateCount = Int(sluice_sampling_scan(logits, Int32(count), maximum, cutoff, inverseTemperature, bucketScale,
                                                     Int32(buckets), histogram, &mass))
        // The sorted sum of all candidates' weights lies within this relative distance of `mass`:
        // the polynomial's and exp's errors (2e-13 allows for far more than either), and a
        // sequential sum's n·2⁻⁵³ twice, for the lanes' sum and the sorted one.
        let relative = (2e-13 + Double(2 * candidateCount + 64) * 0x1p-53) * 1.01
        let lower = mass * (1 - relative), upper = mass * (1 + relative)

        var lastBucket = firstBucketToCollect(histogram: histogram, buckets: buckets, bucketScale: bucketScale,
                                              candidateCount: candidateCount, upper: upper, parameters: parameters,
                                              uniform: uniform)
        while true {
            let complete = lastBucket >= buckets - 1
            let found = Int(sluice_sampling_collect(logits, Int32(count), maximum, cutoff, inverseTemperature, bucketScale,
                                                    Int32(buckets), Int32(complete ? buckets - 1 : lastBucket),
                                                    workspace.tokens, workspace.scaled))
            workspace.candidates.removeAll(keepingCapacity: true)
            for i in 0..<found {
                workspace.candidates.append((workspace.tokens[i], sluice_exp(workspace.scaled[i])))
            }
            workspace.candidates.sort(by: candidateOrder)
            if complete {
                return drawFromSorted(&workspace.candidates, parameters: parameters, uniform: uniform, from: .topK)
            }
            // Every candidate left out has a weight at most this (its bucket is past `lastBucket`).
            let outsideBound = sluice_exp(-Double(lastBucket + 1) / bucketScale) * (1 + 1e-9)
            if let token = drawFromPrefix(&workspace.candidates, candidateCount: candidateCount, outsideBound: outsideBound,
                                          lower: lower, upper: upper, parameters: parameters, uniform: uniform) {
                return token
            }
            // The prefix could not decide: sort every candidate.
            lastBucket = buckets - 1
        }
    }

    /// Most likely first; ties by token id so the order is total and reproducible.
    @inline(__always)
    static func candidateOrder(_ a: (token: Int32, weight: Double), _ b: (token: Int32, weight: Double)) -> Bool {
        a.weight != b.weight ? a.weight > b.weight : a.token < b.token
    }

    /// The definition followed literally, for logits whose maximum or scale is not finite.
    private static func sortEverything(_ logits: UnsafePointer<Float>, count: Int, maximum _: Float, parameters: SamplingParameters,
                                       uniform: Double, workspace: SamplerWorkspace) -> Int32 {
        var maximum = logits[0]
        for i in 1..<count { maximum = max(maximum, logits[i]) }
        let inverseTemperature = 1 / parameters.temperature
        let cutoff = Double(maximum) - 40 * parameters.temperature
        workspace.candidates.removeAll(keepingCapacity: true)
        for i in 0..<count where Double(logits[i]) >= cutoff {
            workspace.candidates.append((Int32(i), sluice_exp((Double(logits[i]) - Double(maximum)) * inverseTemperature)))
        }
        // Nothing within reach (a NaN maximum): the first token, where the definition has none.
        if workspace.candidates.isEmpty { return 0 }
        workspace.candidates.sort(by: candidateOrder)
        return drawFromSorted(&workspace.candidates, parameters: parameters, uniform: uniform, from: .topK)
    }

    enum Stage: Int, Comparable {
        case topK, topP, minP
        static func < (a: Stage, b: Stage) -> Bool { a.rawValue < b.rawValue }
    }

    /// The filters from `stage` on and the draw, over `candidates` sorted by `candidateOrder`: every
    /// candidate the stage sees, in the order the definition sums them.
    static func drawFromSorted(_ candidates: inout [(token: Int32, weight: Double)], parameters: SamplingParameters,
                               uniform: Double, from stage: Stage) -> Int32 {
        if stage <= .topK, parameters.topK > 0 && candidates.count > parameters.topK {
            candidates.removeLast(candidates.count - parameters.topK)
        }
        var total = candidates.reduce(0) { $0 + $1.weight }
        if stage <= .topP, parameters.topP < 1 {
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

    /// The draw from the sorted most likely candidates (all those above some weight, one or
    /// more), or nil when they do not decide it. Every other candidate weighs at most
    /// `outsideBound`; `lower...upper` holds the sorted sum of all `candidateCount` candidates' weights.
    static func drawFromPrefix(_ prefix: inout [(token: Int32, weight: Double)], candidateCount: Int, outsideBound: Double,
                               lower: Double, upper: Double, parameters: SamplingParameters, uniform: Double) -> Int32? {
        // The prefix must be exactly the first candidates in sorted order: all heavier than the rest.
        guard let last = prefix.last, last.weight > outsideBound else { return nil }
        if parameters.topK > 0 && candidateCount > parameters.topK {
            // Top-k keeps the first k: then every later sum is over the prefix alone.
            guard prefix.count >= parameters.topK else { return nil }
            return drawFromSorted(&prefix, parameters: parameters, uniform: uniform, from: .topK)
        }
        if parameters.topP < 1 {
            // The first running sum to reach topP × total, for every total the bounds allow.
            let low = parameters.topP * lower, high = parameters.topP * upper
            var running = 0.0
            for i in prefix.indices {
                running += prefix[i].weight
                if running >= high {
                    prefix.removeLast(prefix.count - (i + 1))
                    return drawFromSorted(&prefix, parameters: parameters, uniform: uniform, from: .minP)
                }
                if running >= low { return nil }
            }
            return nil
        }
        if parameters.minP > 0 {
            // Min-p keeps the candidates at or above a weight: the prefix must reach below it.
            guard prefix[prefix.count - 1].weight < parameters.minP * prefix[0].weight else { return nil }
            return drawFromSorted(&prefix, parameters: parameters, uniform: uniform, from: .minP)
        }
        // A plain draw: the first running sum above uniform × total, for every total the bounds allow.
        let low = uniform * lower, high = uniform * upper
        var running = 0.0
        for c in prefix {
            running += c.weight
            if running > high { return c.token }
            if running > low { return nil }
        }
        return nil
    }

    /// The last bucket (most likely first) whose candidates the first attempt collects: enough,
    /// by the histogram's estimate of their weights, for `drawFromPrefix` to decide.
    private static func firstBucketToCollect(histogram: UnsafeMutablePointer<Int32>, buckets: Int, bucketScale: Double,
                                             candidateCount: Int, upper: Double, parameters: SamplingParameters,
                                             uniform: Double) -> Int {
        // A bucket b holds weights above exp(-(b + 1) / bucketScale); one more bucket than the
        // estimate asks for covers the estimate's slack.
        func bucketWhereMassReaches(_ needed: Double) -> Int {
            var mass = 0.0
            for b in 0..<(buckets - 1) {
                mass += Double(histogram[b]) * sluice_exp(-Double(b + 1) / bucketScale)
                if mass >= needed { return b + 1 }
            }
            return buckets - 1
        }
        if parameters.topK > 0 && candidateCount > parameters.topK {
            var seen = 0
            for b in 0..<buckets {
                seen += Int(histogram[b])
                if seen >= parameters.topK { return b }
            }
            return buckets - 1
        }
        if parameters.topP < 1 { return bucketWhereMassReaches(parameters.topP * upper * (1 + 1e-9)) }
        if parameters.minP > 0 {
            // The first bucket wholly below minP × 1 (the largest weight is exp(0)).
            let b = Int((-sluice_log(parameters.minP) * bucketScale).rounded(.up)) + 1
            return min(b, buckets - 1)
        }
        return bucketWhereMassReaches(uniform * upper * (1 + 1e-9))
    }

    /// Log-softmax of `logits` at `token`, and the `top` most likely tokens with theirs.
    public static func logProbabilities(_ logits: UnsafePointer<Float>, count: Int, token: Int32, top: Int)
        -> (chosen: Double, top: [TokenLogProbability]) {
        let maximum = count < Int(Int32.max) ? sluice_sampling_maximum(logits, Int32(count)) : {
            var maximum = logits[0]
            for i in 1..<count { maximum = max(maximum, logits[i]) }
            return maximum
        }()
        // sluice_exp and sluice_log, not libm's, whose last bits differ between CPUs with and without
        // FMA: a request's log-probabilities are the same on every machine of a fleet.
        let logNormalizer = Double(maximum) + sluice_log(sluice_logit_exp_sum(logits, Int32(clamping: count), maximum))
        var best: [TokenLogProbability] = []
        if top > 0 {
            // A running list of the best `top`, kept sorted; logits rarely enter it.
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

/// Reusable memory for `Sampler.sample`: with one per sampling thread, a token costs no allocation.
public final class SamplerWorkspace: @unchecked Sendable {
    // Sendable: used by one thread at a time, as `Sampler.sample` requires.

    /// Histogram buckets over the 40 nats of candidates: 2048 make each bucket's weights
    /// differ by under 2%, so the collected prefix is barely larger than needed.
    static let buckets = 2048

    let histogram = UnsafeMutablePointer<Int32>.allocate(capacity: SamplerWorkspace.buckets + 1)
    private(set) var tokens = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    private(set) var scaled = UnsafeMutablePointer<Double>.allocate(capacity: 1)
    private var capacity = 1
    var candidates: [(token: Int32, weight: Double)] = []

    public init() {}

    /// Room for `count` candidates.
    func reserve(_ count: Int) {
        guard count > capacity else { return }
        tokens.deallocate()
        scaled.deallocate()
        tokens = .allocate(capacity: count)
        scaled = .allocate(capacity: count)
        capacity = count
        candidates.reserveCapacity(count)
    }

    deinit {
        histogram.deallocate()
        tokens.deallocate()
        scaled.deallocate()
    }
}
