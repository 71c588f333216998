import ArgumentParser
import Foundation
import SluiceCore
import SluiceQueue

struct JobsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "jobs", abstract: "List the jobs in the database, oldest first.")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print a JSON array (one object per job) instead of a table.")
    var json = false

    func run() async throws {
        let store = try global.openExistingStore()
        let jobs = try store.jobs()
        // As `status` shows it: an active job with nothing left to do is finished.
        let finished = Set(try store.status(job: nil).filter(\.isFinished).map(\.job.id))
        func state(_ job: JobInfo) -> String { StatusFormat.stateName(job, isFinished: finished.contains(job.id)) }
        if json {
            print(JSON.array(jobs.map { job in
                JSON.object([
                    "id": .int(job.id), "name": job.name.map(JSON.string) ?? .null, "state": .string(state(job)),
                    "priority": .int(job.priority), "requests": .int(job.requestCount), "bad_lines": .int(job.badLineCount),
                    "created_at": .double(job.createdAt), "input_path": .string(job.inputPath),
                    "input_sha256": .string(job.inputSHA256),
                ])
            }).serialized)
            return
        }
        if jobs.isEmpty {
            print("no jobs in \(global.databaseLabel)")
            return
        }
        print("ID\tNAME\tSTATE\tPRIORITY\tREQUESTS\tBAD\tCREATED\tINPUT")
        for job in jobs {
            print([String(job.id), job.name ?? "-", state(job), String(job.priority), String(job.requestCount),
                   String(job.badLineCount), StatusFormat.date(job.createdAt), job.inputPath].joined(separator: "\t"))
        }
    }
}
