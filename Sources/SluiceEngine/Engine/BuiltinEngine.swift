import Foundation
import SluiceCore
import Synchronization

/// Settings of the built-in engine.
public struct BuiltinEngineOptions: Sendable {
    /// Compute threads (the engine's own thread included).
    public var threads = ComputePool.availableCores
    /// Sequences generated together in one batch.
    public var maxSequences = 32
    /// Tokens per forward step: decode tokens plus prompt chunks.
    public var tokenBudget = 512
    /// Overrides the chat format: the model's own template, else one recognised from the model.
    public var chatTemplate: ChatTemplateOverride?
    /// Caps the model's context length (and so the KV cache per sequence).
    public var contextLength: Int?
    /// How often the engine publishes checkpoints of requests in progress.
    public var checkpointInterval: Duration = .milliseconds(250)
    /// The most memory the KV cache may use. When it is full, cached prompt blocks no
    /// request uses are evicted (least recently used first), then the newest sequences
    /// are preempted (their cache dropped) and recomputed when room frees up.
    public var kvMemoryBytes = 2 << 30
    /// Speculative decoding (prompt lookup or a draft model); never changes the output.
    public var speculation = SpeculationOptions()
    /// Requests whose prompts start alike share the KV blocks of that start (computed once,
    /// kept for later requests until the budget needs room). Outputs are identical either way.
    public var prefixSharing = true
    /// Positions per KV block (a power of two): the granularity of sharing and of memory.
    public var kvBlockPositions = KVCache.defaultBlockPositions
    /// How matrix products treat activations (see `MatmulPrecision`); changes results slightly.
    /// nil: the model's automatic choice (`MatmulPrecision.automatic(for:)`).
    public var precision: MatmulPrecision? = nil
    /// A sampled token the output head's first pass leaves open waits one step for its logits,
    /// which the next step's first pass computes, instead of a second sweep over the head's
    /// weights now (see `HeadCarry`). Outputs are identical either way.
    public var deferOpenDraws = true

    public init() {}
}

/// Sluice's in-process engine: a GGUF model on the CPU with continuous batching.
///
/// Requests are generated on one dedicated thread that owns the model, the KV
/// cache and all per-request state; `submit`, `cancel` and `collectCheckpoints`
/// only exchange messages with it through a mutex-protected mailbox.
public final class BuiltinEngine: InferenceEngine, @unchecked Sendable {
    public let description: String
    public let capacity: Int
    public let checkpointsPartialOutput = true
    public let events: AsyncStream<EngineEvent>

    public let model: any LanguageModel
    public let tokenizer: Tokenizer
    /// How chat messages become prompts; nil when the model has no template and none is recognised.
    public let chatFormat: ChatFormat?
    /// The name written into responses when the request names no model.
    public let modelName: String
    public let contextLength: Int
    /// How the matrix products treat activations: the options' precision, or the model's automatic one.
    public let precision: MatmulPrecision
    /// How many tokens the KV cache budget can hold for one sequence.
    public let maxCachedTokens: Int
    /// What the tokens this engine generates depend on besides the request: the model's
    /// content, the precision (with the revision of its arithmetic), the chat template and the
    /// revision of the sampler's arithmetic.
    /// Recorded in checkpoints: one left by an engine with another identity is not
    /// continued (its tokens may not be the ones this engine would pick), so the request
    /// starts over and its response is exactly an uninterrupted run's.
    public let outputIdentity: String

    private let file: GGUFFile
    private let pool: ComputePool
    private let options: BuiltinEngineOptions
    private let continuation: AsyncStream<EngineEvent>.Continuation
    private let mailbox = Mutex(Mailbox())
    private let wakeup = NSCondition()
    private let finishedRunning = DispatchSemaphore(value: 0)
    private let speculator: Speculator?
    private let reusedTokens = Atomic<Int>(0)
    /// Structured outputs (engine thread only): compiled grammars by constraint, and the vocabulary trie.
    private var grammars: [String: GrammarMachine] = [:]
    private var tokenTrie: TokenTrie?
    private let constrainedTokens = Atomic<Int>(0)
    private let maskNanoseconds = Atomic<Int>(0)
    private let evictedBlocks = Atomic<Int>(0)
    private let deferredDrawCount = Atomic<Int>(0)
    /// One per logit row of a step, used only on the engine thread's parallel loops.
    private var samplerWorkspaces: [SamplerWorkspace] = []
    /// The workspace of rows whose logits are transformed (picked one at a time, in the step loop).
    private let transformedRowWorkspace = SamplerWorkspace()

