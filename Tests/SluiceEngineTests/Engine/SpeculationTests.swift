import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// Speculative decoding on the default model: responses (text, finish reason, log-probabilities)
/// are byte for byte the responses without it, for greedy and seeded sampling, in mixed batches
/// with prompt chunks beside verification, and through checkpoints and resumes.
@Suite(.serialized, .ownThread)
struct SpeculationTests {
    /// Prompts whose continuations copy from the prompt (the case prompt lookup is for), and ordinary ones.
    static let copyPrompts = [
        """
        Repeat the following text exactly.
        Text: The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step. All that glitters is not gold.
        Repeated text:
        """,
        """
        Extract the sentence that mentions the deadline.
        Message: Hi team, thanks for the update. Please send the quarterly report to jane.doe@example.com before Friday, 14 March. Let me know if anything is unclear.
        Sentence:
        """,
        """
        Name: Alice Smith; City: Paris; Age: 34
        {"name": "Alice Smith", "city": "Paris", "age": 34}
        Name: Bob Jones; City: Berlin; Age: 51
        {"name":
        """,
    ]
    static let plainPrompts = ["The capital of France is", "def fibonacci(n):", "List three fruits:"]

    func engine(_ mode: SpeculationMode, _ configure: (inout BuiltinEngineOptions) -> Void = { _ in }) throws -> BuiltinEngine {
        var options = BuiltinEngineOptions()
        options.speculation.mode = mode
        configure(&options)
        return try BuiltinEngine(modelPath: try DefaultModel.require().path, options: options)
    }

    func run(_ engine: BuiltinEngine, _ requests: [EngineRequest]) async -> (bodies: [Int64: String], statistics: SpeculationStatistics) {
        let events = await completeWithin(engine, requests)
        await engine.shutdown()
        return (events.mapValues { $0.response?.body.serialized ?? "not a 200 response: \($0)" }, engine.speculationStatistics)
    }

    /// Greedy requests with log-probabilities, a stop string inside copied text and a max_tokens that ends mid-draft.
    func greedyRequests() -> [EngineRequest] {
        (Self.copyPrompts + Self.plainPrompts).enumerated().map { i, prompt in
            var extra: [(String, JSON)] = [("logprobs", .int(3))]
            if i == 1 { extra.append(("stop", .array([.string("quarterly")]))) }
            return completionRequest(Int64(i), prompt: prompt, maxTokens: [40, 33, 29, 17, 23, 19][i], extra: extra)
        }
    }

    @Test func greedyOutputWithLogprobsIsIdenticalAndDraftsAreKept() async throws {
        let requests = greedyRequests()
        let plain = await run(try engine(.off) { $0.maxSequences = 6 }, requests)
        #expect(plain.statistics == SpeculationStatistics())
        // Every draft verified (rejections included, so rollback is exercised), all sequences in one batch.
        let eager = await run(try engine(.promptLookup) { $0.maxSequences = 6; $0.speculation.draftAlways = true }, requests)
        // The engine's own policy, one sequence at a time (as a lone job runs).
        let alone = await run(try engine(.promptLookup) { $0.maxSequences = 1 }, requests)
        #expect(plain.bodies.count == requests.count)
        for request in requests {
            #expect(eager.bodies[request.id] == plain.bodies[request.id], "request \(request.id), every draft verified")
            #expect(alone.bodies[request.id] == plain.bodies[request.id], "request \(request.id), alone")
        }
        #expect(plain.bodies[1]?.contains("\"finish_reason\":\"stop\"") == true, "the stop string ends request 1")
        for statistics in [eager.statistics, alone.statistics] {
            #expect(statistics.acceptedTokens > 0 && statistics.acceptedTokens < statistics.draftedTokens, "\(statistics)")
        }
        // The copy prompts are copied: most drafts are kept when the policy picks them.
        #expect(alone.statistics.acceptanceRate > 0.5, "\(alone.statistics)")
    }

    /// Seeded sampling stays exact: each draft is checked against the token the request's own draw picks there.
    /// Small token budget: prompt chunks of later requests share steps with verification rows of earlier ones.
    @Test func seededSamplingInMixedBatchesIsIdentical() async throws {
        let requests = (Self.copyPrompts + Self.plainPrompts).enumerated().map { i, prompt in
            completionRequest(Int64(i), prompt: prompt, maxTokens: 24, extra: i % 3 == 2 ? [] : [
                ("temperature", .double(i % 2 == 0 ? 0.4 : 0.9)), ("seed", .int(100 + i)), ("top_p", .double(0.95)),
                ("logprobs", .int(2)),
            ])
        }
        let plain = await run(try engine(.off) { $0.maxSequences = 1 }, requests)
        let mixed = await run(try engine(.promptLookup) {
            $0.maxSequences = 4
            $0.tokenBudget = 9
            $0.speculation.draftAlways = true
            $0.speculation.maxDraftTokens = 5
        }, requests)
        for request in requests {
            #expect(mixed.bodies[request.id] == plain.bodies[request.id], "request \(request.id)")
        }
        #expect(mixed.statistics.acceptedTokens > 0, "\(mixed.statistics)")
    }

    /// Checkpoints hold verified tokens only (a prefix of the final output, with matching log-probabilities),
    /// and a request resumed from one of them, with speculation, ends exactly as the uninterrupted run.
    @Test func checkpointsHoldOnlyVerifiedTokensAndResumeExactly() async throws {
        let m = try DefaultModel.require()
        let prompt = Self.copyPrompts[0]
        let request = completionRequest(1, prompt: prompt, maxTokens: 40, extra: [("logprobs", .int(2))])
        let (reference, _) = greedyTokens(m.model, prompt: m.tokenizer.encode(prompt, addSpecial: true, parseSpecial: true), count: 40)

        let first = try engine(.promptLookup) { $0.checkpointInterval = .zero; $0.speculation.draftAlways = true }
        let watcher = CheckpointWatcher(first)
        let uninterrupted = await completeWithin(first, [request])[request.id]?.response?.body
        let seen = watcher.stop()
        await first.shutdown()
        let expected = try #require(uninterrupted)
        #expect(first.speculationStatistics.acceptedTokens > 0)
        #expect(!seen.isEmpty)
        for state in seen {
            #expect(state.tokens == Array(reference.prefix(state.tokens.count)), "checkpoint of \(state.tokens.count) tokens")
            #expect(state.logprobs.map(\.token) == state.tokens)
        }
        // Resume from a checkpoint in the middle (or a cut of the reference when too few were seen).
        let middle = seen.count >= 2 ? seen[seen.count / 2] : CheckpointState(tokens: Array(reference.prefix(11)), logprobs: [], engine: first.outputIdentity)
        var resumed = request
        resumed.id = 2
        resumed.resumeFrom = middle.encoded()
        let again = try engine(.promptLookup) { $0.speculation.draftAlways = true }
        let events = await completeWithin(again, [resumed])
        await again.shutdown()
        if middle.logprobs.count == middle.tokens.count {
            #expect(events[2]?.response?.body == expected, "resumed at token \(middle.tokens.count)")
        } else {
            // A checkpoint without log-probabilities resumes with them missing: compare the text only.
            #expect(events[2]?.response?.body["choices"]?.arrayValue?.first?["text"] == expected["choices"]?.arrayValue?.first?["text"])
        }
    }
}
