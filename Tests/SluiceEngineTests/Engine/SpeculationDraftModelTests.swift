import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// Draft-model speculation on the tiny fixture models (scripts/make-tiny-models): `llama-spm-f32`,
/// `llama-spm-quant` and `gemma3-swa-f16` share one vocabulary with different weights (and
/// architectures), so each can draft for another; `llama3-bpe-f16` has another vocabulary.
@Suite(.serialized, .ownThread)
struct SpeculationDraftModelTests {
    static let target = "llama-spm-f32"
    static func path(_ name: String) -> String { Fixtures.url("tiny/\(name).gguf").path }

    static let prompts = ["The capital of France is", "Once upon a time, in a small village by the sea,", "def fibonacci(n):",
                          "the the the the", "Zürich 2024: naïve 🙂 numbers 3.14159"]

    /// Greedy with log-probabilities, and seeded sampling at two temperatures.
    static func requests() -> [EngineRequest] {
        prompts.enumerated().flatMap { i, prompt in
            [
                completionRequest(Int64(2 * i), prompt: prompt, maxTokens: 48, extra: [("logprobs", .int(3))]),
                completionRequest(Int64(2 * i + 1), prompt: prompt, maxTokens: 40, extra: [
                    ("temperature", .double(i % 2 == 0 ? 0.7 : 1.3)), ("seed", .int(i)), ("top_k", .int(20)),
                ]),
            ]
        }
    }

    func run(_ mode: SpeculationMode, sequences: Int = 4, _ configure: (inout BuiltinEngineOptions) -> Void = { _ in })
        async throws -> (bodies: [Int64: String], statistics: SpeculationStatistics) {
        var options = BuiltinEngineOptions()
        options.threads = 2
        options.maxSequences = sequences
        options.speculation.mode = mode
        configure(&options)
        let engine = try BuiltinEngine(modelPath: Self.path(Self.target), options: options)
        let events = await completeWithin(engine, Self.requests())
        await engine.shutdown()
        return (events.mapValues { $0.response?.body.serialized ?? "not a 200 response: \($0)" }, engine.speculationStatistics)
    }

    @Test func theModelAsItsOwnDraftKeepsEveryDraftAndChangesNothing() async throws {
        let plain = try await run(.off)
        let drafted = try await run(.draftModel(path: Self.path(Self.target))) { $0.speculation.draftAlways = true }
        #expect(plain.bodies.count == Self.requests().count)
        for request in Self.requests() {
            #expect(drafted.bodies[request.id] == plain.bodies[request.id], "request \(request.id)")
        }
        // Same weights, same kernels, same draws: the draft is the model's own choice every time, sampled or not.
        #expect(drafted.statistics.draftedTokens > 100, "\(drafted.statistics)")
        #expect(drafted.statistics.acceptedTokens == drafted.statistics.draftedTokens, "\(drafted.statistics)")
    }

    @Test(arguments: ["llama-spm-quant", "gemma3-swa-f16"])
    func anotherModelWithTheSameVocabularyChangesNothing(_ draft: String) async throws {
        let plain = try await run(.off, sequences: 1)
        let drafted = try await run(.draftModel(path: Self.path(draft)), sequences: 5) {
            $0.speculation.draftAlways = true
            $0.speculation.maxDraftTokens = 4
            $0.tokenBudget = 16  // prompt chunks beside drafts and verification
        }
        for request in Self.requests() {
            #expect(drafted.bodies[request.id] == plain.bodies[request.id], "request \(request.id), drafts by \(draft)")
        }
        // Unrelated random weights: drafts are tried and mostly rejected, so rollback is exercised.
        #expect(drafted.statistics.draftedTokens > 100, "\(drafted.statistics)")
        #expect(drafted.statistics.acceptedTokens < drafted.statistics.draftedTokens / 2, "\(drafted.statistics)")
    }

    @Test func aDraftModelWithAnotherVocabularyIsRefusedAtLoad() throws {
        var options = BuiltinEngineOptions()
        options.threads = 1
        options.speculation.mode = .draftModel(path: Self.path("llama3-bpe-f16"))
        let error = #expect(throws: ModelLoadError.self) { try BuiltinEngine(modelPath: Self.path(Self.target), options: options) }
        let message = error?.description ?? ""
        #expect(message.contains("draft model") && message.contains("llama3-bpe-f16") && message.contains("tokenizer"), "\(message)")

        options.speculation.mode = .draftModel(path: Self.path("no-such-model"))
        #expect(throws: (any Error).self) { try BuiltinEngine(modelPath: Self.path(Self.target), options: options) }
    }

    /// Checkpoints taken while a draft model speculates hold verified tokens only, and resume exactly.
    @Test func checkpointsUnderDraftModelSpeculationResumeExactly() async throws {
        var options = BuiltinEngineOptions()
        options.threads = 2
        options.checkpointInterval = .zero
        options.speculation.mode = .draftModel(path: Self.path(Self.target))
        options.speculation.draftAlways = true
        let request = completionRequest(1, prompt: Self.prompts[1], maxTokens: 120, extra: [("logprobs", .int(1))])
        let engine = try BuiltinEngine(modelPath: Self.path(Self.target), options: options)
        let watcher = CheckpointWatcher(engine)
        let expected = await completeWithin(engine, [request])[request.id]?.response?.body
        let seen = watcher.stop()
        await engine.shutdown()
        let body = try #require(expected)
        let longest = seen.max { $0.tokens.count < $1.tokens.count }?.tokens ?? []
        #expect(!seen.isEmpty)
        for state in seen {
            #expect(state.tokens == Array(longest.prefix(state.tokens.count)))
            #expect(state.logprobs.count == state.tokens.count)
        }
        let resumeAt = seen.first { $0.tokens.count >= 5 } ?? CheckpointState(tokens: [], logprobs: [], engine: engine.outputIdentity)
        var resumed = request
        resumed.id = 2
        resumed.resumeFrom = resumeAt.encoded()
        var plainOptions = options
        plainOptions.speculation.mode = .off
        let plain = try BuiltinEngine(modelPath: Self.path(Self.target), options: plainOptions)
        let uninterruptedPlain = await completeWithin(plain, [request])[1]?.response?.body
        await plain.shutdown()
        #expect(uninterruptedPlain == body, "speculating run vs plain run")
        let again = try BuiltinEngine(modelPath: Self.path(Self.target), options: options)
        let events = await completeWithin(again, [resumed])
        await again.shutdown()
        #expect(events[2]?.response?.body == body, "resumed at token \(resumeAt.tokens.count)")
    }
}
