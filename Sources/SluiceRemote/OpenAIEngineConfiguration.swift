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

    /// - Parameter apiKey: surrounding whitespace is dropped (a key file or secret often ends in a
    ///   newline, which no HTTP header may hold).
    public init(baseURL: URL, capacity: Int = 16, requestTimeout: Double = 600, apiKey: String? = nil, model: String? = nil) {
        self.baseURL = baseURL
        self.capacity = max(1, capacity)
        self.requestTimeout = requestTimeout
        self.apiKey = apiKey?.trimmingCharacters(in: .whitespacesAndNewlines)
        self.model = model
    }

    /// Why the API key cannot be sent in a header (control characters inside it), if it cannot.
    public var apiKeyProblem: String? {
        guard let apiKey, apiKey.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return nil }
        return "the API key holds a control character (a line break or tab inside it), which no HTTP header may carry"
    }

    /// The base URL as logs, errors and the shared queue's worker list show it: user information
    /// (`http://user:secret@host`, which the HTTP client sends as Basic credentials) is left out.
    public var displayedBaseURL: String {
        guard var parts = URLComponents(url: baseURL, resolvingAgainstBaseURL: false), parts.user != nil || parts.password != nil else {
            return baseURL.absoluteString
        }
        parts.user = nil
        parts.password = nil
        return parts.string ?? "(the --base-url server)"
    }

    /// A proxy to reach a server through, as curl reads it from the environment.
    public struct Proxy: Sendable, Equatable {
        public enum Kind: Sendable, Equatable { case http, socks5 }
        public var kind: Kind
        public var host: String
        public var port: Int
        public var user: String?
        public var password: String?
    }

    /// The proxy the environment names for the base URL, as curl (and so the FoundationNetworking
    /// client before) reads it: `http_proxy` for http (lower case only, as curl: a CGI's
    /// `HTTP_PROXY` comes from a request header), `https_proxy` or `HTTPS_PROXY` for https, then
    /// `all_proxy`/`ALL_PROXY`; none for hosts `no_proxy`/`NO_PROXY` lists (`*`, a host or a domain
    /// suffix, with or without a leading dot). A proxy URL without a scheme is an HTTP proxy;
    /// `socks5://` and `socks5h://` are SOCKS5 (without credentials); other schemes are ignored.
    /// The port defaults to 1080, as curl's.
    public static func proxy(for url: URL, environment: [String: String]) -> Proxy? {
        guard let scheme = url.scheme?.lowercased(), let host = url.host?.lowercased() else { return nil }
        let noProxy = environment["no_proxy"] ?? environment["NO_PROXY"] ?? ""
        for entry in noProxy.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) where !entry.isEmpty {
            if entry == "*" { return nil }
            let domain = String(entry.drop(while: { $0 == "." }).split(separator: ":").first ?? "")
            let bare = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            if bare == domain || bare.hasSuffix("." + domain) { return nil }
        }
        let names = scheme == "https" ? ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] : ["http_proxy", "all_proxy", "ALL_PROXY"]
        guard let value = names.lazy.compactMap({ environment[$0] }).first(where: { !$0.isEmpty }) else { return nil }
        let text = value.contains("://") ? value : "http://" + value
        guard let parts = URLComponents(string: text), let proxyHost = parts.host, !proxyHost.isEmpty else { return nil }
        let kind: Proxy.Kind
        switch parts.scheme?.lowercased() {
        case "http": kind = .http
        case "socks5", "socks5h": kind = .socks5
        default: return nil
        }
        return Proxy(kind: kind, host: proxyHost, port: parts.port ?? 1080,
                     user: parts.user?.removingPercentEncoding, password: parts.password?.removingPercentEncoding)
    }

    /// `user:password` of the base URL, base64-encoded for a Basic `Authorization` header (an API
    /// key, when set, takes its place).
    public var basicCredentials: String? {
        guard let parts = URLComponents(url: baseURL, resolvingAgainstBaseURL: false), parts.user != nil || parts.password != nil else {
            return nil
        }
        let pair = (parts.user ?? "") + ":" + (parts.password ?? "")
        return Data(pair.utf8).base64EncodedString()
    }

    /// The full URL of an endpoint, tolerating a base URL that already ends in `/v1` or `/`; the base
    /// URL's query stays a query, and its user information and fragment are not part of it.
    public func url(for path: String) -> URL {
        guard var parts = URLComponents(url: baseURL, resolvingAgainstBaseURL: false) else { return baseURL.appendingPathComponent(path) }
        var base = parts.percentEncodedPath
        while base.hasSuffix("/") { base.removeLast() }
        var suffix = path
        if base.hasSuffix("/v1"), suffix.hasPrefix("/v1/") { suffix.removeFirst(3) }
        parts.percentEncodedPath = base + suffix
        parts.user = nil
        parts.password = nil
        parts.fragment = nil
        return parts.url ?? baseURL.appendingPathComponent(path)
    }
}
