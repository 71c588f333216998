import SluiceCore

/// A chat message after validation.
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String
    /// The participant's name: accepted; the chat templates Sluice renders have no place for it.
    public var name: String?

    public init(role: String, content: String, name: String? = nil) {
        self.role = role
        self.content = content
        self.name = name
    }
}

/// What the request asks the model to continue.
public enum PromptInput: Sendable, Equatable {
    case text(String)
    case tokens([Int32])
    case chat([ChatMessage])
}

/// An OpenAI `/v1/completions`, `/v1/chat/completions` or `/v1/responses` body, validated.
///
/// Every field is either honoured, accepted and ignored because it cannot change a local
/// answer (`ignoredFields`), or refused with a 400 that says why: nothing is silently dropped.
public struct GenerationRequest: Sendable, Equatable {
    public var endpoint: Endpoint
    /// The prompts: one, or (completions) a list, each giving `choicesPerPrompt` choices in order.
    public var prompts: [PromptInput]
    public var model: String?
    /// nil: as many as the context allows. 0 only with completions' `echo` (the prompt alone,
    /// scored when `logprobs` asks: OpenAI's classic way to score a text).
    public var maxTokens: Int?
    public var sampling = SamplingParameters()
    /// Whether the body named a seed (otherwise one is derived from the request).
    public var hasSeed = false
    public var stop: [String] = []
    /// nil: no log-probabilities; otherwise how many alternatives per token (0 = only the chosen token).
    public var logprobs: Int?
    /// `n`: choices per prompt.
    public var choicesPerPrompt = 1
    /// Completions' `echo`: the prompt is written before the completion.
    public var echo = false
    /// Penalties and biases applied to each sequence's logits before sampling.
    public var logitProcessing = LogitProcessing()
    /// Structured output: what the generated text must match, if anything.
    public var constraint: OutputConstraint?
    /// Responses API: what the answer echoes back (`instructions`, `metadata`, `text`).
    public var responsesEcho: [(key: String, value: JSON)] = []

    public static func == (a: GenerationRequest, b: GenerationRequest) -> Bool {
        a.endpoint == b.endpoint && a.prompts == b.prompts && a.model == b.model && a.maxTokens == b.maxTokens
            && a.sampling == b.sampling && a.hasSeed == b.hasSeed && a.stop == b.stop && a.logprobs == b.logprobs
            && a.choicesPerPrompt == b.choicesPerPrompt && a.echo == b.echo && a.logitProcessing == b.logitProcessing
            && a.constraint == b.constraint
    }

    /// The first (usually only) prompt.
    public var prompt: PromptInput { prompts[0] }
    /// How many choices the answer has.
    public var choiceCount: Int { prompts.count * choicesPerPrompt }

    /// The most choices one request may ask for (`n` times the prompts).
    public static let maximumChoices = 128

    private static let notGeneration = RequestError("/v1/embeddings is answered by an embedding model, not by generation")

