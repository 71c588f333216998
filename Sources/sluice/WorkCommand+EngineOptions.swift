import ArgumentParser

extension WorkCommand {
    /// Options that only one engine reads are refused with the other, rather than silently ignored
    /// (`--base-url` with the built-in engine, `--threads` with a remote server).
    func refuseOtherEngineOptions() throws {
        let given: [(option: String, isSet: Bool)]
        let other: EngineKind
        switch engine {
        case .builtin:
            other = .openai
            given = [("--base-url", baseURL != nil), ("--api-key-env", apiKeyEnv != nil),
                     ("--request-timeout", requestTimeout != nil)]
        case .openai:
            other = .builtin
            given = [("--threads", threads != nil), ("--chat-template", chatTemplate != nil),
                     ("--context-length", contextLength != nil), ("--kv-memory", kvMemory != nil),
                     ("--precision", speed.precision != nil), ("--speculate", speed.speculate != nil),
                     ("--draft-model", speed.draftModel != nil), ("--draft-tokens", speed.draftTokens != nil),
                     ("--no-prefix-sharing", noPrefixSharing), ("--pooling", pooling != nil)]
        }
        let refused = given.filter(\.isSet).map(\.option)
        guard refused.isEmpty else {
            let list = refused.joined(separator: ", ")
            throw ValidationError("\(list) \(refused.count == 1 ? "is an option" : "are options") of --engine \(other.rawValue), not of --engine \(engine.rawValue)")
        }
    }
}
