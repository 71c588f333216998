import SluiceCore

/// A chat message after validation.
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// What the request asks the model to continue.
public enum PromptInput: Sendable, Equatable {
    case text(String)
    case tokens([Int32])
    case chat([ChatMessage])
}

/// An OpenAI `/v1/completions` or `/v1/chat/completions` body, validated.
public struct GenerationRequest: Sendable, Equatable {
    public var endpoint: Endpoint
    public var prompt: PromptInput
    public var model: String?
    /// nil: as many as the context allows.
    public var maxTokens: Int?
    public var sampling = SamplingParameters()
    /// Whether the body named a seed (otherwise one is derived from the request).
    public var hasSeed = false
    public var stop: [String] = []
    /// nil: no log-probabilities; otherwise how many alternatives per token (0 = only the chosen token).
    public var logprobs: Int?

    /// Parses a request body, or explains (as OpenAI would, naming the parameter) why it can't be served.
    public init(endpoint: Endpoint, body: JSON) throws(RequestError) {
        self.endpoint = endpoint
        guard let fields = body.objectValue else { throw RequestError("the request body must be a JSON object") }
        let known: Set<String> = endpoint == .chatCompletions ? Self.chatFields : Self.completionFields
        for (key, _) in fields where !known.contains(key) {
            throw RequestError("unrecognized request argument supplied: \(key)", parameter: key)
        }

        switch endpoint {
        case .chatCompletions:
            guard let messages = body["messages"] else { throw RequestError("missing required parameter: 'messages'", parameter: "messages") }
            prompt = .chat(try Self.parseMessages(messages))
        case .completions:
            guard let value = body["prompt"] else { throw RequestError("missing required parameter: 'prompt'", parameter: "prompt") }
            prompt = try Self.parsePrompt(value)
        case .embeddings:
            throw RequestError("/v1/embeddings is answered by an embedding model, not by generation")
        }
        if let value = body["model"], !value.isNull {
            guard let name = value.stringValue else { throw RequestError("'model' must be a string", parameter: "model") }
            model = name
        }

        let maxKey = body["max_completion_tokens"] != nil ? "max_completion_tokens" : "max_tokens"
        if let value = body[maxKey], !value.isNull {
            guard let n = value.intValue, n >= 1 else { throw RequestError("'\(maxKey)' must be an integer of at least 1", parameter: maxKey) }
            maxTokens = n
        } else if endpoint == .completions {
            maxTokens = 16  // OpenAI's default for completions
        }
        sampling.temperature = try Self.number(body, "temperature", in: 0...2) ?? 1
        sampling.topP = try Self.number(body, "top_p", in: 0...1) ?? 1
        if sampling.topP == 0 { throw RequestError("'top_p' must be greater than 0", parameter: "top_p") }
        sampling.minP = try Self.number(body, "min_p", in: 0...1) ?? 0
        if let value = body["top_k"], !value.isNull {
            guard let k = value.intValue, k >= -1 else { throw RequestError("'top_k' must be an integer of at least -1", parameter: "top_k") }
            sampling.topK = max(k, 0)
        }
        if let value = body["seed"], !value.isNull {
            guard let seed = value.intValue else { throw RequestError("'seed' must be an integer", parameter: "seed") }
            sampling.seed = UInt64(bitPattern: Int64(seed))
            hasSeed = true
        }
        if let value = body["n"], !value.isNull {
            guard value.intValue == 1 else { throw RequestError("'n' must be 1: Sluice returns one choice per request", parameter: "n") }
        }
        if let value = body["stream"], value.boolValue == true {
            throw RequestError("'stream' is not supported in batch jobs", parameter: "stream")
        }
        if let value = body["echo"], value.boolValue == true {
            throw RequestError("'echo' is not supported", parameter: "echo")
        }
        for penalty in ["presence_penalty", "frequency_penalty"] {
            if let value = body[penalty], !value.isNull, value.doubleValue != 0 {
                throw RequestError("'\(penalty)' is not supported (only 0)", parameter: penalty)
            }
        }
        if let value = body["logit_bias"], !value.isNull, value.objectValue?.isEmpty != true {
            throw RequestError("'logit_bias' is not supported", parameter: "logit_bias")
        }
        if let value = body["response_format"], !value.isNull, value["type"]?.stringValue != "text" {
            throw RequestError("only 'response_format' {\"type\": \"text\"} is supported", parameter: "response_format")
        }
        stop = try Self.parseStop(body["stop"])
        logprobs = try Self.parseLogprobs(body, endpoint: endpoint)
    }

    static let commonFields: Set<String> = [
        "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "n", "stream",
        "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "user", "max_completion_tokens",
    ]
    static let chatFields = commonFields.union(["messages", "top_logprobs", "response_format"])
    static let completionFields = commonFields.union(["prompt", "echo", "suffix"])

