import ArgumentParser
import Foundation
import SluiceQueue
import SluiceRunner

/// `sluice work`'s progress display and metrics exporters.
struct WorkWatchOptions: ParsableArguments {
    @Flag(name: .customLong("no-progress"), help: "No progress bar or progress lines.")
    var noProgress = false

    @Option(name: .customLong("progress-interval"), help: ArgumentHelp(
        "Time between progress lines when standard error is not a terminal (on a terminal a progress bar is redrawn instead; default 10s).",
        valueName: "duration"), transform: DurationOption.parse)
    var progressIntervalOption: DurationOption = 10
    var progressInterval: Double { progressIntervalOption.seconds }

    @Option(name: .customLong("metrics-port"), help: ArgumentHelp(
        "Serve Prometheus metrics at http://HOST:PORT/metrics while working (0: any free port; the port is logged).",
        valueName: "port"))
    var metricsPort: Int?

    @Option(name: .customLong("metrics-host"), help: ArgumentHelp(
        "The IPv4 address --metrics-port listens on: loopback by default, 0.0.0.0 for every interface.", valueName: "address"))
    var metricsHost: String?

    @Option(name: .customLong("metrics-file"), help: ArgumentHelp(
        "Rewrite this file with Prometheus metrics every --metrics-interval seconds (atomically), for node_exporter's textfile collector.",
        valueName: "path"))
    var metricsFile: String?

    @Option(name: .customLong("metrics-interval"), help: ArgumentHelp("Time between rewrites of --metrics-file (default 5s).", valueName: "duration"),
            transform: DurationOption.parse)
    var metricsIntervalOption: DurationOption = 5
    var metricsInterval: Double { metricsIntervalOption.seconds }

    func validate() throws {
        if progressInterval > 86_400 { throw ValidationError("--progress-interval must be at most a day (got \(progressInterval))") }
        if metricsInterval > 86_400 { throw ValidationError("--metrics-interval must be at most a day (got \(metricsInterval))") }
        if !(progressInterval >= 0.1) { throw ValidationError("--progress-interval must be at least 0.1 seconds (got \(progressInterval))") }
        if !(metricsInterval >= 0.1) { throw ValidationError("--metrics-interval must be at least 0.1 seconds (got \(metricsInterval))") }
        if let metricsHost {
            guard metricsPort != nil else { throw ValidationError("--metrics-host needs --metrics-port") }
            var address = in_addr()
            guard inet_pton(AF_INET, metricsHost, &address) == 1 else {
                throw ValidationError("--metrics-host must be an IPv4 address such as 127.0.0.1 or 0.0.0.0 (got \(metricsHost))")
            }
        }
        if let metricsPort, !(0...65535).contains(metricsPort) {
            throw ValidationError("--metrics-port must be 0-65535 (got \(metricsPort))")
        }
        if let metricsFile {
            let folder = URL(fileURLWithPath: metricsFile).deletingLastPathComponent().path
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder), isFolder.boolValue else {
                throw ValidationError("--metrics-file \(metricsFile): the folder \(folder) does not exist")
            }
        }
    }

    /// What runs beside the worker; `stop` shows the final progress and writes the last metrics.
    struct Running {
        var log: WorkerLog
        var reporter: ProgressReporter?
        var server: MetricsHTTPServer?
        var file: MetricsFileWriter?
        var sampler: ProgressSampler?

        func stop() {
            // The last figures are read fresh: the final metrics file and progress line show the end state.
            _ = sampler?.sample(maxAge: 0, force: true)
            server?.stop()
            file?.stop()
            reporter?.stop()
        }
    }

    /// Attaches telemetry to the worker's configuration and starts the display and exporters asked for.
    func start(databasePath: String, job: JobID?, quiet: Bool, configuration: inout WorkerConfiguration) throws -> Running {
        let telemetry = WorkerTelemetry()
        configuration.telemetry = telemetry
        // The reporter's lines (counts from the store) replace the worker's own progress lines.
        configuration.progressInterval = 0
        let showProgress = !quiet && !noProgress
        guard showProgress || metricsPort != nil || metricsFile != nil else { return Running(log: quiet ? .silent : .standardError) }

        // A connection of its own: reads for the display never wait for the worker's writes.
        let readStore = try GlobalOptions.openStore(databasePath)
        let sampler = ProgressSampler(store: readStore, job: job)
        var running = Running(log: quiet ? .silent : .standardError)
        running.sampler = sampler
        if showProgress {
            let mode: ProgressReporter.Mode = isatty(STDERR_FILENO) == 1 ? .terminal(refresh: 0.5) : .lines(interval: progressInterval)
            let reporter = ProgressReporter(sampler: sampler, telemetry: telemetry, mode: mode)
            running.reporter = reporter
            running.log = reporter.log
        }
        let process = MetricsPage.Process.current
        let page: @Sendable () -> String = {
            MetricsPage.render(sample: sampler.sample(maxAge: 1), telemetry: telemetry.snapshot(), process: process)
        }
        if let metricsPort {
            let server: MetricsHTTPServer
            do {
                server = try MetricsHTTPServer(host: metricsHost ?? "127.0.0.1", port: metricsPort, body: page)
            } catch {
                throw CLIError(description: "\(error)")
            }
            server.start()
            running.server = server
            let line = "metrics: serving http://\(server.host):\(server.port)/metrics"
            if quiet { printNote("sluice work: " + line) } else { running.log(line) }
        }
        if let metricsFile {
            let writer = MetricsFileWriter(path: metricsFile, interval: metricsInterval, log: running.log, body: page)
            writer.start()
            running.file = writer
            running.log("metrics: writing \(metricsFile) every \(metricsInterval) s")
        }
        running.reporter?.start()
        return running
    }
}
