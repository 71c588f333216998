import SluiceCore

/// Grammars for JSON: any value (`json_object`), or the values a JSON Schema accepts.
///
/// The schema subset is OpenAI strict mode's and a little more: `type` (one or a list),
/// `properties` (generated in the schema's order), `required`, `additionalProperties`
/// (only the listed properties are generated, which every setting accepts), `items`,
/// `prefixItems` (tuples; `items` then covers the rest, `false` for none), `minItems`,
/// `maxItems`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (exact, see
/// `NumberRanges.swift`), `enum`, `const`, `anyOf` (and `oneOf` as `anyOf`), `$ref` to
/// `#`, `#/$defs/...` or `#/definitions/...` (recursion included), `pattern`, `format`
/// (date-time, date, time, email, uuid, ipv4, hostname, uri), `minLength`, `maxLength`,
/// `nullable`, `uniqueItems: false`, and annotations (`title`, `description`, `default`,
/// `examples`...). Any other keyword (`multipleOf`, `allOf`, `uniqueItems: true`, ...) is an
/// error naming it and where it is: the output could otherwise break it.
///
/// Whitespace between tokens is allowed (see `whitespace()`) and nothing follows the value:
/// generation ends with it.
struct JSONGrammar {
    struct Failure: Error, Equatable { var message: String }

