import ArgumentParser
import Foundation
import SluiceQueue

struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel a job: its unfinished requests are never worked; workers holding them drop them."
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("A job id or name.", valueName: "job"))
    var job: String

    func run() async throws {
        let store = try global.openExistingStore()
        let jobID = try store.job(named: job)
        // A finished job keeps its state: "cancelled" would say that something was left undone.
        if let status = try store.status(job: jobID).first, status.job.state == .active, status.isFinished {
            printNote("job \(jobID): already finished, nothing to cancel")
            return
        }
        let report = try store.cancel(job: jobID)
        printNote("job \(jobID): cancelled \(report.cancelledRequests) requests (\(report.wasLeased) were being worked on)")
    }
}
