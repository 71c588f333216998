import SluiceCore

/// Writes OpenAI response bodies for finished generations.
///
/// Bodies are a pure function of the request and its tokens (the id is derived
/// from the request, and there is no wall-clock `created` field), so the same
/// request gives byte-identical output however and whenever it ran.
struct ResponseBuilder {
    let modelName: String
    let tokenizer: Tokenizer

    func body(for generation: Generation, content: String, finishReason: String) -> JSON {
        let request = generation.request
        let id = BuiltinResultIdentity.responseID(for: request)
        let usage = JSON.object([
            "prompt_tokens": .int(generation.promptTokens.count),
            "completion_tokens": .int(generation.generated.count),
            "total_tokens": .int(generation.promptTokens.count + generation.generated.count),
        ])
        let chosen = Array(generation.logprobs.prefix(tokensInText(generation, content: content)))
        switch request.endpoint {
        case .chatCompletions:
            let logprobs: JSON = generation.parameters.logprobs == nil ? .null : .object([
                "content": .array(chosen.map { entry in
                    var fields = tokenFields(entry.token, logprob: entry.logprob)
                    fields.append((key: "top_logprobs", value: .array(entry.top.map { .object(tokenFields($0.token, logprob: $0.logProbability)) })))
                    return .object(fields)
                }),
            ])
            return .object([
                "id": .string("chatcmpl-" + id),
                "object": .string("chat.completion"),
                "model": .string(modelName),
                "choices": .array([.object([
                    "index": .int(0),
                    "message": .object(["role": .string("assistant"), "content": .string(content)]),
                    "logprobs": logprobs,
                    "finish_reason": .string(finishReason),
                ])]),
                "usage": usage,
            ])
        case .completions, .embeddings:  // embeddings never reach generation
            var logprobs = JSON.null
            if generation.parameters.logprobs != nil {
                var offsets: [JSON] = []
                var offset = 0
                for entry in chosen {
                    offsets.append(.int(offset))
                    offset += pieceText(entry.token).utf8.count
                }
                logprobs = .object([
                    "tokens": .array(chosen.map { .string(pieceText($0.token)) }),
                    "token_logprobs": .array(chosen.map { .double($0.logprob) }),
                    "top_logprobs": .array(chosen.map { entry in
                        .object(entry.top.map { (key: pieceText($0.token), value: JSON.double($0.logProbability)) })
                    }),
                    "text_offset": .array(offsets),
                ])
            }
            return .object([
                "id": .string("cmpl-" + id),
                "object": .string("text_completion"),
                "model": .string(modelName),
                "choices": .array([.object([
                    "index": .int(0),
                    "text": .string(content),
                    "logprobs": logprobs,
                    "finish_reason": .string(finishReason),
                ])]),
                "usage": usage,
            ])
        }
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
