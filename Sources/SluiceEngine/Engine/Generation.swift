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
    /// Completions' `echo` with `logprobs`: whether the prompt's tokens get log-probabilities too.
    let wantsPromptLogprobs: Bool
    /// The log-probabilities of the prompt's tokens after the first: entry i is token i + 1's,
    /// from the logits at position i. Filled in at prefill, position by position, each row
    /// reduced to the token's log-probability and the top alternatives as soon as it is computed.
    /// Not checkpointed: a resumed or preempted generation recomputes the missing ones in its
    /// prefill, bit for bit the same (the kernels are batch- and prefill-invariant).
    private(set) var promptLogprobs: [TokenLogprobs] = []
    /// Tokens of prompt + generated whose keys and values are in the cache.
    var cachedCount = 0
    /// The hidden state (after the final norm) of the row whose draw the output head deferred
    /// (see `HeadCarry`): its token comes from the next step's logits. Every token so far is
    /// cached meanwhile, so the scheduler plans nothing for it.
    var deferredHeadState: [Float]?
    let maxTokens: Int
    let randomKey: UInt64
    /// Which choice of the answer this is (`n` and prompt lists give several).
    let choice: Int
    /// The request's other choices, when it has several.
    let group: ChoiceGroup?
    /// Structured output: the grammar the text must follow, and the state of the text so far.
    let constraint: ConstrainedDecoding?
    private(set) var grammarState: GrammarMachine.State = 0
    /// How often each token was generated (kept when penalties need it).
    private(set) var generatedCounts: [Int32: Int] = [:]
    /// The distinct prompt tokens (kept when the repetition penalty needs them).
    let promptTokenSet: Set<Int32>
    /// Generated tokens recorded at the last checkpoint handed to the runner.
    var checkpointedCount: Int
    var finishReason: String?

    struct TokenLogprobs: Equatable {
        var token: Int32
        var logprob: Double
        var top: [TokenLogProbability]
    }

    init(request: EngineRequest, parameters: GenerationRequest, slot: Int, promptTokens: [Int32], maxTokens: Int,
         resumed: CheckpointState?, choice: Int = 0, group: ChoiceGroup? = nil, constraint: ConstrainedDecoding? = nil) {
        self.request = request
        self.parameters = parameters
        self.slot = slot
        self.promptTokens = promptTokens
        self.maxTokens = maxTokens
        self.choice = choice
        self.group = group
        self.constraint = constraint
        promptTokenSet = parameters.logitProcessing.usesPromptTokens ? Set(promptTokens) : []
        wantsPromptLogprobs = parameters.echo && parameters.logprobs != nil && request.endpoint == .completions
        // A seeded request's draws depend only on its body, so identical requests give identical
        // outputs (and a cached result is exactly what a fresh computation would give). Without
        // a seed, the custom id joins the key: different requests sample differently, and each
        // one still samples the same way every time, which keeps resumed results exact.
        let body = request.endpoint.rawValue + "\u{0}" + request.body.serialized
        let requestKey = CounterRandom.key(for: parameters.hasSeed ? body : request.customID + "\u{0}" + body)
        // Choice 0 keeps the request's key (a one-choice request samples as it always did);
        // each other choice has its own stream, so every choice is reproducible on its own.
        randomKey = choice == 0 ? requestKey : CounterRandom.mix(requestKey ^ (UInt64(choice) &* 0x9E37_79B9_7F4A_7C15))
        if let constraint { grammarState = constraint.machine.initialState }
        checkpointedCount = 0
        if let resumed {
            for (i, token) in resumed.tokens.enumerated() {
                append(token, logprobs: i < resumed.logprobs.count ? resumed.logprobs[i] : nil)
            }
        }
        checkpointedCount = generated.count
    }

    var totalCount: Int { promptTokens.count + generated.count }

    /// Whether prompt positions still need their logits for the prompt's log-probabilities.
    var promptLogprobsPending: Bool { wantsPromptLogprobs && promptLogprobs.count < promptTokens.count - 1 }

    /// Whether prompt position `position` needs a logit row in the step that computes it.
    func needsPromptRow(at position: Int) -> Bool {
        wantsPromptLogprobs && position >= promptLogprobs.count && position < promptTokens.count - 1
    }

    /// How many positions from the start may come from shared prefix blocks (`KVCache.attachCachedPrefix`'s
    /// `total`, one past them): positions whose logits are still needed must be computed here.
    var shareableTotal: Int { promptLogprobsPending ? promptLogprobs.count + 1 : totalCount }

    /// Records the log-probability of prompt token `position + 1`; positions come in order.
    func recordPromptLogprobs(_ entry: TokenLogprobs, position: Int) {
        precondition(position == promptLogprobs.count, "prompt log-probabilities are computed in order")
        promptLogprobs.append(entry)
    }

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
        if parameters.logitProcessing.presencePenalty != 0 || parameters.logitProcessing.frequencyPenalty != 0
            || parameters.logitProcessing.repetitionPenalty != 1 {
            generatedCounts[token, default: 0] += 1
        }
        if let constraint, grammarState != GrammarMachine.dead, !constraint.trie.endTokens.contains(token) {
            grammarState = constraint.machine.advance(grammarState, bytes: constraint.trie.pieces[Int(token)])
        }
    }

    /// Whether the sequence's logits must be computed in full and processed before sampling
    /// (penalties, biases or a grammar): never by the argmax head.
    var needsFullLogits: Bool { constraint != nil || !parameters.logitProcessing.isIdentity }

    /// Whether the grammar's value is complete and nothing may follow it (generation ends).
    var constraintIsComplete: Bool {
        guard let constraint else { return false }
        return grammarState == GrammarMachine.dead
            || (constraint.machine.isAccepting(grammarState) && !constraint.machine.canContinue(grammarState))
    }

    /// Drops generated tokens past `count` (used when a stop string ends the text early).

    /// This generation's checkpoint (with its request's other choices), made by the engine `engine` names.
    func checkpointState(engine: String) -> CheckpointState {
        var state = CheckpointState(tokens: generated, logprobs: logprobs, engine: engine)
        if let group {
            let members = group.members
            state.tokens = members[0].generated
            state.logprobs = members[0].logprobs
            state.otherChoices = members.dropFirst().map { ($0.generated, $0.logprobs) }
        }
        return state
    }
}

