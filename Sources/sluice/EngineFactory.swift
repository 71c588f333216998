import ArgumentParser
import Foundation
import SluiceCore
import SluiceEngine
import SluiceRemote

// Owned by the lead: the built-in engine plugs in here.

/// Which engine `sluice work` drives.
enum EngineKind: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// The in-process CPU engine running a GGUF model.
    case builtin
    /// A remote OpenAI-compatible server at --base-url.
    case openai

    static let defaultKind: EngineKind = .builtin
}

/// Everything `makeEngine` needs, gathered from `sluice work`'s flags and the environment.
struct EngineOptions: Sendable {
    var kind: EngineKind
    /// --base-url (openai).
    var baseURL: String?
    /// --concurrency: requests in flight (openai) or sequences per batch (builtin); nil picks the engine's default.
    var concurrency: Int?
    /// --model: a model name sent to the server (openai) or a GGUF path/name (builtin).
    var model: String?
    /// The API key from the environment variable --api-key-env names.
    var apiKey: String?
    /// --request-timeout in seconds (openai).
    var requestTimeout: Double
    /// --threads (builtin): compute threads; nil uses every core.
    var threads: Int? = nil
    /// --chat-template (builtin): a built-in format or Jinja file instead of the model's template.
    var chatTemplate: ChatTemplateOverride? = nil
    /// --context-length (builtin): caps the model's context per sequence.
    var contextLength: Int? = nil
    /// --kv-memory (builtin): the KV cache budget, e.g. "2G" or "512M".
    var kvMemory: String? = nil
    /// builtin: share the KV blocks of common prompt prefixes (--no-prefix-sharing turns it off).
    var prefixSharing = true
    /// builtin: how often the engine publishes checkpoints for the worker (nil: the engine's default).
    var checkpointPublishInterval: Duration? = nil
    /// --speculate (builtin): prompt-lookup speculative decoding on or off (nil: the engine's default).
    var speculate: SpeculateChoice? = nil
    /// --draft-model (builtin): a smaller model with the same vocabulary that drafts tokens.
    var draftModel: String? = nil
    /// --draft-tokens (builtin): the most draft tokens a sequence verifies per step.
    var draftTokens: Int? = nil
    /// --precision (builtin): how matrix products treat activations (nil: the model's automatic choice).
    var precision: MatmulPrecision? = nil
    /// --embedding-model (builtin): the folder, GGUF file or cached name of the model for /v1/embeddings lines (nil: the default).
    var embeddingModel: String? = nil
    /// --pooling (builtin): how the embedding model pools token states (nil: the model's own).
    var embeddingPooling: EmbeddingPooling? = nil

    /// How the embedding model loads: --pooling, and --precision for a GGUF decoder (as for generation).
    var embeddingSettings: EmbeddingModelSettings {
        EmbeddingModelSettings(pooling: embeddingPooling, precision: precision)
    }
}

/// `--speculate`: where the built-in engine's speculative decoding drafts come from.
enum SpeculateChoice: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// Prompt lookup: continue the text the way it continued after the same tokens earlier.
    case ngram
    /// No speculation.
    case off
}

/// Parses a byte size: a number with an optional K, M, G or T suffix (powers of 1024), or an optional B/iB.
func parseByteSize(_ text: String) -> Int? {
    var digits = text.trimmingCharacters(in: .whitespaces).uppercased()
    for suffix in ["IB", "B"] where digits.hasSuffix(suffix) && digits.count > suffix.count { digits.removeLast(suffix.count) }
    let scale: Double
    switch digits.last {
    case "K": scale = 1024
    case "M": scale = 1_048_576
    case "G": scale = 1_073_741_824
    case "T": scale = 1_099_511_627_776
    default: scale = 1
    }
    if scale > 1 { digits.removeLast() }
    guard let value = Double(digits), value > 0, value * scale < 1e18 else { return nil }
    return Int(value * scale)
}

/// `--chat-template NAME|FILE`, with the reason when it is neither.
func parseChatTemplate(_ argument: String) throws -> ChatTemplateOverride {
    do {
        return try ChatTemplateOverride(parsing: argument)
    } catch {
        throw ValidationError(error.description)
    }
}

