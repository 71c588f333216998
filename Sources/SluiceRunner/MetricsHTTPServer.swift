import Foundation
import Synchronization

/// Serves `GET /metrics` on 127.0.0.1 (or another IPv4 address) over HTTP/1.1, one connection at a time, on a thread of
/// its own with blocking sockets. Every response closes its connection. A malformed, slow or
/// oversized request gets an error answer (or is dropped after a timeout); nothing a client
/// sends can stop the server or the process.
public final class MetricsHTTPServer: Sendable {
    /// The port bound (the one asked for, or the one the system picked for port 0).
    public let port: Int
    /// The IPv4 address bound.
    public let host: String
    private let listener: Int32
    private let body: @Sendable () -> String
    private let state = Mutex(State())

    private struct State {
        var started = false
        var stopped = false
        var thread: Thread?
    }

    /// Longest request head accepted.
    static let maxRequestBytes = 16 * 1024
    /// How long a client may take to send its request.
    static let readTimeoutSeconds = 5

    /// Binds `host`:`port` (0: any free port) and listens.
    /// - Parameters:
    ///   - host: an IPv4 address; loopback by default, `0.0.0.0` for every interface.
    ///   - body: the exposition text, computed for each scrape.
    public init(host: String = "127.0.0.1", port: Int, body: @escaping @Sendable () -> String) throws {
        guard (0...65535).contains(port) else { throw MetricsServerError("--metrics-port must be 0-65535 (got \(port))") }
        var hostAddress = in_addr()
        guard inet_pton(AF_INET, host, &hostAddress) == 1 else {
            throw MetricsServerError("--metrics-host must be an IPv4 address such as 127.0.0.1 or 0.0.0.0 (got \(host))")
        }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw MetricsServerError("cannot create a socket: \(String(cString: strerror(errno)))") }
        var reuse: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr = hostAddress
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw MetricsServerError("cannot listen on \(host):\(port): \(reason)")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.port = Int(UInt16(bigEndian: actual.sin_port))
        self.host = host
        listener = fd
        self.body = body
    }

    deinit { stop() }

    /// Starts answering on the server's thread.
    public func start() {
        state.withLock { state in
            guard !state.started, !state.stopped else { return }
            state.started = true
            let thread = Thread { [self] in acceptLoop() }
            thread.name = "sluice-metrics"
            state.thread = thread
            thread.start()
        }
    }

    /// Stops listening; a scrape being answered finishes first.
    public func stop() {
        let first = state.withLock { state -> Bool in
            defer { state.stopped = true }
            return !state.stopped
        }
        guard first else { return }
        // Wakes the thread blocked in accept (Linux returns EINVAL there after a shutdown).
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private var isStopped: Bool { state.withLock { $0.stopped } }

    private func acceptLoop() {
        while !isStopped {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE {
                    if errno == EMFILE || errno == ENFILE { Thread.sleep(forTimeInterval: 0.1) }
                    continue
                }
                return
            }
            serve(client)
            close(client)
        }
    }

    private func serve(_ client: Int32) {
        var timeout = timeval(tv_sec: Self.readTimeoutSeconds, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var head = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        var complete = false
        while head.count <= Self.maxRequestBytes {
            let count = recv(client, &buffer, buffer.count, 0)
            if count < 0, errno == EINTR { continue }
            if count <= 0 { break }
            head.append(contentsOf: buffer[0..<count])
            if Self.headEnd(head) != nil { complete = true; break }
        }
        let response: [UInt8]
        if complete {
            response = Self.response(to: head, body: body)
        } else if head.count > Self.maxRequestBytes {
            response = Self.plain(431, "Request Header Fields Too Large", "request head longer than \(Self.maxRequestBytes) bytes\n")
        } else if head.isEmpty {
            return
        } else {
            response = Self.plain(400, "Bad Request", "incomplete request\n")
        }
        var sent = 0
        while sent < response.count {
            let count = response[sent...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count < 0, errno == EINTR { continue }
            if count <= 0 { return }
            sent += count
        }
    }

    /// Where the request head ends (after the blank line), if it does.
    static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 2 else { return nil }
        for index in 1..<bytes.count where bytes[index] == 10 {
            if bytes[index - 1] == 10 { return index + 1 }
            if index >= 3, bytes[index - 1] == 13, bytes[index - 2] == 10, bytes[index - 3] == 13 { return index + 1 }
        }
        return nil
    }

    /// The full HTTP response to a request head.
    static func response(to head: [UInt8], body: () -> String) -> [UInt8] {
        guard let lineEnd = head.firstIndex(of: 10),
              let requestLine = String(validating: head[..<lineEnd].filter { $0 != 13 }, as: UTF8.self) else {
            return plain(400, "Bad Request", "malformed request line\n")
        }
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1."), !parts[0].isEmpty, parts[1].hasPrefix("/") else {
            return plain(400, "Bad Request", "malformed request line\n")
        }
        let method = parts[0], target = parts[1]
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard method == "GET" || method == "HEAD" else {
            return plain(405, "Method Not Allowed", "only GET and HEAD\n", extraHeaders: "Allow: GET, HEAD\r\n")
        }
        let headOnly = method == "HEAD"
        switch path {
        case "/metrics":
            return message(200, "OK", contentType: MetricsExposition.contentType, body: Array(body().utf8), headOnly: headOnly)
        case "/":
            return message(200, "OK", contentType: "text/plain; charset=utf-8",
                           body: Array("sluice worker: metrics at /metrics\n".utf8), headOnly: headOnly)
        default:
            return message(404, "Not Found", contentType: "text/plain; charset=utf-8",
                           body: Array("not found; metrics are at /metrics\n".utf8), headOnly: headOnly)
        }
    }

    static func plain(_ status: Int, _ reason: String, _ text: String, extraHeaders: String = "") -> [UInt8] {
        message(status, reason, contentType: "text/plain; charset=utf-8", body: Array(text.utf8), headOnly: false,
                extraHeaders: extraHeaders)
    }

    static func message(_ status: Int, _ reason: String, contentType: String, body: [UInt8], headOnly: Bool,
                        extraHeaders: String = "") -> [UInt8] {
        let head = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n"
            + extraHeaders + "Connection: close\r\n\r\n"
        return Array(head.utf8) + (headOnly ? [] : body)
    }
}

/// Why the metrics server could not start.
public struct MetricsServerError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
