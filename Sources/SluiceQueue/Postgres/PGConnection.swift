import CLibPQ
import Foundation

/// Errors of the PostgreSQL store, each one line naming the server and what failed.
public enum PostgresError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The connection string could not be parsed.
    case badURL(url: String, reason: String)
    /// The server could not be reached, or refused us (wrong password, no such database…).
    case cannotConnect(url: String, reason: String)
    /// The database holds tables, but not Sluice's.
    case notSluiceDatabase(url: String)
    /// The database was written by a newer Sluice whose schema this build does not know.
    case newerSchema(url: String, found: Int, supported: Int)
    /// A statement failed on the server (SQLSTATE and the server's message).
    case server(url: String, operation: String, sqlState: String, message: String)
    /// The connection broke during an operation: the operation may be retried once it is back.
    case connectionLost(url: String, operation: String, message: String)

    public var description: String {
        switch self {
        case let .badURL(url, reason):
            return "invalid PostgreSQL URL \(url): \(reason)"
        case let .cannotConnect(url, reason):
            return "cannot connect to PostgreSQL at \(url): \(reason)"
        case let .notSluiceDatabase(url):
            return "PostgreSQL database \(url) is not a Sluice queue (it has tables of its own but no sluice_schema_version); point --db at an empty database or a Sluice one"
        case let .newerSchema(url, found, supported):
            return "PostgreSQL database \(url) has schema version \(found), made by a newer Sluice; this Sluice knows versions up to \(supported). Upgrade Sluice to use this database."
        case let .server(url, operation, state, message):
            return "PostgreSQL \(url): \(operation) failed: \(message) (SQLSTATE \(state))"
        case let .connectionLost(url, operation, message):
            return "PostgreSQL \(url): connection lost during \(operation): \(message)"
        }
    }

    /// Whether the database cannot be used and waiting would not change that: a URL that does not
    /// parse, a database that is not Sluice's or is newer, or a connection the server refused for
    /// who we are (password, role, database name, access rules) rather than for being down.
    public var isUnusable: Bool {
        switch self {
        case .badURL, .notSluiceDatabase, .newerSchema: return true
        case let .cannotConnect(_, reason):
            let lower = reason.lowercased()
            return ["authentication failed", "no password supplied", "does not exist", "no pg_hba.conf entry",
                    "permission denied", "does not support ssl"].contains { lower.contains($0) }
        case .server, .connectionLost: return false
        }
    }

    /// Whether trying again later (on a new connection) can succeed.
    public var isTransient: Bool {
        switch self {
        case .connectionLost, .cannotConnect: return true
        case let .server(_, _, state, _):
            // Serialization failures, deadlocks, the server shutting down or in recovery.
            return state == "40001" || state == "40P01" || state.hasPrefix("08") || state == "57P01"
                || state == "57P02" || state == "57P03"
        default: return false
        }
    }
}

/// Whether a database argument names a PostgreSQL server rather than a SQLite file.
public func isPostgresURL(_ location: String) -> Bool {
    location.hasPrefix("postgresql://") || location.hasPrefix("postgres://")
}

/// A database argument as messages show it: a PostgreSQL URL without its password.
public func displayedLocation(_ location: String) -> String {
    isPostgresURL(location) ? redactedURL(location) : location
}

/// The URL with any password replaced by `***`, for messages.
func redactedURL(_ url: String) -> String {
    guard let scheme = url.range(of: "://") else { return url }
    let rest = url[scheme.upperBound...]
    guard let at = rest.lastIndex(of: "@") else { return url }
    let userInfo = rest[..<at]
    guard let colon = userInfo.firstIndex(of: ":") else { return url }
    return String(url[..<scheme.upperBound]) + userInfo[..<colon] + ":***" + rest[at...]
}

/// `message` with the URL's password taken out, as written in the URL and percent-decoded: libpq's
/// own messages quote the URL (or the password) they could not parse.
func scrubbingPassword(of url: String, from message: String) -> String {
    guard let scheme = url.range(of: "://") else { return message }
    let rest = url[scheme.upperBound...]
    guard let at = rest.lastIndex(of: "@"), let colon = rest[..<at].firstIndex(of: ":") else { return message }
    let password = String(rest[rest.index(after: colon)..<at])
    guard !password.isEmpty else { return message }
    var scrubbed = message.replacingOccurrences(of: url, with: redactedURL(url))
    for form in [password, password.removingPercentEncoding].compactMap({ $0 }) where !form.isEmpty {
        scrubbed = scrubbed.replacingOccurrences(of: form, with: "***")
    }
    return scrubbed
}

