import Foundation
import Synchronization

/// API keys and the project each belongs to, read from a file of `key project` lines (`#` starts a
/// comment). `reload()` rereads the file (on SIGHUP); a file that cannot be read keeps the old keys.
public final class APIKeys: Sendable {
    public let path: String
    private let keys: Mutex<[(key: [UInt8], project: String)]>

    public init(path: String) throws {
        self.path = path
        keys = Mutex(try Self.read(path))
    }

    /// Rereads the file; returns how many keys it holds.
    @discardableResult
    public func reload() throws -> Int {
        let fresh = try Self.read(path)
        keys.withLock { $0 = fresh }
        return fresh.count
    }

    /// The project of `candidate`, comparing it with every key in time that does not depend on
    /// where (or whether) the bytes differ.
    public func project(for candidate: Substring) -> String? {
        let bytes = Array(candidate.utf8)
        return keys.withLock { keys in
            var found: String?
            for entry in keys where Self.constantTimeEqual(entry.key, bytes) { found = entry.project }
            return found
        }
    }

    /// Compares every byte of the longer input (no early exit), lengths included.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt64(a.count ^ b.count)
        let n = max(a.count, b.count)
        for i in 0..<n {
            let x = i < a.count ? a[i] : 0
            let y = i < b.count ? b[i] : 0
            difference |= UInt64(x ^ y)
        }
        return difference == 0
    }

    /// Parses `key project` lines; a key shorter than 16 characters is refused (a guessable key).
    static func read(_ path: String) throws -> [(key: [UInt8], project: String)] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ServeError.configuration("--api-keys \(path): cannot read it (\(error.localizedDescription))")
        }
        var keys: [(key: [UInt8], project: String)] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if fields.isEmpty { continue }
            guard fields.count == 2 else {
                throw ServeError.configuration("--api-keys \(path) line \(index + 1): expected `key project`, found \(fields.count) fields")
            }
            guard fields[0].count >= 16 else {
                throw ServeError.configuration("--api-keys \(path) line \(index + 1): the key is shorter than 16 characters")
            }
            keys.append((Array(fields[0].utf8), String(fields[1])))
        }
        return keys
    }
}

/// A problem with how the server was started.
public enum ServeError: Error, CustomStringConvertible {
    case configuration(String)

    public var description: String {
        switch self {
        case let .configuration(message): return message
        }
    }
}
