import Foundation
import SluiceCore
import SluiceTestSupport
import Testing

@testable import SluiceEngine

/// Grammar-constrained decoding on the default model: random schemas give only valid outputs,
/// and constrained requests stay exact across batching, speculation, resume and the cache.
@Suite(.serialized, .ownThread)
struct StructuredOutputTests {
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

    static func schemaRequest(_ id: Int64, schema: JSON, prompt: String, maxTokens: Int, sampled: Bool) -> EngineRequest {
        var fields: [(key: String, value: JSON)] = [
            (key: "messages", value: .array([.object(["role": .string("user"), "content": .string(prompt)])])),
            (key: "response_format", value: .object(["type": .string("json_schema"),
                                                     "json_schema": .object(["name": .string("s"), "schema": schema, "strict": .bool(true)])])),
            (key: "max_tokens", value: .int(maxTokens)),
        ]
        fields += sampled ? [(key: "temperature", value: .double(0.9)), (key: "seed", value: .int(Int(id)))]
                          : [(key: "temperature", value: .int(0))]
        return EngineRequest(id: id, customID: "schema-\(id)", endpoint: .chatCompletions, body: .object(fields))
    }

    /// `SLUICE_RANDOM_SCHEMAS` schemas (default 24; scripts/check-structured-outputs runs 1000),
    /// each greedy and sampled: every output that completed validates, and every other one was
    /// cut short by `max_tokens`.
    @Test func randomSchemasGiveOnlyValidOutputs() async throws {
        let count = ProcessInfo.processInfo.environment["SLUICE_RANDOM_SCHEMAS"].flatMap(Int.init) ?? 24
        var generator = RandomSchemaGenerator(seed: 2026)
        var requests: [EngineRequest] = []
        var schemas: [Int64: JSON] = [:]
        for index in 0..<count {
            let schema = generator.schema()
            for sampled in [false, true] {
                let id = Int64(2 * index + (sampled ? 1 : 0))
                schemas[id] = schema
                requests.append(Self.schemaRequest(id, schema: schema, prompt: "Fill in a JSON value for this schema: " + schema.serialized,
                                                   maxTokens: 200, sampled: sampled))
            }
        }
        let events = await run(try engine(), requests)
        var validations: [JSON] = []
        var lengths = 0
        for request in requests {
            let choice = try #require(events[request.id]?.response?.body["choices"]?[0], "request \(request.id): \(String(describing: events[request.id]))")
            let text = try #require(choice["message"]?["content"]?.stringValue)
            switch choice["finish_reason"]?.stringValue {
            case "stop"?:
                validations.append(.object(["id": .int(request.id), "schema": schemas[request.id]!, "output": .string(text)]))
            case "length"?:
                lengths += 1
            case let other:
                Issue.record("request \(request.id): finish_reason \(String(describing: other))")
            }
        }
        print("random schemas: \(validations.count) of \(requests.count) outputs complete, \(lengths) cut short by max_tokens")
        #expect(validations.count * 4 >= requests.count * 3, "most outputs should complete within 200 tokens")
        try CompatibilityTests.validate(validations)
    }

    /// The same constrained requests alone on one thread, batched with others, and with every
    /// draft verified (speculation checks drafts under the mask) give identical bodies.
    @Test func constrainedOutputDoesNotDependOnBatchingOrSpeculation() async throws {
        var generator = RandomSchemaGenerator(seed: 7)
        var requests: [EngineRequest] = []
        for index in 0..<6 {
            requests.append(Self.schemaRequest(Int64(index), schema: generator.schema(), prompt: "Write JSON about a city.",
                                               maxTokens: 60, sampled: index % 2 == 1))
        }
        requests.append(completionRequest(6, prompt: "one two three one two three one two", maxTokens: 20,
                                          extra: [("guided_regex", .string("( one| two| three){1,12}"))]))
        requests.append(completionRequest(7, prompt: "Answer yes or no: is the sky blue?", maxTokens: 5,
                                          extra: [("guided_choice", .array([.string(" yes"), .string(" no")])), ("n", .int(2)),
                                                  ("temperature", .double(1)), ("seed", .int(1))]))
        let alone = await run(try engine { $0.maxSequences = 1; $0.threads = 1; $0.speculation.mode = .off }, requests)
        let together = await run(try engine { $0.maxSequences = 8; $0.tokenBudget = 9; $0.speculation.draftAlways = true }, requests)
        for request in requests {
            let body = alone[request.id]?.response?.body
            #expect(body != nil, "request \(request.id): \(String(describing: alone[request.id]))")
            #expect(body == together[request.id]?.response?.body, "request \(request.id)")
        }
        let regexText = alone[6]?.response?.body["choices"]?[0]?["text"]?.stringValue ?? ""
        #expect(regexText.split(separator: " ").allSatisfy { ["one", "two", "three"].contains($0) } && !regexText.isEmpty, "\(regexText)")
    }

