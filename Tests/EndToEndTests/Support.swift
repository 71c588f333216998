import Foundation
import SluiceCore
import SluiceTestSupport
import Synchronization
import Testing

/// The repository root, found from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The built `sluice` binary: next to the test bundle (SwiftPM puts products and the test bundle in one directory).
func sluiceBinary() throws -> String {
    var candidates: [String] = []
    if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
        candidates.append(URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("sluice").path)
    }
    if let main = Bundle.main.executablePath {
        candidates.append(URL(fileURLWithPath: main).deletingLastPathComponent().appendingPathComponent("sluice").path)
    }
    for path in candidates where FileManager.default.isExecutableFile(atPath: path) { return path }
    Issue.record("the sluice binary was not found next to the test bundle (looked at \(candidates)); build it first: swift build -c release -Xswiftc -enable-testing")
    throw EndToEndError.missingBinary
}

/// Whether the `sluice` binary runs the `portable` kernels (`SLUICE_CPU=portable`, or a CPU without
/// AVX2): `float32` with software fused multiply-adds on x86-64-v2, several times slower than the
/// other variants (a 32-sequence decode step of the default model takes seconds).
let builtinKernelsArePortable: Bool = {
    guard let binary = try? sluiceBinary() else { return false }
    let output = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-version-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: output) }
    guard let process = try? ChildProcess(executable: binary, arguments: ["--version"], standardOutput: .file(output),
                                          standardError: .file("/dev/null")) else { return false }
    _ = process.waitUntilExit()
    return ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").contains("CPU kernels: portable")
}()

/// The factor for limits that bound how long the built-in engine's work may take (not those a
/// feature promises): 4 on the `portable` kernels, 1 on the others.
var kernelTimeScale: Double { builtinKernelsArePortable ? 4 : 1 }

enum EndToEndError: Error { case missingBinary, serverDidNotStart, timeout(String), io(String) }

/// A temporary directory removed at the end of the test.
final class Scratch: @unchecked Sendable {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-e2e-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    func remove() { try? FileManager.default.removeItem(at: url) }
}

/// Child processes of one test: every one is killed and reaped when the test ends, pass or fail.
/// (ChildProcess, not Foundation's Process: see ChildProcess for the descriptor leaks that can hide a
/// child's exit until an unrelated child of a test beside it ends.)
final class Children: @unchecked Sendable {
    private let lock = NSLock()
    private var processes: [ChildProcess] = []

    func spawn(_ executable: String, _ arguments: [String], stdout: String, stderr: String,
               environment: [String: String]? = nil) throws -> ChildProcess {
        let process = try ChildProcess(executable: executable, arguments: arguments,
                                       environment: environment.map { ProcessInfo.processInfo.environment.merging($0) { $1 } },
                                       standardOutput: .file(stdout), standardError: .file(stderr))
        lock.withLock { processes.append(process) }
        return process
    }

    func killAll() {
        let all = lock.withLock { processes }
        for process in all { process.send(SIGKILL) }
        for process in all { process.waitUntilExit() }
    }
}

/// Waits for a process to exit, up to `seconds`; returns its status, or nil on timeout.
func waitForExit(_ process: ChildProcess, seconds: Double) async throws -> Int32? {
    await process.exit(within: .seconds(seconds))?.status
}

