import SluiceCore

/// What a request's generated text must match (structured outputs).
///
/// Spellings accepted: OpenAI's `response_format` (`json_object`, `json_schema`) and the
/// Responses API's `text.format`; llama.cpp's top-level `json_schema`; vLLM's
/// `guided_json`, `guided_choice`, `guided_regex` and `structured_outputs`
/// (`json`, `choice`, `regex`). At most one per request.
public enum OutputConstraint: Sendable, Equatable {
    /// Any JSON object.
    case jsonObject
    /// A value the JSON Schema accepts.
    case jsonSchema(JSON)
    /// Exactly one of the strings (plain text).
    case choice([String])
    /// Text fully matching the regular expression.
    case regex(String)

    /// Identifies the grammar (grammars are compiled once per distinct key and shared).
    var key: String {
        switch self {
        case .jsonObject: return "object"
        case let .jsonSchema(schema): return "schema\u{0}" + schema.serialized
        case let .choice(choices): return "choice\u{0}" + JSON.array(choices.map(JSON.string)).serialized
        case let .regex(pattern): return "regex\u{0}" + pattern
        }
    }

    /// The grammar of the allowed texts.
    func grammar() throws(JSONGrammar.Failure) -> Grammar {
        switch self {
        case .jsonObject: return JSONGrammar.anyObject()
        case let .jsonSchema(schema): return try JSONGrammar.schema(schema)
        case let .choice(choices): return JSONGrammar.choice(choices)
        case let .regex(pattern): return try JSONGrammar.regex(pattern)
        }
    }

    /// The request's constraint, validated (the grammar compiles), or nil.
    static func parse(_ body: JSON, endpoint: Endpoint) throws(RequestError) -> OutputConstraint? {
        var found: [(parameter: String, constraint: OutputConstraint)] = []
        if endpoint == .responses {
            if let format = body["text"]?["format"], !format.isNull {
                if let c = try responseFormat(format, parameter: "text.format", nested: false) { found.append(("text.format", c)) }
            }
            if let text = body["text"], !text.isNull {
                guard let fields = text.objectValue else { throw RequestError("'text' must be an object", parameter: "text") }
                if let other = fields.first(where: { $0.key != "format" && $0.key != "verbosity" }) {
                    throw RequestError("'text.\(other.key)' is not supported", parameter: "text")
                }
            }
        } else if let format = body["response_format"], !format.isNull {
            if let c = try responseFormat(format, parameter: "response_format", nested: true) { found.append(("response_format", c)) }
        }
        if let schema = body["json_schema"], !schema.isNull { found.append(("json_schema", .jsonSchema(schema))) }
        if let schema = body["guided_json"], !schema.isNull {
            found.append(("guided_json", .jsonSchema(try schemaValue(schema, parameter: "guided_json"))))
        }
        if let choices = body["guided_choice"], !choices.isNull {
            found.append(("guided_choice", .choice(try choiceList(choices, parameter: "guided_choice"))))
        }
        if let pattern = body["guided_regex"], !pattern.isNull {
            guard let text = pattern.stringValue else { throw RequestError("'guided_regex' must be a string", parameter: "guided_regex") }
            found.append(("guided_regex", .regex(text)))
        }
        if let outputs = body["structured_outputs"], !outputs.isNull {
            guard let fields = outputs.objectValue else {
                throw RequestError("'structured_outputs' must be an object", parameter: "structured_outputs")
            }
            for (key, value) in fields where !value.isNull {
                switch key {
                case "json": found.append(("structured_outputs", .jsonSchema(try schemaValue(value, parameter: "structured_outputs.json"))))
                case "choice": found.append(("structured_outputs", .choice(try choiceList(value, parameter: "structured_outputs.choice"))))
                case "regex":
                    guard let text = value.stringValue else {
                        throw RequestError("'structured_outputs.regex' must be a string", parameter: "structured_outputs")
                    }
                    found.append(("structured_outputs", .regex(text)))
                case "json_object" where value.boolValue == true: found.append(("structured_outputs", .jsonObject))
                default:
                    throw RequestError("'structured_outputs.\(key)' is not supported (json, json_object, choice, regex)", parameter: "structured_outputs")
                }
            }
        }
        guard let first = found.first else { return nil }
        if found.count > 1 {
            throw RequestError("'\(first.parameter)' and '\(found[1].parameter)' both constrain the output: give one", parameter: found[1].parameter)
        }
        do {
            _ = try first.constraint.grammar()
        } catch {
            throw RequestError("\(first.parameter): \(error.message)", parameter: first.parameter)
        }
        return first.constraint
    }

    /// OpenAI's `response_format` (`nested`: the schema sits under `json_schema`) or the
    /// Responses API's `text.format` (the schema sits beside `type`).
    private static func responseFormat(_ format: JSON, parameter: String, nested: Bool) throws(RequestError) -> OutputConstraint? {
        guard format.objectValue != nil, let type = format["type"]?.stringValue else {
            throw RequestError("'\(parameter)' must be an object with a 'type'", parameter: parameter)
        }
        switch type {
        case "text": return nil
        case "json_object": return .jsonObject
        case "json_schema":
            let container = nested ? format["json_schema"] : format
            guard let container, container.objectValue != nil else {
                throw RequestError("'\(parameter)' of type json_schema needs \(nested ? "a 'json_schema' object" : "'name' and 'schema'")", parameter: parameter)
            }
            if let strict = container["strict"], !strict.isNull, strict.boolValue == nil {
                throw RequestError("'\(parameter)' strict must be a boolean", parameter: parameter)
            }
            guard let schema = container["schema"] else {
                // OpenAI allows an absent schema (any JSON); treat it as json_object's language.
                return .jsonObject
            }
            return .jsonSchema(try schemaValue(schema, parameter: parameter))
        default:
            throw RequestError("'\(parameter)' type '\(type)' is not supported (text, json_object, json_schema)", parameter: parameter)
        }
    }

    private static func schemaValue(_ value: JSON, parameter: String) throws(RequestError) -> JSON {
        if let text = value.stringValue {  // vLLM accepts the schema as JSON text too
            guard let parsed = try? JSON.parse(Array(text.utf8)) else {
                throw RequestError("'\(parameter)' is a string that is not JSON", parameter: parameter)
            }
            return parsed
        }
        guard value.objectValue != nil || value.boolValue != nil else {
            throw RequestError("'\(parameter)' must be a JSON Schema (an object)", parameter: parameter)
        }
        return value
    }

    private static func choiceList(_ value: JSON, parameter: String) throws(RequestError) -> [String] {
        guard let items = value.arrayValue, !items.isEmpty else {
            throw RequestError("'\(parameter)' must be a non-empty array of strings", parameter: parameter)
        }
        var choices: [String] = []
        for item in items {
            guard let text = item.stringValue, !text.isEmpty else {
                throw RequestError("'\(parameter)' must be a non-empty array of non-empty strings", parameter: parameter)
            }
            choices.append(text)
        }
        return choices
    }
}
