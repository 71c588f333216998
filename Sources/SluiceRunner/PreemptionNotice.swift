import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization

/// Which cloud's metadata protocol a preemption notice endpoint speaks.
public enum PreemptionStyle: String, Sendable, CaseIterable {
    /// EC2 spot: IMDSv2 token (PUT /latest/api/token), then GET …/spot/instance-action:
    /// 404 = nothing scheduled, 200 = the instance is about to be stopped or terminated.
    case aws
    /// GCE preemptible/spot: GET …/computeMetadata/v1/instance/preempted with
    /// `Metadata-Flavor: Google`: body `TRUE` = being preempted.
    case gcp

    /// The well-known endpoint of each cloud.
    public var defaultURL: URL {
        switch self {
        case .aws: return URL(string: "http://169.254.169.254/latest/meta-data/spot/instance-action")!
        case .gcp: return URL(string: "http://metadata.google.internal/computeMetadata/v1/instance/preempted")!
        }
    }

    /// The style a URL's path implies, if any.
    public static func implied(by url: URL) -> PreemptionStyle? {
        let path = url.path
        if path.contains("/computeMetadata/") { return .gcp }
        if path.hasPrefix("/latest/") { return .aws }
        return nil
    }
}

/// What one look at the metadata endpoint found.
public enum PreemptionCheck: Sendable, Equatable {
    case nothingScheduled
    /// A notice; the text is the endpoint's answer (for the log).
    case scheduled(String)
    /// The endpoint could not be read (the reason); polling goes on.
    case unreachable(String)
}

/// Polls a cloud metadata endpoint for a preemption notice.
public final class PreemptionNoticePoller: Sendable {
    public let url: URL
    public let style: PreemptionStyle
    public let interval: Double
    private let session: URLSession
    private let token = Mutex<(value: String, expires: Double)?>(nil)
    /// IMDSv2 tokens are asked for this long; a fresh one is fetched a minute before it ends.
    static let tokenTTL = 21600

    public init(url: URL, style: PreemptionStyle, interval: Double = 5, requestTimeout: Double = 2) {
        self.url = url
        self.style = style
        self.interval = interval
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = requestTimeout
        configuration.timeoutIntervalForResource = requestTimeout * 2
        // Metadata endpoints are link-local: a proxy from the environment would only get in the way.
        configuration.connectionProxyDictionary = [:]
        session = URLSession(configuration: configuration)
    }

    /// Polls every `interval` seconds until a notice comes (then calls `onNotice` once and stops) or the task is cancelled.
    public func start(log: WorkerLog, onNotice: @escaping @Sendable (String) -> Void) -> Task<Void, Never> {
        Task {
            var lastProblem: String?
            while !Task.isCancelled {
                switch await check() {
                case let .scheduled(detail):
                    log("preemption notice from \(url.absoluteString): \(detail)")
                    onNotice(detail)
                    return
                case .nothingScheduled:
                    if lastProblem != nil { log("preemption notice endpoint \(url.absoluteString) answers again") }
                    lastProblem = nil
                case let .unreachable(reason):
                    // One line per change, not one per poll: an endpoint that is down stays down for a while.
                    if reason != lastProblem { log("cannot read preemption notice endpoint \(url.absoluteString): \(reason) (still polling)") }
                    lastProblem = reason
                }
                try? await Task.sleep(for: .seconds(interval))
            }
        }
    }

    /// Looks once.
    public func check() async -> PreemptionCheck {
        switch style {
        case .gcp:
            var request = URLRequest(url: url)
            request.setValue("Google", forHTTPHeaderField: "Metadata-Flavor")
            guard let (status, body) = await fetch(request) else { return .unreachable("no answer") }
            let text = body.trimmingCharacters(in: .whitespacesAndNewlines)
            if status == 200 { return text.uppercased() == "TRUE" ? .scheduled(text) : .nothingScheduled }
            return .unreachable("HTTP \(status)")
        case .aws:
            var request = URLRequest(url: url)
            if let token = await awsToken() { request.setValue(token, forHTTPHeaderField: "X-aws-ec2-metadata-token") }
            guard let (status, body) = await fetch(request) else { return .unreachable("no answer") }
            switch status {
            case 200: return .scheduled(body.isEmpty ? "instance action scheduled" : body)
            case 404: return .nothingScheduled
            case 401:
                token.withLock { $0 = nil }
                return .unreachable("HTTP 401 (metadata token refused; asking for a new one)")
            default: return .unreachable("HTTP \(status)")
            }
        }
    }

