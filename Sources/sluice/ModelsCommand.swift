import ArgumentParser
import Foundation
import SluiceCore
import SluiceEngine

struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "List the GGUF models in the model cache.",
        discussion: "The cache is $SLUICE_MODEL_CACHE, else ~/.cache/sluice/models. scripts/fetch-model installs the default model there."
    )

    @Flag(help: "Also read each file's architecture, size and tensor types.")
    var details = false

    @Flag(help: "Print a JSON object ({cache, models: [...]}) instead of text.")
    var json = false

    func run() throws {
        let cache = ModelCache()
        let entries = cache.list()
        if json {
            let models = entries.map { entry -> JSON in
                var model = JSON.object([
                    "name": .string(entry.name), "path": .string(entry.path), "bytes": .int(entry.bytes),
                    "default": .bool(entry.name == ModelCache.defaultModelFile),
                ])
                if details {
                    do {
                        let file = try GGUFFile(path: entry.path)
                        model = model.setting("architecture", to: file.architecture.map(JSON.string) ?? .null)
                            .setting("tensors", to: .int(file.tensors.count))
                            .setting("tensor_types", to: .array(Set(file.tensors.map(\.type.name)).sorted().map(JSON.string)))
                    } catch {
                        model = model.setting("error", to: .string("\(error)"))
                    }
                }
                return model
            }
            print(JSON.object(["cache": .string(cache.directory.path), "models": .array(models)]).serialized)
            return
        }
        print("model cache: \(cache.directory.path)")
        if entries.isEmpty {
            print("(empty: run scripts/fetch-model to install the default model, \(ModelCache.defaultModelFile))")
            return
        }
        for entry in entries {
            let marker = entry.name == ModelCache.defaultModelFile ? " (default)" : ""
            var line = "\(entry.name)\(marker)  \(String(format: "%.1f", Double(entry.bytes) / 1_048_576)) MiB"
            if details {
                do {
                    let file = try GGUFFile(path: entry.path)
                    let types = Set(file.tensors.map(\.type.name)).sorted().joined(separator: ",")
                    line += "  \(file.architecture ?? "?")  \(file.tensors.count) tensors  [\(types)]"
                } catch {
                    line += "  unreadable: \(error)"
                }
            }
            print(line)
        }
    }
}
