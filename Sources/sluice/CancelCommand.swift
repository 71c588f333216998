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
        let report = try store.cancel(job: jobID)
        printNote("job \(jobID): cancelled \(report.cancelledRequests) requests (\(report.wasLeased) were being worked on)")
    }
}