    /// An IMDSv2 session token, or nil where the endpoint has none (IMDSv1 then answers without).
    private func awsToken() async -> String? {
        let now = Date().timeIntervalSince1970
        if let cached = token.withLock({ $0 }), cached.expires > now { return cached.value }
        var components = URLComponents()
        components.scheme = url.scheme
        components.host = url.host
        components.port = url.port
        components.path = "/latest/api/token"
        guard let tokenURL = components.url else { return nil }
        var request = URLRequest(url: tokenURL)
        request.httpMethod = "PUT"
        request.setValue(String(Self.tokenTTL), forHTTPHeaderField: "X-aws-ec2-metadata-token-ttl-seconds")
        guard let (status, body) = await fetch(request), status == 200, !body.isEmpty else { return nil }
        token.withLock { $0 = (value: body, expires: now + Double(Self.tokenTTL) - 60) }
        return body
    }

    private func fetch(_ request: URLRequest) async -> (Int, String)? {
        await withCheckedContinuation { (resume: CheckedContinuation<(Int, String)?, Never>) in
            let task = session.dataTask(with: request) { data, response, error in
                guard error == nil, let http = response as? HTTPURLResponse else {
                    resume.resume(returning: nil)
                    return
                }
                resume.resume(returning: (http.statusCode, String(decoding: data ?? Data(), as: UTF8.self)))
            }
            task.resume()
        }
    }
}

/// Drains when a file appears (a supervisor's `touch`).
public final class PreemptionFileWatcher: Sendable {
    public let path: String
    public let interval: Double

    public init(path: String, interval: Double = 1) {
        self.path = path
        self.interval = interval
    }

    public func start(log: WorkerLog, onNotice: @escaping @Sendable (String) -> Void) -> Task<Void, Never> {
        Task {
            while !Task.isCancelled {
                if FileManager.default.fileExists(atPath: path) {
                    log("preemption file \(path) exists")
                    onNotice(path)
                    return
                }
                try? await Task.sleep(for: .seconds(interval))
            }
        }
    }
}

/// `--until TIME`: an ISO 8601 date and time, or `HH:MM[:SS]` local time (the next such moment).
public enum UntilTime {
    public static func parse(_ text: String, now: Date = Date(), timeZone: TimeZone = .current) -> Date? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let iso = ISO8601DateFormatter()
        iso.formatOptions = [.withInternetDateTime]
        if let date = iso.date(from: trimmed) { return date }
        iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = iso.date(from: trimmed) { return date }
        let local = DateFormatter()
        local.locale = Locale(identifier: "en_US_POSIX")
        local.timeZone = timeZone
        for format in ["yyyy-MM-dd'T'HH:mm:ss", "yyyy-MM-dd'T'HH:mm", "yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd HH:mm"] {
            local.dateFormat = format
            if let date = local.date(from: trimmed) { return date }
        }
        let parts = trimmed.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3, parts.allSatisfy({ $0.count == 2 && $0.allSatisfy(\.isASCII) }),
              let hour = Int(parts[0]), let minute = Int(parts[1]), (0..<24).contains(hour), (0..<60).contains(minute) else { return nil }
        let second = parts.count == 3 ? Int(parts[2]) : 0
        guard let second, (0..<60).contains(second) else { return nil }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        var components = calendar.dateComponents([.year, .month, .day], from: now)
        components.hour = hour
        components.minute = minute
        components.second = second
        guard let today = calendar.date(from: components) else { return nil }
        return today > now ? today : calendar.date(byAdding: .day, value: 1, to: today)
    }
}
