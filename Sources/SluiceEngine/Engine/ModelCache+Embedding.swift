import Foundation

extension ModelCache {
    /// The embedding model `sluice work --embedding-model` uses when named `default`
    /// (installed by `scripts/fetch-model --embedding`): sentence-transformers' all-MiniLM-L6-v2.
    public static let defaultEmbeddingModel = "all-minilm-l6-v2"

    /// Resolves an embedding model: an existing folder (with `config.json`, `model.safetensors`
    /// and `tokenizer.json`) or GGUF file, else a folder in the cache by name, else a cached GGUF
    /// model as `--model` names one (see `resolve`); nil: the default one.
    public func resolveEmbeddingModel(_ model: String?) throws -> String {
        let wanted = model ?? Self.defaultEmbeddingModel
        var isDirectory: ObjCBool = false
        let candidates = wanted.contains("/") ? [wanted] : [wanted, directory.appendingPathComponent(wanted).path]
        for candidate in candidates where FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory) && isDirectory.boolValue {
            return candidate
        }
        if model == nil {
            throw ModelLoadError("the default embedding model is not installed in \(directory.path): run scripts/fetch-model --embedding")
        }
        // A GGUF decoder model: a path, or a name in the cache as --model takes it.
        if let file = try? resolve(wanted) { return file }
        throw ModelLoadError("no embedding model '\(wanted)': not a sentence-transformers folder nor a GGUF file (a path, or a name in \(directory.path))")
    }
}
