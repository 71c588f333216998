import SluiceCore

/// Penalties and biases a request applies to each sequence's logits before sampling.
///
/// Applied in this order to the sequence's own logit row (which must then be computed in
/// full, not by the argmax head):
/// 1. `repetition_penalty` (vLLM's and llama.cpp's, from CTRL): every token seen in the
///    prompt or the output so far has its logit divided by the penalty when positive and
///    multiplied by it when negative.
/// 2. `frequency_penalty` and `presence_penalty` (OpenAI's definitions): a token generated
///    `c` times so far loses `c * frequency + (c > 0 ? presence : 0)`.
/// 3. `logit_bias`: added to the token's logit; −100 bans the token, and +100 restricts the
///    choice to the tokens biased by +100 (OpenAI: "ban or exclusive selection").
/// A grammar's token mask (structured outputs) is applied after these, so a bias can never
/// make the output leave its schema; where the ban and exclusive-selection rules would leave the
/// grammar no token at all, the biases are added as plain numbers instead (the grammar wins, as
/// in vLLM, rather than the output ending where it stands, invalid). Log-probabilities are
/// reported over the result.
public struct LogitProcessing: Sendable, Equatable {
    public var presencePenalty: Float = 0
    public var frequencyPenalty: Float = 0
    public var repetitionPenalty: Float = 1
    /// (token, bias), by token id.
    public var bias: [(token: Int32, value: Float)] = []

    public init() {}

    public static func == (a: LogitProcessing, b: LogitProcessing) -> Bool {
        a.presencePenalty == b.presencePenalty && a.frequencyPenalty == b.frequencyPenalty
            && a.repetitionPenalty == b.repetitionPenalty && a.bias.elementsEqual(b.bias) { $0 == $1 }
    }

    /// Whether the processing leaves logits as they are.
    public var isIdentity: Bool { presencePenalty == 0 && frequencyPenalty == 0 && repetitionPenalty == 1 && bias.isEmpty }
    var usesPromptTokens: Bool { repetitionPenalty != 1 }

    /// Reads the request's penalties and `logit_bias`, range-checked as OpenAI does.
    init(_ body: JSON) throws(RequestError) {
        presencePenalty = Float(try GenerationRequest.number(body, "presence_penalty", in: -2...2) ?? 0)
        frequencyPenalty = Float(try GenerationRequest.number(body, "frequency_penalty", in: -2...2) ?? 0)
        if let value = body["repetition_penalty"], !value.isNull {
            guard let penalty = value.doubleValue, penalty > 0, penalty <= 10 else {
                throw RequestError("'repetition_penalty' must be a number greater than 0 and at most 10", parameter: "repetition_penalty")
            }
            repetitionPenalty = Float(penalty)
        }
        if let value = body["logit_bias"], !value.isNull {
            guard let entries = value.objectValue else {
                throw RequestError("'logit_bias' must be an object mapping token ids to biases", parameter: "logit_bias")
            }
            var seen = Set<Int32>()
            for (key, amount) in entries {
                guard let id = Int32(key), id >= 0 else {
                    throw RequestError("'logit_bias' keys must be token ids (integers as strings); got '\(key)'", parameter: "logit_bias")
                }
                guard let b = amount.doubleValue, (-100...100).contains(b) else {
                    throw RequestError("'logit_bias' values must be numbers from -100 to 100 (token \(key))", parameter: "logit_bias")
                }
                guard seen.insert(id).inserted else {
                    throw RequestError("'logit_bias' names token \(key) twice", parameter: "logit_bias")
                }
                bias.append((token: id, value: Float(b)))
            }
            bias.sort { $0.token < $1.token }
        }
    }