    static let maximumIndent = 24
    static let supportedKeywords: Set<String> = [
        "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems", "enum", "const",
        "anyOf", "oneOf", "$ref", "$defs", "definitions", "pattern", "format", "minLength", "maxLength", "nullable",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly",
    ]
    static let boundKeywords = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]
    /// Why keywords a grammar cannot (or does not yet) enforce are refused.
    static let refusalReasons: [String: String] = [
        "multipleOf": "a grammar does not enforce divisibility (bounds are supported: minimum, maximum, exclusiveMinimum, exclusiveMaximum)",
        "allOf": "merge the schemas into one, or use anyOf",
        "uniqueItems": "a grammar cannot rule out repeated items (uniqueItems: false is accepted)",
    ]
    static let annotations: Set<String> = ["title", "description", "default", "examples", "$schema", "$id", "$comment",
                                           "deprecated", "readOnly", "writeOnly", "$defs", "definitions"]
    static let formats: [String: String] = [
        // Calendar dates only (year 1000 on, days per month, no February 29th, which only leap years have).
        "date-time": #"[1-9]\d{3}-((0[13578]|1[02])-(0[1-9]|[12]\d|3[01])|(0[469]|11)-(0[1-9]|[12]\d|30)|02-(0[1-9]|1\d|2[0-8]))T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)"#,
        "date": #"[1-9]\d{3}-((0[13578]|1[02])-(0[1-9]|[12]\d|3[01])|(0[469]|11)-(0[1-9]|[12]\d|30)|02-(0[1-9]|1\d|2[0-8]))"#,
        "time": #"([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)"#,
        "email": #"[A-Za-z0-9._%+-]{1,32}@[A-Za-z0-9-]{1,32}(\.[A-Za-z0-9-]{1,32}){0,3}\.[A-Za-z]{2,8}"#,
        "uuid": #"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"#,
        "ipv4": #"((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"#,
        "hostname": #"[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?){0,4}"#,
        "uri": #"https?://[A-Za-z0-9-]{1,32}(\.[A-Za-z0-9-]{1,32}){0,4}(/[A-Za-z0-9._~%-]{0,32}){0,8}"#,
    ]

    private var builder = GrammarBuilder()
    private let document: JSON
    private var references: [String: Int] = [:]

    private init(document: JSON) { self.document = document }

    /// Any JSON object (`response_format` `json_object`).
    static func anyObject() -> Grammar {
        var compiler = JSONGrammar(document: .null)
        let root = compiler.anyObjectRule()
        return compiler.builder.build(root: root)
    }

    /// The values `schema` accepts.
    static func schema(_ schema: JSON) throws(Failure) -> Grammar {
        var compiler = JSONGrammar(document: schema)
        let value = try compiler.value(schema, at: "#")
        let root = compiler.builder.rule([[value]])
        return compiler.builder.build(root: root)
    }

    /// Exactly one of `choices` (vLLM's `guided_choice`: plain text, not JSON).
    static func choice(_ choices: [String]) -> Grammar {
        var builder = GrammarBuilder()
        let root = builder.rule(choices.map { [.text($0)] })
        return builder.build(root: root)
    }

    /// Text fully matching `pattern` (vLLM's `guided_regex`).
    static func regex(_ pattern: String) throws(Failure) -> Grammar {
        var builder = GrammarBuilder()
        do {
            let symbol = try RegexGrammar.compile(pattern, insideJSONString: false, into: &builder)
            let root = builder.rule([[symbol]])
            return builder.build(root: root)
        } catch {
            throw Failure(message: "the regular expression is not supported: \(error.message)")
        }
    }

    // MARK: Building blocks

    /// A valid UTF-8 sequence of two to four bytes (one non-ASCII character).
    static func utf8Multibyte(_ builder: inout GrammarBuilder) -> GrammarSymbol {
        .rule(builder.shared("utf8-multibyte") { _ in
            let tail = GrammarSymbol.bytes(ByteSet(ranges: [0x80...0xBF]))
            return [
                [.bytes(ByteSet(ranges: [0xC2...0xDF])), tail],
                [.byte(0xE0), .bytes(ByteSet(ranges: [0xA0...0xBF])), tail],
                [.bytes(ByteSet(ranges: [0xE1...0xEC, 0xEE...0xEF])), tail, tail],
                [.byte(0xED), .bytes(ByteSet(ranges: [0x80...0x9F])), tail],
                [.byte(0xF0), .bytes(ByteSet(ranges: [0x90...0xBF])), tail, tail],
                [.bytes(ByteSet(ranges: [0xF1...0xF3])), tail, tail, tail],
                [.byte(0xF4), .bytes(ByteSet(ranges: [0x80...0x8F])), tail, tail],
            ]
        })
    }

    /// Whitespace between tokens as llama.cpp's schema grammars allow it: nothing, one space, or
    /// one newline and an indent of at most `maximumIndent` spaces or tabs (so a model cannot spin
    /// on blank lines).
    private mutating func whitespace() -> GrammarSymbol {
        .rule(builder.shared("ws") { builder in
            [[], [.byte(0x20)], [.byte(0x0A)] + builder.repeated([.bytes(ByteSet([0x20, 0x09]))], minimum: 0, maximum: Self.maximumIndent)]
        })
    }

    /// One character of a JSON string, as JSON writes it.
    private mutating func stringCharacter() -> GrammarSymbol { builder.stringCharacterSymbol() }

    private mutating func anyString() -> GrammarSymbol {
        .rule(builder.shared("string") { builder in
            let characters = builder.star([builder.stringCharacterSymbol()])
            return [[.byte(34), characters, .byte(34)]]
        })
    }

    private mutating func integer() -> GrammarSymbol {
        .rule(builder.shared("integer") { builder in
            let digits = builder.repeated([.bytes(ByteSet(ranges: [48...57]))], minimum: 0, maximum: 15)
            let magnitude = builder.rule([[.byte(48)], [.bytes(ByteSet(ranges: [49...57]))] + digits])
            return [[.rule(magnitude)], [.byte(45), .rule(magnitude)]]
        })
    }

    private mutating func number() -> GrammarSymbol {
        let integer = self.integer()
        return .rule(builder.shared("number") { builder in
            let digit = GrammarSymbol.bytes(ByteSet(ranges: [48...57]))
            let fraction = builder.optional([.byte(46)] + builder.repeated([digit], minimum: 1, maximum: 15))
            let exponent = builder.optional([.bytes(ByteSet(Array("eE".utf8))), builder.optional([.bytes(ByteSet(Array("+-".utf8)))])]
                                            + builder.repeated([digit], minimum: 1, maximum: 3))
            return [[integer, fraction, exponent]]
        })
    }

    private mutating func anyValue() -> GrammarSymbol {
        if let id = references["any-value"] { return .rule(id) }
        let id = builder.declare()
        references["any-value"] = id
        let object = anyObjectRule()
        let ws = whitespace()
        let array = builder.rule([
            [.byte(91), ws, .byte(93)],
            [.byte(91), ws, .rule(id), ws, builder.star([.byte(44), ws, .rule(id), ws]), .byte(93)],
        ])
        builder.define(id, [[.rule(object)], [.rule(array)], [anyString()], [number()],
                            [.text("true")], [.text("false")], [.text("null")]])
        return .rule(id)
    }

    private mutating func anyObjectRule() -> Int {
        if let id = references["any-object"] { return id }
        let id = builder.declare()
        references["any-object"] = id
        let ws = whitespace()
        let value = anyValue()
        let member: [GrammarSymbol] = [anyString(), ws, .byte(58), ws, value, ws]
        builder.define(id, [
            [.byte(123), ws, .byte(125)],
            [.byte(123), ws] + member + [builder.star([.byte(44), ws] + member), .byte(125)],
        ])
        return id
    }

    // MARK: Schemas

    private mutating func value(_ schema: JSON, at path: String) throws(Failure) -> GrammarSymbol {
        switch schema {
        case .bool(true): return anyValue()
        case .bool(false): throw Failure(message: "the schema at \(path) is false: no value matches it")
        case let .object(fields):
            for (key, value) in fields where !Self.supportedKeywords.contains(key) {
                if key == "uniqueItems" && value == .bool(false) { continue }
                let reason = Self.refusalReasons[key].map { ": " + $0 } ?? ""
                throw Failure(message: "unsupported JSON Schema keyword '\(key)' at \(path)\(reason)")
            }
            if let reference = schema["$ref"] {
                guard let text = reference.stringValue else { throw Failure(message: "'$ref' at \(path) must be a string") }
                if let other = fields.first(where: { $0.key != "$ref" && !Self.annotations.contains($0.key) }) {
                    throw Failure(message: "'\(other.key)' beside '$ref' at \(path) is not supported")
                }
                return try self.reference(text, at: path)
            }
            if schema["nullable"]?.boolValue == true {
                var inner = fields.filter { $0.key != "nullable" }
                inner.removeAll { $0.key == "$defs" || $0.key == "definitions" }
                let value = try self.value(.object(inner), at: path)
                return .rule(builder.rule([[value], [.text("null")]]))
            }
            if let constant = schema["const"] { return .literal(Array(constant.serialized.utf8)) }
            if let options = schema["enum"] {
                guard let values = options.arrayValue, !values.isEmpty else {
                    throw Failure(message: "'enum' at \(path) must be a non-empty array")
                }
                return .rule(builder.rule(values.map { [.literal(Array($0.serialized.utf8))] }))
            }
            for key in ["anyOf", "oneOf"] {
                guard let options = schema[key] else { continue }
                guard let branches = options.arrayValue, !branches.isEmpty else {
                    throw Failure(message: "'\(key)' at \(path) must be a non-empty array")
                }
                // Sibling keywords (besides annotations) apply to every branch.
                let siblings = fields.filter { $0.key != key && !Self.annotations.contains($0.key) }
                var alternatives: [[GrammarSymbol]] = []
                for (i, branch) in branches.enumerated() {
                    var merged = branch
                    if !siblings.isEmpty, case var .object(own) = branch {
                        for sibling in siblings where !own.contains(where: { $0.key == sibling.key }) { own.append(sibling) }
                        merged = .object(own)
                    }
                    alternatives.append([try value(merged, at: "\(path)/\(key)/\(i)")])
                }
                return .rule(builder.rule(alternatives))
            }
            var types: [String]
            switch schema["type"] {
            case nil:
                if schema["properties"] != nil { types = ["object"] }
                else if schema["items"] != nil || schema["prefixItems"] != nil || schema["minItems"] != nil || schema["maxItems"] != nil {
                    types = ["array"]
                }
                else if Self.boundKeywords.contains(where: { schema[$0] != nil }) { types = ["number"] }
                else if schema["pattern"] != nil || schema["format"] != nil || schema["minLength"] != nil || schema["maxLength"] != nil { types = ["string"] }
                else { return anyValue() }
            case let .string(type)?: types = [type]
            case let .array(list)?:
                types = []
                for item in list {
                    guard let type = item.stringValue else { throw Failure(message: "'type' at \(path) must be a string or a list of strings") }
                    types.append(type)
                }
                guard !types.isEmpty else { throw Failure(message: "'type' at \(path) must not be empty") }
            default: throw Failure(message: "'type' at \(path) must be a string or a list of strings")
            }
            var alternatives: [[GrammarSymbol]] = []
            for type in types { alternatives.append([try typed(type, schema, at: path)]) }
            return alternatives.count == 1 ? alternatives[0][0] : .rule(builder.rule(alternatives))
        default:
            throw Failure(message: "the schema at \(path) must be an object or a boolean")
        }
    }

    private mutating func typed(_ type: String, _ schema: JSON, at path: String) throws(Failure) -> GrammarSymbol {
        switch type {
        case "string": return try string(schema, at: path)
        case "integer":
            guard Self.boundKeywords.contains(where: { schema[$0] != nil }) else { return integer() }
            return try boundedInteger(schema, at: path)
        case "number":
            guard Self.boundKeywords.contains(where: { schema[$0] != nil }) else { return number() }
            let (lower, upper) = try bounds(schema, at: path)
            guard let symbol = builder.numberRange(lower: lower, upper: upper) else {
                throw Failure(message: "no number lies within the bounds at \(path) (bounded numbers have at most \(GrammarBuilder.boundedNumberDigits) significant digits)")
            }
            return symbol
        case "boolean": return .rule(builder.shared("boolean") { _ in [[.text("true")], [.text("false")]] })
        case "null": return .text("null")
        case "object": return try object(schema, at: path)
        case "array": return try array(schema, at: path)
        default: throw Failure(message: "unknown type '\(type)' at \(path)")
        }
    }

    private mutating func count(_ schema: JSON, _ key: String, at path: String) throws(Failure) -> Int? {
        guard let value = schema[key], !value.isNull else { return nil }
        guard let n = value.intValue, (0...10_000).contains(n) else {
            throw Failure(message: "'\(key)' at \(path) must be an integer from 0 to 10000")
        }
        return n
    }

    private mutating func string(_ schema: JSON, at path: String) throws(Failure) -> GrammarSymbol {
        var pattern = schema["pattern"]?.stringValue
        if let format = schema["format"] {
            guard let name = format.stringValue, let regex = Self.formats[name] else {
                throw Failure(message: "unsupported string format \(format.serialized) at \(path) (supported: \(Self.formats.keys.sorted().joined(separator: ", ")))")
            }
            guard pattern == nil else { throw Failure(message: "'pattern' together with 'format' at \(path) is not supported") }
            pattern = regex
        }
        let minimum = try count(schema, "minLength", at: path)
        let maximum = try count(schema, "maxLength", at: path)
        if let pattern {
            guard minimum == nil && maximum == nil else {
                throw Failure(message: "'minLength'/'maxLength' together with 'pattern' or 'format' at \(path) is not supported")
            }
            do {
                let inner = try RegexGrammar.compile(pattern, insideJSONString: true, into: &builder)
                return .rule(builder.rule([[.byte(34), inner, .byte(34)]]))
            } catch {
                throw Failure(message: "the pattern at \(path) is not supported: \(error.message)")
            }
        }
        if minimum == nil && maximum == nil { return anyString() }
        if let minimum, let maximum, maximum < minimum { throw Failure(message: "'maxLength' is below 'minLength' at \(path)") }
        let characters = builder.repeated([stringCharacter()], minimum: minimum ?? 0, maximum: maximum)
        return .rule(builder.rule([[.byte(34)] + characters + [.byte(34)]]))
    }

    private mutating func object(_ schema: JSON, at path: String) throws(Failure) -> GrammarSymbol {
        guard let properties = schema["properties"] else {
            if schema["additionalProperties"]?.boolValue == false {
                return .rule(builder.rule([[.byte(123), whitespace(), .byte(125)]]))
            }
            return .rule(anyObjectRule())
        }
        guard let members = properties.objectValue else { throw Failure(message: "'properties' at \(path) must be an object") }
        var required = Set<String>()
        if let list = schema["required"] {
            guard let items = list.arrayValue else { throw Failure(message: "'required' at \(path) must be an array of strings") }
            for item in items {
                guard let name = item.stringValue else { throw Failure(message: "'required' at \(path) must be an array of strings") }
                guard members.contains(where: { $0.key == name }) else {
                    throw Failure(message: "'required' at \(path) names '\(name)', which is not in 'properties'")
                }
                required.insert(name)
            }
        }
        let ws = whitespace()
        // first[i]: members i... with none written yet; later[i]: members i... after one was.
        var first = [Int](repeating: builder.rule([[]]), count: members.count + 1)
        var later = first
        for (i, member) in members.enumerated().reversed() {
            let value = try self.value(member.value, at: "\(path)/properties/\(member.key)")
            let written: [GrammarSymbol] = [.literal(Array(JSON.string(member.key).serialized.utf8)), ws, .byte(58), ws, value, ws]
            if required.contains(member.key) {
                later[i] = builder.rule([[.byte(44), ws] + written + [.rule(later[i + 1])]])
                first[i] = builder.rule([written + [.rule(later[i + 1])]])
            } else {
                later[i] = builder.rule([[.byte(44), ws] + written + [.rule(later[i + 1])], [.rule(later[i + 1])]])
                first[i] = builder.rule([written + [.rule(later[i + 1])], [.rule(first[i + 1])]])
            }
        }
        return .rule(builder.rule([[.byte(123), ws, .rule(first[0]), .byte(125)]]))
    }

    private mutating func array(_ schema: JSON, at path: String) throws(Failure) -> GrammarSymbol {
        // `prefixItems`: the schemas of the first items, in order (a tuple).
        var prefix: [GrammarSymbol] = []
        if let list = schema["prefixItems"] {
            guard let schemas = list.arrayValue else { throw Failure(message: "'prefixItems' at \(path) must be an array of schemas") }
            for (i, item) in schemas.enumerated() { prefix.append(try value(item, at: "\(path)/prefixItems/\(i)")) }
        }
        let minimum = try count(schema, "minItems", at: path) ?? 0
        var maximum = try count(schema, "maxItems", at: path)
        if let maximum, maximum < minimum { throw Failure(message: "'maxItems' is below 'minItems' at \(path)") }
        // `items`: the schema of every item after the prefix; false: none may follow it.
        let item: GrammarSymbol?
        if schema["items"] == .bool(false) {
            item = nil
            maximum = min(maximum ?? prefix.count, prefix.count)
            guard minimum <= prefix.count else {
                throw Failure(message: "'minItems' at \(path) asks for more items than 'prefixItems' gives, and 'items' is false")
            }
        } else {
            item = try schema["items"].map { items throws(Failure) in try value(items, at: path + "/items") } ?? anyValue()
        }
        let ws = whitespace()
        if maximum == 0 { return .rule(builder.rule([[.byte(91), ws, .byte(93)]])) }
        let prefixCount = prefix.count
        // The items from index `prefixCount` on, each after a comma (at least one item is written by then).
        var after: [GrammarSymbol] = []
        if let item, maximum.map({ $0 > prefixCount }) ?? true {
            after = builder.repeated([.byte(44), ws, item, ws], minimum: max(minimum - max(prefixCount, 1), 0),
                                     maximum: maximum.map { $0 - max(prefixCount, 1) })
        }
        // Then each prefix item from the last to the second: it may end the array once `minItems` are written.
        var index = prefixCount - 1
        while index >= 1 {
            var alternatives: [[GrammarSymbol]] = []
            if maximum.map({ index < $0 }) ?? true { alternatives.append([.byte(44), ws, prefix[index], ws] + after) }
            if index >= minimum { alternatives.append([]) }
            after = [.rule(builder.rule(alternatives))]
            index -= 1
        }
        let first = prefix.first ?? item!
        var alternatives: [[GrammarSymbol]] = [[.byte(91), ws, first, ws] + after + [.byte(93)]]
        if minimum == 0 { alternatives.append([.byte(91), ws, .byte(93)]) }
        return .rule(builder.rule(alternatives))
    }

    /// The bounds a schema puts on a number: `minimum` and `exclusiveMinimum` (the tighter; a
    /// boolean `exclusiveMinimum` makes `minimum` exclusive, as draft 4 wrote it), likewise above.
    private func bounds(_ schema: JSON, at path: String) throws(Failure) -> (lower: NumberBound?, upper: NumberBound?) {
        func decimal(_ key: String) throws(Failure) -> ExactDecimal? {
            guard let value = schema[key], !value.isNull, value.boolValue == nil else { return nil }
            guard case let .number(text) = value, let decimal = ExactDecimal(text) else {
                throw Failure(message: "'\(key)' at \(path) must be a number")
            }
            return decimal
        }
        func side(_ inclusiveKey: String, _ exclusiveKey: String, below: Bool) throws(Failure) -> NumberBound? {
            var bound = try decimal(inclusiveKey).map { NumberBound(value: $0, inclusive: true) }
            if let flag = schema[exclusiveKey]?.boolValue {
                guard bound != nil || !flag else { throw Failure(message: "'\(exclusiveKey)': true at \(path) needs '\(inclusiveKey)'") }
                if flag { bound?.inclusive = false }
            } else if let exclusive = try decimal(exclusiveKey) {
                // The tighter of the two; at the same value the exclusive one.
                let order = bound.map { ExactDecimal.compare(exclusive, $0.value) } ?? (below ? 1 : -1)
                if order == 0 || (below ? order > 0 : order < 0) { bound = NumberBound(value: exclusive, inclusive: false) }
            }
            return bound
        }
        return (try side("minimum", "exclusiveMinimum", below: true), try side("maximum", "exclusiveMaximum", below: false))
    }

    /// Integers within the schema's bounds (at most 16 digits, as every integer here).
    private mutating func boundedInteger(_ schema: JSON, at path: String) throws(Failure) -> GrammarSymbol {
        let (lower, upper) = try bounds(schema, at: path)
        let largest = GrammarBuilder.powerOfTen(16) - 1
        var low = -largest, high = largest
        if let lower {
            let floor = lower.value.floor
            low = max(low, lower.inclusive && lower.value.fraction.isEmpty ? floor : floor + 1)
        }
        if let upper {
            let floor = upper.value.floor
            high = min(high, !upper.inclusive && upper.value.fraction.isEmpty ? floor - 1 : floor)
        }
        guard let symbol = builder.integerRange(low, high) else {
            throw Failure(message: "no integer lies within the bounds at \(path) (integers have at most 16 digits)")
        }
        return symbol
    }

    private mutating func reference(_ text: String, at path: String) throws(Failure) -> GrammarSymbol {
        if let id = references[text] { return .rule(id) }
        var target = document
        if text != "#" {
            let prefix = text.hasPrefix("#/$defs/") ? "#/$defs/" : text.hasPrefix("#/definitions/") ? "#/definitions/" : nil
            guard let prefix else {
                throw Failure(message: "'$ref' \(text) at \(path) is not supported (only '#', '#/$defs/...' and '#/definitions/...')")
            }
            let container = prefix == "#/$defs/" ? "$defs" : "definitions"
            var current: JSON? = document[container]
            for part in text.dropFirst(prefix.count).split(separator: "/", omittingEmptySubsequences: false) {
                let name = part.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
                current = current?[name]
            }
            guard let found = current else { throw Failure(message: "'$ref' \(text) at \(path) names no definition") }
            target = found
        }
        let id = builder.declare()
        references[text] = id
        builder.define(id, [[try value(target, at: text)]])
        return .rule(id)
    }
}

extension GrammarBuilder {
    fileprivate mutating func stringCharacterSymbol() -> GrammarSymbol {
        .rule(shared("char") { builder in
            let hex = GrammarSymbol.bytes(ByteSet(ranges: [48...57, 65...70, 97...102]))
            return [
                [.bytes(ByteSet(ranges: [0x20...0x7F]).subtracting(ByteSet([34, 92])))],
                [JSONGrammar.utf8Multibyte(&builder)],
                [.byte(92), .bytes(ByteSet(Array(#""\/bfnrt"#.utf8)))],
                [.byte(92), .byte(UInt8(ascii: "u")), hex, hex, hex, hex],
            ]
        })
    }
}