    struct Mailbox {
        var submitted: [EngineRequest] = []
        var cancelled: Set<Int64> = []
        var checkpoints: [Int64: Checkpoint] = [:]
        var stopping = false
        var started = false
    }

    /// Loads the model at `path` (a GGUF file) and starts the engine thread.
    public init(modelPath path: String, options: BuiltinEngineOptions = BuiltinEngineOptions()) throws {
        self.options = options
        file = try GGUFFile(path: path)
        // Before loading: the load releases the file's pages as it repacks them.
        let fingerprint = file.contentFingerprint
        pool = ComputePool(threads: options.threads)
        try CPUKernels.requireUsable()
        let precision = options.precision ?? MatmulPrecision.automatic(for: file)
        if precision.isInteger && !MatmulPrecision.int8Available {
            throw ModelLoadError("--precision \(precision.rawValue) needs the avx2 kernels or better; this process runs the \(CPUKernels.variant ?? "none") ones: use --precision f32")
        }
        self.precision = precision
        model = try loadLanguageModel(file, pool: pool, precision: precision)
        tokenizer = try Tokenizer(gguf: file)
        guard tokenizer.vocabularySize <= model.shape.vocabularySize else {
            throw ModelLoadError("the tokenizer has \(tokenizer.vocabularySize) tokens but the model's embedding has \(model.shape.vocabularySize) rows")
        }
        let jinja = file.metadata["tokenizer.chat_template"].flatMap { value -> String? in
            if case let .string(s) = value { return s } else { return nil }
        }
        chatFormat = ChatFormat.choose(override: options.chatTemplate, modelTemplate: jinja,
                                       architecture: model.architecture, tokenizer: tokenizer)
        modelName = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        outputIdentity = ["model=" + String(fingerprint, radix: 16),
                          "precision=" + precision.rawValue
                              + (precision.isInteger ? "." + String(MatmulPrecision.integerArithmeticRevision) : ""),
                          "template=" + (chatFormat?.identity ?? "none"),
                          "sampling=" + String(Sampler.arithmeticRevision)].joined(separator: " ")
        contextLength = min(options.contextLength ?? model.shape.contextLength, model.shape.contextLength)
        let probe = model.makeCache(budgetBytes: options.kvMemoryBytes, blockPositions: options.kvBlockPositions)
        maxCachedTokens = probe.maxPositionsPerSequence
        capacity = options.maxSequences + max(2, options.maxSequences / 2)
        speculator = try Speculator.make(options.speculation, for: file, pool: pool, positions: maxCachedTokens,
                                         catchUpBudget: options.tokenBudget, precision: precision)
        description = "built-in engine: \(modelName) (\(model.architecture), \(precision.rawValue), \(CPUKernels.summary) kernels, \(options.threads) threads, \(options.maxSequences) sequences)"
        (events, continuation) = AsyncStream.makeStream(of: EngineEvent.self)
        let thread = Thread { [self] in
            run()
            finishedRunning.signal()
        }
        thread.name = "sluice-engine"
        thread.stackSize = 16 << 20
        thread.start()
    }

    /// What speculative decoding did so far (zeros when it is off).
    public var speculationStatistics: SpeculationStatistics { speculator?.statistics ?? SpeculationStatistics() }

    public func submit(_ request: EngineRequest) {
        mailbox.withLock { $0.submitted.append(request) }
        signal()
    }

    public func cancel(requestID: Int64) {
        mailbox.withLock { _ = $0.cancelled.insert(requestID) }
        signal()
    }

    /// Structured outputs so far: tokens sampled under a grammar, and the time spent applying
    /// penalties and token masks to their logits (mask computation included).
    public var constraintStatistics: (tokens: Int, maskSeconds: Double) {
        (constrainedTokens.load(ordering: .relaxed), Double(maskNanoseconds.load(ordering: .relaxed)) * 1e-9)
    }

    /// Prompt tokens whose keys and values were taken from the prefix cache instead of computed.
    public var reusedPromptTokens: Int { reusedTokens.load(ordering: .relaxed) }

    /// Sampled tokens so far whose draw waited a step for its logits (see `BuiltinEngineOptions.deferOpenDraws`).
    public var deferredDraws: Int { deferredDrawCount.load(ordering: .relaxed) }
    /// Cached prompt blocks evicted (least recently used first) to make room in the KV budget.
    public var evictedPrefixBlocks: Int { evictedBlocks.load(ordering: .relaxed) }

