import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// The built-in engine end to end on the default model: batching, resume, request options.
@Suite(.serialized, .ownThread)
struct BuiltinEngineTests {
    static let prompts = [
        "The capital of France is",
        "Once upon a time, in a small village by the sea,",
        "def fibonacci(n):",
        "List three fruits:",
        "Water boils at a temperature of",
        "The quick brown fox",
    ]

    func engine(_ configure: (inout BuiltinEngineOptions) -> Void = { _ in }) throws -> BuiltinEngine {
        var options = BuiltinEngineOptions()
        configure(&options)
        return try BuiltinEngine(modelPath: try DefaultModel.require().path, options: options)
    }

    func bodies(_ engine: BuiltinEngine, _ requests: [EngineRequest]) async -> [Int64: String] {
        let events = await runToCompletion(engine, requests)
        await engine.shutdown()
        return events.mapValues { $0.response?.body.serialized ?? "not a 200 response: \($0)" }
    }

    /// One sequence on one thread, or eight in chunks of seven tokens on two, give the same bytes: at
    /// the default `int16` and at `int8`, which the README offers as the throughput choice on larger
    /// models with the same promise (at the engine's default alone where the integer kernels cannot run).
    @Test(arguments: MatmulPrecision.int8Available ? [MatmulPrecision.int16, .int8] : [.engineDefault])
    func outputDoesNotDependOnBatchingChunkingOrThreads(precision: MatmulPrecision) async throws {
        let requests = Self.prompts.enumerated().map { i, prompt in
            completionRequest(Int64(i), prompt: prompt, maxTokens: 12,
                              extra: i % 2 == 0 ? [] : [("temperature", .double(0.8)), ("seed", .int(42))])
        }
        let alone = try engine { $0.precision = precision; $0.maxSequences = 1; $0.threads = 1 }
        let together = try engine { $0.precision = precision; $0.maxSequences = 8; $0.tokenBudget = 7; $0.threads = 2 }
        #expect(alone.precision == precision && together.precision == precision)
        let a = await bodies(alone, requests)
        let b = await bodies(together, requests)
        #expect(a.count == requests.count)
        for request in requests {
            #expect(a[request.id] == b[request.id], "request \(request.id) at \(precision.rawValue)")
        }
    }

    /// Without a precision the engine takes the model's automatic one, which for the default model
    /// is the engine default: the same identity (so the same checkpoints and cached results) as
    /// naming it.
    @Test func withoutAPrecisionTheDefaultModelRunsAtTheEngineDefault() async throws {
        let automatic = try engine()
        let named = try engine { $0.precision = .engineDefault }
        #expect(automatic.precision == .engineDefault)
        #expect(automatic.outputIdentity == named.outputIdentity)
        await automatic.shutdown()
        await named.shutdown()
    }

    /// A batch large enough for the output head to draw its sampled tokens (16 drawn rows and
    /// more) defers the draws its bounds leave open to the next step's first pass; the responses
    /// are byte for byte those of an engine that computes such rows' logits at once, and of one
    /// sequence at a time (where the head draws nothing), beside greedy and `logprobs` requests.
    @Test func deferredDrawsChangeNoOutput() async throws {
        let requests = (0..<24).map { i -> EngineRequest in
            let extra: [(String, JSON)]
            switch i % 12 {
            case 5: extra = []  // greedy
            case 11: extra = [("temperature", .double(0.8)), ("seed", .int(i)), ("logprobs", .int(2))]
            default: extra = [("temperature", .double(i % 3 == 0 ? 1.0 : 0.8)), ("top_p", .double(0.95)), ("seed", .int(i))]
            }
            let prompt = Self.prompts[i % Self.prompts.count] + " (\(i))"
            return completionRequest(Int64(i), prompt: prompt, maxTokens: 20, extra: extra)
        }
        let deferring = try engine()
        let deferredBodies = await bodies(deferring, requests)
        let atOnce = await bodies(try engine { $0.deferOpenDraws = false }, requests)
        let alone = await bodies(try engine { $0.maxSequences = 1 }, requests)
        #expect(deferring.deferredDraws > 0, "no draw waited: the test no longer covers deferral")
        #expect(deferredBodies.count == requests.count)
        for request in requests {
            #expect(deferredBodies[request.id] == atOnce[request.id], "request \(request.id), against draws at once")
            #expect(deferredBodies[request.id] == alone[request.id], "request \(request.id), against one sequence at a time")
        }
    }

