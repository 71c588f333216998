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
    /// The most likely token; the lowest id among exact ties.
    public static func argmax(_ logits: UnsafePointer<Float>, count: Int) -> Int32 {
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
    public static func sample(_ logits: UnsafePointer<Float>, count: Int, parameters: SamplingParameters, uniform: Double) -> Int32 {
        if parameters.isGreedy { return argmax(logits, count: count) }
        let inverseTemperature = 1 / parameters.temperature
        var maximum = logits[0]
        for i in 1..<count { maximum = max(maximum, logits[i]) }

        // Candidates within reach of the maximum: anything 40 nats below (at temperature) has
        // probability under 1e-17 and can never be drawn from a 53-bit uniform.
        let cutoff = Double(maximum) - 40 * parameters.temperature
        var candidates: [(token: Int32, weight: Double)] = []
        candidates.reserveCapacity(1024)
        for i in 0..<count where Double(logits[i]) >= cutoff {
            candidates.append((Int32(i), exp((Double(logits[i]) - Double(maximum)) * inverseTemperature)))
        }
        // Most likely first; ties by token id so the order is total and reproducible.
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

    /// Log-softmax of `logits` at `token`, and the `top` most likely tokens with theirs.
    public static func logProbabilities(_ logits: UnsafePointer<Float>, count: Int, token: Int32, top: Int)
        -> (chosen: Double, top: [TokenLogProbability]) {
        var maximum = logits[0]
        for i in 1..<count { maximum = max(maximum, logits[i]) }
        var sum = 0.0
        for i in 0..<count { sum += exp(Double(logits[i] - maximum)) }
        let logNormalizer = Double(maximum) + log(sum)
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