    /// One line on the work prefix sharing and speculation saved, for the end of a run.
    public var savingsSummary: String {
        let speculation = speculationStatistics
        var line = "engine (\(precision.rawValue)): \(reusedPromptTokens) prompt tokens reused from shared prefixes"
            + " (\(evictedPrefixBlocks) cached blocks evicted)"
        if speculation.draftedTokens > 0 {
            line += String(format: "; speculation kept %d of %d draft tokens (%.0f%%)", speculation.acceptedTokens,
                           speculation.draftedTokens, 100 * speculation.acceptanceRate)
        }
        return line
    }

    public func collectCheckpoints() -> [(requestID: Int64, checkpoint: Checkpoint)] {
        let taken = mailbox.withLock { box in
            defer { box.checkpoints.removeAll() }
            return box.checkpoints
        }
        return taken.sorted { $0.key < $1.key }.map { (requestID: $0.key, checkpoint: $0.value) }
    }

    public func shutdown() async {
        let alreadyStopping = mailbox.withLock { box in
            defer { box.stopping = true }
            return box.stopping
        }
        signal()
        if alreadyStopping { return }
        let done = finishedRunning
        await withCheckedContinuation { (resume: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                done.wait()
                resume.resume()
            }
        }
    }

    private func signal() {
        wakeup.lock()
        wakeup.signal()
        wakeup.unlock()
    }

    // MARK: - The engine thread

    private func run() {
        var running: [Generation] = []
        var waiting: [EngineRequest] = []
        /// Generations whose cache was dropped to make room; they resume first.
        var preempted: [Generation] = []
        var nextSlot = 0
        let cache = model.makeCache(budgetBytes: options.kvMemoryBytes, blockPositions: options.kvBlockPositions)
        let scheduler = BatchScheduler(tokenBudget: options.tokenBudget)
        let logits = LogitBuffer()
        let clock = ContinuousClock()
        var lastPublished = clock.now

        while true {
            // Take messages; sleep while there is nothing to do.
            wakeup.lock()
            var messages = mailbox.withLock { box in
                defer { box.submitted.removeAll(); box.cancelled.removeAll() }
                return (box.submitted, box.cancelled, box.stopping)
            }
            while messages.0.isEmpty && messages.1.isEmpty && !messages.2 && running.isEmpty && waiting.isEmpty && preempted.isEmpty {
                wakeup.wait()
                messages = mailbox.withLock { box in
                    defer { box.submitted.removeAll(); box.cancelled.removeAll() }
                    return (box.submitted, box.cancelled, box.stopping)
                }
            }
            wakeup.unlock()
            let (submitted, cancelled, stopping) = messages
            waiting.append(contentsOf: submitted)

            if stopping {
                for generation in running + preempted { stop(generation, cache: cache) }
                for request in waiting { continuation.yield(.stopped(requestID: request.id, checkpoint: request.resumeFrom)) }
                continuation.finish()
                return
            }
            if !cancelled.isEmpty {
                for generation in running where cancelled.contains(generation.request.id) { stop(generation, cache: cache) }
                running.removeAll { cancelled.contains($0.request.id) }
                for generation in preempted where cancelled.contains(generation.request.id) { stop(generation, cache: cache) }
                preempted.removeAll { cancelled.contains($0.request.id) }
                for request in waiting where cancelled.contains(request.id) {
                    continuation.yield(.stopped(requestID: request.id, checkpoint: request.resumeFrom))
                }
                waiting.removeAll { cancelled.contains($0.id) }
            }
            // Admit while there are free slots and the cache can hold the newcomer's whole prompt.
            while running.count < options.maxSequences, let generation = preempted.first {
                guard running.isEmpty || cache.canHold(positions: generation.totalCount) else { break }
                running.append(preempted.removeFirst())
            }
            while running.count < options.maxSequences, preempted.isEmpty, !waiting.isEmpty {
                let request = waiting.removeFirst()
                switch prepare(request, firstSlot: nextSlot) {
                case let .success(generations):
                    nextSlot += generations.count
                    for generation in generations {
                        if let reason = finishReason(generation) {
                            finish(generation, reason: reason, cache: cache)
                        } else if running.count < options.maxSequences && (running.isEmpty || cache.canHold(positions: generation.totalCount)) {
                            running.append(generation)
                        } else {
                            preempted.append(generation)
                        }
                    }
                case let .failure(error):
                    continuation.yield(.finished(requestID: request.id, outcome: .response(
                        statusCode: 400, body: error.body, usage: Usage(promptTokens: 0, completionTokens: 0))))
                }
            }
            if running.isEmpty { continue }

            cache.prepareStep(running, sharePrefixes: options.prefixSharing)
            makeRoom(&running, preempted: &preempted, scheduler: scheduler, cache: cache)
            if running.isEmpty { continue }
            step(running, scheduler: scheduler, cache: cache, logitBuffer: logits)
            if options.prefixSharing {
                cache.registerComputedPrompts(running)
                reusedTokens.store(cache.reusedPromptTokens, ordering: .relaxed)
                evictedBlocks.store(cache.evictedBlocks, ordering: .relaxed)
            }
            running.removeAll { generation in
                guard let reason = generation.finishReason else { return false }
                finish(generation, reason: reason, cache: cache)
                return true
            }
            if clock.now - lastPublished >= options.checkpointInterval {
                publishCheckpoints(running)
                lastPublished = clock.now
            }
        }
    }