    /// Applies the processing to one sequence's logits (`count` usable entries).
    /// - Parameters:
    ///   - generatedCounts: how often each token was generated so far.
    ///   - promptTokens: the distinct prompt tokens (needed for the repetition penalty).
    ///   - strictBias: −100 bans and +100 selects exclusively; otherwise every bias is only added.
    func apply(to logits: UnsafeMutablePointer<Float>, count: Int, generatedCounts: [Int32: Int], promptTokens: Set<Int32>,
               strictBias: Bool = true) {
        if repetitionPenalty != 1 {
            var seen = promptTokens
            for token in generatedCounts.keys { seen.insert(token) }
            for token in seen where Int(token) < count {
                let value = logits[Int(token)]
                logits[Int(token)] = value > 0 ? value / repetitionPenalty : value * repetitionPenalty
            }
        }
        if presencePenalty != 0 || frequencyPenalty != 0 {
            for (token, occurrences) in generatedCounts where Int(token) < count && occurrences > 0 {
                logits[Int(token)] -= Float(occurrences) * frequencyPenalty + presencePenalty
            }
        }
        guard !bias.isEmpty else { return }
        guard strictBias else {
            for (token, value) in bias where Int(token) < count { logits[Int(token)] += value }
            return
        }
        let forced = bias.filter { $0.value == 100 && Int($0.token) < count }
        if !forced.isEmpty {
            // Exclusive selection: only the +100 tokens remain, with their own logits.
            var kept: [(Int32, Float)] = forced.map { ($0.token, logits[Int($0.token)]) }
            for i in 0..<count { logits[i] = -.infinity }
            for i in kept.indices { logits[Int(kept[i].0)] = kept[i].1 }
            kept.removeAll()
            return
        }
        for (token, value) in bias where Int(token) < count {
            logits[Int(token)] = value == -100 ? -.infinity : logits[Int(token)] + value
        }
    }

    /// Whether the ban and exclusive-selection rules leave some token of `mask` that has a logit
    /// (penalties never take a finite logit to −∞, so the unprocessed row tells).
    func strictBiasLeavesSome(of mask: TokenMask, logits: UnsafePointer<Float>, count: Int) -> Bool {
        let forced = bias.filter { $0.value == 100 && Int($0.token) < count }
        if !forced.isEmpty { return forced.contains { mask.contains($0.token) && logits[Int($0.token)] > -.infinity } }
        let bans = bias.filter { $0.value == -100 }
        guard !bans.isEmpty else { return true }
        var next = bans.startIndex // `bias` is sorted by token, so the bans are too
        return mask.words.withUnsafeBufferPointer { words in
            for w in 0..<words.count where words[w] != 0 && w << 6 < count {
                var word = words[w]
                while word != 0 {
                    let token = Int32(w << 6 + word.trailingZeroBitCount)
                    word &= word - 1
                    guard Int(token) < count, logits[Int(token)] > -.infinity else { continue }
                    while next < bans.endIndex, bans[next].token < token { next += 1 }
                    if next == bans.endIndex || bans[next].token != token { return true }
                }
            }
            return false
        }
    }
}

/// Restricts `logits` to the tokens in `mask` (others become −∞).
func applyTokenMask(_ mask: TokenMask, to logits: UnsafeMutablePointer<Float>, count: Int) {
    mask.words.withUnsafeBufferPointer { words in
        for w in 0..<words.count {
            let base = w << 6
            guard base < count else { break }
            let word = words[w]
            let end = min(base + 64, count)
            if word == 0 {
                for i in base..<end { logits[i] = -.infinity }
            } else if word != ~0 {
                for i in base..<end where word & (1 << UInt64(i - base)) == 0 { logits[i] = -.infinity }
            }
        }
    }
}

extension Generation {
    /// Applies the request's penalties and biases, then its grammar's token mask, to the
    /// logits of this sequence's next token. If nothing is left to sample, the
    /// end-of-generation tokens are allowed (the output then ends where it is).
    func processLogits(_ logits: UnsafeMutablePointer<Float>, count: Int) {
        let processing = parameters.logitProcessing
        let mask = constraint.map { $0.machine.mask(grammarState, trie: $0.trie) }
        if !processing.isIdentity {
            let strict = mask.map { processing.strictBiasLeavesSome(of: $0, logits: logits, count: count) } ?? true
            processing.apply(to: logits, count: count, generatedCounts: generatedCounts, promptTokens: promptTokenSet,
                             strictBias: strict)
        }
        var ends: [Int32] = []
        if let constraint, let mask {
            applyTokenMask(mask, to: logits, count: count)
            ends = constraint.trie.endTokens
        }
        var anyLeft = false
        for i in 0..<count where logits[i] > -.infinity {
            anyLeft = true
            break
        }
        if !anyLeft {
            for token in ends where Int(token) < count { logits[Int(token)] = 0 }
        }
    }
}