    /// Parses a request body, or explains (as OpenAI would, naming the parameter) why it can't be served.
    public init(endpoint: Endpoint, body: JSON) throws(RequestError) {
        self.endpoint = endpoint
        guard let fields = body.objectValue else { throw RequestError("the request body must be a JSON object") }
        let known: Set<String> = switch endpoint {
        case .chatCompletions: Self.chatFields
        case .completions: Self.completionFields
        case .responses: Self.responsesFields
        case .embeddings: throw Self.notGeneration
        }
        for (key, _) in fields where !known.contains(key) {
            throw RequestError("unrecognized request argument supplied: \(key)", parameter: key)
        }
        try Self.refuseUnsupported(body)

        switch endpoint {
        case .chatCompletions:
            guard let messages = body["messages"] else { throw RequestError("missing required parameter: 'messages'", parameter: "messages") }
            prompts = [.chat(try Self.parseMessages(messages, parameter: "messages"))]
        case .completions:
            guard let value = body["prompt"] else { throw RequestError("missing required parameter: 'prompt'", parameter: "prompt") }
            prompts = try Self.parsePrompts(value)
        case .responses:
            prompts = [.chat(try Self.parseResponsesInput(body))]
        case .embeddings:
            throw Self.notGeneration
        }
        if let value = body["model"], !value.isNull {
            guard let name = value.stringValue else { throw RequestError("'model' must be a string", parameter: "model") }
            model = name
        }

        let maxKey = endpoint == .responses ? "max_output_tokens"
            : body["max_completion_tokens"].map { !$0.isNull } == true ? "max_completion_tokens" : "max_tokens"
        if let value = body[maxKey], !value.isNull {
            guard let n = value.intValue, n >= 0 else {
                throw RequestError("'\(maxKey)' must be an integer from 1 to \(Int.max)", parameter: maxKey)
            }
            maxTokens = n
        } else if endpoint == .completions {
            maxTokens = 16  // OpenAI's default for completions
        }
        sampling.temperature = try Self.number(body, "temperature", in: 0...2) ?? 1
        sampling.topP = try Self.number(body, "top_p", in: 0...1) ?? 1
        sampling.minP = try Self.number(body, "min_p", in: 0...1) ?? 0
        if let value = body["top_k"], !value.isNull {
            guard let k = value.intValue, k >= -1 else { throw RequestError("'top_k' must be an integer of at least -1", parameter: "top_k") }
            sampling.topK = max(k, 0)
        }
        if sampling.topP == 0 {
            // OpenAI takes 0: the smallest nucleus, the most likely token alone (as top_k 1 keeps it).
            sampling.topP = 1
            sampling.topK = 1
        }
        if let value = body["seed"], !value.isNull {
            guard let seed = value.intValue else {
                throw RequestError("'seed' must be an integer from \(Int64.min) to \(Int64.max)", parameter: "seed")
            }
            sampling.seed = UInt64(bitPattern: Int64(seed))
            hasSeed = true
        }
        if let value = body["n"], !value.isNull {
            guard let n = value.intValue, n >= 1 else { throw RequestError("'n' must be an integer of at least 1", parameter: "n") }
            choicesPerPrompt = n
        }
        if let value = body["best_of"], !value.isNull, value.intValue != choicesPerPrompt {
            throw RequestError("'best_of' is supported only equal to 'n' (Sluice does not rank choices)", parameter: "best_of")
        }
        guard choiceCount <= Self.maximumChoices else {
            throw RequestError("the request asks for \(choiceCount) choices ('n' times the prompts); at most \(Self.maximumChoices)", parameter: "n")
        }
        if let value = body["echo"], !value.isNull {
            guard let flag = value.boolValue else { throw RequestError("'echo' must be a boolean", parameter: "echo") }
            echo = flag
        }
        if let value = body["suffix"], !value.isNull, value.stringValue != "" {
            throw RequestError("'suffix' (insertion) is not supported by the built-in engine", parameter: "suffix")
        }
        logitProcessing = try LogitProcessing(body)
        constraint = try OutputConstraint.parse(body, endpoint: endpoint)
        stop = try Self.parseStop(body["stop"])
        logprobs = try Self.parseLogprobs(body, endpoint: endpoint)
        if maxTokens == 0 && !(endpoint == .completions && echo) {
            throw RequestError("'\(maxKey)' must be an integer of at least 1 (0 only with 'echo': true, to score the prompt)", parameter: maxKey)
        }
        if endpoint == .responses {
            for key in ["instructions", "metadata", "temperature", "top_p", "max_output_tokens"] {
                if let value = body[key] { responsesEcho.append((key: key, value: value)) }
            }
            responsesEcho.append((key: "text", value: body["text"] ?? .object(["format": .object(["type": .string("text")])])))
        }
    }

