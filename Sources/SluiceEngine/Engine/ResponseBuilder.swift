import SluiceCore

/// Writes OpenAI response bodies for finished generations.
///
/// Bodies are a pure function of the request and its tokens (the id is derived
/// from the request, and there is no wall-clock `created` field), so the same
/// request gives byte-identical output however and whenever it ran.
struct ResponseBuilder {
    let modelName: String
    let tokenizer: Tokenizer

    /// The answer to a request whose choices (one per generation, in choice order) are done.
    func body(for choices: [(generation: Generation, content: String, finishReason: String)]) -> JSON {
        let first = choices[0].generation
        let request = first.request
        let parameters = first.parameters
        let id = BuiltinResultIdentity.responseID(for: request)
        var promptCount = 0
        var completionCount = 0
        for choice in choices {
            if choice.generation.choice % parameters.choicesPerPrompt == 0 { promptCount += choice.generation.promptTokens.count }
            completionCount += choice.generation.generated.count
        }
        let usage = JSON.object([
            "prompt_tokens": .int(promptCount),
            "completion_tokens": .int(completionCount),
            "total_tokens": .int(promptCount + completionCount),
        ])
        switch request.endpoint {
        case .chatCompletions:
            return .object([
                "id": .string("chatcmpl-" + id),
                "object": .string("chat.completion"),
                "model": .string(modelName),
                "choices": .array(choices.map { choice in
                    .object([
                        "index": .int(choice.generation.choice),
                        "message": .object(["role": .string("assistant"), "content": .string(choice.content)]),
                        "logprobs": chatLogprobs(choice.generation, content: choice.content),
                        "finish_reason": .string(choice.finishReason),
                    ])
                }),
                "usage": usage,
            ])
        case .completions, .embeddings:  // embeddings never reach generation
            return .object([
                "id": .string("cmpl-" + id),
                "object": .string("text_completion"),
                "model": .string(modelName),
                "choices": .array(choices.map { choice in
                    .object([
                        "index": .int(choice.generation.choice),
                        "text": .string(completionText(choice.generation, content: choice.content)),
                        "logprobs": completionLogprobs(choice.generation, content: choice.content),
                        "finish_reason": .string(choice.finishReason),
                    ])
                }),
                "usage": usage,
            ])
        case .responses:
            return responsesBody(choices[0], id: id, promptCount: promptCount, completionCount: completionCount)
        }
    }

    /// Completions' text: the completion, after the prompt when `echo` asks for it.
    private func completionText(_ generation: Generation, content: String) -> String {
        guard generation.parameters.echo else { return content }
        switch generation.parameters.prompts[generation.choice / generation.parameters.choicesPerPrompt] {
        case let .text(text): return text + content
        case let .tokens(tokens): return tokenizer.decode(tokens) + content
        case .chat: return content
        }
    }

    private func chatLogprobs(_ generation: Generation, content: String) -> JSON {
        guard generation.parameters.logprobs != nil else { return .null }
        let chosen = Array(generation.logprobs.prefix(tokensInText(generation, content: content)))
        return .object([
            "content": .array(chosen.map { entry in
                var fields = tokenFields(entry.token, logprob: entry.logprob)
                fields.append((key: "top_logprobs", value: .array(entry.top.map { .object(tokenFields($0.token, logprob: $0.logProbability)) })))
                return .object(fields)
            }),
        ])
    }

    /// Completions' `logprobs`: the completion's tokens, after the prompt's when `echo` asks for
    /// them (as OpenAI and vLLM answer: the first prompt token has nothing before it to predict
    /// it, so its `token_logprobs` and `top_logprobs` entries are null). `text_offset` is where each
    /// token starts in `text`, in UTF-8 bytes: a control token (`<bos>`) takes no room there, and a
    /// byte-fallback token one byte (its listed text, U+FFFD for a lone byte, would count three).
    private func completionLogprobs(_ generation: Generation, content: String) -> JSON {
        guard generation.parameters.logprobs != nil else { return .null }
        var entries: [(token: Int32, entry: Generation.TokenLogprobs?)] = []
        if generation.wantsPromptLogprobs {
            for (i, token) in generation.promptTokens.enumerated() {
                // Every prompt position has its entry once the request is complete; a request cut short
                // before its prompt was scored (it could not fit the KV budget) shows null for the rest.
                let entry = i >= 1 && i - 1 < generation.promptLogprobs.count ? generation.promptLogprobs[i - 1] : nil
                entries.append((token, entry))
            }
        }
        for entry in generation.logprobs.prefix(tokensInText(generation, content: content)) { entries.append((entry.token, entry)) }
        var offsets: [JSON] = []
        var offset = 0
        for item in entries {
            offsets.append(.int(offset))
            offset += tokenizer.piece(for: item.token, renderSpecial: false).count
        }
        return .object([
            "tokens": .array(entries.map { .string(pieceText($0.token)) }),
            "token_logprobs": .array(entries.map { item -> JSON in item.entry.map { JSON.double($0.logprob) } ?? .null }),
            "top_logprobs": .array(entries.map { item -> JSON in
                guard let entry = item.entry else { return .null }
                return .object(entry.top.map { (key: pieceText($0.token), value: JSON.double($0.logProbability)) })
            }),
            "text_offset": .array(offsets),
        ])
    }

    /// The Responses API's answer: one assistant message with the text, and the request's settings.
    private func responsesBody(_ choice: (generation: Generation, content: String, finishReason: String), id: String,
                               promptCount: Int, completionCount: Int) -> JSON {
        let complete = choice.finishReason != "length"
        var fields: [(key: String, value: JSON)] = [
            (key: "id", value: .string("resp_" + id)),
            (key: "object", value: .string("response")),
            (key: "status", value: .string(complete ? "completed" : "incomplete")),
            (key: "error", value: .null),
            (key: "incomplete_details", value: complete ? .null : .object(["reason": .string("max_output_tokens")])),
            (key: "model", value: .string(modelName)),
            (key: "output", value: .array([.object([
                "type": .string("message"),
                "id": .string("msg_" + id),
                "status": .string(complete ? "completed" : "incomplete"),
                "role": .string("assistant"),
                "content": .array([.object([
                    "type": .string("output_text"),
                    "text": .string(choice.content),
                    "annotations": .array([]),
                ])]),
            ])])),
            (key: "usage", value: .object([
                "input_tokens": .int(promptCount),
                "output_tokens": .int(completionCount),
                "total_tokens": .int(promptCount + completionCount),
            ])),
        ]
        fields += choice.generation.parameters.responsesEcho
        return .object(fields)
    }

    /// How many generated tokens contributed to the returned text: the end-of-generation
    /// token and tokens after a stop string's start are not reported in logprobs.
    private func tokensInText(_ generation: Generation, content: String) -> Int {
        var count = 0
        var bytes = 0
        let target = content.utf8.count
        for token in generation.generated {
            if bytes >= target || tokenizer.isEndOfGeneration(token) { break }
            bytes += tokenizer.piece(for: token).count
            count += 1
        }
        return count
    }

    private func pieceText(_ token: Int32) -> String {
        String(decoding: tokenizer.piece(for: token), as: UTF8.self)
    }

    private func tokenFields(_ token: Int32, logprob: Double) -> [(key: String, value: JSON)] {
        let bytes = tokenizer.piece(for: token)
        return [
            (key: "token", value: .string(String(decoding: bytes, as: UTF8.self))),
            (key: "logprob", value: .double(logprob)),
            (key: "bytes", value: .array(bytes.map { .int($0) })),
        ]
    }
}