/// A parameter value for a statement; nil is SQL NULL.
typealias PGValue = String?

/// One libpq connection. Not thread-safe: the store keeps it behind a mutex.
final class PGConnection {
    let url: String
    let label: String
    private var raw: OpaquePointer?

    /// Connects; libpq reads the password from the URL, `PGPASSWORD` or `~/.pgpass`, and honours `sslmode`.
    init(url: String, connectTimeout: Int = 10, answerTimeoutSeconds: Int32 = PGConnection.defaultAnswerTimeoutSeconds) throws {
        self.url = url
        self.label = redactedURL(url)
        self.answerTimeoutSeconds = answerTimeoutSeconds
        try connect(connectTimeout: connectTimeout)
    }

    deinit { if let raw { PQfinish(raw) } }

    private func connect(connectTimeout: Int) throws {
        if let raw { PQfinish(raw); self.raw = nil }
        // Parse first, so a malformed URL is named as such rather than as a failed connection.
        var parseError: UnsafeMutablePointer<CChar>?
        if let options = PQconninfoParse(url, &parseError) {
            PQconninfoFree(options)
        } else {
            let reason = parseError.map { String(cString: $0) } ?? "unreadable"
            if let parseError { PQfreemem(parseError) }
            throw PostgresError.badURL(url: label, reason: scrubbingPassword(of: url, from: Self.oneLine(reason)))
        }
        // Defaults first: the URL's own settings (`dbname`, expanded last) override them. TCP
        // keepalives and a user timeout make a dead network an error in seconds, not after the
        // kernel's retransmissions (15 minutes), so a partitioned worker notices and retries.
        let keys = ["connect_timeout", "application_name", "keepalives", "keepalives_idle", "keepalives_interval",
                    "keepalives_count", "tcp_user_timeout", "dbname"]
        let values = [String(connectTimeout), "sluice", "1", "10", "5", "3", "20000", url]
        let connection = Self.withCStrings(keys) { k in
            Self.withCStrings(values) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let connection else { throw PostgresError.cannotConnect(url: label, reason: "out of memory") }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = scrubbingPassword(of: url, from: Self.oneLine(String(cString: PQerrorMessage(connection))))
            PQfinish(connection)
            throw PostgresError.cannotConnect(url: label, reason: message)
        }
        raw = connection
        _ = try execute("SET client_min_messages = warning", operation: "configure session")
    }

    /// Opens a new connection in place of a broken one.
    func reconnect(connectTimeout: Int = 10) throws { try connect(connectTimeout: connectTimeout) }

    var isBroken: Bool { raw == nil || PQstatus(raw) != CONNECTION_OK }