    /// Fields accepted and ignored on every endpoint: they cannot change a locally computed answer.
    public static let ignoredFields: [String] = [
        "store", "metadata", "service_tier", "user", "parallel_tool_calls", "stream_options", "prediction",
        "prompt_cache_key", "safety_identifier", "modalities", "truncation", "include", "background",
    ]
    /// Fields named so they are refused with a reason, not as unknown.
    static let refusedFields: [String] = ["tools", "tool_choice", "functions", "function_call", "audio", "grammar", "reasoning",
                                          "reasoning_effort", "previous_response_id", "conversation"]
    static let commonFields: Set<String> = Set([
        "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "n", "stream",
        "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias", "logprobs", "max_completion_tokens",
        "response_format", "json_schema", "guided_json", "guided_choice", "guided_regex", "structured_outputs",
    ] + ignoredFields + refusedFields)
    static let chatFields = commonFields.union(["messages", "top_logprobs"])
    static let completionFields = commonFields.union(["prompt", "echo", "suffix", "best_of"])
    static let responsesFields = Set(["model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "text",
                                      "seed", "stream", "top_logprobs"] + ignoredFields + refusedFields)

    /// What Sluice refuses whatever the endpoint, with the reason.
    static func refuseUnsupported(_ body: JSON) throws(RequestError) {
        if let value = body["stream"], value.boolValue == true {
            throw RequestError("'stream' is not supported in batch jobs", parameter: "stream")
        }
        for key in ["tools", "functions"] {
            if let value = body[key], !value.isNull, value.arrayValue?.isEmpty != true {
                throw RequestError("'\(key)' (tool calling) is not supported by the built-in engine", parameter: key)
            }
        }
        for key in ["tool_choice", "function_call"] {
            if let value = body[key], !value.isNull, value.stringValue != "none" {
                throw RequestError("'\(key)' (tool calling) is not supported by the built-in engine", parameter: key)
            }
        }
        if let value = body["audio"], !value.isNull {
            throw RequestError("'audio' output is not supported", parameter: "audio")
        }
        if let value = body["modalities"], !value.isNull, value != .array([.string("text")]) {
            throw RequestError("only 'modalities' [\"text\"] is supported", parameter: "modalities")
        }
        if let value = body["grammar"], !value.isNull {
            throw RequestError("'grammar' (GBNF) is not supported; use 'json_schema', 'response_format' or 'guided_regex'", parameter: "grammar")
        }
        for key in ["reasoning", "reasoning_effort"] {
            if let value = body[key], !value.isNull {
                throw RequestError("'\(key)' is not supported: the built-in engine's models do not reason separately", parameter: key)
            }
        }
        for key in ["previous_response_id", "conversation"] {
            if let value = body[key], !value.isNull {
                throw RequestError("'\(key)' is not supported in batch jobs: each line must carry its whole input", parameter: key)
            }
        }
        if let value = body["background"], value.boolValue == true {
            throw RequestError("'background' is not supported in batch jobs", parameter: "background")
        }
        if let value = body["stream_options"], !value.isNull, value.objectValue == nil {
            throw RequestError("'stream_options' must be an object", parameter: "stream_options")
        }
        if let value = body["truncation"], !value.isNull, value.stringValue != "disabled" {
            throw RequestError("only 'truncation' \"disabled\" is supported", parameter: "truncation")
        }
    }

    static func number(_ body: JSON, _ key: String, in range: ClosedRange<Double>) throws(RequestError) -> Double? {
        guard let value = body[key], !value.isNull else { return nil }
        guard let d = value.doubleValue, range.contains(d) else {
            throw RequestError("'\(key)' must be a number from \(range.lowerBound) to \(range.upperBound)", parameter: key)
        }
        return d
    }