/// Polls `condition` until it holds, failing the test after `seconds`.
func waitUntil(_ what: String, seconds: Double = 60, _ condition: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while try !condition() {
        if ContinuousClock.now > deadline {
            Issue.record("timed out after \(seconds) s waiting until \(what)")
            throw EndToEndError.timeout(what)
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

/// Polls `condition` on a thread of its own and runs `action` there the moment it holds, failing the
/// test after `seconds`. For actions whose moment a test relies on (a kill after so many requests): a
/// task's poll shares the cooperative pool with the computing suites beside it, and on two cores can
/// stay unscheduled for seconds while what it watches runs on.
func act(when what: String, seconds: Double = 60, _ condition: @escaping @Sendable () throws -> Bool,
         then action: @escaping @Sendable () -> Void) async throws {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
        let thread = Thread {
            let deadline = ContinuousClock.now + .seconds(seconds)
            do {
                while try !condition() {
                    if ContinuousClock.now > deadline { throw EndToEndError.timeout(what) }
                    usleep(5000)
                }
                action()
                continuation.resume()
            } catch {
                continuation.resume(throwing: error)
            }
        }
        thread.start()
    }
}

/// The port a server child writes to `portFile` once it listens, waiting up to 20 s.
func waitForPort(in portFile: String, of process: ChildProcess) async throws -> Int {
    let deadline = ContinuousClock.now + .seconds(20)
    while true {
        if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let value = Int(text) { return value }
        if !process.isRunning || ContinuousClock.now > deadline { throw EndToEndError.serverDidNotStart }
        try await Task.sleep(for: .milliseconds(10))
    }
}


/// Runs `sluice` to completion with a deadline.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

func sluice(_ arguments: [String], in scratch: Scratch, children: Children, seconds: Double = 120,
            environment: [String: String]? = nil) async throws -> CommandResult {
    let id = UUID().uuidString
    let out = scratch.path("cmd-\(id).out"), err = scratch.path("cmd-\(id).err")
    let process = try children.spawn(try sluiceBinary(), arguments, stdout: out, stderr: err, environment: environment)
    guard let status = try await waitForExit(process, seconds: seconds) else {
        kill(process.processIdentifier, SIGKILL)
        Issue.record("sluice \(arguments.joined(separator: " ")) did not finish within \(seconds) s")
        throw EndToEndError.timeout("sluice \(arguments.first ?? "")")
    }
    return CommandResult(status: status,
                         stdout: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
                         stderr: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
}

/// scripts/fake-openai-server.py, run for one test.
final class FakeServer: @unchecked Sendable {
    let process: ChildProcess
    let port: Int
    let logPath: String
    var baseURL: String { "http://127.0.0.1:\(port)" }
    static let script = repositoryRoot.appendingPathComponent("scripts/fake-openai-server.py").path

    init(_ arguments: [String] = [], scratch: Scratch, children: Children) async throws {
        let portFile = scratch.path("server.port")
        logPath = scratch.path("server-requests.jsonl")
        process = try children.spawn("/usr/bin/env", ["python3", FakeServer.script, "--port-file", portFile, "--log", logPath] + arguments,
                                     stdout: scratch.path("server.out"), stderr: scratch.path("server.err"))
        port = try await waitForPort(in: portFile, of: process)
    }

    func control(_ settings: JSON) throws { _ = try http("POST", "/_control", body: settings.serialized) }
    func stats() throws -> JSON { try http("GET", "/_stats", body: nil) }

    /// Every request the server finished with (one JSON object per line).
    func loggedRequests() -> [JSON] {
        guard let text = try? String(contentsOfFile: logPath, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { try? JSON.parse(String($0)) }
    }

    /// A minimal blocking HTTP/1.1 exchange over a socket, independent of the code under test.
    private func http(_ method: String, _ path: String, body: String?) throws -> JSON {
        let payload = body ?? ""
        let request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(payload.utf8.count)\r\nConnection: close\r\n\r\n\(payload)"
        guard let fd = connectToLoopback(port: port) else { throw EndToEndError.io("connect to the fake server") }
        defer { close(fd) }
        _ = request.withCString { write(fd, $0, strlen($0)) }
        var response = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            response.append(contentsOf: buffer[0..<count])
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw EndToEndError.io("no HTTP response") }
        return try JSON.parse(String(text[split.upperBound...]))
    }
}

/// A batch input file of `count` requests, alternating chat and completion requests.
func writeBatchFile(_ path: String, count: Int, prefix: String = "req", extra: (Int) -> String = { _ in "" }) throws {
    var text = ""
    text.reserveCapacity(count * 200)
    for index in 1...count {
        let id = "\(prefix)-\(index)"
        if index % 2 == 0 {
            text += #"{"custom_id":"\#(id)","method":"POST","url":"/v1/chat/completions","body":{"model":"gemma-3-270m","messages":[{"role":"user","content":"Question \#(index): what is \#(index) times 7?"}],"max_tokens":32,"temperature":0\#(extra(index))}}"#
        } else {
            text += #"{"custom_id":"\#(id)","method":"POST","url":"/v1/completions","body":{"model":"gemma-3-270m","prompt":"Once upon a time, number \#(index)","max_tokens":48,"temperature":0\#(extra(index))}}"#
        }
        text += "\n"
    }
    try text.write(toFile: path, atomically: true, encoding: .utf8)
}

/// The fake server's answers for a batch file, by custom_id (from the script's --expected mode).
func expectedAnswers(for input: String, scratch: Scratch, children: Children) async throws -> [String: JSON] {
    let out = scratch.path("expected-\(UUID().uuidString).jsonl")
    let process = try children.spawn("/usr/bin/env", ["python3", FakeServer.script, "--expected", input],
                                     stdout: out, stderr: scratch.path("expected.err"))
    guard try await waitForExit(process, seconds: 60) == 0 else { throw EndToEndError.io("expected answers") }
    var answers: [String: JSON] = [:]
    for line in try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n") {
        let entry = try JSON.parse(String(line))
        answers[entry["custom_id"]!.stringValue!] = entry["body"]!
    }
    return answers
}

/// Parses an export file into its lines.
func readJSONLines(_ path: String) throws -> [JSON] {
    try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { try JSON.parse(String($0)) }
}

/// Checks that an export holds exactly one 200 answer per input line, in input order, equal to the server's answer.
func expectExportMatches(_ exportPath: String, customIDs: [String], answers: [String: JSON],
                         sourceLocation: SourceLocation = #_sourceLocation) throws {
    let lines = try readJSONLines(exportPath)
    #expect(lines.map { $0["custom_id"]?.stringValue ?? "" } == customIDs, "export order or membership differs", sourceLocation: sourceLocation)
    var mismatches = 0
    for line in lines {
        let id = line["custom_id"]?.stringValue ?? ""
        if line["response"]?["status_code"]?.intValue != 200 || line["response"]?["body"] != answers[id] || line["error"] != .null {
            mismatches += 1
            if mismatches <= 3 { Issue.record("export line for \(id) differs: \(line.serialized)", sourceLocation: sourceLocation) }
        }
    }
    #expect(mismatches == 0, "\(mismatches) export lines differ from the expected answers", sourceLocation: sourceLocation)
}

/// `sluice status JOB --json` counts.
func jobCounts(_ job: String, db: String, scratch: Scratch, children: Children) async throws -> JSON {
    let result = try await sluice(["status", job, "--db", db, "--json"], in: scratch, children: children)
    guard result.status == 0, let counts = try JSON.parse(result.stdout).arrayValue?.first?["counts"] else {
        throw EndToEndError.io("status failed: \(result.stderr)")
    }
    return counts
}

