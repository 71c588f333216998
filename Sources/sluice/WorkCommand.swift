import ArgumentParser
import Foundation
import SluiceEngine
import SluiceQueue
import SluiceRunner
import Synchronization

struct WorkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "work",
        abstract: "Work on queued requests until none is left (or until stopped).",
        discussion: """
        Keeps the engine full, commits results as they finish, and retries transient failures \
        (HTTP 429/5xx, connection errors, timeouts) with exponential backoff. Run as many workers on one \
        database as you like. If a worker dies, its leases expire after --lease seconds and others take over.

        SIGTERM or SIGINT: stop claiming, let in-flight requests finish within --grace (engines that \
        checkpoint stop at once and store partial output), hand the rest back to the queue, exit 0. \
        A second SIGINT exits at once (status 130) after handing leases back.

        Exit status: 0 no work left, or drained after SIGTERM/SIGINT; 3 nothing to do when it started; \
        4 --max-runtime or --until reached with work remaining; 7 the database cannot be used (corrupt, not a \
        database, read-only, cannot be opened, or deleted or replaced while in use); 1 other errors; 2 usage error; \
        130 second SIGINT.
        """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: "Work only on this job (id or name); default: all jobs, highest priority first.")
    var job: String?

    @Option(help: "builtin (in-process) or openai (a remote OpenAI-compatible server).")
    var engine: EngineKind = EngineKind.defaultKind

    @Option(name: .customLong("base-url"), help: ArgumentHelp("The server for --engine openai, e.g. http://127.0.0.1:8080 (default: $SLUICE_BASE_URL).", valueName: "url"))
    var baseURL: String?

    @Option(help: "Requests in flight at once (default 16 for openai).")
    var concurrency: Int?

    @Option(help: ArgumentHelp("openai: model name sent in every request instead of the file's; builtin: model file or name.", valueName: "name-or-path"))
    var model: String?

    @Option(name: .customLong("api-key-env"), help: ArgumentHelp("Environment variable holding the API key for --engine openai (default: OPENAI_API_KEY).", valueName: "name"))
    var apiKeyEnv: String?

    @Option(name: .customLong("request-timeout"), help: ArgumentHelp("How long one HTTP request may take (openai; default 10m).", valueName: "duration"),
            transform: DurationOption.parse)
    var requestTimeout: DurationOption?

    @Option(help: ArgumentHelp("Lease length; a dead worker's requests are taken over after this long (default 60s).", valueName: "duration"),
            transform: DurationOption.parse)
    var lease: DurationOption = 60

    @Option(help: ArgumentHelp("How long a drain (SIGTERM/SIGINT, --max-runtime) may take before the process exits (default 30s).", valueName: "duration"),
            transform: DurationOption.parse)
    var grace: DurationOption = 30

    @Option(name: .customLong("max-runtime"), help: ArgumentHelp("Drain and stop after this long (90s, 2h, 1h30m; plain numbers are seconds).", valueName: "duration"),
            transform: DurationOption.parse)
    var maxRuntime: DurationOption?

    @Option(name: .customLong("max-attempts"), help: "Attempts per request before a transient failure becomes final.")
    var maxAttempts: Int = 5

    @Option(name: .customLong("max-lost-leases"),
            help: "Leases of a request that may expire without progress (its worker lost each time) before it fails as worker_lost.")
    var maxLostLeases: Int = QueueDefaults.maxLostLeases

    @Option(name: .customLong("db-timeout"),
            help: ArgumentHelp("How long the database may stay unreachable (the worker keeps generating and retries) before the worker exits with status 6 (default 300s).", valueName: "duration"),
            transform: DurationOption.parse)
    var dbTimeout: DurationOption = 300

    @Option(help: "builtin: compute threads (default: all cores).")
    var threads: Int?

    @Option(name: .customLong("chat-template"), help: ArgumentHelp("builtin: chat format instead of the model's own template: gemma, chatml, llama3 or a Jinja file.", valueName: "name|file"), transform: parseChatTemplate)
    var chatTemplate: ChatTemplateOverride?

    @Option(name: .customLong("context-length"), help: ArgumentHelp("builtin: tokens of context per sequence at most (default: the model's).", valueName: "tokens"))
    var contextLength: Int?

    @Option(name: .customLong("kv-memory"), help: ArgumentHelp("builtin: KV cache budget (default 2G); when full, the newest sequences are preempted and recomputed later.", valueName: "size"))
    var kvMemory: String?

    @OptionGroup var speed: BuiltinSpeedOptions

    @Option(name: .customLong("embedding-model"), help: ArgumentHelp("builtin: the model for /v1/embeddings lines: a sentence-transformers folder or a GGUF decoder model, as a path or a name in the model cache (default: all-minilm-l6-v2, from scripts/fetch-model --embedding); loaded at the first such line.", valueName: "name-or-path"))
    var embeddingModel: String?

    @Option(help: ArgumentHelp("builtin: how --embedding-model pools its tokens' final states into one vector: last (the last token's; a GGUF decoder's default), mean, or cls (BERT only). Default: the model's own (a folder's 1_Pooling config). Vectors are unit length either way.", valueName: "last|mean|cls"))
    var pooling: EmbeddingPooling?

    @Flag(name: .customLong("no-prefix-sharing"), help: "builtin: compute every prompt in full instead of sharing the KV blocks of common prompt prefixes (outputs are identical either way).")
    var noPrefixSharing = false

    @OptionGroup(title: "Preemption") var preemption: WorkPreemptionOptions

    @Flag(help: "No log lines on standard error (errors are still printed).")
    var quiet = false

    @OptionGroup(title: "Watching") var watching: WorkWatchOptions

    func validate() throws {
        var configuration = WorkerConfiguration()
        configuration.leaseSeconds = lease.seconds
        configuration.graceSeconds = grace.seconds
        configuration.maxRuntimeSeconds = maxRuntime?.seconds
        configuration.maxAttempts = maxAttempts
        configuration.maxLostLeases = maxLostLeases
        configuration.databaseTimeoutSeconds = dbTimeout.seconds
        if let problem = configuration.validationError() { throw ValidationError(problem) }
        if let concurrency, concurrency < 1 { throw ValidationError("--concurrency must be at least 1 (got \(concurrency))") }
        if let requestTimeout, !(requestTimeout.seconds > 0 && requestTimeout.seconds <= WorkerConfiguration.longestSeconds) {
            throw ValidationError("--request-timeout must be positive and at most 100 years (got \(requestTimeout))")
        }
        try refuseOtherEngineOptions()
        try watching.validate()
    }

    /// Opens the queue. A PostgreSQL server that cannot be reached yet (restarting, failing over) is
    /// waited for up to --db-timeout, as one that goes away while the worker runs is; one that
    /// refuses the connection (password, database name) is an error at once (exit 7).
    private func openStoreWaitingForTheServer() async throws -> any JobStore {
        guard global.isPostgres else { return try global.openExistingStore() }
        let start = ContinuousClock.now
        var delay = 0.5
        var told = false
        while true {
            do {
                return try SluiceQueue.openStore(global.databasePath)
            } catch let error as PostgresError where error.isTransient && !error.isUnusable {
                guard ContinuousClock.now - start + .seconds(delay) <= .seconds(dbTimeout.seconds) else {
                    throw CLIError(description: "the database stayed unreachable for \(dbTimeout) (--db-timeout): \(error)",
                                   exitCode: ExitStatus.databaseUnreachable)
                }
                if !told {
                    printNote("sluice work: \(error); retrying for up to \(dbTimeout) (--db-timeout)")
                    told = true
                }
                try await Task.sleep(for: .seconds(delay))
                delay = min(delay * 2, 8)
            } catch {
                throw GlobalOptions.openingError(error, location: global.databasePath)
            }
        }
    }

    /// Hands the worker's leases back and exits with `status`; a database that does not answer
    /// (its leases then expire on their own) holds the exit for two seconds at most.
    static func releaseLeasesAndExit(_ worker: Worker, status: Int32) {
        DispatchQueue.global().asyncAfter(deadline: .now() + 2) {
            printError("the database did not take the leases back within 2 s; they will expire on their own")
            Foundation.exit(status)
        }
        worker.releaseLeasesNow()
        Foundation.exit(status)
    }

    func run() async throws {
        // Stop signals are watched from the start: one that comes while the model loads, before any
        // work is claimed, ends the process at once with nothing to hand back (exit 0, as a drain).
        let current = CurrentWorker()
        let signals = SignalCounter()
        let grace = self.grace.seconds
        let watcher = SignalWatcher(signals: [SIGTERM, SIGINT]) { number in
            let name = SignalWatcher.name(of: number)
            guard let worker = current.value.withLock({ $0 }) else {
                printNote("sluice work: \(name) while starting, before claiming any work: exiting")
                Foundation.exit(ExitStatus.success)
            }
            switch signals.record(number) {
            case .first:
                worker.log("\(name): draining; send SIGINT again to stop at once")
                worker.requestDrain(.signal(name))
                // The drain finishes well before this; the watchdog only guards the promise to exit within --grace.
                DispatchQueue.global().asyncAfter(deadline: .now() + grace) {
                    printError("drain did not finish within --grace \(grace) s; handing leases back and exiting")
                    Self.releaseLeasesAndExit(worker, status: ExitStatus.failure)
                }
            case .secondInterrupt:
                printNote("sluice work: second SIGINT: handing leases back and exiting now")
                Self.releaseLeasesAndExit(worker, status: ExitStatus.interrupted)
            case .repeated:
                worker.log("\(name) again: already draining")
            }
        }
        defer { watcher.cancel() }

        let environment = ProcessInfo.processInfo.environment
        guard global.isPostgres || FileManager.default.fileExists(atPath: global.databasePath) else {
            printNote("sluice work: no database at \(global.databaseLabel): nothing to do")
            throw ExitCode(ExitStatus.nothingToDo)
        }
        let store = try await openStoreWaitingForTheServer()
        var configuration = WorkerConfiguration()
        if let job { configuration.job = try store.job(named: job) }
        configuration.leaseSeconds = lease.seconds
        configuration.graceSeconds = grace
        configuration.maxRuntimeSeconds = maxRuntime?.seconds
        configuration.maxAttempts = maxAttempts
        configuration.maxLostLeases = maxLostLeases
        configuration.databaseTimeoutSeconds = dbTimeout.seconds
        try preemption.apply(to: &configuration)

        var options = EngineOptions(
            kind: engine,
            baseURL: baseURL ?? environment["SLUICE_BASE_URL"],
            concurrency: concurrency,
            model: model,
            apiKey: environment[apiKeyEnv ?? "OPENAI_API_KEY"],
            requestTimeout: requestTimeout?.seconds ?? 600,
            threads: threads,
            chatTemplate: chatTemplate,
            contextLength: contextLength,
            kvMemory: kvMemory)
        options.checkpointPublishInterval = preemption.enginePublishInterval
        speed.apply(to: &options)
        options.prefixSharing = !noPrefixSharing
        options.embeddingModel = embeddingModel
        options.embeddingPooling = pooling
        let engine = try makeEngine(options)
        configuration.resultCache = try preemption.resultCachePolicy(engine: engine, options: options)
        let watch = try watching.start(databasePath: global.databasePath, job: configuration.job, quiet: quiet,
                                       configuration: &configuration)
        defer { watch.stop() }
        let log = watch.log
        let worker = Worker(store: store, engine: engine, configuration: configuration, log: log)
        let preemptionWatchers = try preemption.startWatchers(worker: worker, log: log)
        defer { for watcher in preemptionWatchers { watcher.cancel() } }

        current.value.withLock { $0 = worker }

        let outcome: WorkerExit
        do {
            outcome = try await worker.run()
        } catch {
            await engine.shutdown()
            if case WorkerError.storeUnavailable = error {
                throw CLIError(description: "\(error)", exitCode: ExitStatus.databaseUnreachable)
            }
            if case WorkerError.databaseUnusable = error {
                throw CLIError(description: "\(error)", exitCode: ExitStatus.databaseUnusable)
            }
            if let reason = (error as? QueueError)?.unhealableReason {
                throw CLIError(description: "\(reason): \(error)", exitCode: ExitStatus.databaseUnusable)
            }
            throw CLIError(description: "\(error)")
        }
        await engine.shutdown()
        if let builtin = builtinGenerationEngine(engine) { log(builtin.savingsSummary) }
        switch outcome {
        case .completed:
            return
        case .nothingToDo:
            throw ExitCode(ExitStatus.nothingToDo)
        case let .drained(reason, workRemains):
            if (reason == .maxRuntime || reason == .deadline) && workRemains { throw ExitCode(ExitStatus.workRemains) }
        }
    }
}

/// Counts stop signals: the first drains, a second SIGINT stops at once.
final class SignalCounter: Sendable {
    enum Kind { case first, secondInterrupt, repeated }
    private let seen = Mutex(0)

    func record(_ number: Int32) -> Kind {
        let count = seen.withLock { count -> Int in count += 1; return count }
        if count == 1 { return .first }
        return number == SIGINT ? .secondInterrupt : .repeated
    }
}