    /// Preempts the newest generations until the next step's cache growth fits the budget.
    /// A preempted generation keeps its tokens; it is recomputed (prefill of prompt and
    /// generated tokens) when it is admitted again, with identical results, since the
    /// kernels are batch- and prefill-invariant. A lone generation that cannot fit
    /// ends with finish reason "length".
    private func makeRoom(_ running: inout [Generation], preempted: inout [Generation], scheduler: BatchScheduler, cache: KVCache) {
        while !running.isEmpty {
            let plan = scheduler.plan(running)
            let growth = plan.contributions.map { (slot: $0.generation.slot, positions: $0.generation.cachedCount + $0.count) }
            if cache.fits(growth) { return }
            let victim = running.removeLast()
            cache.release(slot: victim.slot)
            if running.isEmpty {
                finish(victim, reason: "length", cache: cache)
            } else {
                victim.cachedCount = 0
                // Its last row's logits come again from its recomputed prefill.
                victim.deferredHeadState = nil
                preempted.insert(victim, at: 0)
            }
        }
    }

    /// Runs one forward step over the planned batch and samples every sequence that reached its end.
    private func step(_ running: [Generation], scheduler: BatchScheduler, cache: KVCache, logitBuffer: LogitBuffer) {
        // Generations whose draw the head deferred last step: every token of theirs is cached, so
        // the plan leaves them out, and their logits come after this step's rows.
        let waiting = running.filter { $0.deferredHeadState != nil }
        var plan = scheduler.plan(running)
        for (generation, count) in plan.contributions {
            let reserved = cache.reserve(slot: generation.slot, positions: generation.cachedCount + count)
            precondition(reserved, "makeRoom guarantees the step fits the KV budget")
        }
        if let speculator {
            let drafts = speculator.propose(plan: plan, running: running, cache: cache, contextLength: contextLength,
                                            usableVocabulary: tokenizer.vocabularySize)
            if !drafts.isEmpty { plan = scheduler.plan(running, drafts: drafts) }
        }
        let vocabulary = model.shape.vocabularySize
        let logits = logitBuffer.floats((plan.logitRows.count + waiting.count) * vocabulary)
        // Rows without log-probabilities or a transform need only their token: the most likely one,
        // or the one drawn with the draw of the position the row stands for (the output head
        // draws it where its bounds decide, and otherwise leaves the row's logits to pickTokens).
        var argmaxFlags = [Bool](repeating: false, count: plan.logitRows.count)
        var draws = [HeadDraw?](repeating: nil, count: plan.logitRows.count)
        var mayDefer = [Bool](repeating: false, count: plan.logitRows.count)
        for (index, generation) in plan.samplers.enumerated() {
            let parameters = generation.parameters
            guard parameters.logprobs == nil && !generation.needsFullLogits else { continue }
            // A row with drafts after it is not deferred: they are checked against its token in this step.
            mayDefer[plan.firstLogit[index]] = options.deferOpenDraws && !parameters.sampling.isGreedy && plan.drafts[index].isEmpty
            for offset in 0...plan.drafts[index].count {
                let row = plan.firstLogit[index] + offset
                argmaxFlags[row] = true
                if !parameters.sampling.isGreedy {
                    draws[row] = HeadDraw(parameters: parameters.sampling,
                                          uniform: generation.uniform(forToken: generation.generated.count + offset))
                }
            }
        }
        let carry = mayDefer.contains(true) || !waiting.isEmpty
            ? HeadCarry(mayDefer: mayDefer, incoming: waiting.map { $0.deferredHeadState! }) : nil
        let chosen = model.forward(tokens: plan.tokens, placements: plan.placements, logitRows: plan.logitRows,
                                   argmaxRows: ArgmaxRows(flags: argmaxFlags, draws: draws, usableVocabulary: tokenizer.vocabularySize,
                                                          carry: carry),
                                   cache: cache, logits: logits)
        for (generation, count) in plan.contributions { generation.cachedCount += count }
        let deferred = carry?.deferred ?? [:]
        deferredDrawCount.add(deferred.count, ordering: .relaxed)
        // Prompt log-probabilities first: a generation's last prompt rows and its first token may share the step.
        if !plan.promptRows.isEmpty { recordPromptLogprobs(plan.promptRows, logits: logits) }
        let picks = pickTokens(plan: plan, logits: logits, chosen: chosen, deferred: deferred, waiting: waiting)
        // The waiting generations' tokens, drawn from their rows after the step's own.
        for (i, generation) in waiting.enumerated() {
            generation.deferredHeadState = nil
            generation.append(picks[plan.logitRows.count + i].token, logprobs: nil)
            generation.finishReason = finishReason(generation)
        }

        for (index, generation) in plan.samplers.enumerated() {
            if let state = deferred[plan.firstLogit[index]] {
                // Drawn next step; nothing else rides on this row (it has no drafts).
                generation.deferredHeadState = state
                continue
            }
            // The sampler's own row, then one per draft token: each row's logits are bit for bit
            // those a plain decode step would compute at that position (the kernels are batch-
            // invariant), so each draft is kept exactly when it is the token the model picks.
            let drafts = plan.drafts[index]
            var accepted = 0
            for offset in 0...drafts.count {
                let row = plan.firstLogit[index] + offset
                let token: Int32
                if generation.needsFullLogits {
                    token = sampleTransformed(generation, logits: logits + row * model.shape.vocabularySize)
                } else {
                    token = picks[row].token
                    generation.append(token, logprobs: picks[row].logprobs)
                    generation.finishReason = finishReason(generation)
                }
                let matched = offset < drafts.count && token == drafts[offset]
                if matched { accepted += 1 }
                if !matched || generation.finishReason != nil { break }
            }
            if !drafts.isEmpty {
                // Roll back the rejected drafts: their keys and values lie past `cachedCount`, where
                // nothing reads them, and the next step overwrites them. Their block stays reserved
                // for the positions the sequence grows into next.
                generation.cachedCount -= drafts.count - accepted
                speculator?.record(slot: generation.slot, drafted: drafts.count, accepted: accepted)
            }
        }
    }

