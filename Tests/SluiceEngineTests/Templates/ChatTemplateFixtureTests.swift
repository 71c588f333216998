import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// Sluice's Jinja interpreter against Python's jinja2 as transformers renders chat templates:
/// the real templates of the common model families (Fixtures/chat-templates, SOURCES.md says
/// where each is from) with several message sets, with and without the generation prompt.
/// The expected texts come from scripts/make-chat-template-fixtures.
@Suite(.ownThread)
struct ChatTemplateFixtureTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var template: String
        var messages: String
        var addGenerationPrompt: Bool
        var variables: [String: JSON]
        var expected: String?
        var error: String?
        var testDescription: String { "\(template) \(messages) generation=\(addGenerationPrompt)" }
    }

    static let fixture = try! Fixtures.json("chat-templates/expected.json")

    static let cases: [Case] = {
        let sets = fixture["message_sets"]!.objectValue!
        return fixture["cases"]!.arrayValue!.map { entry in
            let setName = entry["messages"]!.stringValue!
            var variables: [String: JSON] = [
                "messages": sets.first { $0.key == setName }!.value,
                "add_generation_prompt": entry["add_generation_prompt"]!,
                "tools": .null, "documents": .null,
            ]
            for token in ["bos_token", "eos_token"] where entry[token]?.stringValue != nil { variables[token] = entry[token]! }
            return Case(template: entry["template"]!.stringValue!, messages: setName,
                        addGenerationPrompt: entry["add_generation_prompt"]!.boolValue!, variables: variables,
                        expected: entry["expected"]?.stringValue, error: entry["error"]?.stringValue)
        }
    }()

    @Test func everyFamilyIsCovered() {
        let templates = Set(Self.cases.map(\.template))
        for family in ["llama-2", "llama-3-", "llama-3.1", "mistral", "qwen-2", "qwen-3", "gemma-2", "gemma-3", "phi-3", "smollm", "tinyllama"] {
            #expect(templates.contains { $0.hasPrefix(family) }, "no fixture for \(family)")
        }
        #expect(Self.cases.count >= 200)
    }

    @Test(arguments: cases)
    func rendersAsJinja2Does(_ test: Case) throws {
        let source = try String(contentsOf: Fixtures.url("chat-templates/\(test.template)"), encoding: .utf8)
        let template = try JinjaTemplate(source)
        let now = Date(timeIntervalSince1970: Self.fixture["now"]!.doubleValue!)
        do {
            let rendered = try template.render(test.variables, now: now)
            #expect(test.error == nil, "jinja2 raised \(test.error ?? "")")
            #expect(rendered == test.expected)
        } catch {
            #expect(error.raisedByTemplate, "\(error)")
            #expect(error.message == test.error, "\(error)")
        }
    }
}
