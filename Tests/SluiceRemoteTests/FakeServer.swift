import Foundation
import SluiceCore
import SluiceTestSupport

/// Runs scripts/fake-openai-server.py for one test and kills it afterwards.
final class FakeServer: @unchecked Sendable {
    let process: ChildProcess
    let directory: URL
    let port: Int
    var baseURL: URL { URL(string: "http://127.0.0.1:\(port)")! }
    var logPath: String { directory.appendingPathComponent("requests.jsonl").path }

    static var scriptPath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/fake-openai-server.py").path
    }

    init(_ arguments: [String] = []) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-remote-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let portFile = directory.appendingPathComponent("port").path
        process = try ChildProcess(executable: "/usr/bin/env",
                                   arguments: ["python3", FakeServer.scriptPath, "--port-file", portFile,
                                               "--log", directory.appendingPathComponent("requests.jsonl").path] + arguments,
                                   standardOutput: .file(directory.appendingPathComponent("server.out").path),
                                   standardError: .file(directory.appendingPathComponent("server.err").path))
        let deadline = Date().addingTimeInterval(15)
        var found: Int?
        while found == nil {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let value = Int(text) { found = value; break }
            if !process.isRunning || Date() > deadline {
                process.send(SIGKILL)
                process.waitUntilExit()
                throw FakeServerError.didNotStart
            }
            usleep(10_000)
        }
        port = found!
    }

    /// SIGKILL: nothing of the server's is worth a graceful exit.
    func stop() {
        process.send(SIGKILL)
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }

    /// Changes the server's behaviour (see the script's doc string).
    func control(_ settings: JSON) throws {
        _ = try send("POST", "/_control", body: settings)
    }

    func stats() throws -> JSON { try send("GET", "/_stats", body: nil) }

    /// Every request the server has finished with, as logged.
    func loggedRequests() -> [JSON] {
        guard let text = try? String(contentsOfFile: logPath, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { try? JSON.parse(String($0)) }
    }

    /// A tiny blocking HTTP client over a socket, so the control channel does not depend on the code under test.
    private func send(_ method: String, _ path: String, body: JSON?) throws -> JSON {
        let payload = body?.serialized ?? ""
        let request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(payload.utf8.count)\r\nConnection: close\r\n\r\n\(payload)"
        guard let fd = connectToLoopback(port: port) else { throw FakeServerError.io("connect") }
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
        guard let split = text.range(of: "\r\n\r\n") else { throw FakeServerError.io("no HTTP response") }
        return try JSON.parse(String(text[split.upperBound...]))
    }
}

enum FakeServerError: Error { case didNotStart, io(String) }
