import ArgumentParser
import Foundation
import SluiceEngine

struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "List the GGUF models in the model cache.",
        discussion: "The cache is $SLUICE_MODEL_CACHE, else ~/.cache/sluice/models. scripts/fetch-model installs the default model there."
    )

    @Flag(help: "Also read each file's architecture, size and tensor types.")
    var details = false

    func run() throws {
        let cache = ModelCache()
        let entries = cache.list()
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