    /// A constrained request (and one with two choices) stopped at any checkpoint resumes to exactly
    /// the uninterrupted body: the grammar state is rebuilt from the checkpointed tokens.
    @Test func constrainedRequestsResumeExactly() async throws {
        var generator = RandomSchemaGenerator(seed: 11)
        let schema = generator.schema()
        var single = Self.schemaRequest(1, schema: schema, prompt: "Describe a dog as JSON.", maxTokens: 48, sampled: true)
        var double = single
        double.id = 2
        double.body = double.body.setting("n", to: .int(2)).setting("frequency_penalty", to: .double(0.3))
        for request in [single, double] {
            var options = BuiltinEngineOptions()
            options.checkpointInterval = .zero
            let first = try BuiltinEngine(modelPath: try DefaultModel.require().path, options: options)
            first.submit(request)
            let watcher = CheckpointWatcher(first)
            var uninterrupted: JSON?
            for await event in first.events {
                uninterrupted = event.response?.body
                break
            }
            let seen = watcher.stop()
            await first.shutdown()
            let expected = try #require(uninterrupted, "request \(request.id)")
            var states = [CheckpointState(tokens: [], logprobs: [], engine: first.outputIdentity)]
            if request.id == 2 { states[0].otherChoices = [([], [])] }
            if !seen.isEmpty { states += [seen[seen.count / 3], seen[2 * seen.count / 3], seen[seen.count - 1]] }
            #expect(states.count > 1, "no checkpoint seen")
            let resumed = states.enumerated().map { index, state in
                var copy = request
                copy.id = Int64(100 + index)
                copy.resumeFrom = state.encoded()
                return copy
            }
            let events = await run(try engine(), resumed)
            for (index, state) in states.enumerated() {
                #expect(events[Int64(100 + index)]?.response?.body == expected,
                        "request \(request.id) resumed at \(state.tokens.count)+\(state.otherChoices.map(\.tokens.count)) tokens")
            }
        }
        single.id = 0
    }

    /// The schema is part of a request's identity for the result cache.
    @Test func schemaIsPartOfTheResultIdentity() throws {
        let a = Self.schemaRequest(1, schema: .object(["type": .string("integer")]), prompt: "x", maxTokens: 5, sampled: false)
        let b = Self.schemaRequest(1, schema: .object(["type": .string("boolean")]), prompt: "x", maxTokens: 5, sampled: false)
        let sampledA = Self.schemaRequest(1, schema: .object(["type": .string("integer")]), prompt: "x", maxTokens: 5, sampled: true)
        let sampledB = Self.schemaRequest(1, schema: .object(["type": .string("boolean")]), prompt: "x", maxTokens: 5, sampled: true)
        #expect(BuiltinResultIdentity.material(for: a) != nil)
        #expect(BuiltinResultIdentity.material(for: a) != BuiltinResultIdentity.material(for: b))
        #expect(BuiltinResultIdentity.material(for: sampledA) != BuiltinResultIdentity.material(for: sampledB))
        // A schema the engine refuses is not cached at all.
        let bad = Self.schemaRequest(1, schema: .object(["type": .string("integer"), "multipleOf": .int(2)]), prompt: "x", maxTokens: 5, sampled: false)
        #expect(BuiltinResultIdentity.material(for: bad) == nil)
        // Bounds are part of the schema and so of the identity.
        let low = Self.schemaRequest(1, schema: .object(["type": .string("integer"), "minimum": .int(2)]), prompt: "x", maxTokens: 5, sampled: false)
        let high = Self.schemaRequest(1, schema: .object(["type": .string("integer"), "minimum": .int(3)]), prompt: "x", maxTokens: 5, sampled: false)
        #expect(BuiltinResultIdentity.material(for: low) != nil && BuiltinResultIdentity.material(for: low) != BuiltinResultIdentity.material(for: high))
    }
}

/// Random JSON Schemas in the strict-mode subset (objects, arrays, tuples (`prefixItems`), strings
/// with enums, lengths, patterns and formats, numbers and integers with and without bounds,
/// booleans, nulls, const, anyOf, type lists, $defs/$ref).
struct RandomSchemaGenerator {
    var random: SplitMix64
    static let names = ["name", "id", "title", "count", "tags", "city", "score", "valid", "items", "kind", "note", "year",
                        "email", "color", "size", "owner", "when", "code", "level", "parts"]

    init(seed: UInt64) { random = SplitMix64(seed: seed) }

    mutating func pick<T>(_ options: [T]) -> T { options[Int(random.next() % UInt64(options.count))] }
    mutating func chance(_ p: Double) -> Bool { Double(random.next() >> 11) * 0x1.0p-53 < p }
    mutating func number(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(random.next() % UInt64(range.count)) }

