import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// Prefix sharing and sliding-window trimming change no output: requests sharing a system prompt
/// give bit-identical bodies (log-probabilities included) with sharing on and off, alone or
/// batched, under a KV budget small enough to evict and preempt; and a generation much longer
/// than Gemma 3's window, with the window's old blocks freed, matches the untrimmed forward pass.
@Suite(.serialized, .ownThread)
struct PrefixSharingTests {
    /// Over eighty tokens that every request starts with.
    static let systemPrompt = """
        You are the reference desk of a small public library. Answer every question in one short sentence. \
        Quote book titles exactly as the catalogue spells them, never invent an author, a date or a page number, \
        and say that the catalogue does not know when it does not. Opening hours are nine to five on weekdays \
        and ten to two on Saturdays; the library is closed on Sundays and public holidays.
        """
    static let questions = [
        "Who wrote Middlemarch?", "Is the library open on Sunday?", "When does it close on Saturday?",
        "Can I renew a book by phone?", "Where are the atlases?", "Do you have large-print editions?",
    ]

    /// Chat requests (the system prompt inside Gemma's turn) and completions, greedy and seeded,
    /// every one with log-probabilities.
    static func requests(firstID: Int64 = 0, questions: [String] = questions, systemPrompt: String = systemPrompt) -> [EngineRequest] {
        questions.enumerated().map { i, question in
            let id = firstID + Int64(i)
            var fields: [(key: String, value: JSON)] = [(key: "max_tokens", value: .int(8))]
            fields += i % 2 == 0 ? [(key: "temperature", value: .int(0))] : [(key: "temperature", value: .double(0.9)), (key: "seed", value: .int(i))]
            if i % 3 == 2 {
                fields += [(key: "prompt", value: .string(systemPrompt + "\nQuestion: " + question + "\nAnswer:")), (key: "logprobs", value: .int(2))]
                return EngineRequest(id: id, customID: "q\(id)", endpoint: .completions, body: .object(fields))
            }
            fields += [(key: "messages", value: .array([.object(["role": .string("system"), "content": .string(systemPrompt)]),
                                                        .object(["role": .string("user"), "content": .string(question)])])),
                       (key: "logprobs", value: .bool(true)), (key: "top_logprobs", value: .int(3))]
            return EngineRequest(id: id, customID: "q\(id)", endpoint: .chatCompletions, body: .object(fields))
        }
    }

    func engine(_ configure: (inout BuiltinEngineOptions) -> Void = { _ in }) throws -> BuiltinEngine {
        var options = BuiltinEngineOptions()
        configure(&options)
        return try BuiltinEngine(modelPath: try DefaultModel.require().path, options: options)
    }

    func bodies(_ engine: BuiltinEngine, _ requests: [EngineRequest], shutdown: Bool = true) async -> [Int64: String] {
        let events = await runToCompletion(engine, requests)
        if shutdown { await engine.shutdown() }
        return events.mapValues { $0.response?.body.serialized ?? "not a 200 response: \($0)" }
    }