    private static func withCStrings<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
        var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for p in pointers { free(p) } }
        return body(pointers.map { $0.map { UnsafePointer($0) } })
    }

    /// libpq messages end in newlines and sometimes hold several lines: keep them to one.
    static func oneLine(_ message: String) -> String {
        message.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }.joined(separator: "; ")
    }

    /// How long a statement may wait without a byte from the server. libpq waits forever: a server
    /// that stalls, a lock held by someone else, a pool with no free connection would hold the worker
    /// (and its SIGTERM drain) with it. Past this the connection is closed and the call fails as a
    /// lost connection, which the worker retries until `--db-timeout`. Every statement Sluice sends is
    /// short (exports read pages of rows), so waiting longer would only mean something is stuck.
    static let defaultAnswerTimeoutSeconds: Int32 = 30
    let answerTimeoutSeconds: Int32

    /// Runs one statement (or, without parameters, several separated by semicolons), as `PQexec`
    /// does, but waiting at most `answerTimeoutSeconds` between bytes of the answer (30 s unless a test
    /// says otherwise).
    @discardableResult
    func execute(_ sql: String, _ parameters: [PGValue] = [], operation: String) throws -> PGResult {
        guard let raw else { throw PostgresError.connectionLost(url: label, operation: operation, message: "not connected") }
        let sent: Int32
        if parameters.isEmpty {
            sent = PQsendQuery(raw, sql)
        } else {
            var copies: [UnsafeMutablePointer<CChar>?] = parameters.map { $0.map { strdup($0) } ?? nil }
            defer { for p in copies { free(p) } }
            sent = copies.withUnsafeMutableBufferPointer { buffer in
                buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { values in
                    PQsendQueryParams(raw, sql, Int32(parameters.count), nil, values.baseAddress, nil, nil, 0)
                }
            }
        }
        guard sent == 1 else {
            throw PostgresError.connectionLost(url: label, operation: operation, message: Self.oneLine(String(cString: PQerrorMessage(raw))))
        }
        // PQexec's answer: the last result (the error, where a statement failed), or a COPY's start.
        var last: OpaquePointer?
        while let result = try nextResult(operation: operation) {
            if let last { PQclear(last) }
            last = result
            let status = PQresultStatus(result)
            if status == PGRES_COPY_IN || status == PGRES_COPY_OUT || status == PGRES_COPY_BOTH { break }
        }
        return try check(last, operation: operation)
    }

    /// Asks the server to stop the statement in flight, from a thread of its own (a cancel request
    /// is a new connection, which a stalled network could hold): a statement left waiting for a lock
    /// would otherwise run, and commit, once the lock is free, with nobody to read its answer.
    private static func cancelInBackground(_ connection: OpaquePointer) {
        guard let cancel = PQgetCancel(connection) else { return }
        nonisolated(unsafe) let request = cancel
        let thread = Thread {
            var buffer = [CChar](repeating: 0, count: 256)
            _ = PQcancel(request, &buffer, Int32(buffer.count))
            PQfreeCancel(request)
        }
        thread.start()
    }

    /// The next result of the statement in flight (nil when there are no more), waiting for the
    /// server at most `answerTimeoutSeconds` at a time.
    private func nextResult(operation: String) throws -> OpaquePointer? {
        guard let raw else { throw PostgresError.connectionLost(url: label, operation: operation, message: "not connected") }
        while PQisBusy(raw) == 1 {
            var descriptor = pollfd(fd: PQsocket(raw), events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, answerTimeoutSeconds * 1000)
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 {
                let reason = ready == 0
                    ? "no answer for \(answerTimeoutSeconds) s (a stalled server or network, or a lock held elsewhere); the connection was closed"
                    : String(cString: strerror(errno))
                Self.cancelInBackground(raw)
                PQfinish(raw)
                self.raw = nil
                throw PostgresError.connectionLost(url: label, operation: operation, message: reason)
            }
            guard PQconsumeInput(raw) == 1 else {
                throw PostgresError.connectionLost(url: label, operation: operation, message: Self.oneLine(String(cString: PQerrorMessage(raw))))
            }
        }
        return PQgetResult(raw)
    }

    private func check(_ result: OpaquePointer?, operation: String) throws -> PGResult {
        let status = result.map { PQresultStatus($0) } ?? PGRES_FATAL_ERROR
        switch status {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_COPY_IN:
            return PGResult(result!)
        default:
            let state = result.flatMap { PQresultErrorField($0, Int32(UInt8(ascii: "C"))) }.map { String(cString: $0) } ?? ""
            var message = result.flatMap { PQresultErrorField($0, Int32(UInt8(ascii: "M"))) }.map { String(cString: $0) }
                ?? String(cString: PQerrorMessage(raw))
            message = Self.oneLine(message)
            if let result { PQclear(result) }
            if state.isEmpty || PQstatus(raw) != CONNECTION_OK {
                throw PostgresError.connectionLost(url: label, operation: operation, message: message)
            }
            throw PostgresError.server(url: label, operation: operation, sqlState: state, message: message)
        }
    }

    /// Streams rows into `COPY … FROM STDIN` (text format); `produce` calls `send` with chunks.
    func copyIn(_ sql: String, operation: String, _ produce: (_ send: ([UInt8]) throws -> Void) throws -> Void) throws {
        _ = try execute(sql, operation: operation)
        let send: ([UInt8]) throws -> Void = { [self] bytes in
            let rc = bytes.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { PQputCopyData(raw, $0.baseAddress, Int32($0.count)) }
            }
            if rc != 1 {
                throw PostgresError.connectionLost(url: label, operation: operation,
                                                   message: Self.oneLine(String(cString: PQerrorMessage(raw))))
            }
        }
        do {
            try produce(send)
        } catch {
            _ = PQputCopyEnd(raw, "aborted by the client")
            while let result = try? nextResult(operation: operation) { PQclear(result) }
            throw error
        }
        guard PQputCopyEnd(raw, nil) == 1 else {
            throw PostgresError.connectionLost(url: label, operation: operation,
                                               message: Self.oneLine(String(cString: PQerrorMessage(raw))))
        }
        var failure: Error?
        while let result = try nextResult(operation: operation) {
            do { _ = try check(result, operation: operation) } catch { failure = failure ?? error }
        }
        if let failure { throw failure }
    }

    /// Runs `body` in a transaction; rolls back on error.
    func transaction<T>(_ operation: String, _ body: () throws -> T) throws -> T {
        try execute("BEGIN", operation: operation)
        do {
            let value = try body()
            try execute("COMMIT", operation: operation)
            return value
        } catch {
            if !isBroken { _ = try? execute("ROLLBACK", operation: operation) }
            throw error
        }
    }
}

