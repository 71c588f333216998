import ArgumentParser
import SluiceEngine

/// The built-in engine's speed settings, shared by `sluice work` and `sluice generate`.
struct BuiltinSpeedOptions: ParsableArguments {
    @Option(help: ArgumentHelp("builtin: how matrix products treat activations: f32 (float32, within ~1e-5 nats of a float64 pass), int16 (16-bit integers per block, within ~1e-3 nats), int8 (8 bits per block as llama.cpp does: fastest, with about llama.cpp's error) or auto (the default: int16 where the CPU has AVX2, int8 for models whose blocks hold 500M weights or more).", valueName: "auto|f32|int16|int8"))
    var precision: PrecisionSetting?

    @Option(help: ArgumentHelp("builtin: speculative decoding by prompt lookup (ngram) or none (off); output is identical either way.", valueName: "ngram|off"))
    var speculate: SpeculateChoice?

    @Option(name: .customLong("draft-model"), help: ArgumentHelp("builtin: a smaller model with the same vocabulary that drafts tokens for speculative decoding.", valueName: "name-or-path"))
    var draftModel: String?

    @Option(name: .customLong("draft-tokens"), help: ArgumentHelp("builtin: the most draft tokens a sequence verifies per step (default 8).", valueName: "n"))
    var draftTokens: Int?

    func apply(to options: inout EngineOptions) {
        options.precision = precision?.matmul
        options.speculate = speculate
        options.draftModel = draftModel
        options.draftTokens = draftTokens
    }
}

/// `--precision`: a precision, or the model's automatic choice.
enum PrecisionSetting: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// `MatmulPrecision.automatic(for:)`: int16, or int8 for models whose blocks hold 500M weights or more.
    case auto
    case f32
    case int16
    case int8

    /// The precision asked for; nil for the model's automatic choice.
    var matmul: MatmulPrecision? { MatmulPrecision(rawValue: rawValue) }
}

extension EmbeddingPooling: ExpressibleByArgument {}