    /// Reduces each prompt row's logits to its prompt token's log-probability and the top
    /// alternatives (over the model's own logits: nothing transforms a prompt), in parallel,
    /// and records them; a request that generates nothing is complete with its last row.
    private func recordPromptLogprobs(_ rows: [(generation: Generation, position: Int, row: Int)], logits: UnsafeMutablePointer<Float>) {
        let vocabulary = model.shape.vocabularySize
        let usable = tokenizer.vocabularySize
        var entries = [Generation.TokenLogprobs](repeating: .init(token: 0, logprob: 0, top: []), count: rows.count)
        entries.withUnsafeMutableBufferPointer { entries in
            let entries = entries.baseAddress!
            pool.parallelFor(rows.count) { i in
                let (generation, position, row) = rows[i]
                let token = generation.promptTokens[position + 1]
                let result = Sampler.logProbabilities(logits + row * vocabulary, count: usable, token: token,
                                                      top: generation.parameters.logprobs ?? 0)
                entries[i] = .init(token: token, logprob: result.chosen, top: result.top)
            }
        }
        for (i, item) in rows.enumerated() {
            item.generation.recordPromptLogprobs(entries[i], position: item.position)
            if item.generation.finishReason == nil && item.generation.maxTokens == 0 {
                item.generation.finishReason = finishReason(item.generation)
            }
        }
    }