    static func parseMessages(_ value: JSON, parameter: String) throws(RequestError) -> [ChatMessage] {
        guard let items = value.arrayValue, !items.isEmpty else {
            throw RequestError("'\(parameter)' must be a non-empty array", parameter: parameter)
        }
        var messages: [ChatMessage] = []
        for (i, item) in items.enumerated() {
            guard item.objectValue != nil else { throw RequestError("\(parameter)[\(i)] must be an object", parameter: parameter) }
            if parameter == "input", let type = item["type"]?.stringValue, type != "message" {
                throw RequestError("\(parameter)[\(i)] is a '\(type)' item: only messages are supported", parameter: parameter)
            }
            guard var role = item["role"]?.stringValue else { throw RequestError("\(parameter)[\(i)].role must be a string", parameter: parameter) }
            if role == "developer" { role = "system" }
            guard ["system", "user", "assistant"].contains(role) else {
                throw RequestError("\(parameter)[\(i)].role '\(role)' is not supported (system, developer, user, assistant)", parameter: parameter)
            }
            for key in ["tool_calls", "function_call", "audio"] where item[key].map({ !$0.isNull }) == true {
                throw RequestError("\(parameter)[\(i)].\(key) is not supported (tool calling and audio are not)", parameter: parameter)
            }
            let content: String
            switch item["content"] {
            case let .string(text)?: content = text
            case let .array(parts)?:
                var text = ""
                for (j, part) in parts.enumerated() {
                    guard let type = part["type"]?.stringValue, ["text", "input_text", "output_text"].contains(type),
                          let piece = part["text"]?.stringValue else {
                        let kind = part["type"]?.stringValue.map { "'\($0)' parts are" } ?? "parts without a type are"
                        throw RequestError("\(parameter)[\(i)].content[\(j)]: \(kind) not supported: only text is", parameter: parameter)
                    }
                    text += piece
                }
                content = text
            case .null? where role == "assistant", nil where role == "assistant": content = ""
            default: throw RequestError("\(parameter)[\(i)].content must be a string or an array of text parts", parameter: parameter)
            }
            var name: String?
            if let value = item["name"], !value.isNull {
                guard let text = value.stringValue else { throw RequestError("\(parameter)[\(i)].name must be a string", parameter: parameter) }
                name = text
            }
            messages.append(ChatMessage(role: role, content: content, name: name))
        }
        return messages
    }

    /// The Responses API's `input` (a string or messages) after its `instructions` (a system message).
    static func parseResponsesInput(_ body: JSON) throws(RequestError) -> [ChatMessage] {
        var messages: [ChatMessage] = []
        if let value = body["instructions"], !value.isNull {
            guard let text = value.stringValue else { throw RequestError("'instructions' must be a string", parameter: "instructions") }
            messages.append(ChatMessage(role: "system", content: text))
        }
        switch body["input"] {
        case nil, .null?: throw RequestError("missing required parameter: 'input'", parameter: "input")
        case let .string(text)?: messages.append(ChatMessage(role: "user", content: text))
        case let input?: messages += try parseMessages(input, parameter: "input")
        }
        return messages
    }

    /// Completions' `prompt`: a string, token ids, or a list of either (one prompt each).
    static func parsePrompts(_ value: JSON) throws(RequestError) -> [PromptInput] {
        if case let .array(items) = value, let first = items.first, first.stringValue != nil || first.arrayValue != nil {
            var prompts: [PromptInput] = []
            for item in items {
                guard item.stringValue != nil || item.arrayValue != nil else {
                    throw RequestError("'prompt' lists must hold only strings or only arrays of token ids", parameter: "prompt")
                }
                prompts.append(try parsePrompt(item))
            }
            guard prompts.count <= maximumChoices else {
                throw RequestError("'prompt' lists at most \(maximumChoices) prompts", parameter: "prompt")
            }
            return prompts
        }
        return [try parsePrompt(value)]
    }

    static func parsePrompt(_ value: JSON) throws(RequestError) -> PromptInput {
        switch value {
        case let .string(text): return .text(text)
        case let .array(items):
            var tokens: [Int32] = []
            for item in items {
                guard let id = item.intValue, id >= 0, id <= Int(Int32.max) else {
                    throw RequestError("'prompt' must be a string, an array of token ids, or a list of them", parameter: "prompt")
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
        case .responses:
            if let top = body["top_logprobs"], !top.isNull, top.intValue != 0 {
                throw RequestError("'top_logprobs' is not supported on /v1/responses", parameter: "top_logprobs")
            }
            return nil
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
