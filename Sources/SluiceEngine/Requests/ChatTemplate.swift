import Foundation
import SluiceCore

/// The chat formats Sluice writes by hand, for models whose file carries no Jinja
/// template (`tokenizer.chat_template`): they render text messages exactly as those
/// families' templates do. A model's own template, when it has one, is used instead.
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

/// What `--chat-template` names: one of the hand-written formats, or a Jinja template file.
public struct ChatTemplateOverride: Sendable, CustomStringConvertible {
    enum Source: Sendable {
        case builtin(ChatTemplate)
        case jinja(JinjaTemplate, fingerprint: String)
    }

    let source: Source

    public static func builtin(_ template: ChatTemplate) -> ChatTemplateOverride { ChatTemplateOverride(source: .builtin(template)) }

    /// A Jinja template's text (from a file); throws naming what it cannot compile.
    public init(jinja text: String) throws(JinjaError) {
        source = .jinja(try JinjaTemplate(text), fingerprint: String(Self.fingerprint(text), radix: 16))
    }

    private init(source: Source) { self.source = source }

    /// `NAME` (gemma, chatml, llama3) or the path of a Jinja template file.
    public init(parsing argument: String) throws(ChatTemplateError) {
        if let builtin = ChatTemplate(rawValue: argument) {
            self.init(source: .builtin(builtin))
            return
        }
        guard let data = FileManager.default.contents(atPath: argument) else {
            throw ChatTemplateError("--chat-template \(argument) is neither a built-in format (\(ChatTemplate.allCases.map(\.rawValue).joined(separator: ", "))) nor a readable file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ChatTemplateError("--chat-template \(argument) is not UTF-8 text")
        }
        do {
            try self.init(jinja: text)
        } catch {
            throw ChatTemplateError("--chat-template \(argument): \(error)")
        }
    }

    /// The name recorded in engine identities: the format's name, or `file:` and a hash of the text.
    public var description: String {
        switch source {
        case let .builtin(template): template.rawValue
        case let .jinja(_, fingerprint): "file:" + fingerprint
        }
    }

    private static func fingerprint(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return hash
    }
}

/// A `--chat-template` argument that names no format and no usable file.
public struct ChatTemplateError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// How an engine turns chat messages into prompt text: the override, else the model's own
/// Jinja template, else a hand-written format recognised from the model.
public struct ChatFormat: Sendable {
    enum Renderer: Sendable {
        case builtin(ChatTemplate)
        case jinja(JinjaTemplate)
        /// The model's template uses something the interpreter does not support.
        case unusable(JinjaError)
    }

    let renderer: Renderer
    /// Names the format in engine identities and logs: a hand-written format's name,
    /// `model` (the model's own template: the model's fingerprint covers its text) or `file:HASH`.
    public let identity: String
    /// The text of the tokenizer's beginning- and end-of-sequence tokens (`bos_token`, `eos_token`).
    let beginText: String?
    let endText: String?
    /// Whether the tokenizer adds those tokens itself: a template's own copy is then removed,
    /// as llama.cpp does, so the prompt does not start with two.
    let tokenizerAddsBegin: Bool
    let tokenizerAddsEnd: Bool

    /// Chooses the format for a model; nil when nothing fits (chat requests are then refused).
    public static func choose(override: ChatTemplateOverride?, modelTemplate: String?, architecture: String,
                              tokenizer: Tokenizer) -> ChatFormat? {
        let renderer: Renderer
        let identity: String
        switch override?.source {
        case let .builtin(template)?:
            (renderer, identity) = (.builtin(template), template.rawValue)
        case let .jinja(template, _)?:
            (renderer, identity) = (.jinja(template), override!.description)
        case nil:
            if let modelTemplate {
                do {
                    renderer = .jinja(try JinjaTemplate(modelTemplate))
                } catch {
                    renderer = .unusable(error)
                }
                identity = "model"
            } else {
                guard let template = ChatTemplate.detect(jinja: nil, architecture: architecture,
                                                         hasToken: { tokenizer.token(for: $0) != nil }) else { return nil }
                (renderer, identity) = (.builtin(template), template.rawValue)
            }
        }
        return ChatFormat(renderer: renderer, identity: identity,
                          beginText: tokenizer.bos.flatMap { tokenizer.text(of: $0) },
                          endText: tokenizer.eos.flatMap { tokenizer.text(of: $0) },
                          tokenizerAddsBegin: tokenizer.addsBOS, tokenizerAddsEnd: tokenizer.addsEOS)
    }

    /// Why chat requests cannot be rendered, when the model's template is outside the supported subset.
    public var problem: String? {
        if case let .unusable(error) = renderer { return "the model's chat template is not supported: \(error)" }
        return nil
    }

    /// The prompt text for `messages`, ending where the assistant's reply begins. Special
    /// markers appear as text (tokenize with special-token parsing on); a beginning-of-sequence
    /// marker the tokenizer adds anyway is left out.
    public func render(_ messages: [ChatMessage]) throws(RequestError) -> String {
        switch renderer {
        case let .builtin(template):
            return template.render(messages)
        case let .unusable(error):
            throw RequestError("the model's chat template is not supported (\(error)); use --chat-template NAME|FILE", parameter: "messages")
        case let .jinja(template):
            var variables: [String: JSON] = [
                "messages": .array(messages.map { .object([("role", .string($0.role)), ("content", .string($0.content))]) }),
                "add_generation_prompt": .bool(true),
                "tools": .null,
                "documents": .null,
            ]
            if let beginText { variables["bos_token"] = .string(beginText) }
            if let endText { variables["eos_token"] = .string(endText) }
            var text: String
            do {
                text = try template.render(variables)
            } catch {
                if error.raisedByTemplate {
                    throw RequestError("the chat template refused the messages: \(error.message)", parameter: "messages")
                }
                throw RequestError("the chat template failed: \(error)", parameter: "messages")
            }
            if tokenizerAddsBegin, let beginText, !beginText.isEmpty, text.hasPrefix(beginText) {
                text.removeFirst(beginText.count)
            }
            if tokenizerAddsEnd, let endText, !endText.isEmpty, text.hasSuffix(endText) {
                text.removeLast(endText.count)
            }
            return text
        }
    }
}
