import ArgumentParser
import Foundation
import SluiceEngine

/// The `sluice` command: offline batch LLM inference from a durable queue.
struct SluiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "Run OpenAI-format batch jobs (JSONL) from a durable SQLite queue.",
        discussion: """
        Typical use: `sluice enqueue prompts.jsonl`, then `sluice work` (on as many processes or \
        machines sharing the database as you like), then `sluice export JOB -o results.jsonl`.

        --db PATH may come before the command (sluice --db jobs.db status). Durations (--lease, \
        --grace, --max-runtime, ...) take 90, 90s, 1m30s, 2h or 7d.

        Environment: SLUICE_DB (default database path), OPENAI_API_KEY (API key for --engine openai), \
        SLUICE_BASE_URL (default --base-url).

        Exit codes: 0 success, 1 error, 2 usage error; `sluice work` also uses 3 (nothing to do), \
        4 (--max-runtime reached with work remaining), 6 (the database stayed unreachable or unwritable for \
        --db-timeout), 7 (the database cannot be used: corrupt, read-only, replaced), and 130 after \
        a second SIGINT.
        """,
        version: "sluice \(SluiceVersion.number) (CPU kernels: \(CPUKernels.summary); default precision \(MatmulPrecision.engineDefault.rawValue)\(MatmulPrecision.int8Available ? ", int8 from \(MatmulPrecision.int8FromBlockWeights / 1_000_000)M block weights" : ""))",
        subcommands: [
            EnqueueCommand.self, WorkCommand.self, StatusCommand.self, JobsCommand.self,
            ExportCommand.self, CancelCommand.self, RetryCommand.self, ModelsCommand.self, GenerateCommand.self,
            RunCommand.self, CronCommand.self, SchedulerCommand.self, ReportCommand.self, DBCommand.self, ServeCommand.self,
        ]
    )

    static func runAsMain() async {
        do {
            var command = try parseAsRoot(LeadingOptions.reorder(Array(CommandLine.arguments.dropFirst())))
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            Foundation.exit(0)
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch let error as CLIError {
            printError(error.description)
            Foundation.exit(error.exitCode)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            if code == .validationFailure {
                var message = fullMessage(for: error)
                if message.hasPrefix("Error: ") { message.removeFirst("Error: ".count) }
                printError(message)
                Foundation.exit(ExitStatus.usage)
            }
            printError(String(describing: error))
            Foundation.exit(ExitStatus.failure)
        }
    }
}

/// Exit statuses shared by the commands (documented in README.md and `sluice --help`).
enum ExitStatus {
    static let success: Int32 = 0
    static let failure: Int32 = 1
    static let usage: Int32 = 2
    static let nothingToDo: Int32 = 3
    static let workRemains: Int32 = 4
    /// `work`: the database stayed unreachable (or full) for --db-timeout.
    static let databaseUnreachable: Int32 = 6
    /// `work`: the database cannot be used any more (corrupt, not a database, read-only, cannot be
    /// opened, or deleted or replaced under the worker); waiting would not help.
    static let databaseUnusable: Int32 = 7
    static let interrupted: Int32 = 130
}

/// An error a command reports to the user, with its exit status.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    var exitCode: Int32 = ExitStatus.failure

    static func usage(_ message: String) -> CLIError { CLIError(description: message, exitCode: ExitStatus.usage) }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data("sluice: error: \(message)\n".utf8))
}

func printNote(_ message: String) {
    FileHandle.standardError.write(Data("\(message)\n".utf8))
}