    /// Samples the next token of a generation whose logits are transformed first (a grammar mask,
    /// penalties, a bias) and appends it. Such rows are picked one after another, in the step's
    /// loop: the generation's state after each token (its grammar state, its counts) shapes the
    /// transform of its next row.
    private func sampleTransformed(_ generation: Generation, logits: UnsafeMutablePointer<Float>) -> Int32 {
        // Tokens past the tokenizer's vocabulary (padding rows of the embedding) are never sampled.
        let usable = tokenizer.vocabularySize
        if generation.constraint != nil {
            let start = ContinuousClock.now
            generation.processLogits(logits, count: usable)
            let elapsed = ContinuousClock.now - start
            maskNanoseconds.add(Int(elapsed.components.seconds) * 1_000_000_000 + Int(elapsed.components.attoseconds / 1_000_000_000), ordering: .relaxed)
            constrainedTokens.add(1, ordering: .relaxed)
        } else {
            generation.processLogits(logits, count: usable)
        }
        let token = Sampler.sample(logits, count: usable, parameters: generation.parameters.sampling,
                                   uniform: generation.nextUniform, workspace: transformedRowWorkspace)
        var entry: Generation.TokenLogprobs?
        if let top = generation.parameters.logprobs {
            let result = Sampler.logProbabilities(logits, count: usable, token: token, top: top)
            // Tokens a mask or a ban ruled out are not alternatives.
            entry = .init(token: token, logprob: result.chosen, top: result.top.filter { $0.logProbability.isFinite })
        }
        generation.append(token, logprobs: entry)
        generation.finishReason = finishReason(generation)
        return token
    }

    /// The token of every logit row of the step (and its log-probabilities when requested), as
    /// each row's generation would append it: a draft row's token is drawn with the draw of the
    /// position it stands for, and a waiting generation's row (after the step's own, in the
    /// order of `waiting`) with the draw of its next token. Rows are independent, so they are
    /// sampled in parallel, each with a reused workspace. Rows the head deferred get no token.
    private func pickTokens(plan: StepPlan, logits: UnsafeMutablePointer<Float>, chosen: [Int32?], deferred: [Int: [Float]],
                            waiting: [Generation]) -> [(token: Int32, logprobs: Generation.TokenLogprobs?)] {
        let vocabulary = model.shape.vocabularySize
        // Tokens past the tokenizer's vocabulary (padding rows of the embedding) are never sampled.
        let usable = tokenizer.vocabularySize
        var rows: [(generation: Generation, tokenIndex: Int, row: Int)] = []
        // Rows whose logits are transformed are picked in the step's loop (sampleTransformed).
        for (index, generation) in plan.samplers.enumerated() where !generation.needsFullLogits {
            for offset in 0...plan.drafts[index].count where deferred[plan.firstLogit[index] + offset] == nil {
                rows.append((generation, generation.generated.count + offset, plan.firstLogit[index] + offset))
            }
        }
        for (i, generation) in waiting.enumerated() {
            rows.append((generation, generation.generated.count, plan.logitRows.count + i))
        }
        let chosen = chosen + Array(repeating: nil, count: waiting.count)
        while samplerWorkspaces.count < rows.count { samplerWorkspaces.append(SamplerWorkspace()) }
        let workspaces = samplerWorkspaces
        var picks = [(token: Int32, logprobs: Generation.TokenLogprobs?)](repeating: (0, nil), count: chosen.count)
        picks.withUnsafeMutableBufferPointer { picks in
            let picks = picks.baseAddress!
            let work = { (item: Int) in
                let (generation, tokenIndex, row) = rows[item]
                let rowLogits = logits + row * vocabulary
                let token = chosen[row] ?? Sampler.sample(rowLogits, count: usable, parameters: generation.parameters.sampling,
                                                          uniform: generation.uniform(forToken: tokenIndex),
                                                          workspace: workspaces[item])
                var entry: Generation.TokenLogprobs?
                if let top = generation.parameters.logprobs {
                    let result = Sampler.logProbabilities(rowLogits, count: usable, token: token, top: top)
                    entry = .init(token: token, logprob: result.chosen, top: result.top)
                }
                picks[row] = (token, entry)
            }
            // Rows whose token the head already chose and that want no log-probabilities cost nothing.
            let heavy = rows.indices.filter { chosen[rows[$0].row] == nil || rows[$0].generation.parameters.logprobs != nil }
            for item in rows.indices where chosen[rows[item].row] != nil && rows[item].generation.parameters.logprobs == nil {
                work(item)
            }
            pool.parallelFor(heavy.count) { work(heavy[$0]) }
        }
        return picks
    }

    /// Why a generation is complete after its latest token, or nil to go on.
    private func finishReason(_ generation: Generation) -> String? {
        if generation.promptLogprobsPending { return nil }
        if let last = generation.generated.last, tokenizer.isEndOfGeneration(last) { return "stop" }
        if generation.constraintIsComplete { return "stop" }
        if !generation.parameters.stop.isEmpty, StopStrings.firstMatch(in: text(of: generation), stops: generation.parameters.stop) != nil {
            return "stop"
        }
        if generation.generated.count >= generation.maxTokens { return "length" }
        if generation.totalCount >= contextLength { return "length" }
        return nil
    }

