import ArgumentParser
import Foundation
import SluiceQueue

/// `sluice db …`: moving work between queues.
struct DBCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "Move work between queue databases (SQLite files and PostgreSQL servers).",
        subcommands: [Copy.self]
    )

    struct Copy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "copy",
            abstract: "Copy jobs (requests, checkpoints, results) and the result cache from one queue to another.",
            discussion: """
                FROM and TO are SQLite paths or postgresql:// URLs; TO is created if needed. Each copied job gets a new \
                id in TO (printed). Stop FROM's workers first: requests leased there arrive queued and continue from \
                their checkpoints, e.g. a job started on a laptop continues on a fleet.
                """
        )

        @Argument(help: ArgumentHelp("The queue to copy from.", valueName: "from"))
        var from: String
        @Argument(help: ArgumentHelp("The queue to copy to.", valueName: "to"))
        var to: String
        @Option(help: ArgumentHelp("Copy only this job (id or name in FROM).", valueName: "job"))
        var job: String?

        func run() async throws {
            guard isPostgresURL(from) || FileManager.default.fileExists(atPath: from) else {
                throw CLIError(description: "no database at \(from)")
            }
            if !isPostgresURL(from), !isPostgresURL(to), let a = realpath(from, nil) {
                defer { free(a) }
                if let b = realpath(to, nil) {
                    defer { free(b) }
                    guard String(cString: a) != String(cString: b) else {
                        throw CLIError(description: "\(from) and \(to) are the same database: nothing to copy")
                    }
                }
            } else if from == to {
                throw CLIError(description: "FROM and TO are the same database: nothing to copy")
            }
            let source = try GlobalOptions.openStore(from)
            // The job first: a job FROM lacks must not leave an empty TO behind.
            let jobID = try job.map { try source.job(named: $0) }
            let target = try GlobalOptions.openStore(to)
            let report: JobCopyReport
            do {
                report = try copyJobs(from: source, to: target, job: jobID)
            } catch let error as QueueError {
                throw CLIError(description: error.description)
            } catch let error as PostgresError {
                throw CLIError(description: error.description)
            }
            for copied in report.copied {
                print("job \(copied.from) -> job \(copied.to): \(copied.requests) requests, \(copied.results) results")
            }
            printNote("copied \(report.copied.count) job\(report.copied.count == 1 ? "" : "s") from \(source.location) to \(target.location); \(report.cacheEntriesAdded) result-cache entries added")
        }
    }
}
