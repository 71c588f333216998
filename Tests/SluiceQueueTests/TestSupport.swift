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

    deinit { try? FileManager.default.removeItem(at: url) }

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
    private let time = Mutex<Double>(1_800_000_000)
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
