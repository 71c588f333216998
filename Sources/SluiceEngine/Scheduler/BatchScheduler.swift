/// One forward step: which tokens of which sequences go in, and which rows
/// produce logits to sample from.
struct StepPlan {
    var tokens: [Int32] = []
    var placements: [TokenPlacement] = []
    /// Rows of the batch whose logits are sampled, one per entry of `samplers`.
    var logitRows: [Int] = []
    var samplers: [Generation] = []
    /// How many tokens each scheduled generation contributes, by index into the running list.
    var contributions: [(generation: Generation, count: Int)] = []
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

    func plan(_ running: [Generation]) -> StepPlan {
        var plan = StepPlan()
        var budget = tokenBudget
        let decoding = running.filter { $0.totalCount - $0.cachedCount == 1 }
        let prefilling = running.filter { $0.totalCount - $0.cachedCount > 1 }
        for generation in decoding {
            add(generation, count: 1, to: &plan)
            budget -= 1
        }
        for generation in prefilling where budget > 0 {
            let count = min(generation.totalCount - generation.cachedCount, budget)
            add(generation, count: count, to: &plan)
            budget -= count
        }
        return plan
    }

    private func add(_ generation: Generation, count: Int, to plan: inout StepPlan) {
        for index in generation.cachedCount..<(generation.cachedCount + count) {
            plan.tokens.append(generation.token(at: index))
            plan.placements.append(TokenPlacement(slot: generation.slot, position: index))
        }
        plan.contributions.append((generation, count))
        if generation.cachedCount + count == generation.totalCount {
            plan.logitRows.append(plan.tokens.count - 1)
            plan.samplers.append(generation)
        }
    }
}
