import Foundation
import SluiceCore

/// `serve --workers N`: keeps up to N `sluice work` child processes running while the queue has
/// work. A worker exits when no work is left (as `sluice work` does); one that dies (killed, out of
/// memory) is replaced at the next pass, and its leases expire and are taken over as usual.
public final class WorkerSupervisor: @unchecked Sendable {
    let executable: String
    let arguments: [String]
    let count: Int
    let hasWork: @Sendable () throws -> Bool
    let log: @Sendable (String) -> Void
    // Guarded by `lock`. ChildProcess rather than Foundation's Process: workers start with default
    // signal actions (not this server's ignored SIGHUP) and inherit none of its sockets.
    private let lock = NSLock()
    private var children: [ChildProcess] = []
    private var stopping = false

    /// - Parameters:
    ///   - executable: the `sluice` binary; `arguments` start with `work`.
    public init(executable: String, arguments: [String], count: Int, hasWork: @escaping @Sendable () throws -> Bool,
                log: @escaping @Sendable (String) -> Void) {
        self.executable = executable
        self.arguments = arguments
        self.count = count
        self.hasWork = hasWork
        self.log = log
    }

    /// Process ids of the running workers.
    public var pids: [Int32] { lock.withLock { children.filter(\.isRunning).map(\.processIdentifier) } }

    /// Starts workers up to the count while work remains (blocking; called from a pass).
    public func superviseOnce() throws {
        let running: Int? = lock.withLock {
            if stopping { return nil }
            children.removeAll { !$0.isRunning }
            return children.count
        }
        guard let running else { return }
        guard running < count, try hasWork() else { return }
        lock.withLock {
            guard !stopping else { return }
            while children.count < count {
                let process: ChildProcess
                do {
                    process = try ChildProcess(executable: executable, arguments: arguments, standardInput: .null)
                } catch {
                    log("cannot start a worker (\(executable)): \(error)")
                    return
                }
                log("started worker pid \(process.processIdentifier)")
                children.append(process)
            }
        }
    }

    public func run(interval: Double) async {
        while !Task.isCancelled {
            do {
                try await offload { try self.superviseOnce() }
            } catch {
                log("worker supervisor: \(error)")
            }
            try? await Task.sleep(for: .milliseconds(Int(interval * 1000)))
        }
    }

    /// Asks every worker to drain (SIGTERM) and waits up to `grace` seconds for them to exit.
    public func stop(grace: Double) {
        let list = lock.withLock {
            stopping = true
            return children
        }
        for process in list { process.send(SIGTERM) }
        let deadline = ContinuousClock.now + .seconds(grace)
        for process in list where process.waitUntilExit(before: deadline) == nil { process.send(SIGKILL) }
    }
}
