import Foundation
import Synchronization

/// Rewrites a metrics file every interval for node_exporter's textfile collector: the text goes
/// to a temporary file in the same folder, which is then renamed over the target, so a reader
/// sees the old file or the new one, never half of one.
public final class MetricsFileWriter: Sendable {
    public let path: String
    private let interval: Double
    private let body: @Sendable () -> String
    private let log: WorkerLog
    private let state = Mutex(State())
    /// The final write and a periodic one must not share the temporary file at once.
    private let writing = Mutex(())

    private struct State {
        var started = false
        var stopped = false
        var failures = 0
    }

    /// - Parameters:
    ///   - interval: seconds between rewrites.
    ///   - body: the exposition text, computed for each write.
    public init(path: String, interval: Double, log: WorkerLog, body: @escaping @Sendable () -> String) {
        self.path = path
        self.interval = max(0.1, interval)
        self.body = body
        self.log = log
    }

    /// Writes the file once, atomically.
    public func write() throws {
        try writing.withLock { _ in try writeUnlocked() }
    }

    private func writeUnlocked() throws {
        let text = body()
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
        do {
            try Data(text.utf8).write(to: temporary)
            guard rename(temporary.path, path) == 0 else {
                throw MetricsServerError("cannot rename \(temporary.path) to \(path): \(String(cString: strerror(errno)))")
            }
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw error
        }
    }

    /// Writes now, then every interval on a thread of its own.
    public func start() {
        let first = state.withLock { state -> Bool in
            defer { state.started = true }
            return !state.started
        }
        guard first else { return }
        writeLogging()
        let thread = Thread { [self] in
            while true {
                let deadline = ContinuousClock.now + .seconds(interval)
                while !isStopped, ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.05) }
                if isStopped { return }
                writeLogging()
            }
        }
        thread.name = "sluice-metrics-file"
        thread.start()
    }

    /// Stops the rewrites and writes the final figures.
    public func stop() {
        let running = state.withLock { state -> Bool in
            defer { state.stopped = true }
            return state.started && !state.stopped
        }
        if running { writeLogging() }
    }

    private var isStopped: Bool { state.withLock { $0.stopped } }

    private func writeLogging() {
        do {
            try write()
            state.withLock { $0.failures = 0 }
        } catch {
            let count = state.withLock { state -> Int in state.failures += 1; return state.failures }
            if count <= 3 || count % 100 == 0 { log("cannot write metrics file \(path) (\(count) in a row): \(error)") }
        }
    }
}
