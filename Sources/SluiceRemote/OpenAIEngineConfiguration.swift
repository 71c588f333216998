import Foundation

/// How to reach an OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp's server, OpenAI itself).
public struct OpenAIEngineConfiguration: Sendable {
    /// The server's root, with or without a trailing `/v1` (for example `http://127.0.0.1:8080`).
    public var baseURL: URL
    /// Requests kept in flight at once.
    public var capacity: Int
    /// Seconds one HTTP request may take, from sending to the last byte of the answer.
    public var requestTimeout: Double
    /// Sent as `Authorization: Bearer <key>` when set.
    public var apiKey: String?
    /// Replaces each body's `model` when set (servers often name their model differently from the batch file).
    public var model: String?

    public init(baseURL: URL, capacity: Int = 16, requestTimeout: Double = 600, apiKey: String? = nil, model: String? = nil) {
        self.baseURL = baseURL
        self.capacity = max(1, capacity)
        self.requestTimeout = requestTimeout
        self.apiKey = apiKey
        self.model = model
    }

    /// The full URL of an endpoint, tolerating a base URL that already ends in `/v1` or `/`.
    public func url(for path: String) -> URL {
        var base = baseURL.absoluteString
        while base.hasSuffix("/") { base.removeLast() }
        var suffix = path
        if base.hasSuffix("/v1"), suffix.hasPrefix("/v1/") { suffix.removeFirst(3) }
        return URL(string: base + suffix) ?? baseURL.appendingPathComponent(path)
    }
}
