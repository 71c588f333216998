#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A child process started with `posix_spawn` and reaped with `waitpid`.
///
/// Why not Foundation's `Process`: on Linux it learns of a child's exit through a socket the child
/// inherits and a run loop, and it closes the parent's other descriptors in the child by listing
/// them first and spawning after. A descriptor another thread opens in between (a pipe, another
/// child's socket) leaks into the child; a long-lived child holding another one's socket hides that
/// one's exit until it exits itself, and one holding a pipe keeps its reader waiting. A worker
/// supervisor, a scheduler and a test suite all spawn from several threads at once. Here the child
/// keeps only its three standard descriptors (every other one is closed at exec, whatever is open
/// then), starts with no blocked signals and default handlers, and its exit is learnt by polling
/// `waitpid` for its own pid.
public final class ChildProcess: Sendable {
    /// Where one of the child's standard descriptors goes.
    public enum Stream: Sendable, Equatable {
        /// The parent's own descriptor.
        case inherit
        /// `/dev/null`.
        case null
        /// A file: read for standard input; created or truncated for output.
        case file(String)
        /// A file, created or appended to.
        case appending(String)
        /// A descriptor of the parent's, such as one end of a pipe (made with `O_CLOEXEC`, so that
        /// no other child inherits it).
        case descriptor(Int32)
    }

    /// How a child ended.
    public enum Termination: Sendable, Equatable {
        case exited(Int32)
        case signalled(Int32)

        /// The exit status, or the signal's number (as Foundation's `terminationStatus` gives it).
        public var status: Int32 {
            switch self {
            case .exited(let code): code
            case .signalled(let signal): signal
            }
        }
    }

    /// The child's process id.
    public let processIdentifier: Int32
    private let termination = Mutex<Termination?>(nil)

    /// Starts `executable` (a path; not searched for in `PATH`) with `arguments`, and `environment`
    /// in place of the parent's when given. `newProcessGroup` puts the child in a group of its own,
    /// so that a terminal's ^C reaches only the parent, which decides what its children get.
    public init(executable: String, arguments: [String], environment: [String: String]? = nil,
                standardInput: Stream = .null, standardOutput: Stream = .inherit, standardError: Stream = .inherit,
                newProcessGroup: Bool = true) throws(ChildProcessError) {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (descriptor, stream) in [(STDIN_FILENO, standardInput), (STDOUT_FILENO, standardOutput), (STDERR_FILENO, standardError)] {
            let result: Int32
            switch stream {
            case .inherit: result = 0
            case .null: result = posix_spawn_file_actions_addopen(&actions, descriptor, "/dev/null", descriptor == STDIN_FILENO ? O_RDONLY : O_WRONLY, 0)
            case .file(let path) where descriptor == STDIN_FILENO: result = posix_spawn_file_actions_addopen(&actions, descriptor, path, O_RDONLY, 0)
            case .file(let path): result = posix_spawn_file_actions_addopen(&actions, descriptor, path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            case .appending(let path): result = posix_spawn_file_actions_addopen(&actions, descriptor, path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            case .descriptor(let source): result = posix_spawn_file_actions_adddup2(&actions, source, descriptor)
            }
            if result != 0 { throw ChildProcessError(executable: executable, step: "redirecting descriptor \(descriptor)", code: result) }
        }
        // Closes every descriptor from 3 up as the child execs: nothing opened meanwhile can leak.
        // (Without glibc 2.34's closefrom action, the ones open now, as Foundation does.)
        let closed: Int32
        if let addCloseFrom {
            closed = addCloseFrom(&actions, 3)
        } else {
            closed = Self.openDescriptors().filter { $0 > STDERR_FILENO }.reduce(0) { failed, descriptor in
                failed != 0 ? failed : posix_spawn_file_actions_addclose(&actions, descriptor)
            }
        }
        if closed != 0 { throw ChildProcessError(executable: executable, step: "closing inherited descriptors", code: closed) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t(), defaultSignals = sigset_t()
        sigemptyset(&noSignals)
        sigemptyset(&defaultSignals)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2, SIGCHLD, SIGALRM] { sigaddset(&defaultSignals, signal) }
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &defaultSignals)
        var flags = Int32(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        if newProcessGroup {
            flags |= Int32(POSIX_SPAWN_SETPGROUP)
            posix_spawnattr_setpgroup(&attributes, 0)
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned: Int32
        if let environment {
            let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
            defer { for pointer in envp { free(pointer) } }
            spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        } else {
            spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        }
        if spawned != 0 { throw ChildProcessError(executable: executable, step: "starting it", code: spawned) }
        processIdentifier = pid
    }

    /// The descriptors open in this process, from /proc/self/fd.
    private static func openDescriptors() -> [Int32] {
        guard let directory = opendir("/proc/self/fd") else { return [] }
        defer { closedir(directory) }
        let own = dirfd(directory)
        var found: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let descriptor = Int32(name), descriptor != own { found.append(descriptor) }
        }
        return found
    }

    /// How the child ended, reaping it if it just did; nil while it runs.
    public var exit: Termination? {
        termination.withLock { known in
            if let known { return known }
            var status: Int32 = 0
            let result = waitpid(processIdentifier, &status, WNOHANG)
            guard result == processIdentifier else { return nil }
            // The W* macros are not imported into Swift: bits 0-6 are the signal, 8-15 the exit code.
            let signal = status & 0x7f
            known = signal == 0 ? .exited((status >> 8) & 0xff) : .signalled(signal)
            return known
        }
    }

    /// Whether the child is still running.
    public var isRunning: Bool { exit == nil }

    /// Sends `signal` to the child, unless it has already been reaped (its pid may be another's by then).
    public func send(_ signal: Int32) {
        termination.withLock { known in
            if known == nil { _ = kill(processIdentifier, signal) }
        }
    }

    /// Blocks the calling thread until the child ends (polling every millisecond: for children known
    /// to be ending, such as one just sent SIGKILL).
    @discardableResult
    public func waitUntilExit() -> Termination {
        while true {
            if let exit { return exit }
            usleep(1000)
        }
    }

    /// Blocks the calling thread until the child ends or `deadline` passes; nil at the deadline.
    public func waitUntilExit(before deadline: ContinuousClock.Instant) -> Termination? {
        while true {
            if let exit { return exit }
            if ContinuousClock.now >= deadline { return nil }
            usleep(2000)
        }
    }

    /// Waits, without holding a thread, until the child ends or `timeout` passes; nil on timeout.
    public func exit(within timeout: Duration) async -> Termination? {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            if let exit { return exit }
            if clock.now >= deadline { return nil }
            do { try await Task.sleep(for: .milliseconds(5)) } catch { return exit }
        }
    }
}

/// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), found at run time: Swift's
/// Glibc module does not declare it.
private let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
}()

/// A child process could not be started.
public struct ChildProcessError: Error, CustomStringConvertible {
    public let executable: String
    public let step: String
    public let code: Int32
    public var description: String { "cannot start \(executable): \(step): \(String(cString: strerror(code)))" }
}
