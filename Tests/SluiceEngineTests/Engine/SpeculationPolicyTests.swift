import Testing

@testable import SluiceEngine

/// Prompt lookup's proposals and the policy that decides how many drafts a step verifies.
struct SpeculationPolicyTests {
    @Test func promptLookupContinuesAfterTheLatestOccurrenceOfTheLongestSuffix() {
        let lookup = PromptLookup(maxNgram: 3, minNgram: 1)
        // "7 8 9" occurs twice; the later occurrence (followed by 40 41) wins over the earlier (followed by 10 11).
        let history: [Int32] = [1, 7, 8, 9, 10, 11, 2, 7, 8, 9, 40, 41, 42, 3, 8, 7, 8, 9]
        let (tokens, matched) = lookup.draft(history, count: 3)
        #expect(matched == 3)
        #expect(tokens == [40, 41, 42])
        // Fewer tokens than asked for are never returned when the proposal can run on into itself.
        #expect(lookup.draft(history, count: 8).tokens == [40, 41, 42, 3, 8, 7, 8, 9])
    }

    @Test func promptLookupFallsBackToShorterSuffixes() {
        let lookup = PromptLookup(maxNgram: 3, minNgram: 1)
        // The 3- and 2-token suffixes "5 6 9" and "6 9" never occurred before; "9" did, followed by 4.
        #expect(lookup.draft([9, 4, 4, 5, 6, 9] as [Int32], count: 2) == (tokens: [4, 4], matched: 1))
        let strict = PromptLookup(maxNgram: 3, minNgram: 2)
        #expect(strict.draft([9, 4, 4, 5, 6, 9] as [Int32], count: 2).tokens.isEmpty)
        #expect(lookup.draft([1, 2, 3] as [Int32], count: 4).tokens.isEmpty)
        #expect(lookup.draft([1] as [Int32], count: 4).tokens.isEmpty)
        #expect(lookup.draft([1, 2, 1] as [Int32], count: 0).tokens.isEmpty)
    }

    @Test func promptLookupContinuesARepetition() {
        let lookup = PromptLookup(maxNgram: 2, minNgram: 1)
        // A period-3 loop: the draft keeps going round it.
        #expect(lookup.draft([5, 1, 2, 3, 1, 2, 3, 1, 2] as [Int32], count: 7).tokens == [3, 1, 2, 3, 1, 2, 3])
        #expect(lookup.draft([6, 6] as [Int32], count: 3).tokens == [6, 6, 6])
    }

    @Test func tokenHistoryJoinsPromptAndGenerated() {
        let history = TokenHistory(prompt: [1, 2], generated: [3])
        #expect(Array(history) == [1, 2, 3])
        #expect(PromptLookup().draft(TokenHistory(prompt: [4, 5, 6, 4], generated: [5]), count: 2).tokens == [6, 4])
    }

    @Test func policyDraftsMoreWhenTheStepIsSmallAndDraftsAreLikely() {
        let policy = SpeculationPolicy(rowCost: 0.25, draftAlways: false)
        // One sequence that keeps 90 % of its drafts: a lone step pays for many rows.
        let lone = policy.allocate([(rate: 0.9, available: 8)], rows: 1)[0]
        #expect(lone >= 4)
        // The same sequence among 32 decoding rows: only drafts almost sure to be kept pay.
        #expect(policy.allocate([(rate: 0.9, available: 8)], rows: 32)[0] < lone)
        #expect(policy.allocate([(rate: 0.99, available: 8)], rows: 32)[0] > 0)
        // Unlikely drafts are not verified; nothing available, nothing drafted.
        #expect(policy.allocate([(rate: 0.1, available: 8), (rate: 0.95, available: 0)], rows: 4) == [0, 0])
        // The likelier sequence gets at least as many.
        let split = policy.allocate([(rate: 0.6, available: 8), (rate: 0.95, available: 8)], rows: 2)
        #expect(split[1] >= split[0] && split[1] > 0)
        #expect(SpeculationPolicy(rowCost: 0.25, draftAlways: true).allocate([(rate: 0.01, available: 3)], rows: 64) == [3])
        // The step limit bounds the total, whoever asks.
        let capped = SpeculationPolicy(rowCost: 0.01, draftAlways: false, stepLimit: 5)
        #expect(capped.allocate([(rate: 0.99, available: 8), (rate: 0.98, available: 8)], rows: 1).reduce(0, +) == 5)
        #expect(SpeculationPolicy(rowCost: 0.25, draftAlways: true, stepLimit: 4).allocate([(rate: 0.5, available: 3), (rate: 0.5, available: 3)], rows: 1) == [3, 1])
    }

    @Test func acceptanceEstimateFollowsRecentVerifications() {
        var acceptance = SpeculationPolicy.Acceptance(prior: 0, weight: 0)
        #expect(acceptance.rate(prior: 0.6) == 0.6)
        for _ in 0..<10 { acceptance.record(drafted: 4, accepted: 4) }
        #expect(acceptance.rate(prior: 0.5) > 0.9)
        for _ in 0..<10 { acceptance.record(drafted: 4, accepted: 0) }
        #expect(acceptance.rate(prior: 0.5) < 0.3)
        let low = acceptance.rate(prior: 0.5)
        for _ in 0..<50 { acceptance.idle() }
        #expect(acceptance.rate(prior: 0.5) > low)
    }

    @Test func longerLookupMatchesArePresumedMoreReliable() {
        typealias Kind = SpeculationPolicy.DraftKind
        #expect(Kind.lookup(matched: 3).prior > Kind.lookup(matched: 2).prior)
        #expect(Kind.lookup(matched: 2).prior > Kind.lookup(matched: 1).prior)
    }
}
