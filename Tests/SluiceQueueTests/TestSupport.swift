import Foundation
import SluiceCore
import Synchronization
@testable import SluiceQueue

/// A scratch directory removed when the test's scope ends.
final class TempDir: Sendable {
    let url: URL
    var path: String { url.path }

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-queue-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(at: url)
        PostgresTestServer.drop(for: url.path)
    }

    func file(_ name: String) -> String { url.appendingPathComponent(name).path }

    /// Writes `contents` (bytes as given) and returns the path.
    @discardableResult
    func write(_ name: String, _ contents: String) throws -> String {
        try write(name, bytes: Array(contents.utf8))
    }

    @discardableResult
    func write(_ name: String, bytes: [UInt8]) throws -> String {
        let path = file(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    var databasePath: String { file("queue.db") }
}

/// A settable clock for lease expiry.
final class TestClock: Sendable {
    static let origin: Double = 1_800_000_000
    private let time = Mutex<Double>(TestClock.origin)
    var now: Double { time.withLock { $0 } }
    func advance(_ seconds: Double) { time.withLock { $0 += seconds } }
    var function: @Sendable () -> Double { { self.now } }
}

/// One valid input line.
func requestLine(_ customID: String, content: String = "Hi", url: String = "/v1/chat/completions") -> String {
    if url == "/v1/completions" {
        return #"{"custom_id":"\#(customID)","method":"POST","url":"/v1/completions","body":{"model":"m","prompt":"\#(content)","max_tokens":8}}"#
    }
    return #"{"custom_id":"\#(customID)","method":"POST","url":"\#(url)","body":{"model":"m","messages":[{"role":"user","content":"\#(content)"}],"max_tokens":8}}"#
}

/// An input file of `count` valid lines r1…rN.
func inputFile(_ dir: TempDir, name: String = "input.jsonl", count: Int, salt: String = "") throws -> String {
    var text = ""
    for i in 1...count { text += requestLine("r\(i)", content: "hello \(i)\(salt)") + "\n" }
    return try dir.write(name, text)
}

/// A 200 response outcome.
func okOutcome(_ text: String, prompt: Int = 3, completion: Int = 5) -> EngineOutcome {
    .response(statusCode: 200, body: .object(["text": .string(text)]), usage: Usage(promptTokens: prompt, completionTokens: completion))
}

extension ClaimedRequest {
    var lease: LeaseRef { LeaseRef(requestID: id, leaseGeneration: leaseGeneration) }
}

func results(_ pairs: [(LeaseRef, EngineOutcome)]) -> CommitBatch {
    var batch = CommitBatch()
    batch.results = pairs.map { (lease: $0.0, outcome: $0.1) }
    return batch
}

/// Lines of a text file.
func readLines(_ path: String) throws -> [String] {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    return text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
}

// MARK: Both stores

/// The stores the conformance suite runs against. PostgreSQL runs when `SLUICE_TEST_POSTGRES_URL`
/// names a server (scripts/test starts a throwaway one), and always under `CI=true`, where a
/// missing server fails the PostgreSQL cases instead of skipping them.
enum StoreKind: String, Sendable, CustomStringConvertible {
    case sqlite, postgres
    var description: String { rawValue }

    static let all: [StoreKind] = {
        let environment = ProcessInfo.processInfo.environment
        if PostgresTestServer.url != nil || environment["CI"] == "true" { return [.sqlite, .postgres] }
        FileHandle.standardError.write(Data("""
            note: SLUICE_TEST_POSTGRES_URL is not set: the store conformance suite runs against SQLite only \
            (scripts/test starts a PostgreSQL server and sets it)\n
            """.utf8))
        return [.sqlite]
    }()
}

/// The test server, and one schema of its own per scratch directory (so tests run in parallel).
enum PostgresTestServer {
    static let url: String? = {
        let value = ProcessInfo.processInfo.environment["SLUICE_TEST_POSTGRES_URL"] ?? ""
        return value.isEmpty ? nil : value
    }()
    private static let schemas = Mutex<[String: String]>([:])

    /// The URL of a fresh schema that belongs to `dir` (created on first use, dropped with `dir`).
    static func url(for dir: TempDir) throws -> String {
        guard let url else {
            throw QueueError.invalidArgument("CI=true but SLUICE_TEST_POSTGRES_URL is not set: the PostgreSQL conformance tests need a server (run scripts/test)")
        }
        if let known = schemas.withLock({ $0[dir.path] }) { return known }
        let schema = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let admin = try PGConnection(url: url)
        try admin.execute("CREATE SCHEMA \(schema)", operation: "create test schema")
        let separator = url.contains("?") ? "&" : "?"
        let scoped = url + separator + "options=-csearch_path%3D" + schema
        schemas.withLock { $0[dir.path] = scoped }
        return scoped
    }

    /// Drops the schema of `dir`, if it had one.
    static func drop(for path: String) {
        guard let url, let scoped = schemas.withLock({ $0.removeValue(forKey: path) }),
              let range = scoped.range(of: "search_path%3D") else { return }
        let schema = scoped[range.upperBound...]
        _ = try? PGConnection(url: url).execute("DROP SCHEMA \(schema) CASCADE", operation: "drop test schema")
    }
}

/// A store of `kind` on the queue of `dir`: every call with the same `dir` opens the same queue.
/// The test clock drives lease expiry: SQLite reads it directly; PostgreSQL's `sluice_now()`
/// reads it (through the `sluice.test_now` setting) in place of the server's clock.
func openTestStore(_ kind: StoreKind, _ dir: TempDir, clock: TestClock? = nil) throws -> any JobStore {
    switch kind {
    case .sqlite:
        return try SQLiteStore(path: dir.databasePath, clock: clock?.function)
    case .postgres:
        let url = try PostgresTestServer.url(for: dir)
        guard let clock else { return try PostgresStore(url: url) }
        return try PostgresStore(url: url, clock: clock.function, testClock: clock.function)
    }
}

/// Plain SQL against either store, for test setup and inspection (the statements used are
/// valid on both).
extension JobStore {
    func testExecute(_ sql: String) throws {
        if let sqlite = self as? SQLiteStore {
            try sqlite.withConnection { db in try db.execute(sql, operation: "test") }
        } else if let postgres = self as? PostgresStore {
            try postgres.withConnection { db in _ = try db.execute(sql, operation: "test") }
        }
    }

    func testQueryInt(_ sql: String) throws -> Int64 {
        if let sqlite = self as? SQLiteStore {
            return try sqlite.withConnection { db in try db.queryInt(sql, operation: "test") }
        }
        let postgres = self as! PostgresStore
        return try postgres.withConnection { db in try db.execute(sql, operation: "test").int64(0, 0) }
    }

    func testQueryText(_ sql: String) throws -> String? {
        if let sqlite = self as? SQLiteStore {
            return try sqlite.withConnection { db in try db.queryText(sql, operation: "test") }
        }
        let postgres = self as! PostgresStore
        return try postgres.withConnection { db in try db.execute(sql, operation: "test").string(0, 0) }
    }

    /// The schema version the store recorded.
    func testSchemaVersion() throws -> Int64 {
        if self is SQLiteStore { return try testQueryInt("PRAGMA user_version") }
        return try testQueryInt("SELECT version FROM sluice_schema_version")
    }

    /// Simulates another worker taking over a lease.
    func testingStealLease(_ requestID: Int64) {
        try? testExecute("UPDATE requests SET lease_owner = 'someone-else', lease_generation = lease_generation + 1 WHERE id = \(requestID)")
    }
}
