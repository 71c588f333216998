import Foundation

/// A broken promise a fuzz target noticed without crashing (a round trip that does not
/// round-trip, two parsers that disagree). The fuzzing driver aborts on it so libFuzzer
/// keeps the input; the corpus test reports it as a failure.
public struct FuzzFinding: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One entry point fed with arbitrary bytes. It must return (or throw a `FuzzFinding`) for
/// every input: a trap, an overflow or an out-of-bounds access is the bug it looks for.
public struct FuzzTarget: Sendable {
    /// The name `scripts/fuzz` takes, and the folder of the target's corpus (Fuzz/corpus/NAME).
    public let name: String
    /// What the target feeds and what it checks.
    public let summary: String
    public let run: @Sendable (UnsafeBufferPointer<UInt8>) throws(FuzzFinding) -> Void

    public init(name: String, summary: String,
                run: @escaping @Sendable (UnsafeBufferPointer<UInt8>) throws(FuzzFinding) -> Void) {
        self.name = name
        self.summary = summary
        self.run = run
    }

    /// Runs the target on `bytes`.
    public func run(_ bytes: [UInt8]) throws(FuzzFinding) {
        let result: Result<Void, FuzzFinding> = bytes.withUnsafeBufferPointer { buffer in
            do throws(FuzzFinding) { try run(buffer); return .success(()) } catch { return .failure(error) }
        }
        try result.get()
    }
}

/// Every fuzz target, by name.
public enum FuzzTargets {
    public static let all: [FuzzTarget] = [
        batchLine, json, spec, cron, gguf, tokenizer, response,
    ]

    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }

    /// The repository's root (targets that need committed fixtures find them from here).
    static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}

/// Input text as the parsers get it from a file: invalid UTF-8 repaired the way
/// `String(decoding:as:)` does (the callers that read files reject it earlier).
func text(_ bytes: UnsafeBufferPointer<UInt8>) -> String { String(decoding: bytes, as: UTF8.self) }