    /// The generated text, without an end-of-generation token.
    private func text(of generation: Generation) -> String {
        var tokens = generation.generated
        if let last = tokens.last, tokenizer.isEndOfGeneration(last) { tokens.removeLast() }
        return tokenizer.decode(tokens)
    }

    private func finish(_ generation: Generation, reason: String, cache: KVCache) {
        cache.release(slot: generation.slot)
        speculator?.forget(slot: generation.slot)
        var content = text(of: generation)
        if let match = StopStrings.firstMatch(in: content, stops: generation.parameters.stop) {
            content = String(content[..<match])
        }
        var choices = [(generation: generation, content: content, finishReason: reason)]
        if let group = generation.group {
            group.finished[generation.choice] = (content, reason)
            guard group.isComplete, !group.stopped else { return }
            choices = group.members.map { ($0, group.finished[$0.choice]!.content, group.finished[$0.choice]!.finishReason) }
        }
        let body = ResponseBuilder(modelName: generation.parameters.model ?? modelName, tokenizer: tokenizer)
            .body(for: choices)
        let promptTokens = choices.filter { $0.generation.choice % $0.generation.parameters.choicesPerPrompt == 0 }
            .reduce(0) { $0 + $1.generation.promptTokens.count }
        let usage = Usage(promptTokens: promptTokens, completionTokens: choices.reduce(0) { $0 + $1.generation.generated.count })
        mailbox.withLock { _ = $0.checkpoints.removeValue(forKey: generation.request.id) }
        continuation.yield(.finished(requestID: generation.request.id, outcome: .response(statusCode: 200, body: body, usage: usage)))
    }

    private func stop(_ generation: Generation, cache: KVCache) {
        cache.release(slot: generation.slot)
        speculator?.forget(slot: generation.slot)
        if let group = generation.group {
            // One report for the request, with every choice's tokens.
            guard !group.stopped else { return }
            group.stopped = true
        }
        mailbox.withLock { _ = $0.checkpoints.removeValue(forKey: generation.request.id) }
        let checkpoint = (generation.group?.members ?? [generation]).allSatisfy({ $0.generated.isEmpty })
            ? generation.request.resumeFrom : generation.checkpointState(engine: outputIdentity).encoded()
        continuation.yield(.stopped(requestID: generation.request.id, checkpoint: checkpoint))
    }

    private func publishCheckpoints(_ running: [Generation]) {
        var fresh: [(Int64, Checkpoint)] = []
        var published = Set<Int64>()
        for generation in running where generation.generated.count > generation.checkpointedCount {
            generation.checkpointedCount = generation.generated.count
            // A request with several choices publishes one checkpoint holding all of them.
            guard published.insert(generation.request.id).inserted else { continue }
            fresh.append((generation.request.id, generation.checkpointState(engine: outputIdentity).encoded()))
        }
        guard !fresh.isEmpty else { return }
        mailbox.withLock { box in
            for (id, checkpoint) in fresh { box.checkpoints[id] = checkpoint }
        }
    }