/// Builds the engine `sluice work` drives.
func makeEngine(_ options: EngineOptions) throws -> any InferenceEngine {
    switch options.kind {
    case .builtin:
        // /v1/embeddings lines go to an embedding engine, loaded at the first such line.
        let generation = try makeBuiltinEngine(options)
        let embeddingModel = options.embeddingModel
        var embeddingOptions = EmbeddingEngineOptions()
        if let threads = options.threads { embeddingOptions.threads = threads }
        let (engineOptions, settings) = (embeddingOptions, options.embeddingSettings)
        return EndpointRouter(generation: generation) {
            try EmbeddingEngine(path: try ModelCache().resolveEmbeddingModel(embeddingModel), settings: settings, options: engineOptions)
        }
    case .openai:
        guard let text = options.baseURL, !text.isEmpty else {
            throw CLIError.usage("--engine openai needs --base-url URL (or SLUICE_BASE_URL), e.g. --base-url http://127.0.0.1:8080")
        }
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
              url.host != nil else {
            throw CLIError.usage("--base-url \(text) is not an http:// or https:// URL")
        }
        let concurrency = options.concurrency ?? 16
        guard concurrency >= 1 else { throw CLIError.usage("--concurrency must be at least 1 (got \(concurrency))") }
        guard url.port.map({ (1...65535).contains($0) }) ?? true else {
            throw CLIError.usage("--base-url \(text): the port must be from 1 to 65535")
        }
        let configuration = OpenAIEngineConfiguration(
            baseURL: url, capacity: concurrency, requestTimeout: options.requestTimeout,
            apiKey: options.apiKey, model: options.model)
        if let problem = configuration.apiKeyProblem { throw CLIError.usage(problem) }
        return OpenAIEngine(configuration: configuration)
    }
}

/// The built-in generation engine of `engine`, if it is one (alone or behind the endpoint router).
func builtinGenerationEngine(_ engine: any InferenceEngine) -> BuiltinEngine? {
    (engine as? EndpointRouter)?.generation as? BuiltinEngine ?? engine as? BuiltinEngine
}

/// What the vectors of `--embedding-model` depend on, for the result cache: the identity the
/// embedding engine records in its checkpoints (the weights' content fingerprint, the pooling and,
/// for a GGUF decoder, the precision), read from the model's headers without loading it; a marker
/// when it cannot be read (then the embeddings lines fail and nothing is cached).
func embeddingModelIdentity(_ options: EngineOptions) -> String {
    guard let path = try? ModelCache().resolveEmbeddingModel(options.embeddingModel),
          let identity = try? EmbeddingModel.outputIdentity(path: path, settings: options.embeddingSettings) else {
        return "embedding-model=unavailable"
    }
    return identity
}

/// Loads the model `--model` names (default: the cached default model) into the built-in engine.
func makeBuiltinEngine(_ options: EngineOptions) throws -> BuiltinEngine {
    var settings = BuiltinEngineOptions()
    if let threads = options.threads {
        guard threads >= 1 else { throw CLIError.usage("--threads must be at least 1 (got \(threads))") }
        settings.threads = threads
    }
    if let concurrency = options.concurrency {
        guard concurrency >= 1 else { throw CLIError.usage("--concurrency must be at least 1 (got \(concurrency))") }
        settings.maxSequences = concurrency
    }
    if let contextLength = options.contextLength {
        guard contextLength >= 16 else { throw CLIError.usage("--context-length must be at least 16 (got \(contextLength))") }
        settings.contextLength = contextLength
    }
    if let kvMemory = options.kvMemory {
        guard let bytes = parseByteSize(kvMemory), bytes >= 1 << 20 else {
            throw CLIError.usage("--kv-memory must be a size of at least 1M, like 512M or 4G (got \(kvMemory))")
        }
        settings.kvMemoryBytes = bytes
    }
    settings.chatTemplate = options.chatTemplate
    settings.prefixSharing = options.prefixSharing
    settings.precision = options.precision
    if let interval = options.checkpointPublishInterval { settings.checkpointInterval = interval }
    switch options.speculate {
    case .ngram?: settings.speculation.mode = .promptLookup
    case .off?: settings.speculation.mode = .off
    case nil: break
    }
    if let draftTokens = options.draftTokens {
        guard (1...64).contains(draftTokens) else { throw CLIError.usage("--draft-tokens must be 1 to 64 (got \(draftTokens))") }
        settings.speculation.maxDraftTokens = draftTokens
    }
    if let draftModel = options.draftModel {
        if options.speculate == .off { throw CLIError.usage("--draft-model drafts for speculative decoding; it contradicts --speculate off") }
        do {
            settings.speculation.mode = .draftModel(path: try ModelCache().resolve(draftModel))
        } catch {
            throw CLIError(description: "cannot find draft model: \(error)")
        }
    }
    do {
        let path = try ModelCache().resolve(options.model)
        return try BuiltinEngine(modelPath: path, options: settings)
    } catch {
        throw CLIError(description: "cannot load model: \(error)")
    }
}
