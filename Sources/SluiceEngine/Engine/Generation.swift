import SluiceCore

/// One request the engine is generating for: its prompt, what it generated so
/// far, and how much of both is in the KV cache.
final class Generation {
    let request: EngineRequest
    let parameters: GenerationRequest
    let slot: Int
    let promptTokens: [Int32]
    private(set) var generated: [Int32] = []
    /// Log-probabilities of the generated tokens, when the request asked for them.
    private(set) var logprobs: [TokenLogprobs] = []
    /// Tokens of prompt + generated whose keys and values are in the cache.
    var cachedCount = 0
    let maxTokens: Int
    let randomKey: UInt64
    /// Generated tokens recorded at the last checkpoint handed to the runner.
    var checkpointedCount: Int
    var finishReason: String?

    struct TokenLogprobs: Equatable {
        var token: Int32
        var logprob: Double
        var top: [TokenLogProbability]
    }

    init(request: EngineRequest, parameters: GenerationRequest, slot: Int, promptTokens: [Int32], maxTokens: Int,
         resumed: CheckpointState?) {
        self.request = request
        self.parameters = parameters
        self.slot = slot
        self.promptTokens = promptTokens
        self.maxTokens = maxTokens
        // A seeded request's draws depend only on its body, so identical requests give identical
        // outputs (and a cached result is exactly what a fresh computation would give). Without
        // a seed, the custom id joins the key: different requests sample differently, and each
        // one still samples the same way every time, which keeps resumed results exact.
        let body = request.endpoint.rawValue + "\u{0}" + request.body.serialized
        randomKey = CounterRandom.key(for: parameters.hasSeed ? body : request.customID + "\u{0}" + body)
        if let resumed {
            generated = resumed.tokens
            logprobs = resumed.logprobs
        }
        checkpointedCount = generated.count
    }

    var totalCount: Int { promptTokens.count + generated.count }

    /// The token at `index` of prompt + generated.
    func token(at index: Int) -> Int32 {
        index < promptTokens.count ? promptTokens[index] : generated[index - promptTokens.count]
    }

    /// The draw for the next token: depends only on (seed, request, index).
    var nextUniform: Double { uniform(forToken: generated.count) }

    /// The draw for generated token `index` (a draft model samples future tokens with the
    /// draws the request will use for them).
    func uniform(forToken index: Int) -> Double {
        CounterRandom.uniform(seed: parameters.sampling.seed, key: randomKey, index: UInt64(index))
    }

    func append(_ token: Int32, logprobs entry: TokenLogprobs?) {
        generated.append(token)
        if let entry { logprobs.append(entry) }
    }

    /// Drops generated tokens past `count` (used when a stop string ends the text early).
    func truncateGenerated(to count: Int) {
        generated.removeLast(generated.count - count)
        if logprobs.count > count { logprobs.removeLast(logprobs.count - count) }
    }

    /// This generation's checkpoint, made by the engine `engine` names.
    func checkpointState(engine: String) -> CheckpointState {
        CheckpointState(tokens: generated, logprobs: logprobs, engine: engine)
    }
}

/// What a checkpoint of the built-in engine holds: the generated tokens and,
/// when requested, their log-probabilities, and what made them
/// (`BuiltinEngine.outputIdentity`). Enough to continue exactly, since sampling
/// randomness is keyed by token index, by an engine that would have made them too.
struct CheckpointState: Equatable {
    static let formatVersion = 1
    var tokens: [Int32]
    var logprobs: [Generation.TokenLogprobs]
    /// The identity of the engine that generated the tokens; empty in checkpoints written
    /// before it was recorded.
    var engine: String

    func encoded() -> Checkpoint {
        var fields: [(key: String, value: JSON)] = [
            (key: "v", value: .int(Self.formatVersion)),
            (key: "engine", value: .string(engine)),
            (key: "tokens", value: .array(tokens.map { .int($0) })),
        ]
        if !logprobs.isEmpty {
            fields.append((key: "logprobs", value: .array(logprobs.map { entry in
                .array([.int(entry.token), .double(entry.logprob),
                        .array(entry.top.flatMap { [JSON.int($0.token), .double($0.logProbability)] })])
            })))
        }
        return Checkpoint(generatedTokens: tokens.count, payload: Array(JSON.object(fields).serialized.utf8))
    }

    /// Decodes a checkpoint; nil when it is not one of ours (then the request starts over).
    init?(_ checkpoint: Checkpoint) {
        guard let json = try? JSON.parse(checkpoint.payload), json["v"]?.intValue == Self.formatVersion,
              let tokenValues = json["tokens"]?.arrayValue else { return nil }
        var tokens: [Int32] = []
        for value in tokenValues {
            guard let t = value.intValue, t >= 0, t <= Int(Int32.max) else { return nil }
            tokens.append(Int32(t))
        }
        var logprobs: [Generation.TokenLogprobs] = []
        for entry in json["logprobs"]?.arrayValue ?? [] {
            guard let parts = entry.arrayValue, parts.count == 3, let t = parts[0].intValue, let lp = parts[1].doubleValue,
                  let flat = parts[2].arrayValue, flat.count % 2 == 0 else { return nil }
            var top: [TokenLogProbability] = []
            for i in stride(from: 0, to: flat.count, by: 2) {
                guard let id = flat[i].intValue, let value = flat[i + 1].doubleValue else { return nil }
                top.append(TokenLogProbability(token: Int32(id), logProbability: value))
            }
            logprobs.append(.init(token: Int32(t), logprob: lp, top: top))
        }
        self.init(tokens: tokens, logprobs: logprobs, engine: json["engine"]?.stringValue ?? "")
    }

    init(tokens: [Int32], logprobs: [Generation.TokenLogprobs], engine: String) {
        self.tokens = tokens
        self.logprobs = logprobs
        self.engine = engine
    }
}
