import Foundation
import Synchronization

/// Shows a worker's progress while it runs: a single redrawn line on a terminal, or a plain log
/// line every interval otherwise. Runs on a thread of its own; `start` once, `stop` once.
public final class ProgressReporter: Sendable {
    public enum Mode: Sendable, Equatable {
        /// Redraw one line (carriage return + erase) every `refresh` seconds.
        case terminal(refresh: Double)
        /// A log line every `interval` seconds.
        case lines(interval: Double)
    }

    private let sampler: ProgressSampler
    private let telemetry: WorkerTelemetry
    private let mode: Mode
    private let write: @Sendable (String) -> Void
    private let width: @Sendable () -> Int
    private let state = Mutex(State())

    private struct State {
        /// The bar as last drawn (terminal mode), redrawn after every log line.
        var bar: String?
        var started = false
        var stopped = false
    }

    /// - Parameters:
    ///   - write: where text goes, as is (default: standard error).
    ///   - width: the terminal's width in columns (default: asked of standard error's terminal).
    public init(sampler: ProgressSampler, telemetry: WorkerTelemetry, mode: Mode,
                write: @escaping @Sendable (String) -> Void = ProgressReporter.writeStandardError,
                width: @escaping @Sendable () -> Int = ProgressReporter.terminalWidth) {
        self.sampler = sampler
        self.telemetry = telemetry
        self.mode = mode
        self.write = write
        self.width = width
    }

    /// The log the worker should use while the reporter runs: on a terminal each line first
    /// erases the bar and then draws it again below, so lines and bar never mix.
    public var log: WorkerLog {
        guard case .terminal = mode else {
            return WorkerLog { [write] line in write(WorkerLog.timestamp() + " " + line + "\n") }
        }
        return WorkerLog { [self] line in
            state.withLock { state in
                let text = WorkerLog.timestamp() + " " + line + "\n"
                write(state.bar == nil ? text : "\r\u{1B}[K" + text + state.bar!)
            }
        }
    }

    /// Starts the reporting thread.
    public func start() {
        let first = state.withLock { state -> Bool in
            defer { state.started = true }
            return !state.started
        }
        guard first else { return }
        // A first read now, so the jobs with work left are followed from the start: a job done
        // before the first periodic read would otherwise be missing from the final figures (0/0).
        _ = sampler.sample(maxAge: 0, force: true)
        let thread = Thread { [self] in run() }
        thread.name = "sluice-progress"
        thread.start()
    }

    /// Stops reporting and shows the final figures (read fresh from the store).
    public func stop() {
        let wasRunning = state.withLock { state -> Bool in
            defer { state.stopped = true }
            return state.started && !state.stopped
        }
        guard wasRunning else { return }
        let figures = currentFigures(maxAge: 0)
        switch mode {
        case .terminal:
            state.withLock { state in
                write("\r\u{1B}[K" + ProgressFormat.terminalLine(figures, width: width()) + "\n")
                state.bar = nil
            }
        case .lines:
            write(WorkerLog.timestamp() + " " + ProgressFormat.logLine(figures, windowSeconds: telemetry.windowSeconds) + "\n")
        }
    }

    private var isStopped: Bool { state.withLock { $0.stopped } }

    private func currentFigures(maxAge: Double) -> ProgressFigures {
        ProgressFigures(sample: sampler.sample(maxAge: maxAge, force: maxAge == 0), telemetry: telemetry.snapshot())
    }

    private func run() {
        switch mode {
        case let .terminal(refresh):
            while !isStopped {
                let figures = currentFigures(maxAge: 1)
                state.withLock { state in
                    guard !state.stopped else { return }
                    let bar = ProgressFormat.terminalLine(figures, width: width())
                    state.bar = bar
                    write("\r\u{1B}[K" + bar)
                }
                sleep(seconds: refresh)
            }
        case let .lines(interval):
            sleep(seconds: interval)
            while !isStopped {
                let line = ProgressFormat.logLine(currentFigures(maxAge: 0), windowSeconds: telemetry.windowSeconds)
                if !isStopped { write(WorkerLog.timestamp() + " " + line + "\n") }
                sleep(seconds: interval)
            }
        }
    }

    /// Sleeps in short slices so `stop` is never kept waiting long.
    private func sleep(seconds: Double) {
        let deadline = ContinuousClock.now + .seconds(max(0.05, seconds))
        while !isStopped, ContinuousClock.now < deadline {
            Thread.sleep(forTimeInterval: min(0.1, max(0.001, (deadline - ContinuousClock.now) / .seconds(1))))
        }
    }

    @Sendable public static func writeStandardError(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }

    /// Columns of standard error's terminal ($COLUMNS, else 80 when it cannot be asked).
    @Sendable public static func terminalWidth() -> Int {
        var size = winsize()
        if ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
        if let columns = ProcessInfo.processInfo.environment["COLUMNS"].flatMap(Int.init), columns > 0 { return columns }
        return 80
    }
}
