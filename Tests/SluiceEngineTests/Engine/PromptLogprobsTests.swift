import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// Completions' `echo` with `logprobs`: the prompt's tokens get log-probabilities, exactly those
/// of the model's own logits at each position, whatever shares the batch, the thread count,
/// prefix sharing, preemption or a resume; `max_tokens` 0 scores the prompt alone.
@Suite(.serialized, .ownThread)
struct PromptLogprobsTests {
    static let prompt = "The quick brown fox jumps over the lazy dog, and then it"

    func engine(_ configure: (inout BuiltinEngineOptions) -> Void = { _ in }) throws -> BuiltinEngine {
        var options = BuiltinEngineOptions()
        configure(&options)
        return try BuiltinEngine(modelPath: try DefaultModel.require().path, options: options)
    }

    func bodies(_ engine: BuiltinEngine, _ requests: [EngineRequest]) async -> [Int64: JSON] {
        let events = await runToCompletion(engine, requests)
        await engine.shutdown()
        return events.compactMapValues { $0.response?.body }
    }

    /// Token `prompt[i + 1]`'s log-probability and top `top` from the logits a lone forward pass
    /// over `prompt[0...i]` gives at its last position: one pass per prefix, nothing batched.
    static func reference(_ prompt: [Int32], top: Int) throws -> [(chosen: Double, top: [TokenLogProbability])] {
        let m = try DefaultModel.require()
        let vocabulary = m.model.shape.vocabularySize
        var logits = [Float](repeating: 0, count: vocabulary)
        var result: [(chosen: Double, top: [TokenLogProbability])] = []
        for i in 0..<(prompt.count - 1) {
            let cache = m.model.makeCache()
            cache.reserve(slot: 0, positions: i + 1)
            let prefix = Array(prompt[...i])
            logits.withUnsafeMutableBufferPointer { out in
                m.model.forward(tokens: prefix, placements: prefix.indices.map { TokenPlacement(slot: 0, position: $0) },
                                logitRows: [i], cache: cache, logits: out.baseAddress!)
            }
            result.append(logits.withUnsafeBufferPointer {
                Sampler.logProbabilities($0.baseAddress!, count: m.tokenizer.vocabularySize, token: prompt[i + 1], top: top)
            })
        }
        return result
    }

    func logprobs(_ body: JSON?, choice: Int = 0) -> JSON? { body?["choices"]?[choice]?["logprobs"] }

    @Test func promptLogprobsAreTheModelsOwnPositionByPosition() async throws {
        let m = try DefaultModel.require()
        let promptTokens = m.tokenizer.encode(Self.prompt, addSpecial: true, parseSpecial: true)
        let echoed = completionRequest(1, prompt: Self.prompt, maxTokens: 6, extra: [("echo", .bool(true)), ("logprobs", .int(3))])
        let plain = completionRequest(2, prompt: Self.prompt, maxTokens: 6, extra: [("logprobs", .int(3))])
        let scoring = completionRequest(3, prompt: Self.prompt, maxTokens: 0, extra: [("echo", .bool(true)), ("logprobs", .int(3))])
        // U+2028 is spelled by byte-fallback tokens: one byte of `text` each.
        let unicodePrompt = "a\u{2028}b"
        let unicode = completionRequest(4, prompt: unicodePrompt, maxTokens: 2, extra: [("echo", .bool(true)), ("logprobs", .int(1))])
        let bodies = await bodies(try engine(), [echoed, plain, scoring, unicode])
        let lp = try #require(logprobs(bodies[1]), "\(String(describing: bodies[1]))")
        let tokens = try #require(lp["tokens"]?.arrayValue)
        let values = try #require(lp["token_logprobs"]?.arrayValue)
        let tops = try #require(lp["top_logprobs"]?.arrayValue)
        let offsets = try #require(lp["text_offset"]?.arrayValue)
        #expect(tokens.count == promptTokens.count + 6 && values.count == tokens.count && tops.count == tokens.count && offsets.count == tokens.count)

        // The first prompt token has nothing before it: null, as OpenAI answers.
        #expect(values.first == .null && tops.first == .null)
        let reference = try Self.reference(promptTokens, top: 3)
        for i in 1..<promptTokens.count {
            let expected = reference[i - 1]
            #expect(tokens[i] == .string(String(decoding: m.tokenizer.piece(for: promptTokens[i]), as: UTF8.self)), "token \(i)")
            #expect(values[i] == .double(expected.chosen), "position \(i): \(values[i]) vs \(expected.chosen)")
            let top = JSON.object(expected.top.map { (key: String(decoding: m.tokenizer.piece(for: $0.token), as: UTF8.self), value: JSON.double($0.logProbability)) })
            #expect(tops[i] == top, "top at position \(i)")
        }
        // Each offset is where its token's bytes start in `text` (`<bos>` takes no room there).
        let text = Array((bodies[1]?["choices"]?[0]?["text"]?.stringValue ?? "").utf8)
        #expect(offsets.first == .int(0) && offsets.dropFirst().first == .int(0))
        for (i, token) in promptTokens.enumerated() {
            let piece = m.tokenizer.piece(for: token, renderSpecial: false)
            let start = offsets[i].intValue!
            #expect(start + piece.count <= text.count && Array(text[start..<start + piece.count]) == piece, "token \(i)")
        }
        #expect(offsets.last!.intValue! <= text.count)
        let unicodeTokens = m.tokenizer.encode(unicodePrompt, addSpecial: true, parseSpecial: true)
        #expect(unicodeTokens.contains { m.tokenizer.piece(for: $0).count == 1 && m.tokenizer.piece(for: $0)[0] >= 0x80 },
                "the prompt must use byte-fallback tokens for this check to mean anything")
        let unicodeOffsets = logprobs(bodies[4])?["text_offset"]?.arrayValue?.prefix(unicodeTokens.count).map { $0.intValue! }
        var expectedOffsets: [Int] = []
        var position = 0
        for token in unicodeTokens {
            expectedOffsets.append(position)
            position += m.tokenizer.piece(for: token, renderSpecial: false).count
        }
        #expect(unicodeOffsets == expectedOffsets && position == unicodePrompt.utf8.count)
        // The completion part is exactly the completion's log-probabilities without echo.
        let completion = try #require(logprobs(bodies[2]))
        #expect(Array(tokens.suffix(6)) == completion["tokens"]?.arrayValue)
        #expect(Array(values.suffix(6)) == completion["token_logprobs"]?.arrayValue)
        #expect(Array(tops.suffix(6)) == completion["top_logprobs"]?.arrayValue)
        #expect(bodies[1]?["choices"]?[0]?["text"]?.stringValue == Self.prompt + (bodies[2]?["choices"]?[0]?["text"]?.stringValue ?? "?"))