    static func number(_ body: JSON, _ key: String, in range: ClosedRange<Double>) throws(RequestError) -> Double? {
        guard let value = body[key], !value.isNull else { return nil }
        guard let d = value.doubleValue, range.contains(d) else {
            throw RequestError("'\(key)' must be a number from \(range.lowerBound) to \(range.upperBound)", parameter: key)
        }
        return d
    }

    static func parseMessages(_ value: JSON) throws(RequestError) -> [ChatMessage] {
        guard let items = value.arrayValue, !items.isEmpty else {
            throw RequestError("'messages' must be a non-empty array", parameter: "messages")
        }
        var messages: [ChatMessage] = []
        for (i, item) in items.enumerated() {
            guard item.objectValue != nil else { throw RequestError("messages[\(i)] must be an object", parameter: "messages") }
            guard var role = item["role"]?.stringValue else { throw RequestError("messages[\(i)].role must be a string", parameter: "messages") }
            if role == "developer" { role = "system" }
            guard ["system", "user", "assistant"].contains(role) else {
                throw RequestError("messages[\(i)].role '\(role)' is not supported (system, developer, user, assistant)", parameter: "messages")
            }
            let content: String
            switch item["content"] {
            case let .string(text)?: content = text
            case let .array(parts)?:
                var text = ""
                for (j, part) in parts.enumerated() {
                    guard part["type"]?.stringValue == "text", let piece = part["text"]?.stringValue else {
                        throw RequestError("messages[\(i)].content[\(j)] must be a text part: only text is supported", parameter: "messages")
                    }
                    text += piece
                }
                content = text
            case .null? where role == "assistant", nil where role == "assistant": content = ""
            default: throw RequestError("messages[\(i)].content must be a string or an array of text parts", parameter: "messages")
            }
            messages.append(ChatMessage(role: role, content: content))
        }
        return messages
    }

    static func parsePrompt(_ value: JSON) throws(RequestError) -> PromptInput {
        switch value {
        case let .string(text): return .text(text)
        case let .array(items):
            if items.count == 1, let text = items[0].stringValue { return .text(text) }
            var tokens: [Int32] = []
            for item in items {
                guard let id = item.intValue, id >= 0, id <= Int(Int32.max) else {
                    throw RequestError("'prompt' must be a string, one string in an array, or an array of token ids (one prompt per request)", parameter: "prompt")
                }
                tokens.append(Int32(id))
            }
            guard !tokens.isEmpty else { throw RequestError("'prompt' must not be empty", parameter: "prompt") }
            return .tokens(tokens)
        default:
            throw RequestError("'prompt' must be a string or an array of token ids", parameter: "prompt")
        }
    }

    static func parseStop(_ value: JSON?) throws(RequestError) -> [String] {
        switch value {
        case nil, .null?: return []
        case let .string(s)?: return s.isEmpty ? [] : [s]
        case let .array(items)?:
            var stops: [String] = []
            for item in items {
                guard let s = item.stringValue else { throw RequestError("'stop' must be a string or an array of strings", parameter: "stop") }
                if !s.isEmpty { stops.append(s) }
            }
            return stops
        default: throw RequestError("'stop' must be a string or an array of strings", parameter: "stop")
        }
    }

    static func parseLogprobs(_ body: JSON, endpoint: Endpoint) throws(RequestError) -> Int? {
        switch endpoint {
        case .chatCompletions:
            guard let value = body["logprobs"], !value.isNull else {
                if let top = body["top_logprobs"], !top.isNull {
                    throw RequestError("'top_logprobs' needs 'logprobs': true", parameter: "top_logprobs")
                }
                return nil
            }
            guard let wanted = value.boolValue else { throw RequestError("'logprobs' must be a boolean", parameter: "logprobs") }
            guard wanted else { return nil }
            guard let top = body["top_logprobs"], !top.isNull else { return 0 }
            guard let n = top.intValue, (0...20).contains(n) else {
                throw RequestError("'top_logprobs' must be an integer from 0 to 20", parameter: "top_logprobs")
            }
            return n
        case .embeddings:
            return nil
        case .completions:
            guard let value = body["logprobs"], !value.isNull else { return nil }
            guard let n = value.intValue, (0...20).contains(n) else {
                throw RequestError("'logprobs' must be an integer from 0 to 20", parameter: "logprobs")
            }
            return n
        }
    }
}

/// Why a request body can't be served: reported as an HTTP 400 answer, as OpenAI does.
public struct RequestError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var parameter: String?

    public init(_ message: String, parameter: String? = nil) {
        self.message = message
        self.parameter = parameter
    }

    public var description: String { message }

    /// The OpenAI-style error body.
    public var body: JSON {
        .object([
            "error": .object([
                "message": .string(message),
                "type": .string("invalid_request_error"),
                "param": parameter.map(JSON.string) ?? .null,
                "code": .null,
            ]),
        ])
    }
}