/// The generations of one request with several choices, and the answers of those done.
final class ChoiceGroup {
    /// Every choice's generation, by choice index.
    var members: [Generation] = []
    var finished: [Int: (content: String, finishReason: String)] = [:]
    /// Set once the request's stop was reported (its other choices then only release their cache).
    var stopped = false

    var isComplete: Bool { finished.count == members.count }
}

/// A request's grammar (shared by every request with the same constraint) and the vocabulary trie.
struct ConstrainedDecoding {
    let machine: GrammarMachine
    let trie: TokenTrie
}

/// What a checkpoint of the built-in engine holds: the generated tokens and,
/// when requested, their log-probabilities, and what made them
/// (`BuiltinEngine.outputIdentity`). Enough to continue exactly, since sampling
/// randomness is keyed by token index, by an engine that would have made them too.
struct CheckpointState: Equatable {
    static let formatVersion = 1
    var tokens: [Int32]
    var logprobs: [Generation.TokenLogprobs]
    /// Choices 1... of a request with several (choice 0 is `tokens` and `logprobs`).
    var otherChoices: [(tokens: [Int32], logprobs: [Generation.TokenLogprobs])] = []

    static func == (a: CheckpointState, b: CheckpointState) -> Bool {
        a.tokens == b.tokens && a.logprobs == b.logprobs && a.engine == b.engine
            && a.otherChoices.elementsEqual(b.otherChoices) { $0.tokens == $1.tokens && $0.logprobs == $1.logprobs }
    }

    /// The tokens and log-probabilities of `choice`, if the checkpoint has it.
    func choice(_ choice: Int) -> CheckpointState? {
        if choice == 0 { return CheckpointState(tokens: tokens, logprobs: logprobs, engine: engine) }
        guard choice - 1 < otherChoices.count else { return nil }
        let other = otherChoices[choice - 1]
        return CheckpointState(tokens: other.tokens, logprobs: other.logprobs, engine: engine)
    }
    /// The identity of the engine that generated the tokens; empty in checkpoints written
    /// before it was recorded.
    var engine: String

    func encoded() -> Checkpoint {
        var fields: [(key: String, value: JSON)] = [
            (key: "v", value: .int(Self.formatVersion)),
            (key: "engine", value: .string(engine)),
        ]
        fields += Self.encode(tokens: tokens, logprobs: logprobs)
        if !otherChoices.isEmpty {
            fields.append((key: "choices", value: .array(otherChoices.map { .object(Self.encode(tokens: $0.tokens, logprobs: $0.logprobs)) })))
        }
        let total = otherChoices.reduce(tokens.count) { $0 + $1.tokens.count }
        return Checkpoint(generatedTokens: total, payload: Array(JSON.object(fields).serialized.utf8))
    }

    private static func encode(tokens: [Int32], logprobs: [Generation.TokenLogprobs]) -> [(key: String, value: JSON)] {
        var fields: [(key: String, value: JSON)] = [(key: "tokens", value: .array(tokens.map { .int($0) }))]
        if !logprobs.isEmpty {
            fields.append((key: "logprobs", value: .array(logprobs.map { entry in
                .array([.int(entry.token), .double(entry.logprob),
                        .array(entry.top.flatMap { [JSON.int($0.token), .double($0.logProbability)] })])
            })))
        }
        return fields
    }

    /// Decodes a checkpoint; nil when it is not one of ours (then the request starts over).
    init?(_ checkpoint: Checkpoint) {
        guard let json = try? JSON.parse(checkpoint.payload), json["v"]?.intValue == Self.formatVersion,
              let first = Self.decode(json) else { return nil }
        var others: [(tokens: [Int32], logprobs: [Generation.TokenLogprobs])] = []
        for item in json["choices"]?.arrayValue ?? [] {
            guard let choice = Self.decode(item) else { return nil }
            others.append(choice)
        }
        self.init(tokens: first.tokens, logprobs: first.logprobs, engine: json["engine"]?.stringValue ?? "")
        otherChoices = others
    }

    private static func decode(_ json: JSON) -> (tokens: [Int32], logprobs: [Generation.TokenLogprobs])? {
        guard let tokenValues = json["tokens"]?.arrayValue else { return nil }
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
        return (tokens, logprobs)
    }

    init(tokens: [Int32], logprobs: [Generation.TokenLogprobs], engine: String) {
        self.tokens = tokens
        self.logprobs = logprobs
        self.engine = engine
    }
}
