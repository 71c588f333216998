import Foundation
import SluiceCore
import Testing

/// The repository root, found from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// The built `sluice` binary next to the test bundle.
func sluiceBinary() -> String? {
    guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
    let path = URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("sluice").path
    return FileManager.default.isExecutableFile(atPath: path) ? path : nil
}

/// Runs `command` with a deadline; returns the exit status and its combined output.
func run(_ command: [String], seconds: Double) async throws -> (status: Int32, output: String) {
    let log = NSTemporaryDirectory() + "sluice-sdk-\(UUID().uuidString).log"
    _ = FileManager.default.createFile(atPath: log, contents: nil)
    defer { unlink(log) }
    // Both streams append to one file, so that their lines interleave as written.
    let process = try ChildProcess(executable: "/usr/bin/env", arguments: command,
                                   standardOutput: .appending(log), standardError: .appending(log))
    var ended = await process.exit(within: .seconds(seconds))
    if ended == nil {
        process.send(SIGTERM)
        ended = await process.exit(within: .seconds(10))
        if ended == nil { process.send(SIGKILL) }
        Issue.record("\(command.joined(separator: " ")) did not finish within \(seconds) s")
    }
    return (process.waitUntilExit().status, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
}

@Suite struct OpenAISDKTests {
    /// scripts/serve-sdk-test.py: the official `openai` package against a real `sluice serve` with a
    /// worker on the fake engine (round trip with a SIGKILLed worker, cancel, pagination, bad lines,
    /// expiry, a second key, 401, the non-loopback refusal). scripts/test installs the package.
    @Test func officialClientRunsUnchanged() async throws {
        let probe = try await run(["python3", "-c", "import openai"], seconds: 60)
        guard probe.status == 0 else {
            Issue.record("the Python package `openai` is missing (scripts/test installs it: pip install openai)")
            return
        }
        guard let binary = sluiceBinary() else {
            Issue.record("the sluice binary was not found next to the test bundle; build it first")
            return
        }
        let script = repositoryRoot.appendingPathComponent("scripts/serve-sdk-test.py").path
        let result = try await run(["python3", script, "--sluice", binary], seconds: 540)
        #expect(result.status == 0, "serve-sdk-test.py failed:\n\(result.output)")
        #expect(result.output.contains("all checks passed"))
    }
}
