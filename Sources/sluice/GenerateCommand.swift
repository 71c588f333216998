import ArgumentParser
import Foundation
import SluiceCore
import SluiceEngine

struct GenerateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Print a completion from the built-in engine, for a quick look at a model.",
        discussion: "The prompt is sent as a /v1/completions prompt, or as one user message with --chat."
    )

    @Argument(help: "The prompt text.")
    var prompt: String

    @Option(help: ArgumentHelp("A model file or a name in the model cache (default: the default model).", valueName: "name-or-path"))
    var model: String?

    @Option(name: .customLong("max-tokens"), help: "Tokens to generate at most.")
    var maxTokens = 64

    @Option(help: "0 for greedy decoding.")
    var temperature = 0.0

    @Option(help: "Seed for sampling with a temperature.")
    var seed: Int?

    @Flag(help: "Send the prompt as a chat message, formatted with the model's chat template.")
    var chat = false

    @Option(name: .customLong("chat-template"), help: ArgumentHelp("Chat format instead of the model's own template: gemma, chatml, llama3 or a Jinja file.", valueName: "name|file"), transform: parseChatTemplate)
    var chatTemplate: ChatTemplateOverride?

    @Option(help: "Compute threads (default: all cores).")
    var threads: Int?

    @OptionGroup var speed: BuiltinSpeedOptions

    func run() async throws {
        guard maxTokens >= 1 else { throw CLIError.usage("--max-tokens must be at least 1") }
        var options = EngineOptions(kind: .builtin, baseURL: nil, concurrency: 1, model: model, apiKey: nil,
                                    requestTimeout: 0, threads: threads, chatTemplate: chatTemplate)
        speed.apply(to: &options)
        let engine = try makeBuiltinEngine(options)
        var fields: [(key: String, value: JSON)] = [
            (key: "max_tokens", value: .int(maxTokens)),
            (key: "temperature", value: .double(temperature)),
        ]
        if let seed { fields.append((key: "seed", value: .int(seed))) }
        let endpoint: Endpoint
        if chat {
            endpoint = .chatCompletions
            fields.append((key: "messages", value: .array([.object(["role": .string("user"), "content": .string(prompt)])])))
        } else {
            endpoint = .completions
            fields.append((key: "prompt", value: .string(prompt)))
        }
        let started = ContinuousClock.now
        engine.submit(EngineRequest(id: 1, customID: "generate", endpoint: endpoint, body: .object(fields)))
        var outcome: EngineOutcome?
        for await event in engine.events {
            if case let .finished(_, result) = event { outcome = result; break }
        }
        await engine.shutdown()
        guard case let .response(status, body, usage)? = outcome else { throw CLIError(description: "the engine stopped without an answer") }
        guard status == 200 else {
            throw CLIError(description: body["error"]?["message"]?.stringValue ?? body.serialized)
        }
        let choice = body["choices"]?.arrayValue?.first
        let text = choice?["text"]?.stringValue ?? choice?["message"]?["content"]?.stringValue ?? ""
        print(chat ? text : prompt + text)
        let seconds = (ContinuousClock.now - started).inSeconds
        let speculation = engine.speculationStatistics
        let drafts = speculation.draftedTokens == 0 ? "" : ", drafts kept: \(speculation.acceptedTokens) of \(speculation.draftedTokens)"
        printNote("[\(usage.promptTokens) prompt + \(usage.completionTokens) generated tokens in \(String(format: "%.2f", seconds)) s, finish: \(choice?["finish_reason"]?.stringValue ?? "?")\(drafts)]")
    }
}