    /// A root schema: an object, with a shared definition now and then.
    mutating func schema() -> JSON {
        var root = object(depth: 0)
        if chance(0.2), case var .object(fields) = root {
            let definition = object(depth: 2)
            fields.append((key: "$defs", value: .object([(key: "item", value: definition)])))
            if case var .object(properties)? = root["properties"] {
                properties.append((key: "ref", value: .object(["$ref": .string("#/$defs/item")])))
                fields = fields.map { $0.key == "properties" ? (key: "properties", value: .object(properties)) : $0 }
            }
            root = .object(fields)
        }
        return root
    }

    mutating func object(depth: Int) -> JSON {
        var properties: [(key: String, value: JSON)] = []
        var required: [JSON] = []
        for name in Self.names.shuffled(using: &random).prefix(number(1...4)) {
            properties.append((key: name, value: value(depth: depth + 1)))
            if chance(0.75) { required.append(.string(name)) }
        }
        return .object([
            (key: "type", value: .string("object")),
            (key: "properties", value: .object(properties)),
            (key: "required", value: .array(required)),
            (key: "additionalProperties", value: .bool(false)),
        ])
    }

    mutating func value(depth: Int) -> JSON {
        let leafKinds = ["string", "enum", "pattern", "format", "integer", "number", "boolean", "null", "const", "nullable",
                         "bounded-integer", "bounded-number"]
        let kind = depth >= 3 ? pick(leafKinds) : pick(leafKinds + ["array", "array", "object", "anyOf", "tuple"])
        switch kind {
        case "string": return .object(["type": .string("string"), "maxLength": .int(number(1...16))])
        case "enum":
            let words = ["red", "green", "blue", "small", "large", "yes", "no", "A-1", "x y"].shuffled(using: &random).prefix(number(1...4))
            return .object(["type": .string("string"), "enum": .array(words.map { .string($0) })])
        case "pattern": return .object(["type": .string("string"), "pattern": .string(pick(["^[A-Z]{2}[0-9]{3}$", "^(cat|dog)s?$", "^[a-z]+(-[a-z]+)?$", "^\\d{3}-\\d{4}$"]))])
        case "format": return .object(["type": .string("string"), "format": .string(pick(["date", "date-time", "email", "uuid", "ipv4", "time"]))])
        case "integer": return .object(["type": .string("integer")])
        case "number": return .object(["type": .string("number")])
        case "boolean": return .object(["type": .string("boolean")])
        case "null": return .object(["type": .string("null")])
        case "const": return .object(["const": pick([.string("fixed"), .int(42), .bool(true)])])
        case "nullable": return .object(["type": .array([.string(pick(["string", "integer", "boolean"])), .string("null")])]).setting("maxLength", to: .int(12))
        case "array":
            let minimum = number(0...2)
            return .object(["type": .string("array"), "items": value(depth: depth + 1), "minItems": .int(minimum), "maxItems": .int(minimum + number(0...2))])
        case "bounded-integer", "bounded-number":
            // One or both bounds, inclusive or exclusive, negative or not; never an empty range.
            let integer = kind == "bounded-integer"
            let low = number(-300...300)
            let high = low + number(2...400)
            let fraction = integer ? "" : pick(["", ".5", ".25"])
            var fields: [(key: String, value: JSON)] = [(key: "type", value: .string(integer ? "integer" : "number"))]
            let sides = number(0...2)  // 0: both, 1: lower only, 2: upper only
            if sides != 2 { fields.append((key: chance(0.5) ? "minimum" : "exclusiveMinimum", value: .number(String(low) + fraction))) }
            if sides != 1 { fields.append((key: chance(0.5) ? "maximum" : "exclusiveMaximum", value: .number(String(high) + fraction))) }
            return .object(fields)
        case "tuple":
            // prefixItems, then nothing more, more of one schema, or (absent `items`) anything.
            let prefix = (0..<number(1...3)).map { _ in value(depth: depth + 1) }
            var fields: [(key: String, value: JSON)] = [(key: "type", value: .string("array")), (key: "prefixItems", value: .array(prefix))]
            switch number(0...2) {
            case 0: fields.append((key: "items", value: .bool(false)))
            case 1: fields += [(key: "items", value: value(depth: depth + 1)), (key: "maxItems", value: .int(prefix.count + number(0...1)))]
            default: fields.append((key: "maxItems", value: .int(prefix.count)))
            }
            if chance(0.7) { fields.append((key: "minItems", value: .int(number(0...prefix.count)))) }
            return .object(fields)
        case "object": return object(depth: depth)
        default: return .object(["anyOf": .array([value(depth: depth + 1), value(depth: depth + 1)])])
        }
    }
}