        // max_tokens 0: the prompt alone, scored; nothing generated.
        let scored = try #require(bodies[3]?["choices"]?[0])
        #expect(scored["text"]?.stringValue == Self.prompt)
        #expect(scored["finish_reason"]?.stringValue == "length")
        #expect(scored["logprobs"]?["token_logprobs"]?.arrayValue == Array(values.prefix(promptTokens.count)))
        #expect(scored["logprobs"]?["top_logprobs"]?.arrayValue == Array(tops.prefix(promptTokens.count)))
        #expect(bodies[3]?["usage"]?["completion_tokens"]?.intValue == 0)
        #expect(bodies[3]?["usage"]?["prompt_tokens"]?.intValue == promptTokens.count)
    }

    /// Long prompts scored in a batch with others, in small chunks (more rows than one step's
    /// prompt-row budget), with two threads; alone on one thread; and under a KV budget so tight that
    /// sequences are preempted and recomputed: the same bodies, bit for bit.
    @Test func promptLogprobsDoNotDependOnBatchingThreadsOrPreemption() async throws {
        let m = try DefaultModel.require()
        let stem = String(repeating: "one two three four five six seven eight nine ten ", count: 9)
        var requests: [EngineRequest] = []
        for i in 0..<5 {
            var extra: [(String, JSON)] = [("echo", .bool(true)), ("logprobs", .int(i % 3))]
            if i % 2 == 1 { extra += [("temperature", .double(0.8)), ("seed", .int(i))] }
            requests.append(completionRequest(Int64(i), prompt: "\(i). " + stem, maxTokens: i == 4 ? 0 : 20, extra: extra))
        }
        // Plain requests in between: argmax rows and prompt rows in one step.
        requests.append(completionRequest(5, prompt: stem, maxTokens: 20))
        requests.append(completionRequest(6, prompt: "Hello", maxTokens: 20, extra: [("n", .int(2)), ("echo", .bool(true)), ("logprobs", .int(1)),
                                                                                     ("temperature", .double(1)), ("seed", .int(3))]))
        let promptLength = m.tokenizer.encode(requests[0].body["prompt"]!.stringValue!, addSpecial: true, parseSpecial: true).count
        #expect(promptLength > BatchScheduler(tokenBudget: 512).promptRowBudget, "a prompt needs more than one step's prompt rows")
        let alone = await bodies(try engine { $0.maxSequences = 1; $0.threads = 1; $0.prefixSharing = false }, requests)
        let together = await bodies(try engine { $0.maxSequences = 8; $0.tokenBudget = 100; $0.threads = 2 }, requests)
        let probe = m.model.makeCache()
        let tight = await bodies(try engine { $0.kvMemoryBytes = 3 * probe.bytesNeeded(positions: promptLength + 20) }, requests)
        #expect(alone.count == requests.count)
        for request in requests {
            #expect(alone[request.id] != nil && alone[request.id] == together[request.id], "request \(request.id) batched")
            #expect(alone[request.id] == tight[request.id], "request \(request.id) under a tight KV budget")
        }
        let scored = try #require(logprobs(alone[4])?["token_logprobs"]?.arrayValue)
        #expect(scored.count == promptLength && scored.dropFirst().allSatisfy { ($0.doubleValue ?? 1) <= 0 })
        #expect(logprobs(alone[6], choice: 1)?["tokens"]?.arrayValue?.count ?? 0 > 2)
    }

    /// A prompt whose start is in the prefix cache (another request computed it) still gets the
    /// log-probabilities of those positions: it computes what it needs itself.
    @Test func sharedPrefixesStillScoreTheirPositions() async throws {
        let common = "The capital of France is Paris, the capital of Spain is Madrid, the capital of Italy is Rome, and the capital of"
        let first = completionRequest(1, prompt: common + " Portugal is", maxTokens: 4)
        let echoed = completionRequest(2, prompt: common + " Greece is", maxTokens: 4, extra: [("echo", .bool(true)), ("logprobs", .int(2))])
        let scoring = completionRequest(3, prompt: common + " Norway is", maxTokens: 0, extra: [("echo", .bool(true)), ("logprobs", .int(0))])
        let after = completionRequest(4, prompt: common + " Poland is", maxTokens: 4, extra: [("logprobs", .int(1))])
        let reference = await bodies(try engine { $0.prefixSharing = false }, [first, echoed, scoring, after])
        // One after another on one engine: each later prompt finds the common blocks cached.
        let shared = try engine { $0.threads = 2 }
        var sequential: [Int64: JSON] = [:]
        var reused: [Int64: Int] = [:]
        for request in [first, echoed, scoring, after] {
            let before = shared.reusedPromptTokens
            sequential[request.id] = await runToCompletion(shared, [request])[request.id]?.response?.body
            reused[request.id] = shared.reusedPromptTokens - before
        }
        await shared.shutdown()
        // The scored prompts need the logits of the common positions, so they compute them; the last reuses them.
        #expect(reused[2] == 0 && reused[3] == 0, "\(reused)")
        #expect((reused[4] ?? 0) >= 16, "the last request reuses the common blocks: \(reused)")
        for id in Int64(1)...4 { #expect(sequential[id] != nil && sequential[id] == reference[id], "request \(id)") }
    }

    /// A request stopped after some generated tokens and resumed from its checkpoint recomputes its
    /// prompt's log-probabilities in its prefill: the body is the uninterrupted one.
    @Test func resumedRequestsGiveTheUninterruptedBody() async throws {
        let request = completionRequest(1, prompt: Self.prompt, maxTokens: 24,
                                        extra: [("echo", .bool(true)), ("logprobs", .int(2)), ("temperature", .double(0.9)), ("seed", .int(5))])
        let first = try engine { $0.checkpointInterval = .zero }
        first.submit(request)
        let watcher = CheckpointWatcher(first)
        var uninterrupted: JSON?
        for await event in first.events {
            uninterrupted = event.response?.body
            break
        }
        let seen = watcher.stop()
        await first.shutdown()
        let expected = try #require(uninterrupted)
        var states = [CheckpointState(tokens: [], logprobs: [], engine: first.outputIdentity)]
        if !seen.isEmpty { states += [seen[seen.count / 2], seen[seen.count - 1]] }
        #expect(states.count > 1, "no checkpoint seen")
        let resumed = states.enumerated().map { index, state in
            var copy = request
            copy.id = Int64(100 + index)
            copy.resumeFrom = state.encoded()
            return copy
        }
        let together = await bodies(try engine(), resumed)
        let alone = await bodies(try engine { $0.threads = 1; $0.maxSequences = 1 }, [resumed[resumed.count - 1]])
        for (index, state) in states.enumerated() {
            #expect(together[Int64(100 + index)] == expected, "resumed at \(state.tokens.count) tokens")
        }
        #expect(alone.values.first == expected, "resumed alone on one thread")
    }

    /// Echo with logprobs is part of the request, so of its result-cache identity.
    @Test func echoAndLogprobsArePartOfTheResultIdentity() {
        let plain = completionRequest(1, prompt: "x y", maxTokens: 3)
        let echoed = completionRequest(1, prompt: "x y", maxTokens: 3, extra: [("echo", .bool(true))])
        let scored = completionRequest(1, prompt: "x y", maxTokens: 3, extra: [("echo", .bool(true)), ("logprobs", .int(1))])
        let more = completionRequest(1, prompt: "x y", maxTokens: 3, extra: [("echo", .bool(true)), ("logprobs", .int(2))])
        let materials = [plain, echoed, scored, more].map { BuiltinResultIdentity.material(for: $0) }
        #expect(materials.allSatisfy { $0 != nil })
        #expect(Set(materials.compactMap { $0 }).count == 4)
    }
}
