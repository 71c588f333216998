/// One forward step: which tokens of which sequences go in, and which rows
/// produce logits to sample from.
struct StepPlan {
    var tokens: [Int32] = []
    var placements: [TokenPlacement] = []
    /// Rows of the batch whose logits are sampled, one per entry of `samplers`.
    var logitRows: [Int] = []
    var samplers: [Generation] = []
    /// Speculative decoding: the draft tokens each sampler's last token is followed by in
    /// the batch (parallel to `samplers`). Every draft gets a logit row too, right after
    /// its sampler's, so sampler `i`'s rows start at `firstLogit[i]`.
    var drafts: [[Int32]] = []
    var firstLogit: [Int] = []
    /// How many tokens each scheduled generation contributes, by index into the running list.
    var contributions: [(generation: Generation, count: Int)] = []
    /// Prompt positions whose logits give the prompt's log-probabilities (completions' `echo`
    /// with `logprobs`): each has a logit row too, at `row` of `logitRows`.
    var promptRows: [(generation: Generation, position: Int, row: Int)] = []
}

/// Continuous batching under a per-step token budget.
///
/// Every step first gives each decoding sequence its one token (they are the
/// latency-critical ones and cost little), then fills the rest of the budget
/// with prompt chunks in arrival order, so long prompts are prefilled in pieces
/// alongside decoding instead of stalling it. A chunk that reaches the end of
/// its prompt produces logits, and that sequence decodes from the next step.
struct BatchScheduler {
    var tokenBudget: Int
    /// The most prompt positions per step that produce logits for prompt log-probabilities: each
    /// is a full row of the vocabulary (1 MiB for 262,144 tokens), so a long prompt is scored
    /// in chunks of this many positions rather than with one row per prompt token at once.
    var promptRowBudget = 32

    /// - Parameter drafts: speculative tokens to verify after a sampler's last token, by slot.
    ///   They come on top of the token budget and count in its `contributions`.
    func plan(_ running: [Generation], drafts: [Int: [Int32]] = [:]) -> StepPlan {
        var plan = StepPlan()
        var budget = tokenBudget
        let decoding = running.filter { $0.totalCount - $0.cachedCount == 1 }
        let prefilling = running.filter { $0.totalCount - $0.cachedCount > 1 }
        for generation in decoding {
            add(generation, count: 1, drafts: drafts[generation.slot] ?? [], to: &plan)
            budget -= 1
        }
        for generation in prefilling where budget > 0 {
            var count = min(generation.totalCount - generation.cachedCount, budget)
            if generation.promptLogprobsPending {
                // Positions needing rows are those from `first` to the prompt's second last.
                let first = max(generation.cachedCount, generation.promptLogprobs.count)
                let wanted = max(0, min(generation.cachedCount + count, generation.promptTokens.count - 1) - first)
                let room = promptRowBudget - plan.promptRows.count
                if wanted > room {
                    guard room > 0 else { continue }
                    count = first + room - generation.cachedCount
                }
            }
            add(generation, count: count, drafts: drafts[generation.slot] ?? [], to: &plan)
            budget -= count
        }
        return plan
    }

    private func add(_ generation: Generation, count: Int, drafts: [Int32], to plan: inout StepPlan) {
        for index in generation.cachedCount..<(generation.cachedCount + count) {
            plan.tokens.append(generation.token(at: index))
            plan.placements.append(TokenPlacement(slot: generation.slot, position: index))
            if generation.needsPromptRow(at: index) {
                plan.promptRows.append((generation, index, plan.logitRows.count))
                plan.logitRows.append(plan.tokens.count - 1)
            }
        }
        // A request that generates nothing (`max_tokens` 0, scoring its prompt) samples no token.
        guard generation.cachedCount + count == generation.totalCount, generation.maxTokens > 0 else {
            plan.contributions.append((generation, count))
            return
        }
        plan.firstLogit.append(plan.logitRows.count)
        plan.logitRows.append(plan.tokens.count - 1)
        plan.samplers.append(generation)
        plan.drafts.append(drafts)
        for (offset, token) in drafts.enumerated() {
            plan.tokens.append(token)
            plan.placements.append(TokenPlacement(slot: generation.slot, position: generation.totalCount + offset))
            plan.logitRows.append(plan.tokens.count - 1)
        }
        plan.contributions.append((generation, count + drafts.count))
    }
}
