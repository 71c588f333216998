import Foundation

/// Where scripts/fetch-model installs the default model.
enum DefaultModelLocation {
    static var path: String {
        let env = ProcessInfo.processInfo.environment
        let cache: String
        if let explicit = env["SLUICE_MODEL_CACHE"] {
            cache = explicit
        } else {
            let base = env["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")
            cache = base + "/sluice/models"
        }
        return cache + "/gemma-3-270m-q4_k_m.gguf"
    }
}
