import SluiceCore

/// What a built-in engine response depends on, for the runner's result cache.
///
/// Greedy requests depend only on the model and the (canonical) body. Seeded
/// requests draw from a stream keyed by the endpoint and the body text, so they are
/// identical for the same body bytes; unseeded sampled requests draw from a stream
/// that also includes the custom id, so they match only the same custom id and body.
/// The response id is derived from the request, so a cached body is given the id the
/// request would have had: exports are byte-identical with and without the cache.
public enum BuiltinResultIdentity {
    /// Text naming everything besides the model that the response depends on; nil for
    /// bodies the engine rejects (their 400 answers are cheap and not worth caching).
    public static func material(for request: EngineRequest) -> String? {
        // Embeddings are deterministic: the vectors depend on the body only (and the embedding model).
        if request.endpoint == .embeddings {
            guard case .object = request.body else { return nil }
            return "embeddings\n" + canonicalText(request.body)
        }
        guard let parameters = try? GenerationRequest(endpoint: request.endpoint, body: request.body) else { return nil }
        if parameters.sampling.isGreedy {
            return "greedy\n" + request.endpoint.rawValue + "\n" + canonicalText(request.body)
        }
        if parameters.hasSeed {
            return "seeded\n" + request.endpoint.rawValue + "\n" + request.body.serialized
        }
        return "sampled\n" + request.endpoint.rawValue + "\n" + request.customID + "\u{0}" + request.body.serialized
    }

    /// `body` (a cached response to an identical request) as the response to `request`.
    public static func adapt(_ body: JSON, to request: EngineRequest) -> JSON {
        guard case let .object(fields) = body else { return body }
        let prefix: String
        switch request.endpoint {
        case .chatCompletions: prefix = "chatcmpl-"
        case .completions: prefix = "cmpl-"
        case .responses: prefix = "resp_"
        case .embeddings: return body  // an embeddings answer has no id
        }
        return .object(fields.map { field in
            field.key == "id" ? (key: "id", value: .string(prefix + responseID(for: request))) : field
        })
    }

    /// The id part of a response to `request`: a pure function of the request.
    static func responseID(for request: EngineRequest) -> String {
        String(CounterRandom.key(for: request.customID + "\u{0}" + request.body.serialized), radix: 16)
    }

    /// JSON text with object keys sorted (recursively), so key order does not matter.
    public static func canonicalText(_ value: JSON) -> String {
        canonical(value).serialized
    }

    private static func canonical(_ value: JSON) -> JSON {
        switch value {
        case let .array(items): return .array(items.map(canonical))
        case let .object(fields):
            return .object(fields.map { (key: $0.key, value: canonical($0.value)) }
                .sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) })
        default: return value
        }
    }
}
