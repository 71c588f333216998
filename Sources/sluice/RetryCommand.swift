import ArgumentParser
import Foundation
import SluiceQueue

struct RetryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry",
        abstract: "Put a job's failed requests back in the queue (bad input lines stay failed).",
        discussion: "Then run `sluice work` again. With --cancelled, cancelled requests come back too and a cancelled job becomes active."
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("A job id or name.", valueName: "job"))
    var job: String

    @Flag(help: "Requeue the failed requests (required: says what to retry).")
    var failed = false

    @Flag(help: "Also requeue cancelled requests.")
    var cancelled = false

    func validate() throws {
        if !failed { throw ValidationError("say what to retry: --failed (and --cancelled to include cancelled requests)") }
    }

    func run() async throws {
        let store = try global.openExistingStore()
        let jobID = try store.job(named: job)
        let report = try store.retry(job: jobID, failedOnly: !cancelled)
        var summary = "job \(jobID): \(report.requeued) requests back in the queue"
        if report.skippedBadInput > 0 { summary += "; \(report.skippedBadInput) bad input lines stay failed" }
        printNote(summary)
    }
}
