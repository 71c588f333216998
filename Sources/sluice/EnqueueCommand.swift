import ArgumentParser
import Foundation
import SluiceCore
import SluiceQueue

struct EnqueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue",
        abstract: "Validate an OpenAI Batch input file and add it to the queue as a new job.",
        discussion: """
        Prints the new job's id on standard output (with --json, a summary object); counts and bad lines \
        ("line 17: …") go to standard error. FILE - reads standard input. \
        Bad lines are stored as failed requests (they appear in the errors export) unless --strict is given, \
        in which case any bad line rejects the whole file and nothing is created (exit 1).
        """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The JSONL file: one {custom_id, method, url, body} object per line; - for standard input.", valueName: "file"))
    var file: String

    @Option(help: "A name for the job (usable instead of its id).")
    var name: String?

    @Option(help: "Jobs with higher priority are worked first.")
    var priority: Int = 0

    @Flag(help: "Reject the whole file if any line is bad.")
    var strict = false

    @Flag(help: "Enqueue even if a file with the same content was enqueued before.")
    var allowDuplicate = false

    @Flag(help: "Print the summary as a JSON object on standard output instead of the job id.")
    var json = false

    /// The path read: `-` is standard input (a pipe, a FIFO or a redirected file).
    var inputPath: String { file == "-" ? "/dev/stdin" : file }

    func run() async throws {
        let store = try global.openOrCreateStore()
        let report: EnqueueReport
        do {
            report = try store.enqueue(file: inputPath, name: name, priority: priority, strict: strict, allowDuplicate: allowDuplicate)
        } catch let error as QueueError {
            throw CLIError(description: error.description)
        }
        let label = file == "-" ? "standard input" : file
        for bad in report.badLines { printNote("\(label): \(bad)") }
        if report.badLineCount > report.badLines.count {
            printNote("\(label): … and \(report.badLineCount - report.badLines.count) more bad lines (all are in the errors export)")
        }
        if json { print(Self.json(report).serialized) }
        if report.rejected {
            throw CLIError(description: "\(label): \(report.badLineCount) bad lines; --strict rejected the file and created nothing")
        }
        guard let job = report.jobID else { throw CLIError(description: "\(label): no job was created") }
        let jobName = report.name.map { " (\"\($0)\")" } ?? ""
        printNote("job \(job)\(jobName): \(report.accepted) requests queued, \(report.badLineCount) bad lines, from \(report.lines) lines in \(String(format: "%.2f", report.seconds)) s")
        if !json { print(job) }
    }

    static func json(_ report: EnqueueReport) -> JSON {
        .object([
            "job": report.jobID.map { JSON.int($0) } ?? .null,
            "name": report.name.map(JSON.string) ?? .null,
            "rejected": .bool(report.rejected),
            "accepted": .int(report.accepted),
            "bad_lines": .int(report.badLineCount),
            "lines": .int(report.lines),
            "blank_lines": .int(report.blankLines),
            "bytes": .int(report.bytesRead),
            "sha256": .string(report.sha256),
            "seconds": .double(report.seconds),
            "first_bad_lines": .array(report.badLines.map { bad in
                .object(["line": .int(bad.lineNumber), "reason": .string(bad.reason.rawValue), "message": .string(bad.message)])
            }),
        ])
    }
}
