/// The chat formats Sluice can render, chosen from the model's metadata.
///
/// GGUF files carry a Jinja template (`tokenizer.chat_template`); rather than
/// run Jinja, Sluice recognises the three families batch users meet and renders
/// them itself, exactly as those templates do for text messages.
public enum ChatTemplate: String, Sendable, CaseIterable {
    /// `<start_of_turn>user … <end_of_turn>`; system text is prepended to the first user turn.
    case gemma
    /// `<|im_start|>role … <|im_end|>` (Qwen and many others).
    case chatml
    /// `<|start_header_id|>role<|end_header_id|> … <|eot_id|>`.
    case llama3

    /// Picks the template from `tokenizer.chat_template` when present, else from the architecture.
    public static func detect(jinja: String?, architecture: String, hasToken: (String) -> Bool) -> ChatTemplate? {
        if let jinja {
            if jinja.contains("<start_of_turn>") { return .gemma }
            if jinja.contains("<|start_header_id|>") { return .llama3 }
            if jinja.contains("<|im_start|>") { return .chatml }
        }
        if architecture.hasPrefix("gemma") { return .gemma }
        if hasToken("<|start_header_id|>") { return .llama3 }
        if hasToken("<|im_start|>") || architecture.hasPrefix("qwen") { return .chatml }
        return nil
    }

    /// The prompt text for `messages`, ending where the assistant's reply begins.
    /// Special markers appear as text: tokenize it with special-token parsing on.
    /// The beginning-of-sequence token is not included; the tokenizer adds it.
    public func render(_ messages: [ChatMessage]) -> String {
        switch self {
        case .gemma:
            var text = ""
            var pendingSystem: String?
            for message in messages {
                if message.role == "system" {
                    pendingSystem = (pendingSystem.map { $0 + "\n\n" } ?? "") + message.content
                    continue
                }
                var content = trimmed(message.content)
                if message.role == "user", let system = pendingSystem {
                    content = trimmed(system) + "\n\n" + content
                    pendingSystem = nil
                }
                let role = message.role == "assistant" ? "model" : "user"
                text += "<start_of_turn>\(role)\n\(content)<end_of_turn>\n"
            }
            if let system = pendingSystem {
                text += "<start_of_turn>user\n\(trimmed(system))\n\n<end_of_turn>\n"
            }
            return text + "<start_of_turn>model\n"
        case .chatml:
            var text = ""
            for message in messages {
                text += "<|im_start|>\(message.role)\n\(message.content)<|im_end|>\n"
            }
            return text + "<|im_start|>assistant\n"
        case .llama3:
            var text = ""
            for message in messages {
                text += "<|start_header_id|>\(message.role)<|end_header_id|>\n\n\(trimmed(message.content))<|eot_id|>"
            }
            return text + "<|start_header_id|>assistant<|end_header_id|>\n\n"
        }
    }

    private func trimmed(_ s: String) -> String {
        var scalars = Substring(s).unicodeScalars[...]
        while let first = scalars.first, first.properties.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.properties.isWhitespace { scalars.removeLast() }
        return String(String.UnicodeScalarView(scalars))
    }
}