/// A statement's result, read in text format.
/// Immutable once made: reading it from several threads is safe.
final class PGResult: @unchecked Sendable {
    private let raw: OpaquePointer
    init(_ raw: OpaquePointer) { self.raw = raw }
    deinit { PQclear(raw) }

    var rowCount: Int { Int(PQntuples(raw)) }
    /// Rows a command changed (UPDATE, INSERT, DELETE).
    var affectedRows: Int { Int(String(cString: PQcmdTuples(raw))) ?? 0 }

    func isNull(_ row: Int, _ column: Int) -> Bool { PQgetisnull(raw, Int32(row), Int32(column)) == 1 }

    func string(_ row: Int, _ column: Int) -> String? {
        if isNull(row, column) { return nil }
        return String(cString: PQgetvalue(raw, Int32(row), Int32(column)))
    }

    func bytes(_ row: Int, _ column: Int) -> UnsafeBufferPointer<UInt8> {
        let length = Int(PQgetlength(raw, Int32(row), Int32(column)))
        let pointer = UnsafeRawPointer(PQgetvalue(raw, Int32(row), Int32(column))!)
        return UnsafeBufferPointer(start: pointer.assumingMemoryBound(to: UInt8.self), count: length)
    }

    func int64(_ row: Int, _ column: Int) -> Int64 { string(row, column).flatMap { Int64($0) } ?? 0 }
    func int(_ row: Int, _ column: Int) -> Int { Int(truncatingIfNeeded: int64(row, column)) }
    func double(_ row: Int, _ column: Int) -> Double { string(row, column).flatMap { Double($0) } ?? 0 }
    func optionalDouble(_ row: Int, _ column: Int) -> Double? { string(row, column).flatMap { Double($0) } }
    func bool(_ row: Int, _ column: Int) -> Bool { string(row, column) == "t" }

    /// A `bytea` column (text format: `\x` and hex digits).
    func byteArray(_ row: Int, _ column: Int) -> [UInt8]? {
        if isNull(row, column) { return nil }
        let text = bytes(row, column)
        guard text.count >= 2, text[0] == UInt8(ascii: "\\"), text[1] == UInt8(ascii: "x") else { return Array(text) }
        var out: [UInt8] = []
        out.reserveCapacity((text.count - 2) / 2)
        var i = 2
        while i + 1 < text.count {
            out.append(Self.nibble(text[i]) << 4 | Self.nibble(text[i + 1]))
            i += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8 {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return 0
        }
    }
}

/// Text forms of parameter values.
enum PG {
    static func bytea(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = [UInt8(ascii: "\\"), UInt8(ascii: "x")]
        out.reserveCapacity(2 + bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A double as text that round-trips exactly.
    static func number(_ value: Double) -> String { "\(value)" }
}