    @Test func sharingAPromptChangesNoOutputAndSkipsItsPrefill() async throws {
        let requests = Self.requests()
        let unshared = try engine { $0.prefixSharing = false }
        let reference = await bodies(unshared, requests)
        #expect(unshared.reusedPromptTokens == 0)
        #expect(reference.count == requests.count && reference.values.allSatisfy { $0.contains("\"logprobs\"") })

        // A small step budget spreads the prompts over several steps, as a long job's arrivals are.
        let shared = try engine { $0.tokenBudget = 128 }
        let batched = await bodies(shared, requests, shutdown: false)
        for request in requests { #expect(batched[request.id] == reference[request.id], "request \(request.id) batched with sharing") }
        #expect(shared.reusedPromptTokens > 0, "requests admitted together still share once the first has computed the prompt")

        // A later request finds the whole common prefix (in full blocks) in the cache, and prefills only the rest.
        let late = Self.requests(firstID: 100, questions: ["What is the fine for a late book?"])[0]
        let tokens = try shared.tokenize(try GenerationRequest(endpoint: late.endpoint, body: late.body).prompt)
        var common = 0
        for request in requests {
            let other = try shared.tokenize(try GenerationRequest(endpoint: request.endpoint, body: request.body).prompt)
            common = max(common, zip(tokens, other).prefix { $0 == $1 }.count)
        }
        #expect(common >= 80, "the system prompt is over eighty tokens (\(common) in common)")
        let before = shared.reusedPromptTokens
        let lateBody = await bodies(shared, [late])[100]
        #expect(shared.reusedPromptTokens - before == common / KVCache.defaultBlockPositions * KVCache.defaultBlockPositions)
        #expect(lateBody == (await bodies(try engine { $0.prefixSharing = false }, [late]))[100])

        // One at a time on one thread, each request reusing the previous ones' blocks: the same bytes again.
        let alone = try engine { $0.maxSequences = 1; $0.threads = 1 }
        let sequential = await bodies(alone, requests, shutdown: false)
        #expect(alone.reusedPromptTokens >= (requests.count - 3) * (common / KVCache.defaultBlockPositions * KVCache.defaultBlockPositions))
        await alone.shutdown()
        for request in requests { #expect(sequential[request.id] == reference[request.id], "request \(request.id) alone with sharing") }
    }

    /// Two system prompts, alternating, under a budget of about two sequences: cached prompt blocks
    /// are evicted to make room, sequences are preempted and recomputed, and every output is unchanged.
    @Test func evictionAndPreemptionUnderATinyBudgetChangeNoOutput() async throws {
        let m = try DefaultModel.require()
        let other = "You answer questions about trains in one sentence, with times in 24-hour format, and never guess a platform number."
        let requests = zip(Self.requests(), Self.requests(firstID: 10, systemPrompt: other)).flatMap { [$0, $1] }
        let reference = await bodies(try engine { $0.prefixSharing = false }, requests)
        let blockBytes = m.model.makeCache().bytesPerBlock
        let tight = try engine { $0.kvMemoryBytes = 18 * blockBytes }
        let constrained = await bodies(tight, requests, shutdown: false)
        let evicted = tight.evictedPrefixBlocks
        await tight.shutdown()
        #expect(evicted > 0, "the budget must force cached prompt blocks out")
        #expect(tight.reusedPromptTokens > 0)
        for request in requests { #expect(constrained[request.id] == reference[request.id], "request \(request.id)") }
    }

    /// The keys and values of a prompt's positions are the same bits whether the prompt is computed
    /// in one piece alone or in small chunks beside another sequence: the premise of sharing them.
    @Test func keysAndValuesOfAPrefixDoNotDependOnBatchOrChunks() throws {
        let m = try DefaultModel.require()
        let prompt = m.tokenizer.encode(Self.systemPrompt, addSpecial: true, parseSpecial: true)
        let neighbour = m.tokenizer.encode("Something else entirely, to share the batch with.", addSpecial: true, parseSpecial: true)
        let cache = m.model.makeCache()
        let logits = UnsafeMutablePointer<Float>.allocate(capacity: 2 * m.model.shape.vocabularySize)
        defer { logits.deallocate() }
        cache.reserve(slot: 0, positions: prompt.count)
        m.model.forward(tokens: prompt, placements: prompt.indices.map { TokenPlacement(slot: 0, position: $0) },
                        logitRows: [prompt.count - 1], cache: cache, logits: logits)
        cache.reserve(slot: 1, positions: prompt.count)
        cache.reserve(slot: 2, positions: neighbour.count)
        var done = 0
        while done < prompt.count {
            let end = min(prompt.count, done + 7)
            let mine = done..<end
            let theirs = min(done, neighbour.count)..<min(end, neighbour.count)
            m.model.forward(tokens: Array(prompt[mine]) + Array(neighbour[theirs]),
                            placements: mine.map { TokenPlacement(slot: 1, position: $0) } + theirs.map { TokenPlacement(slot: 2, position: $0) },
                            logitRows: [], cache: cache, logits: logits)
            done = end
        }
        let whole = cache.view(slot: 0), chunked = cache.view(slot: 1)
        let rowBytes = cache.width * cache.storage.bytesPerElement
        var differing = 0
        for layer in 0..<m.model.shape.layerCount {
            let a = whole.layer(layer), b = chunked.layer(layer)
            for p in prompt.indices {
                // The stored bytes, whatever the storage (float16 at the default precision).
                for (x, y) in [(a.key(p, as: Float.self), b.key(p, as: Float.self)), (a.value(p, as: Float.self), b.value(p, as: Float.self))]
                where memcmp(x, y, rowBytes) != 0 {
                    differing += 1
                }
            }
        }
        #expect(differing == 0, "\(differing) stored keys or values differ")
    }
}

/// Sliding-window trimming on the tiny Gemma 3 (window 8, 16-position blocks): a generation far
/// longer than the window fits a KV budget that could not hold it untrimmed, and its tokens are
/// the untrimmed greedy pass's.
@Suite(.serialized, .ownThread)
struct SlidingWindowTrimmingTests {
    static let path = Fixtures.url("tiny/gemma3-swa-f16.gguf").path

    @Test func longGenerationsKeepOnlyTheWindowAndChangeNoToken() async throws {
        let file = try GGUFFile(path: Self.path)
        let model = try loadLanguageModel(file, pool: ComputePool(threads: 2))
        let tokenizer = try Tokenizer(gguf: file)
        #expect(model.shape.slidingWindows.compactMap { $0 } == [8, 8, 8, 8, 8])
        let prompt = "Once upon a time, in a small village by the sea,"
        let promptTokens = tokenizer.encode(prompt, addSpecial: true, parseSpecial: true)
        let length = 160
        let (expected, _) = greedyTokens(model, prompt: promptTokens, count: length)

        // Untrimmed, prompt + 160 tokens need 12 blocks in each group; the budget holds 6 blocks'
        // worth of both groups, which is enough once the window group keeps only its last blocks.
        let probe = model.makeCache()
        #expect(probe.blocks(for: promptTokens.count + length) > 6)
        var options = BuiltinEngineOptions()
        options.threads = 2
        options.kvMemoryBytes = 6 * probe.bytesPerBlock
        let engine = try BuiltinEngine(modelPath: Self.path, options: options)
        let request = completionRequest(1, prompt: prompt, maxTokens: length, extra: [("logprobs", .int(1))])
        let response = try #require(await runToCompletion(engine, [request])[1]?.response)
        await engine.shutdown()
        let logprobs = response.body["choices"]?.arrayValue?.first?["logprobs"]?["token_logprobs"]?.arrayValue ?? []
        let generatedTokens = response.usage.completionTokens
        let stoppedEarly = expected.firstIndex { tokenizer.isEndOfGeneration($0) }.map { $0 + 1 }
        #expect(generatedTokens == (stoppedEarly ?? length), "\(response.body.serialized)")
        #expect(generatedTokens > 100, "the generation must run far past the window and the budget's untrimmed size")
        let text = response.body["choices"]?.arrayValue?.first?["text"]?.stringValue
        var tokens = Array(expected.prefix(generatedTokens))
        if let last = tokens.last, tokenizer.isEndOfGeneration(last) { tokens.removeLast() }
        #expect(text == tokenizer.decode(tokens))
        #expect(logprobs.count == generatedTokens)
    }

    /// Prompts sharing a start much longer than the window: a later request takes the global
    /// layer's blocks from the start and the window layers' blocks only near the end of the
    /// shared part (the rest are holes it never reads), also after eviction under a tight budget.
    @Test func sharingPromptsLongerThanTheWindowChangesNoOutput() async throws {
        let common = "The capital of France is Paris, the capital of Spain is Madrid, the capital of Italy is Rome, and the capital of"
        let endings = [" Portugal is", " Greece is", " Austria is", " Norway is", " Poland is", " Ireland is"]
        let requests = endings.enumerated().map { i, ending in
            completionRequest(Int64(i), prompt: common + ending, maxTokens: 24,
                              extra: [("logprobs", .int(2))] + (i % 2 == 0 ? [] : [("temperature", .double(0.9)), ("seed", .int(i))]))
        }
        func run(_ configure: (inout BuiltinEngineOptions) -> Void) async throws -> (bodies: [Int64: String], reused: Int, evicted: Int) {
            var options = BuiltinEngineOptions()
            options.threads = 2
            configure(&options)
            let engine = try BuiltinEngine(modelPath: Self.path, options: options)
            let events = await runToCompletion(engine, requests)
            let counts = (engine.reusedPromptTokens, engine.evictedPrefixBlocks)
            await engine.shutdown()
            return (events.mapValues { $0.response?.body.serialized ?? "not a 200 response: \($0)" }, counts.0, counts.1)
        }
        let reference = try await run { $0.prefixSharing = false }
        let shared = try await run { $0.tokenBudget = 24 }
        let probe = try loadLanguageModel(try GGUFFile(path: Self.path), pool: ComputePool(threads: 1)).makeCache()
        let tight = try await run { $0.tokenBudget = 24; $0.maxSequences = 3; $0.kvMemoryBytes = 7 * probe.bytesPerBlock }
        #expect(reference.reused == 0)
        #expect(shared.reused >= 4 * 32, "later requests reuse at least two 16-position blocks each (reused \(shared.reused))")
        #expect(tight.reused > 0 && tight.evicted > 0, "reused \(tight.reused), evicted \(tight.evicted)")
        for request in requests {
            #expect(shared.bodies[request.id] == reference.bodies[request.id], "request \(request.id)")
            #expect(tight.bodies[request.id] == reference.bodies[request.id], "request \(request.id) under a tight budget")
        }
    }
}
