import Foundation
import SluiceQueue

/// What `sluice serve` is told: where to listen, where the data is, and the limits it enforces.
public struct ServeConfiguration: Sendable {
    public var host = "127.0.0.1"
    /// 0 picks a free port (see `onListening`).
    public var port = 8080
    /// The folder holding file bytes (uploads and batch outputs), beside the database.
    public var dataDirectory: String
    /// `key project` lines; nil: no authentication (then only loopback hosts are allowed).
    public var apiKeysFile: String?
    public var limits = ServeLimits()
    /// Seconds between reconciler passes (finalizing, expiring, validating batches).
    public var reconcileInterval: Double = 0.5

    public init(dataDirectory: String) { self.dataDirectory = dataDirectory }

    /// The data folder `sluice serve` uses for the database at `databasePath`.
    public static func defaultDataDirectory(forDatabase databasePath: String) -> String {
        databasePath + ".files"
    }
}

/// Caps on what clients send. OpenAI's own limits (200 MB, 50 000 lines) are not Sluice's.
public struct ServeLimits: Sendable {
    /// Largest uploaded file, in bytes.
    public var maxFileBytes = 2 << 30
    /// Most non-blank lines in one input file.
    public var maxFileLines = 1_000_000
    /// Longest input line.
    public var maxLineBytes = SQLiteStore.defaultMaxLineBytes
    /// Largest JSON request body (POST /v1/batches).
    public var maxJSONBodyBytes = 1 << 20
    /// A connection that sends or reads nothing for this long is closed.
    public var idleTimeoutSeconds: Double = 60
    /// Largest `limit` of a list request.
    public var maxListLimit = 10_000

    public init() {}
}

/// An id such as `file-4f0c…`: a prefix and 24 random hex digits from the system's secure generator.
func randomID(_ prefix: String) -> String {
    var generator = SystemRandomNumberGenerator()
    let high = UInt64.random(in: 0...UInt64.max, using: &generator)
    let low = UInt32.random(in: 0...UInt32.max, using: &generator)
    let hex = String(high, radix: 16) + String(low, radix: 16)
    return prefix + String(repeating: "0", count: max(0, 24 - hex.count)) + hex
}

/// Whether `id` has the form `randomID` gives (letters, digits, `-`, `_`; bounded length).
func isWellFormedID(_ id: Substring) -> Bool {
    !id.isEmpty && id.count <= 64 && id.utf8.allSatisfy { b in
        (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || b == 0x2D || b == 0x5F
    }
}

/// Runs blocking work (database transactions, file system calls) off the cooperative thread pool,
/// so a slow transaction never stalls the event loops' tasks.
func offload<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try body() })
        }
    }
}

func now() -> Double { Date().timeIntervalSince1970 }
