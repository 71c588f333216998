import SluiceCore
import SluiceEngine
import SluiceQueue

/// Says which requests an engine answers deterministically, and how a cached answer becomes another request's answer.
public protocol ResultCacheKeying: Sendable {
    /// Everything besides the engine's identity that the response depends on; nil when
    /// the request is not deterministic (then it is never cached).
    func material(for request: EngineRequest) -> String?
    /// A cached body, turned into the response to `request`.
    func adapt(_ body: JSON, to request: EngineRequest) -> JSON
}

/// Which results a worker may take from and put into the store's result cache.
public struct ResultCachePolicy: Sendable {
    /// Identifies the engine: model file identity and the settings that change outputs.
    public var namespace: String
    public var keying: any ResultCacheKeying

    public init(namespace: String, keying: any ResultCacheKeying) {
        self.namespace = namespace
        self.keying = keying
    }

    /// The cache key of a request (hex SHA-256), or nil when it must be computed.
    public func key(for request: EngineRequest) -> String? {
        guard let material = keying.material(for: request) else { return nil }
        var hasher = SHA256()
        hasher.update("sluice-result-cache-v1\n" + namespace + "\n" + material)
        return hasher.hexDigest()
    }
}

/// The built-in engine: greedy requests by body, sampled ones (seeded or not) by custom id and body.
public struct BuiltinResultCacheKeying: ResultCacheKeying {
    /// What embedding vectors depend on (the embedding model's identity); generation ignores it.
    public var embeddingIdentity: String

    public init(embeddingIdentity: String = "") { self.embeddingIdentity = embeddingIdentity }

    public func material(for request: EngineRequest) -> String? {
        guard let material = BuiltinResultIdentity.material(for: request) else { return nil }
        return request.endpoint == .embeddings ? embeddingIdentity + "\n" + material : material
    }
    public func adapt(_ body: JSON, to request: EngineRequest) -> JSON { BuiltinResultIdentity.adapt(body, to: request) }
}

/// A remote server: only greedy (temperature 0) or seeded requests, and only as far as the
/// server itself is deterministic (many are not across batch sizes). The cached body keeps
/// the server's response id.
public struct RemoteResultCacheKeying: ResultCacheKeying {
    public init() {}

    public func material(for request: EngineRequest) -> String? {
        guard case .object = request.body else { return nil }
        func value(_ key: String) -> JSON? { request.body[key] }
        if value("stream")?.boolValue == true { return nil }
        if let n = value("n")?.intValue, n != 1 { return nil }
        let greedy = value("temperature")?.doubleValue == 0
        let seeded = value("seed").map { !$0.isNull } ?? false
        guard greedy || seeded else { return nil }
        return request.endpoint.rawValue + "\n" + BuiltinResultIdentity.canonicalText(request.body)
    }

    public func adapt(_ body: JSON, to request: EngineRequest) -> JSON { body }
}
