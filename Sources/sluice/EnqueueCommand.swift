import ArgumentParser
import Foundation
import SluiceQueue

struct EnqueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue",
        abstract: "Validate an OpenAI Batch input file and add it to the queue as a new job.",
        discussion: """
        Prints the new job's id on standard output; counts and bad lines ("line 17: …") go to standard error. \
        Bad lines are stored as failed requests (they appear in the errors export) unless --strict is given, \
        in which case any bad line rejects the whole file and nothing is created (exit 1).
        """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The JSONL file: one {custom_id, method, url, body} object per line.", valueName: "file"))
    var file: String

    @Option(help: "A name for the job (usable instead of its id).")
    var name: String?

    @Option(help: "Jobs with higher priority are worked first.")
    var priority: Int = 0

    @Flag(help: "Reject the whole file if any line is bad.")
    var strict = false

    @Flag(help: "Enqueue even if a file with the same content was enqueued before.")
    var allowDuplicate = false

    func run() async throws {
        let store = try global.openOrCreateStore()
        let report: EnqueueReport
        do {
            report = try store.enqueue(file: file, name: name, priority: priority, strict: strict, allowDuplicate: allowDuplicate)
        } catch let error as QueueError {
            throw CLIError(description: error.description)
        }
        for bad in report.badLines { printNote("\(file): \(bad)") }
        if report.badLineCount > report.badLines.count {
            printNote("\(file): … and \(report.badLineCount - report.badLines.count) more bad lines (all are in the errors export)")
        }
        if report.rejected {
            throw CLIError(description: "\(file): \(report.badLineCount) bad lines; --strict rejected the file and created nothing")
        }
        guard let job = report.jobID else { throw CLIError(description: "\(file): no job was created") }
        let label = report.name.map { " (\"\($0)\")" } ?? ""
        printNote("job \(job)\(label): \(report.accepted) requests queued, \(report.badLineCount) bad lines, from \(report.lines) lines in \(String(format: "%.2f", report.seconds)) s")
        print(job)
    }
}
