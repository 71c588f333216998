import ArgumentParser
import Foundation
import SluiceQueue
import SluiceRunner
import SluiceServer

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the OpenAI Files and Batches API over the queue (point an OpenAI client's base_url here).",
        discussion: """
        A batch becomes a job, validated as `sluice enqueue --strict` validates; any `sluice work` process on the same \
        database runs it (or --workers N starts them; arguments after `--` go to each `sluice work`). Its output and \
        error files are written once, when it ends. GET / is a status page, /metrics serves Prometheus metrics.

        Without --api-keys the server listens on loopback addresses only. With it, every request needs \
        `Authorization: Bearer KEY`; files and batches belong to the key's project. SIGHUP rereads the key file.

        Example: sluice serve --db q.db --workers 1 -- --engine openai --base-url http://127.0.0.1:8000
        """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: "Address to listen on (without --api-keys: loopback only).")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0: any free port; see --port-file).")
    var port = 8080

    @Option(name: .customLong("port-file"), help: ArgumentHelp("Write the bound port to this file once listening.", valueName: "path"))
    var portFile: String?

    @Option(name: .customLong("api-keys"), help: ArgumentHelp("File of `key project` lines (reloaded on SIGHUP).", valueName: "file"))
    var apiKeys: String?

    @Option(name: .customLong("data-dir"), help: ArgumentHelp("Folder for file contents (default: the database path + .files).", valueName: "path"))
    var dataDir: String?

    @Option(help: "Worker processes (`sluice work`) to keep running while there is work (0: run them yourself).")
    var workers = 0

    @Option(name: .customLong("max-file-bytes"), help: ArgumentHelp("Largest upload.", valueName: "bytes"))
    var maxFileBytes = ServeLimits().maxFileBytes

    @Option(name: .customLong("max-file-lines"), help: "Most lines in one input file.")
    var maxFileLines = ServeLimits().maxFileLines

    @Option(name: .customLong("max-line-bytes"), help: ArgumentHelp("Longest input line.", valueName: "bytes"))
    var maxLineBytes = ServeLimits().maxLineBytes

    @Option(name: .customLong("idle-timeout"), help: ArgumentHelp("Close a connection idle (nothing sent or read) this long.", valueName: "seconds"))
    var idleTimeout = ServeLimits().idleTimeoutSeconds

    @Flag(help: "No log lines on standard error (errors are still printed).")
    var quiet = false

    @Argument(parsing: .postTerminator, help: ArgumentHelp("Arguments for each `sluice work` started by --workers.", valueName: "work-args"))
    var workArguments: [String] = []

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0-65535 (got \(port))") }
        guard (0...64).contains(workers) else { throw ValidationError("--workers must be 0-64 (got \(workers))") }
        guard maxFileBytes > 0 else { throw ValidationError("--max-file-bytes must be positive") }
        guard maxFileLines > 0, maxFileLines <= 1 << 31 else { throw ValidationError("--max-file-lines must be 1 to 2^31") }
        guard maxLineBytes > 0, maxLineBytes < Int(Int32.max) else { throw ValidationError("--max-line-bytes must be positive") }
        guard idleTimeout >= 1, idleTimeout.isFinite else { throw ValidationError("--idle-timeout must be at least 1 second") }
        if !workArguments.isEmpty && workers == 0 {
            throw ValidationError("arguments after -- are for the workers of --workers N, which is 0")
        }
    }

    /// The queue with its files and batches tables. Only the SQLite store has them so far.
    private func openBatchStore() throws -> any JobStore & BatchStore {
        let store = try global.openOrCreateStore()
        guard let batches = store as? any JobStore & BatchStore else {
            throw CLIError(description: "sluice serve needs a SQLite queue (--db PATH): the PostgreSQL store has no files and batches tables yet")
        }
        return batches
    }

    func run() async throws {
        let store = try openBatchStore()
        let databasePath = global.databasePath
        var configuration = ServeConfiguration(
            dataDirectory: dataDir ?? ServeConfiguration.defaultDataDirectory(forDatabase: databasePath))
        configuration.host = host
        configuration.port = port
        configuration.apiKeysFile = apiKeys
        configuration.limits.maxFileBytes = maxFileBytes
        configuration.limits.maxFileLines = maxFileLines
        configuration.limits.maxLineBytes = maxLineBytes
        configuration.limits.idleTimeoutSeconds = idleTimeout
        let quiet = self.quiet
        let log: @Sendable (String) -> Void = { message in
            if !quiet { FileHandle.standardError.write(Data("sluice serve: \(message)\n".utf8)) }
        }
        var supervisor: WorkerSupervisor?
        if workers > 0 {
            // This very binary (a child started by path, not by name lookup).
            let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                ?? URL(fileURLWithPath: CommandLine.arguments[0]).path
            supervisor = WorkerSupervisor(
                executable: executable,
                arguments: ["work", "--db", databasePath] + workArguments, count: workers,
                hasWork: { try store.hasUnfinishedWork(job: nil) }, log: log)
        }
        let server: SluiceServer
        do {
            // The reconciler gets a connection of its own: creating a large batch's job holds it for a while.
            let reconcilerStore = try openBatchStore()
            server = try SluiceServer(
                configuration: configuration, store: store, reconcilerStore: reconcilerStore, supervisor: supervisor,
                report: { job in
                    let summary = ReportSummary(data: try store.reportData(job: job), hourlyPrice: nil,
                                                generatedAt: Date().timeIntervalSince1970)
                    return ReportPage.html(summary)
                }, log: log)
        } catch let error as ServeError {
            throw CLIError.usage(error.description)
        }
        signal(SIGHUP, SIG_IGN)
        let hangup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        hangup.setEventHandler { server.reloadKeys() }
        hangup.resume()
        let portFile = self.portFile
        let host = self.host
        let dataDirectory = configuration.dataDirectory
        try await server.run { boundPort in
            log("listening on http://\(host.contains(":") ? "[\(host)]" : host):\(boundPort) (data in \(dataDirectory))")
            if let portFile {
                let temporary = portFile + ".tmp"
                if (try? Data("\(boundPort)\n".utf8).write(to: URL(fileURLWithPath: temporary))) != nil {
                    rename(temporary, portFile)
                }
            }
        }
        hangup.cancel()
    }
}
