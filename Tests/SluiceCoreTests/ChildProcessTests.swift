import Foundation
import SluiceCore
import Testing

/// ChildProcess: what a child inherits (only its three standard descriptors, default signal
/// actions), and how its end is reported.
struct ChildProcessTests {
    let scratch = NSTemporaryDirectory() + "sluice-child-\(UUID().uuidString)"

    init() throws { try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true) }

    func text(_ name: String) -> String { (try? String(contentsOfFile: "\(scratch)/\(name)", encoding: .utf8)) ?? "" }

    @Test func exitStatusesAndSignalsAreReported() async throws {
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let exits = try ChildProcess(executable: "/bin/sh", arguments: ["-c", "exit 7"])
        #expect(await exits.exit(within: .seconds(30)) == .exited(7))
        #expect(!exits.isRunning && exits.exit?.status == 7)

        let sleeper = try ChildProcess(executable: "/bin/sleep", arguments: ["30"])
        #expect(await sleeper.exit(within: .milliseconds(50)) == nil, "a running child is reported as ended")
        #expect(sleeper.waitUntilExit(before: .now + .milliseconds(50)) == nil)
        #expect(sleeper.isRunning)
        sleeper.send(SIGKILL)
        #expect(sleeper.waitUntilExit() == .signalled(SIGKILL))
        sleeper.send(SIGKILL)  // reaped: sends nothing (its pid may be another process's by now)
    }

    /// A descriptor the parent has open without close-on-exec, as another thread may have at any
    /// moment, does not reach the child: the child sees 0, 1, 2 and what it opens itself.
    @Test func theChildGetsOnlyItsStandardDescriptors() throws {
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        // Numbers no child opens for itself (ls's own directory descriptor is the lowest free one).
        let high = [fcntl(ends[0], F_DUPFD, 700), fcntl(ends[1], F_DUPFD, 700)]
        defer { for descriptor in ends + high { close(descriptor) } }
        let child = try ChildProcess(executable: "/bin/sh", arguments: ["-c", "ls /proc/$$/fd"],
                                     standardOutput: .file("\(scratch)/fds"), standardError: .file("\(scratch)/err"))
        #expect(child.waitUntilExit() == .exited(0), "\(text("err"))")
        let descriptors = Set(text("fds").split(whereSeparator: \.isWhitespace).compactMap { Int32($0) })
        #expect(descriptors.isSuperset(of: [0, 1, 2]), "\(descriptors)")
        #expect(descriptors.isDisjoint(with: high), "the child inherited \(descriptors)")
    }

    /// The parent ignores SIGTERM (as `sluice work`, `serve` and `scheduler` do while a signal watcher
    /// runs); the child still ends on it.
    @Test func theChildStartsWithDefaultSignalActions() throws {
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let previous = signal(SIGUSR2, SIG_IGN)
        defer { signal(SIGUSR2, previous) }
        var blocked = sigset_t(), saved = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &blocked, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        // SIGUSR2 ignored and SIGTERM blocked in this thread: the child must see neither.
        let child = try ChildProcess(executable: "/bin/sleep", arguments: ["30"])
        child.send(SIGUSR2)
        #expect(child.waitUntilExit() == .signalled(SIGUSR2))
        let second = try ChildProcess(executable: "/bin/sleep", arguments: ["30"])
        second.send(SIGTERM)
        #expect(second.waitUntilExit() == .signalled(SIGTERM))
    }

    @Test func standardStreamsGoWhereTheyAreSent() throws {
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try "from a file\n".write(toFile: "\(scratch)/in", atomically: true, encoding: .utf8)
        let fromFile = try ChildProcess(executable: "/bin/cat", arguments: [], standardInput: .file("\(scratch)/in"),
                                        standardOutput: .file("\(scratch)/out"))
        #expect(fromFile.waitUntilExit() == .exited(0))
        #expect(text("out") == "from a file\n")

        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        let fromPipe = try ChildProcess(executable: "/bin/sh", arguments: ["-c", "cat; echo err >&2"], standardInput: .descriptor(ends[0]),
                                        standardOutput: .appending("\(scratch)/out"), standardError: .appending("\(scratch)/out"))
        close(ends[0])
        _ = "through a pipe\n".withCString { write(ends[1], $0, strlen($0)) }
        close(ends[1])
        #expect(fromPipe.waitUntilExit() == .exited(0))
        #expect(text("out") == "from a file\nthrough a pipe\nerr\n")

        let environment = try ChildProcess(executable: "/bin/sh", arguments: ["-c", "echo \"$ONLY\" \"${HOME:-none}\""],
                                           environment: ["ONLY": "this"], standardOutput: .file("\(scratch)/env"))
        #expect(environment.waitUntilExit() == .exited(0))
        #expect(text("env") == "this none\n")
    }

    @Test func aMissingExecutableIsAnErrorNamingIt() {
        #expect {
            _ = try ChildProcess(executable: "/nonexistent/sluice-child", arguments: [])
        } throws: { error in
            "\(error)".contains("/nonexistent/sluice-child") && "\(error)".contains("No such file")
        }
    }
}
