import Foundation
import SluiceCore
import SluiceTestSupport
import Testing

@testable import SluiceEngine

/// Batch lines written for OpenAI, vLLM and llama.cpp, answered by the built-in engine on the
/// default model: every honoured or ignored field gives a 200, structured outputs validate
/// against their schemas (Python's jsonschema), `n` and prompt lists give their choices, and
/// penalties and biases pick exactly the tokens their definitions say.
@Suite(.serialized, .ownThread)
struct CompatibilityTests {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    func engine(_ configure: (inout BuiltinEngineOptions) -> Void = { _ in }) throws -> BuiltinEngine {
        var options = BuiltinEngineOptions()
        configure(&options)
        return try BuiltinEngine(modelPath: try DefaultModel.require().path, options: options)
    }

    func run(_ engine: BuiltinEngine, _ requests: [EngineRequest]) async -> [Int64: EngineEvent] {
        let events = await runToCompletion(engine, requests)
        await engine.shutdown()
        return events
    }

    /// The fixture's batch lines as engine requests.
    static func fixtureLines() throws -> [EngineRequest] {
        let text = try String(contentsOf: Fixtures.url("compat/openai-style-lines.jsonl"), encoding: .utf8)
        return try text.split(separator: "\n").enumerated().map { index, line in
            let json = try JSON.parse(String(line))
            let endpoint = try #require(Endpoint(rawValue: json["url"]?.stringValue ?? ""))
            return EngineRequest(id: Int64(index), customID: json["custom_id"]!.stringValue!, endpoint: endpoint, body: json["body"]!)
        }
    }