    /// Validates a request and turns it into the generations of its choices, ready to prefill
    /// (one unless it asks for `n` choices or gives a list of prompts), in slots from `firstSlot`.
    private func prepare(_ request: EngineRequest, firstSlot: Int) -> Result<[Generation], RequestError> {
        do throws(RequestError) {
            let parameters = try GenerationRequest(endpoint: request.endpoint, body: request.body)
            if let bad = parameters.logitProcessing.bias.first(where: { Int($0.token) >= tokenizer.vocabularySize }) {
                throw RequestError("'logit_bias' names token \(bad.token), outside the vocabulary (\(tokenizer.vocabularySize) tokens)",
                                   parameter: "logit_bias")
            }
            let constraint = try parameters.constraint.map { c throws(RequestError) in try constrainedDecoding(c) }
            let promptParameter = request.endpoint == .completions ? "prompt" : request.endpoint == .responses ? "input" : "messages"
            var promptTokenLists: [[Int32]] = []
            for prompt in parameters.prompts {
                let promptTokens = try tokenize(prompt)
                guard promptTokens.count < contextLength else {
                    throw RequestError("the prompt is \(promptTokens.count) tokens, but the model's context is \(contextLength) tokens",
                                       parameter: promptParameter)
                }
                guard promptTokens.count < maxCachedTokens else {
                    throw RequestError("the prompt is \(promptTokens.count) tokens, but the KV cache budget (--kv-memory) holds \(maxCachedTokens) tokens",
                                       parameter: promptParameter)
                }
                promptTokenLists.append(promptTokens)
            }
            var resumed = request.resumeFrom.flatMap(CheckpointState.init)
            if let state = resumed, state.engine != outputIdentity || state.otherChoices.count != parameters.choiceCount - 1 {
                resumed = nil
            }
            let group = parameters.choiceCount > 1 ? ChoiceGroup() : nil
            var generations: [Generation] = []
            for choice in 0..<parameters.choiceCount {
                let promptTokens = promptTokenLists[choice / parameters.choicesPerPrompt]
                var state = resumed?.choice(choice)
                if let tokens = state?.tokens, promptTokens.count + tokens.count > contextLength { state = nil }
                let maxTokens = min(parameters.maxTokens ?? Int.max, contextLength - promptTokens.count)
                var generation = Generation(request: request, parameters: parameters, slot: firstSlot + choice, promptTokens: promptTokens,
                                            maxTokens: maxTokens, resumed: state, choice: choice, group: group, constraint: constraint)
                if state != nil, generation.constraint != nil, generation.grammarState == GrammarMachine.dead {
                    // Tokens the grammar rejects were not made under it: start this choice over.
                    generation = Generation(request: request, parameters: parameters, slot: firstSlot + choice, promptTokens: promptTokens,
                                            maxTokens: maxTokens, resumed: nil, choice: choice, group: group, constraint: constraint)
                }
                generations.append(generation)
            }
            group?.members = generations
            return .success(generations)
        } catch {
            return .failure(error)
        }
    }

    /// The compiled grammar of a constraint (compiled once per distinct constraint and kept,
    /// with its memoized states and token masks), and the vocabulary trie (built once).
    private func constrainedDecoding(_ constraint: OutputConstraint) throws(RequestError) -> ConstrainedDecoding {
        let trie = tokenTrie ?? TokenTrie(tokenizer: tokenizer)
        tokenTrie = trie
        if let machine = grammars[constraint.key] { return ConstrainedDecoding(machine: machine, trie: trie) }
        let grammar: Grammar
        do {
            grammar = try constraint.grammar()
        } catch {
            throw RequestError(error.message, parameter: "response_format")
        }
        // At most 16 grammars with their caches (each at most 32 MiB of masks) are kept.
        if grammars.count >= 16 { grammars.removeAll() }
        let machine = GrammarMachine(grammar: grammar)
        grammars[constraint.key] = machine
        return ConstrainedDecoding(machine: machine, trie: trie)
    }

    /// Prompt tokens for a request, beginning-of-sequence token included as the model expects.
    public func tokenize(_ prompt: PromptInput) throws(RequestError) -> [Int32] {
        switch prompt {
        case let .text(text):
            let tokens = tokenizer.encode(text, addSpecial: true, parseSpecial: true)
            // A model that adds no beginning-of-sequence token (Qwen) has nothing to continue from.
            guard !tokens.isEmpty else { throw RequestError("'prompt' must not be empty", parameter: "prompt") }
            return tokens
        case let .tokens(tokens):
            if let bad = tokens.first(where: { Int($0) >= tokenizer.vocabularySize }) {
                throw RequestError("prompt token id \(bad) is outside the vocabulary (\(tokenizer.vocabularySize) tokens)", parameter: "prompt")
            }
            return tokens
        case let .chat(messages):
            guard let chatFormat else {
                throw RequestError("the model has no chat template and none Sluice recognises; use /v1/completions or --chat-template", parameter: "messages")
            }
            let tokens = tokenizer.encode(try chatFormat.render(messages), addSpecial: true, parseSpecial: true)
            guard !tokens.isEmpty else { throw RequestError("the chat template rendered an empty prompt", parameter: "messages") }
            return tokens
        }
    }
}

/// The step's logits, kept from step to step: a 32-sequence step needs 32 MB, and fresh
/// pages for it every step cost about 1% of the step in page faults.
private final class LogitBuffer {
    private var pointer = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    private var capacity = 1

    /// Room for `count` floats (contents undefined), valid until the next call.
    func floats(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count > capacity {
            pointer.deallocate()
            capacity = count
            pointer = .allocate(capacity: count)
        }
        return pointer
    }

    deinit { pointer.deallocate() }
}
