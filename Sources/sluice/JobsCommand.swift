import ArgumentParser
import Foundation
import SluiceQueue

struct JobsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "jobs", abstract: "List the jobs in the database, oldest first.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let store = try global.openExistingStore()
        let jobs = try store.jobs()
        if jobs.isEmpty {
            print("no jobs in \(global.databasePath)")
            return
        }
        print("ID\tNAME\tSTATE\tPRIORITY\tREQUESTS\tBAD\tCREATED\tINPUT")
        for job in jobs {
            print([String(job.id), job.name ?? "-", job.state.rawValue, String(job.priority), String(job.requestCount),
                   String(job.badLineCount), StatusFormat.date(job.createdAt), job.inputPath].joined(separator: "\t"))
        }
    }
}
