import Foundation
import SluiceCore

/// What a helper command (python3 -c …, sqlite3, umount) printed, and how it ended.
public struct HelperResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

public enum HelperError: Error, CustomStringConvertible {
    case timedOut([String], seconds: Double)
    public var description: String {
        switch self {
        case .timedOut(let arguments, let seconds): "\(arguments.joined(separator: " ")) did not finish within \(seconds) s"
        }
    }
}

/// Runs a short helper command (found in `PATH`) to completion: its output goes to temporary files,
/// not pipes (which a child another test starts meanwhile could hold open), and it is killed after
/// `seconds`.
public func runHelper(_ arguments: [String], seconds: Double = 120) throws -> HelperResult {
    let base = NSTemporaryDirectory() + "sluice-helper-\(UUID().uuidString)"
    defer { unlink(base + ".out"); unlink(base + ".err") }
    let process = try ChildProcess(executable: "/usr/bin/env", arguments: arguments,
                                   standardOutput: .file(base + ".out"), standardError: .file(base + ".err"))
    guard let ended = process.waitUntilExit(before: ContinuousClock.now + .seconds(seconds)) else {
        process.send(SIGKILL)
        process.waitUntilExit()
        throw HelperError.timedOut(arguments, seconds: seconds)
    }
    return HelperResult(status: ended.status,
                        stdout: (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? "",
                        stderr: (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? "")
}

/// A pipe whose two ends close on exec, so that only the child they are handed to (as a
/// `ChildProcess.Stream.descriptor`) inherits one.
public func closeOnExecPipe() throws -> (read: FileHandle, write: FileHandle) {
    var ends: [Int32] = [0, 0]
    // pipe2 is not in Swift's Glibc module; ChildProcess closes what it does not hand over anyway.
    guard pipe(&ends) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
    return (FileHandle(fileDescriptor: ends[0], closeOnDealloc: true), FileHandle(fileDescriptor: ends[1], closeOnDealloc: true))
}
