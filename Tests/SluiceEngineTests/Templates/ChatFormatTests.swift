import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// Which chat format an engine uses, and what it does with a template's own BOS and errors.
@Suite(.ownThread)
struct ChatFormatTests {
    static let llama3 = try! Tokenizer(gguf: GGUFFile(path: Fixtures.url("tiny/llama3-bpe-f16.gguf").path))
    static let messages = [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: " Hi ")]

    @Test func theModelsOwnTemplateComesFirstAndItsLeadingBOSIsLeftToTheTokenizer() throws {
        let template = "{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content | trim }}]{% endfor %}{{ eos_token }}"
        let format = try #require(ChatFormat.choose(override: nil, modelTemplate: template, architecture: "llama", tokenizer: Self.llama3))
        #expect(format.identity == "model")
        // The tokenizer adds <|begin_of_text|> itself (add_bos), so the template's copy is dropped.
        #expect(try format.render(Self.messages) == "[system:Be brief.][user:Hi]<|eot_id|>")
    }

    @Test func overridesAndFallbacks() throws {
        let builtin = try ChatTemplateOverride(parsing: "chatml")
        #expect(ChatFormat.choose(override: builtin, modelTemplate: "{{ 'x' }}", architecture: "llama", tokenizer: Self.llama3)?.identity == "chatml")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-template-\(getpid()).jinja")
        try "{% for m in messages %}{{ m.content }}{% endfor %}".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let fromFile = try ChatTemplateOverride(parsing: file.path)
        #expect(fromFile.description.hasPrefix("file:"))
        let format = try #require(ChatFormat.choose(override: fromFile, modelTemplate: nil, architecture: "llama", tokenizer: Self.llama3))
        #expect(try format.render(Self.messages) == "Be brief. Hi ")
        // No template in the file: the hand-written format the vocabulary suggests.
        #expect(ChatFormat.choose(override: nil, modelTemplate: nil, architecture: "llama", tokenizer: Self.llama3)?.identity == "llama3")
        #expect(throws: ChatTemplateError.self) { try ChatTemplateOverride(parsing: "/no/such/template.jinja") }
        #expect(throws: ChatTemplateError.self) { try ChatTemplateOverride(parsing: file.path + ".missing") }
    }

    @Test func anUnsupportedOrRefusingTemplateIsA400NamingWhy() throws {
        let unsupported = try #require(ChatFormat.choose(override: nil, modelTemplate: "{{ messages | frobnicate }}",
                                                         architecture: "llama", tokenizer: Self.llama3))
        #expect(unsupported.problem == nil, "filters are resolved when rendering")
        do {
            _ = try unsupported.render(Self.messages)
            Issue.record("rendered")
        } catch {
            #expect(error.message.contains("unsupported filter 'frobnicate'"), "\(error.message)")
        }
        let broken = try #require(ChatFormat.choose(override: nil, modelTemplate: "{% include 'x' %}", architecture: "llama",
                                                    tokenizer: Self.llama3))
        #expect(broken.problem?.contains("unsupported statement 'include'") == true)
        let refusing = try #require(ChatFormat.choose(override: nil, modelTemplate: "{{ raise_exception('System role not supported') }}",
                                                      architecture: "llama", tokenizer: Self.llama3))
        do {
            _ = try refusing.render(Self.messages)
            Issue.record("rendered")
        } catch {
            #expect(error.message == "the chat template refused the messages: System role not supported")
        }
    }
}