    @Test func realWorldShapedLinesAreAnsweredAndEachAnswerChecks() async throws {
        let requests = try Self.fixtureLines()
        let engine = try engine()
        let events = await run(engine, requests)
        var validations: [JSON] = []
        var cutShort: [String] = []
        for request in requests {
            let name = request.customID
            guard let response = events[request.id]?.response else {
                Issue.record("\(name): not a 200 answer: \(String(describing: events[request.id]))")
                continue
            }
            let body = response.body
            let parameters = try GenerationRequest(endpoint: request.endpoint, body: request.body)
            var texts: [(text: String, finish: String)] = []
            switch request.endpoint {
            case .responses:
                #expect(body["object"]?.stringValue == "response", "\(name)")
                let text = try #require(body["output"]?[0]?["content"]?[0]?["text"]?.stringValue, "\(name)")
                #expect(body["usage"]?["input_tokens"]?.intValue == response.usage.promptTokens, "\(name)")
                #expect(body["usage"]?["output_tokens"]?.intValue == response.usage.completionTokens, "\(name)")
                let status = try #require(body["status"]?.stringValue)
                #expect((status == "completed") == body["incomplete_details"]!.isNull, "\(name)")
                if let metadata = request.body["metadata"] { #expect(body["metadata"] == metadata, "\(name)") }
                texts = [(text, status == "completed" ? "stop" : "length")]
            case .chatCompletions, .completions:
                let choices = try #require(body["choices"]?.arrayValue, "\(name)")
                #expect(choices.count == parameters.choiceCount, "\(name): \(choices.count) choices")
                for (index, choice) in choices.enumerated() {
                    #expect(choice["index"]?.intValue == index, "\(name)")
                    let text = choice["message"]?["content"]?.stringValue ?? choice["text"]?.stringValue ?? ""
                    texts.append((text, choice["finish_reason"]?.stringValue ?? "?"))
                }
            case .embeddings:
                Issue.record("\(name): the compatibility file has no embeddings lines")
            }
            if parameters.echo {
                for (index, item) in texts.enumerated() {
                    guard case let .text(prompt) = parameters.prompts[index / parameters.choicesPerPrompt] else { continue }
                    #expect(item.text.hasPrefix(prompt), "\(name): echo")
                    if parameters.maxTokens == 0 { #expect(item.text == prompt && item.finish == "length", "\(name): scoring") }
                }
            }
            if let logprobs = parameters.logprobs, request.endpoint == .completions {
                for (index, choice) in body["choices"]!.arrayValue!.enumerated() {
                    let tops = choice["logprobs"]?["top_logprobs"]?.arrayValue ?? []
                    #expect(!tops.isEmpty && tops.allSatisfy { $0.objectValue?.count ?? 0 <= logprobs }, "\(name): logprobs")
                    if parameters.echo {
                        // The prompt's tokens first, the very first with a null log-probability (nothing predicts it).
                        let promptTokens = try engine.tokenize(parameters.prompts[index / parameters.choicesPerPrompt]).count
                        let values = choice["logprobs"]?["token_logprobs"]?.arrayValue ?? []
                        #expect(values.count >= promptTokens && values.first == .null, "\(name): prompt logprobs")
                        #expect(values.dropFirst().allSatisfy { ($0.doubleValue ?? 1) <= 0 }, "\(name): prompt logprobs")
                    }
                }
            }
            for stop in parameters.stop { #expect(texts.allSatisfy { !$0.text.contains(stop) }, "\(name): stop \(stop.debugDescription)") }
            switch parameters.constraint {
            case nil: break
            case let .choice(choices)?:
                #expect(texts.allSatisfy { choices.contains($0.text) }, "\(name): \(texts)")
            case let .regex(pattern)?:
                let regex = try NSRegularExpression(pattern: "^(?:" + pattern + ")$")
                for (text, finish) in texts {
                    // A stop string may end the text before the pattern does (the stop is not returned).
                    let full = finish == "stop" && !parameters.stop.isEmpty ? text + parameters.stop[0] : text
                    #expect(regex.firstMatch(in: full, range: NSRange(full.startIndex..., in: full)) != nil, "\(name): \(full.debugDescription)")
                }
            case let constraint?:
                var schema = JSON.null
                if case let .jsonSchema(s) = constraint { schema = s }
                // A value cut short by max_tokens ("length") is a prefix of a valid one by construction; every
                // completed one must validate.
                for (index, item) in texts.enumerated() {
                    #expect(item.finish == "stop" || item.finish == "length", "\(name): \(item.finish)")
                    if item.finish == "stop" {
                        validations.append(.object(["id": .string("\(name)#\(index)"), "schema": schema, "output": .string(item.text)]))
                    } else {
                        cutShort.append(name)
                    }
                }
            }
        }
        print("structured lines: \(validations.count) outputs complete, cut short by max_tokens: \(cutShort)")
        #expect(validations.count >= 6, "most constrained lines should complete: cut short \(cutShort)")
        try Self.validate(validations)
    }

    /// Validates outputs against their schemas with Python's jsonschema (scripts/validate-json-outputs).
    static func validate(_ items: [JSON]) throws {
        let input = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-validate-\(UUID().uuidString).jsonl")
        defer { try? FileManager.default.removeItem(at: input) }
        try Data(items.map { $0.serialized + "\n" }.joined().utf8).write(to: input)
        let result = try runHelper(["python3", repositoryRoot.appendingPathComponent("scripts/validate-json-outputs").path, input.path])
        #expect(result.status != 2, "python3 cannot import jsonschema (scripts/test installs it): \(result.stderr)")
        #expect(result.status == 0, "invalid outputs:\n\(result.stdout)\(result.stderr)")
    }

    // MARK: Penalties and biases against a reference computed from the model's own logits

    /// Greedy decoding on the model directly, with `transform` applied to each step's logits
    /// (given the tokens generated so far) before the argmax.
    func reference(prompt: [Int32], count: Int, transform: (UnsafeMutablePointer<Float>, Int, [Int32]) -> Void) throws -> [Int32] {
        let m = try DefaultModel.require()
        let cache = m.model.makeCache()
        let vocabulary = m.model.shape.vocabularySize
        let usable = m.tokenizer.vocabularySize
        var logits = [Float](repeating: 0, count: vocabulary)
        cache.reserve(slot: 0, positions: prompt.count + count)
        logits.withUnsafeMutableBufferPointer { out in
            m.model.forward(tokens: prompt, placements: prompt.indices.map { TokenPlacement(slot: 0, position: $0) },
                            logitRows: [prompt.count - 1], cache: cache, logits: out.baseAddress!)
        }
        var tokens: [Int32] = []
        for step in 0..<count {
            let next = logits.withUnsafeMutableBufferPointer { buffer in
                transform(buffer.baseAddress!, usable, tokens)
                return Sampler.argmax(buffer.baseAddress!, count: usable)
            }
            tokens.append(next)
            if m.tokenizer.isEndOfGeneration(next) || step == count - 1 { break }
            logits.withUnsafeMutableBufferPointer { out in
                m.model.forward(tokens: [next], placements: [TokenPlacement(slot: 0, position: prompt.count + step)],
                                logitRows: [0], cache: cache, logits: out.baseAddress!)
            }
        }
        return tokens
    }

    func generatedText(_ event: EngineEvent?) -> String? {
        event?.response?.body["choices"]?[0]?["text"]?.stringValue
    }

    @Test func penaltiesAndBiasesFollowTheirDefinitions() async throws {
        let m = try DefaultModel.require()
        let prompt = "one two three one two three one two three one two"
        let promptTokens = m.tokenizer.encode(prompt, addSpecial: true, parseSpecial: true)
        let count = 24
        let plain = try reference(prompt: promptTokens, count: count) { _, _, _ in }
        let banned = plain[0]
        let forced = m.tokenizer.encode(" four", addSpecial: false)[0]
        let cases: [(name: String, extra: [(String, JSON)], transform: (UnsafeMutablePointer<Float>, Int, [Int32]) -> Void)] = [
            ("frequency+presence", [("frequency_penalty", .double(1.5)), ("presence_penalty", .double(0.5))], { logits, _, generated in
                // OpenAI: mu[j] -= c[j] * alpha_frequency + (c[j] > 0) * alpha_presence
                var counts: [Int32: Int] = [:]
                for t in generated { counts[t, default: 0] += 1 }
                for (t, c) in counts { logits[Int(t)] -= Float(c) * 1.5 + 0.5 }
            }),
            ("repetition", [("repetition_penalty", .double(1.3))], { logits, _, generated in
                // vLLM / llama.cpp (CTRL): tokens seen in prompt or output: positive logits / p, negative * p.
                for t in Set(promptTokens).union(generated) {
                    logits[Int(t)] = logits[Int(t)] > 0 ? logits[Int(t)] / 1.3 : logits[Int(t)] * 1.3
                }
            }),
            ("ban", [("logit_bias", .object([(key: String(banned), value: .int(-100))]))], { logits, _, _ in
                logits[Int(banned)] = -.infinity
            }),
            ("bias", [("logit_bias", .object([(key: String(forced), value: .double(4.5))]))], { logits, _, _ in
                logits[Int(forced)] += 4.5
            }),
            ("force", [("logit_bias", .object([(key: String(forced), value: .int(100))]))], { logits, count, _ in
                for i in 0..<count where i != Int(forced) { logits[i] = -.infinity }
            }),
        ]
        let requests = cases.enumerated().map { index, item in
            completionRequest(Int64(index), prompt: prompt, maxTokens: count, extra: item.extra)
        }
        let events = await run(try engine(), requests)
        for (index, item) in cases.enumerated() {
            let expected = try reference(prompt: promptTokens, count: count, transform: item.transform)
            let text = generatedText(events[Int64(index)])
            #expect(text == m.tokenizer.decode(expected.filter { !m.tokenizer.isEndOfGeneration($0) }), "\(item.name)")
            #expect(expected != plain, "\(item.name) must change the greedy tokens for the test to mean anything")
        }
        #expect(generatedText(events[4]) == String(repeating: " four", count: count))
    }

    /// `logit_bias` whose bans or exclusive selection would leave a grammar no token: the grammar
    /// wins (the biases are then only added), so the output still follows the schema instead of
    /// ending, invalid, as a normal stop.
    @Test func biasesThatLeaveTheGrammarNothingGiveWayToIt() async throws {
        let m = try DefaultModel.require()
        let vocabulary = Int32(m.tokenizer.vocabularySize)
        // Every token that spells "q" (the piece and the byte-fallback token), banned.
        let qTokens = (0..<vocabulary).filter { m.tokenizer.decode([$0]) == "q" }
        #expect(qTokens.count >= 2, "\(qTokens)")
        let banQ = JSON.object(qTokens.map { (key: String($0), value: JSON.int(-100)) })
        let end = try #require((0..<vocabulary).first { m.tokenizer.isEndOfGeneration($0) })
        let brace = try #require(m.tokenizer.encode("{", addSpecial: false).first)
        func chat(_ id: Int64, _ extra: [(key: String, value: JSON)]) -> EngineRequest {
            let fields: [(key: String, value: JSON)] = [
                (key: "messages", value: .array([.object(["role": .string("user"), "content": .string("Give a letter.")])])),
                (key: "max_tokens", value: .int(12)), (key: "temperature", value: .int(0)),
            ] + extra
            return EngineRequest(id: id, customID: "bias-\(id)", endpoint: .chatCompletions, body: .object(fields))
        }
        let constQ = JSON.object(["type": .string("json_schema"),
                                  "json_schema": .object(["name": .string("q"), "schema": .object(["const": .string("q")])])])
        let jsonObject = JSON.object(["type": .string("json_object")])
        let requests = [
            completionRequest(1, prompt: "Letter:", maxTokens: 4,
                              extra: [("guided_choice", .array([.string("q")])), ("logit_bias", banQ)]),
            chat(2, [(key: "response_format", value: constQ), (key: "logit_bias", value: banQ)]),
            chat(3, [(key: "response_format", value: jsonObject),
                     (key: "logit_bias", value: .object([(key: String(end), value: .int(100))]))]),
            chat(4, [(key: "response_format", value: jsonObject),
                     (key: "logit_bias", value: .object([(key: String(brace), value: .int(100))]))]),
        ]
        let events = await run(try engine(), requests)
        #expect(generatedText(events[1]) == "q")
        let constChoice = events[2]?.response?.body["choices"]?[0]
        #expect(constChoice?["message"]?["content"]?.stringValue == "\"q\"")
        #expect(constChoice?["finish_reason"]?.stringValue == "stop")
        for id: Int64 in [3, 4] {
            let choice = try #require(events[id]?.response?.body["choices"]?[0], "\(String(describing: events[id]))")
            let content = try #require(choice["message"]?["content"]?.stringValue)
            #expect(content.hasPrefix("{"), "request \(id): \(content)")
            if choice["finish_reason"]?.stringValue == "stop" {
                #expect(throws: Never.self, "request \(id) stopped with invalid JSON: \(content)") {
                    _ = try JSON.parse(content)
                }
            } else {
                #expect(choice["finish_reason"]?.stringValue == "length")
            }
        }
    }

    // MARK: Choices

    @Test func choicesArePromptListTimesNAndEachIsReproducibleAlone() async throws {
        let body = JSON.object([
            "prompt": .array([.string("The weather today is"), .string("My favourite food is")]),
            "n": .int(3), "max_tokens": .int(10), "temperature": .double(1), "seed": .int(9),
        ])
        let request = EngineRequest(id: 1, customID: "choices", endpoint: .completions, body: body)
        let batched = try #require(await run(try engine(), [request])[1]?.response)
        let alone = try #require(await run(try engine { $0.maxSequences = 1; $0.threads = 1 }, [request])[1]?.response)
        #expect(batched.body == alone.body)
        let choices = try #require(batched.body["choices"]?.arrayValue)
        #expect(choices.count == 6)
        #expect(choices.map { $0["index"]?.intValue } == (0..<6).map { $0 })
        let texts = choices.map { $0["text"]!.stringValue! }
        #expect(Set(texts).count >= 4, "sampled choices should differ: \(texts)")
        #expect(batched.usage.completionTokens == 60 || texts.contains { $0.isEmpty } || batched.usage.completionTokens < 60)

        // Choice 0 of a one-choice request is what it always was: a greedy request's text is unchanged by n.
        let greedyOne = completionRequest(2, prompt: "The weather today is", maxTokens: 10)
        let greedyN = completionRequest(3, prompt: "The weather today is", maxTokens: 10, extra: [("n", .int(2))])
        let events = await run(try engine(), [greedyOne, greedyN])
        let one = try #require(events[2]?.response?.body["choices"]?[0]?["text"])
        #expect(events[3]?.response?.body["choices"]?.arrayValue?.map { $0["text"] } == [one, one])
    }

    @Test func responsesLinesAnswerInTheResponsesFormat() async throws {
        let body = try JSON.parse(#"{"model":"gpt-4.1","input":"Name a colour.","instructions":"Answer in one word.","max_output_tokens":3,"temperature":0,"metadata":{"k":"v"}}"#)
        let request = EngineRequest(id: 1, customID: "r", endpoint: .responses, body: body)
        let response = try #require(await run(try engine(), [request])[1]?.response)
        let answer = response.body
        #expect(answer["object"]?.stringValue == "response")
        #expect(answer["id"]?.stringValue?.hasPrefix("resp_") == true)
        #expect(answer["output"]?[0]?["type"]?.stringValue == "message")
        #expect(answer["output"]?[0]?["role"]?.stringValue == "assistant")
        #expect(answer["output"]?[0]?["content"]?[0]?["type"]?.stringValue == "output_text")
        #expect(answer["usage"]?["output_tokens"]?.intValue == response.usage.completionTokens)
        #expect(answer["instructions"]?.stringValue == "Answer in one word.")
        #expect(answer["metadata"] == .object(["k": .string("v")]))
        if answer["status"]?.stringValue == "incomplete" {
            #expect(answer["incomplete_details"]?["reason"]?.stringValue == "max_output_tokens")
        }
        let adapted = BuiltinResultIdentity.adapt(answer, to: EngineRequest(id: 2, customID: "other", endpoint: .responses, body: body))
        #expect(adapted["id"]?.stringValue?.hasPrefix("resp_") == true && adapted["id"] != answer["id"])
    }
}

extension JSON {
    /// The element at `index` of an array.
    subscript(index: Int) -> JSON? {
        guard let items = arrayValue, items.indices.contains(index) else { return nil }
        return items[index]
    }
}
