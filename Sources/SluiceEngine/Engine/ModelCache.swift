import Foundation

/// The folder where Sluice keeps GGUF models, and how `--model` names resolve.
public struct ModelCache: Sendable {
    /// The model `sluice work` uses when none is named (installed by scripts/fetch-model).
    public static let defaultModelFile = "gemma-3-270m-q4_k_m.gguf"

    public let directory: URL

    /// `$SLUICE_MODEL_CACHE`, else `$XDG_CACHE_HOME/sluice/models`, else `~/.cache/sluice/models`.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let explicit = environment["SLUICE_MODEL_CACHE"], !explicit.isEmpty {
            directory = URL(fileURLWithPath: explicit)
        } else {
            let cacheHome = environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 }
                ?? ((environment["HOME"] ?? NSHomeDirectory()) + "/.cache")
            directory = URL(fileURLWithPath: cacheHome).appendingPathComponent("sluice/models")
        }
    }

    public struct Entry: Sendable {
        public var name: String
        public var path: String
        public var bytes: Int
    }

    /// The GGUF files in the cache, by name.
    public func list() -> [Entry] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".gguf") }.sorted().map { name in
            let path = directory.appendingPathComponent(name).path
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            return Entry(name: name, path: path, bytes: size)
        }
    }

    /// Resolves `--model`: an existing path, else a file in the cache by name (with or
    /// without `.gguf`), else the one cached file whose name starts with it. nil: the default model.
    public func resolve(_ model: String?) throws -> String {
        let wanted = model ?? Self.defaultModelFile
        if model != nil, wanted.contains("/") || FileManager.default.fileExists(atPath: wanted) {
            guard FileManager.default.fileExists(atPath: wanted) else { throw ModelLoadError("no model file at \(wanted)") }
            return wanted
        }
        let entries = list()
        if let exact = entries.first(where: { $0.name == wanted || $0.name == wanted + ".gguf" }) { return exact.path }
        let prefixed = entries.filter { $0.name.hasPrefix(wanted) }
        if prefixed.count == 1 { return prefixed[0].path }
        if prefixed.count > 1 {
            throw ModelLoadError("model name '\(wanted)' matches several cached models: \(prefixed.map(\.name).joined(separator: ", "))")
        }
        let hint = model == nil ? "run scripts/fetch-model to install the default model" : "pass a path to a .gguf file, or see `sluice models`"
        throw ModelLoadError("model '\(wanted)' is not in the model cache (\(directory.path)); \(hint)")
    }
}