    /// With room for three sequences' prompts only, sequences that grow into another block
    /// force the newest ones out; they are recomputed later and end exactly the same.
    @Test func preemptionUnderATinyKVBudgetChangesNoOutput() async throws {
        let m = try DefaultModel.require()
        let probe = m.model.makeCache()
        let stem = String(repeating: "one two three four five six seven eight nine ten ", count: 24)
        let requests = (0..<5).map { i in
            completionRequest(Int64(i), prompt: "\(i). " + stem, maxTokens: 40,
                              extra: i % 2 == 0 ? [] : [("temperature", .double(0.7)), ("seed", .int(i))])
        }
        let promptLength = m.tokenizer.encode(requests[0].body["prompt"]!.stringValue!, addSpecial: true, parseSpecial: true).count
        #expect(probe.blocks(for: promptLength + 40) > probe.blocks(for: promptLength + 1),
                "prompts must cross a block boundary while generating (prompt \(promptLength) tokens)")
        let roomy = await bodies(try engine(), requests)
        let tight = await bodies(try engine { $0.kvMemoryBytes = 3 * probe.bytesNeeded(positions: promptLength + 1) }, requests)
        #expect(roomy.count == requests.count)
        for request in requests {
            #expect(roomy[request.id] == tight[request.id], "request \(request.id)")
        }
    }

    @Test func resumedGreedyRequestContinuesExactly() async throws {
        let m = try DefaultModel.require()
        let request = completionRequest(1, prompt: "The three primary colors are", maxTokens: 20)
        let uninterrupted = await bodies(try engine(), [request])[1]
        let promptTokens = m.tokenizer.encode("The three primary colors are", addSpecial: true, parseSpecial: true)
        let (tokens, _) = greedyTokens(m.model, prompt: promptTokens, count: 20)
        let identity = try await outputIdentity()
        for k in [0, 1, 7, 19] {
            var resumed = request
            resumed.resumeFrom = CheckpointState(tokens: Array(tokens.prefix(k)), logprobs: [], engine: identity).encoded()
            let body = await bodies(try engine(), [resumed])[1]
            #expect(body == uninterrupted, "resumed at token \(k)")
        }
    }

    /// The identity of engines made by `engine()` (all alike).
    func outputIdentity() async throws -> String {
        let probe = try engine()
        await probe.shutdown()
        return probe.outputIdentity
    }

    /// A checkpoint from an engine of another identity (another model, precision or chat
    /// template, or one from before identities were recorded) is not continued: the request
    /// starts over and answers exactly as an uninterrupted run. With this engine's identity the
    /// same tokens are continued.
    @Test func checkpointFromAnotherEngineStartsOver() async throws {
        let m = try DefaultModel.require()
        let request = completionRequest(1, prompt: "The three primary colors are", maxTokens: 8)
        let uninterrupted = await bodies(try engine(), [request])[1]
        let identity = try await outputIdentity()
        // Tokens the model would not pick here, so continuing them shows in the text.
        let planted: [Int32] = [9_000, 12_000, 15_000]
        let plantedText = m.tokenizer.decode(planted)
        for (engineIdentity, continued) in [(identity, true), (identity.replacingOccurrences(of: "precision=", with: "precision=x"), false),
                                            ("", false)] {
            var resumed = request
            resumed.resumeFrom = CheckpointState(tokens: planted, logprobs: [], engine: engineIdentity).encoded()
            let body = await bodies(try engine(), [resumed])[1]
            let text = (try? JSON.parse(body ?? ""))?["choices"]?.arrayValue?.first?["text"]?.stringValue ?? ""
            if continued {
                #expect(text.hasPrefix(plantedText), "this engine's checkpoint was not continued: \(text.debugDescription)")
            } else {
                #expect(body == uninterrupted, "a checkpoint of engine \(engineIdentity.debugDescription) was continued: \(text.debugDescription)")
            }
        }
    }

    @Test func cancelledSampledRequestResumesToTheSameText() async throws {
        let request = completionRequest(7, prompt: "Once upon a time", maxTokens: 40,
                                        extra: [("temperature", .double(1.0)), ("seed", .int(1234)), ("top_p", .double(0.9))])
        let uninterrupted = await bodies(try engine(), [request])[7]

        let first = try engine { $0.checkpointInterval = .zero }
        first.submit(request)
        var checkpoint: Checkpoint?
        let deadline = ContinuousClock.now + .seconds(120)
        while checkpoint == nil && ContinuousClock.now < deadline {
            if let latest = first.collectCheckpoints().last?.checkpoint, latest.generatedTokens >= 3 { checkpoint = latest }
            try await Task.sleep(for: .milliseconds(5))
        }
        first.cancel(requestID: 7)
        var stopped: Checkpoint?
        for await event in first.events {
            if case let .stopped(_, c) = event { stopped = c; break }
            if case .finished = event { break }
        }
        await first.shutdown()
        let resumeFrom = try #require(stopped ?? checkpoint)
        #expect(resumeFrom.generatedTokens >= 3)
        var resumed = request
        resumed.resumeFrom = resumeFrom
        #expect(await bodies(try engine(), [resumed])[7] == uninterrupted)
    }

    @Test func stopStringsMaxTokensAndUsage() async throws {
        let plain = completionRequest(1, prompt: "Count: 1, 2, 3,", maxTokens: 24)
        let engine1 = try engine()
        let plainBody = try #require(await runToCompletion(engine1, [plain])[1]?.response)
        await engine1.shutdown()
        let text = try #require(plainBody.body["choices"]?.arrayValue?.first?["text"]?.stringValue)
        #expect(plainBody.body["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue == "length")
        #expect(plainBody.usage.completionTokens == 24)
        #expect(plainBody.body["usage"]?["total_tokens"]?.intValue == plainBody.usage.promptTokens + 24)

        // A stop string from the middle of that text cuts it there, whatever the token boundaries.
        let chars = Array(text)
        let stop = String(chars[(chars.count / 2)..<min(chars.count, chars.count / 2 + 3)])
        let expected = String(text[..<text.range(of: stop)!.lowerBound])
        let stopped = completionRequest(2, prompt: "Count: 1, 2, 3,", maxTokens: 24, extra: [("stop", .array([.string("\u{0}never"), .string(stop)]))])
        let engine2 = try engine()
        let body = try #require(await runToCompletion(engine2, [stopped])[2]?.response)
        await engine2.shutdown()
        #expect(body.body["choices"]?.arrayValue?.first?["text"]?.stringValue == expected)
        #expect(body.body["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue == "stop")
    }

    /// Greedy rows without log-probabilities take the output head's argmax path; rows with
    /// them get every logit. In one batch, mixing both, each prompt gets the same tokens.
    @Test func greedyTokensAreTheSameWithOrWithoutLogprobs() async throws {
        let plain = Self.prompts.enumerated().map { i, prompt in completionRequest(Int64(i), prompt: prompt, maxTokens: 16) }
        let scored = Self.prompts.enumerated().map { i, prompt in
            completionRequest(Int64(100 + i), prompt: prompt, maxTokens: 16, extra: [("logprobs", .int(1))])
        }
        let engine = try engine()
        let events = await runToCompletion(engine, plain + scored)
        await engine.shutdown()
        func text(_ id: Int64) -> String? { events[id]?.response?.body["choices"]?.arrayValue?.first?["text"]?.stringValue }
        for i in Self.prompts.indices {
            #expect(text(Int64(i)) != nil && text(Int64(i)) == text(Int64(100 + i)), "prompt \(i)")
        }
    }

    @Test func chatRequestUsesTheGemmaTemplateAndReportsLogprobs() async throws {
        let body = JSON.object([
            "model": .string("gemma-3-270m"),
            "messages": .array([.object(["role": .string("system"), "content": .string("Answer briefly.")]),
                                .object(["role": .string("user"), "content": .string("What is 2 + 2?")])]),
            "max_tokens": .int(8), "temperature": .int(0), "logprobs": .bool(true), "top_logprobs": .int(3),
        ])
        let engine = try engine()
        #expect(engine.chatFormat?.identity == "gemma", "the default model has no template of its own: the hand-written Gemma format")
        let request = EngineRequest(id: 3, customID: "chat", endpoint: .chatCompletions, body: body)
        let response = try #require(await runToCompletion(engine, [request])[3]?.response)
        await engine.shutdown()
        #expect(response.body["object"]?.stringValue == "chat.completion")
        #expect(response.body["model"]?.stringValue == "gemma-3-270m")
        let choice = try #require(response.body["choices"]?.arrayValue?.first)
        #expect(choice["message"]?["role"]?.stringValue == "assistant")
        let content = try #require(choice["logprobs"]?["content"]?.arrayValue)
        #expect(!content.isEmpty && content.count <= 8)
        for entry in content {
            #expect((entry["logprob"]?.doubleValue ?? 1) <= 0)
            #expect(entry["top_logprobs"]?.arrayValue?.count == 3)
        }
        let expectedPrompt = "<start_of_turn>user\nAnswer briefly.\n\nWhat is 2 + 2?<end_of_turn>\n<start_of_turn>model\n"
        let tokens = try engine.tokenize(.chat([ChatMessage(role: "system", content: "Answer briefly."),
                                                ChatMessage(role: "user", content: "What is 2 + 2?")]))
        #expect(tokens == engine.tokenizer.encode(expectedPrompt, addSpecial: true, parseSpecial: true))
        #expect(response.usage.promptTokens == tokens.count)
    }

    @Test func invalidRequestsAreAnsweredWith400() async throws {
        let engine = try engine { $0.contextLength = 64 }
        let cases: [(EngineRequest, String)] = [
            (completionRequest(1, prompt: "hi", maxTokens: 4, extra: [("n", .int(200))]), "at most 128"),
            (completionRequest(6, prompt: "hi", maxTokens: 4, extra: [("logit_bias", .object(["999999": .int(5)]))]), "outside the vocabulary"),
            (completionRequest(7, prompt: "hi", maxTokens: 4, extra: [("guided_json", .object(["type": .string("string"), "format": .string("ipv6")]))]),
             "unsupported string format"),
            (completionRequest(2, prompt: "hi", maxTokens: 4, extra: [("best_of", .int(2))]), "best_of"),
            (completionRequest(3, prompt: String(repeating: "word ", count: 200), maxTokens: 4), "context is 64 tokens"),
            (completionRequest(4, prompt: "hi", maxTokens: 4, extra: [("temperature", .int(7))]), "'temperature'"),
            (EngineRequest(id: 5, customID: "x", endpoint: .chatCompletions, body: .object(["messages": .array([])])), "'messages'"),
        ]
        let events = await runToCompletion(engine, cases.map(\.0))
        await engine.shutdown()
        for (request, fragment) in cases {
            guard case let .finished(_, .response(status, body, _))? = events[request.id] else {
                Issue.record("request \(request.id): no response")
                continue
            }
            #expect(status == 400)
            let message = body["error"]?["message"]?.stringValue ?? ""
            #expect(message.contains(fragment), "request \(request.id): \(message)")
        }
    }

    /// On a model that adds no beginning-of-sequence token (Qwen), an empty prompt has no tokens
    /// at all: a 400, where the worker used to spin on it forever (and hand it to the next one).
    @Test(arguments: ["qwen3-f16", "qwen2-bf16"])
    func anEmptyPromptWithoutABeginningTokenIsA400(model: String) async throws {
        let engine = try BuiltinEngine(modelPath: Fixtures.url("tiny/\(model).gguf").path, options: BuiltinEngineOptions())
        let requests = [completionRequest(1, prompt: "", maxTokens: 2), completionRequest(2, prompt: "Hi", maxTokens: 2)]
        let events = await runToCompletion(engine, requests)
        await engine.shutdown()
        guard case let .finished(_, .response(status, body, _))? = events[1] else {
            Issue.record("no response to the empty prompt: \(String(describing: events[1]))")
            return
        }
        #expect(status == 400)
        #expect(body["error"]?["message"]?.stringValue == "'prompt' must not be empty")
        guard case let .finished(_, .response(other, _, _))? = events[2] else {
            Issue.record("no response to the other prompt")
            return
        }
        #expect(other == 200)
    }
}
