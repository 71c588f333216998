/// A smaller model with the same vocabulary that drafts tokens for the engine's model.
///
/// It keeps its own KV cache of each sequence it drafts for and catches up on the
/// tokens the engine's model accepted since its last draft (the whole prompt the
/// first time), then generates its drafts one token at a time, all sequences of a
/// step in one batch. It samples the way the request does, with the draws the
/// engine's model will use at those positions, so a draft model that agrees with
/// the model also agrees with its sampled choices.
final class DraftModel {
    let path: String
    let model: any LanguageModel
    private let file: GGUFFile
    private let cache: KVCache
    /// Tokens whose keys and values the draft cache holds, at positions 0..<count, by slot.
    private var cached: [Int: [Int32]] = [:]
    /// Prompt tokens the draft model may catch up on in one step, over all sequences.
    private let catchUpBudget: Int
    /// Reused by every sampled draft token.
    private let samplerWorkspace = SamplerWorkspace()

    /// Loads the draft model at `path` and checks that its token ids mean what the
    /// engine's model's do.
    ///
    /// - Parameters:
    ///   - vocabulary: the engine's model's vocabulary.
    ///   - positions: how many positions the draft cache holds in all (as many as the model's).
    init(path: String, matching vocabulary: TokenizerVocabulary, pool: ComputePool, positions: Int, catchUpBudget: Int,
         precision: MatmulPrecision = .float32) throws {
        self.path = path
        file = try GGUFFile(path: path)
        model = try loadLanguageModel(file, pool: pool, precision: precision)
        let own: TokenizerVocabulary
        do {
            own = try TokenizerVocabulary(gguf: file)
        } catch {
            throw ModelLoadError("draft model \(path): \(error)")
        }
        if let problem = Self.incompatibility(own, vocabulary) {
            throw ModelLoadError("draft model \(path) cannot draft for this model: \(problem)")
        }
        guard model.shape.vocabularySize >= vocabulary.tokens.count else {
            throw ModelLoadError("draft model \(path) cannot draft for this model: its output has \(model.shape.vocabularySize) rows for \(vocabulary.tokens.count) tokens")
        }
        cache = model.makeCache(budgetBytes: model.makeCache().bytesNeeded(positions: max(1, positions)))
        self.catchUpBudget = max(1, catchUpBudget)
    }

    /// Why two vocabularies do not give token ids the same meaning, or nil when they do.
    static func incompatibility(_ draft: TokenizerVocabulary, _ target: TokenizerVocabulary) -> String? {
        if draft.model != target.model {
            return "its tokenizer is '\(draft.model)', the model's is '\(target.model)'"
        }
        if draft.tokens.count != target.tokens.count {
            return "its vocabulary has \(draft.tokens.count) tokens, the model's has \(target.tokens.count)"
        }
        if draft.tokens != target.tokens {
            let index = (0..<target.tokens.count).first { draft.tokens.bytes(at: $0) != target.tokens.bytes(at: $0) } ?? 0
            func show(_ bytes: ArraySlice<UInt8>) -> String { String(decoding: bytes, as: UTF8.self).debugDescription }
            return "token \(index) is \(show(draft.tokens.bytes(at: index))) in the draft model but \(show(target.tokens.bytes(at: index))) in the model"
        }
        return nil
    }

