import ArgumentParser
import Foundation
import SluiceQueue
import SluiceRunner
import SluiceEngine
import SluiceSchedule
import Synchronization

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a job spec once: enqueue new input files, work until done or the deadline, export.",
        discussion: """
        Idempotent, for cron: each input file is enqueued once (by the SHA-256 of its content), each \
        finished job is exported once (written to a temporary file and renamed into place). Work left at \
        the deadline is continued by the next run. See docs/scheduling.md for the spec format.

        Exit status: 0 all done (or nothing new); 1 an error (the rest was still done); 2 bad spec or usage; \
        4 deadline or signal with work remaining; 5 done, but requests failed in this run's exports; \
        6 another run of this spec is working and on_overlap = "exit".
        """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The job spec (a .toml file).", valueName: "spec"))
    var spec: String

    @Flag(help: "No log lines on standard error (errors are still printed).")
    var quiet = false

    func run() async throws {
        let jobSpec: JobSpec
        do {
            jobSpec = try JobSpec.load(path: spec)
        } catch {
            throw CLIError.usage(error.description)
        }
        let code = try await Self.runSpec(jobSpec, global: global, quiet: quiet, handleSignals: true)
        if code != 0 { throw ExitCode(code) }
    }

    /// Runs one spec to its end and returns the exit status (shared with `sluice scheduler`).
    static func runSpec(_ spec: JobSpec, global: GlobalOptions, quiet: Bool, handleSignals: Bool,
                        stopSignal: StopSignal? = nil) async throws -> Int32 {
        let databasePath = spec.database ?? global.databasePath
        let store = try GlobalOptions.openStore(databasePath)
        let log: @Sendable (String) -> Void
        if quiet {
            log = { _ in }
        } else {
            log = { printNote($0) }
        }
        let run = try SpecRun(spec: spec, store: store, log: log)
        let current = CurrentWorker()
        let stop = stopSignal ?? StopSignal()
        stop.onStop {
            run.requestStop()
            current.value.withLock { $0?.requestDrain(.signal("SIGTERM")) }
        }
        var watcher: SignalWatcher?
        if handleSignals {
            watcher = SignalWatcher(signals: [SIGTERM, SIGINT]) { number in
                log("sluice run \(spec.name): \(SignalWatcher.name(of: number)): stopping after the current job drains")
                stop.fire()
            }
        }
        defer { watcher?.cancel() }

        let environment = ProcessInfo.processInfo.environment
        let report = try await run.run { job, seconds in
            var configuration = WorkerConfiguration(job: job)
            configuration.graceSeconds = spec.graceSeconds
            configuration.maxRuntimeSeconds = seconds.map { max(0.5, $0) }
            var options = EngineOptions(
                kind: spec.engine.kind == "openai" ? .openai : .builtin,
                baseURL: spec.engine.baseURL,
                concurrency: spec.engine.concurrency,
                model: spec.engine.model,
                apiKey: environment[spec.engine.apiKeyEnvironment],
                requestTimeout: 600,
                threads: spec.engine.threads)
            options.precision = spec.engine.precision.flatMap(MatmulPrecision.init(rawValue:))
            let engine = try makeEngine(options)
            let worker = Worker(store: store, engine: engine, configuration: configuration,
                                log: quiet ? .silent : .standardError)
            current.value.withLock { $0 = worker }
            if stop.isFired { worker.requestDrain(.signal("SIGTERM")) }
            defer { current.value.withLock { $0 = nil } }
            let exit: WorkerExit
            do {
                exit = try await worker.run()
            } catch {
                await engine.shutdown()
                throw error
            }
            await engine.shutdown()
            switch exit {
            case .completed, .nothingToDo: return false
            case let .drained(_, workRemains): return workRemains
            }
        }
        if case let .errors(problems) = report.outcome {
            for problem in problems { printError(problem) }
        }
        return report.outcome.exitCode
    }
}

/// The worker a command is driving now (none while it starts), for signal handlers.
final class CurrentWorker: Sendable {
    let value = Mutex<Worker?>(nil)
}

/// A one-shot stop request that runs its handlers once (from a signal, or from the scheduler).
final class StopSignal: Sendable {
    private let state = Mutex<(fired: Bool, handlers: [@Sendable () -> Void])>((false, []))

    var isFired: Bool { state.withLock { $0.fired } }

    func onStop(_ handler: @escaping @Sendable () -> Void) {
        let runNow = state.withLock { s -> Bool in
            if s.fired { return true }
            s.handlers.append(handler)
            return false
        }
        if runNow { handler() }
    }

    func fire() {
        let handlers = state.withLock { s -> [@Sendable () -> Void] in
            if s.fired { return [] }
            s.fired = true
            return s.handlers
        }
        for handler in handlers { handler() }
    }
}
