import ArgumentParser
import Foundation
import SluiceQueue

struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a job's results in the OpenAI Batch output format, in input order.",
        discussion: "Requests still queued or leased are not written; the summary on standard error counts them."
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("A job id or name.", valueName: "job"))
    var job: String

    @Option(name: [.short, .customLong("output")], help: ArgumentHelp("The results file to write.", valueName: "out"))
    var output: String

    @Option(help: ArgumentHelp("Also write failures and non-200 responses to this file.", valueName: "err"))
    var errors: String?

    func run() async throws {
        let store = try global.openExistingStore()
        let jobID = try store.job(named: job)
        let report: ExportReport
        do {
            report = try store.export(job: jobID, to: output, errors: errors)
        } catch let error as QueueError {
            throw CLIError(description: error.description)
        }
        var summary = "job \(jobID): wrote \(report.written) lines to \(output) (\(report.succeeded) succeeded, \(report.errors) errors, \(report.cancelled) cancelled)"
        if let errors { summary += "; \(report.errors) lines to \(errors)" }
        if report.unfinished > 0 { summary += "; \(report.unfinished) requests are not finished yet and were not written" }
        printNote(summary)
    }
}