    /// Up to `count` draft tokens for each requested generation, by slot. A sequence gets
    /// none this step when its catch-up does not fit the step's budget or the draft cache.
    func propose(_ requests: [(generation: Generation, count: Int)], running: [Generation], usableVocabulary: Int) -> [Int: [Int32]] {
        // Bring each sequence's cached tokens in line with what the model accepted.
        struct Work {
            let generation: Generation
            var count: Int
            var feed: Range<Int>
        }
        var work: [Work] = []
        var budget = catchUpBudget
        for (generation, count) in requests {
            let slot = generation.slot
            var tokens = cached[slot] ?? []
            var valid = 0
            let total = generation.totalCount
            while valid < min(tokens.count, total), tokens[valid] == generation.token(at: valid) { valid += 1 }
            tokens.removeLast(tokens.count - valid)
            // Drafting needs the draft model's logits after the last accepted token.
            if valid == total { valid -= 1; tokens.removeLast() }
            cached[slot] = tokens
            guard budget > 0 else { continue }
            if total - valid > budget {
                // A long prompt: catch up on a chunk now, draft in a later step.
                guard reserve(slot: slot, positions: valid + budget, running: running) else { continue }
                work.append(Work(generation: generation, count: 0, feed: valid..<(valid + budget)))
                budget = 0
                continue
            }
            guard reserve(slot: slot, positions: total + count - 1, running: running) else { continue }
            budget -= total - valid
            work.append(Work(generation: generation, count: count, feed: valid..<total))
        }
        guard !work.isEmpty else { return [:] }

        var drafts = [[Int32]](repeating: [], count: work.count)
        let vocabulary = model.shape.vocabularySize
        let logits = UnsafeMutablePointer<Float>.allocate(capacity: work.count * vocabulary)
        defer { logits.deallocate() }
        // Round 0 feeds every sequence's missing tokens; round r > 0 feeds draft r - 1 of
        // the sequences that want more than r drafts.
        var round = 0
        while true {
            var tokens: [Int32] = []
            var placements: [TokenPlacement] = []
            var logitRows: [Int] = []
            var drafting: [Int] = []
            for (i, item) in work.enumerated() where item.count > round || (round == 0 && !item.feed.isEmpty) {
                let slot = item.generation.slot
                if round == 0 {
                    for position in item.feed {
                        tokens.append(item.generation.token(at: position))
                        placements.append(TokenPlacement(slot: slot, position: position))
                    }
                } else {
                    tokens.append(drafts[i][round - 1])
                    placements.append(TokenPlacement(slot: slot, position: item.generation.totalCount + round - 1))
                }
                if item.count > round {
                    logitRows.append(tokens.count - 1)
                    drafting.append(i)
                }
            }
            if tokens.isEmpty { break }
            // Greedy requests' drafts need only the draft model's most likely token.
            let argmaxRows = ArgmaxRows(flags: drafting.map { work[$0].generation.parameters.sampling.isGreedy },
                                        usableVocabulary: usableVocabulary)
            let chosen = model.forward(tokens: tokens, placements: placements, logitRows: logitRows, argmaxRows: argmaxRows,
                                       cache: cache, logits: logits)
            for (row, i) in drafting.enumerated() {
                let generation = work[i].generation
                let uniform = generation.uniform(forToken: generation.generated.count + round)
                drafts[i].append(chosen[row] ?? Sampler.sample(logits + row * vocabulary, count: usableVocabulary,
                                                               parameters: generation.parameters.sampling, uniform: uniform,
                                                               workspace: samplerWorkspace))
            }
            round += 1
        }

        var result: [Int: [Int32]] = [:]
        for (i, item) in work.enumerated() {
            let slot = item.generation.slot
            var tokens = cached[slot] ?? []
            for position in item.feed { tokens.append(item.generation.token(at: position)) }
            // The last draft was never fed, so its keys and values are not cached.
            tokens.append(contentsOf: drafts[i].dropLast())
            cached[slot] = tokens
            if !drafts[i].isEmpty { result[slot] = drafts[i] }
        }
        return result
    }

    /// Reserves draft cache room, first dropping sequences no longer running (preempted ones) if needed.
    private func reserve(slot: Int, positions: Int, running: [Generation]) -> Bool {
        if cache.reserve(slot: slot, positions: positions) { return true }
        let live = Set(running.map(\.slot))
        for other in cached.keys where !live.contains(other) { forget(slot: other) }
        return cache.reserve(slot: slot, positions: positions)
    }

    /// Frees the draft cache of a sequence that is gone.
    func forget(slot: Int) {
        cached.removeValue(forKey: slot)
        cache.release(slot: slot)
    }
}
