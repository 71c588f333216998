import ArgumentParser
import Foundation
import SluiceCore
import SluiceQueue

struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a job's results in the OpenAI Batch output format, in input order.",
        discussion: """
        Requests still queued or leased are not written; the summary on standard error counts them \
        (with --json, a JSON object on standard output, or on standard error when -o - writes the results there).
        """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("A job id or name.", valueName: "job"))
    var job: String

    @Option(name: [.short, .customLong("output")], help: ArgumentHelp("The results file to write; - for standard output.", valueName: "out"))
    var output: String

    @Option(help: ArgumentHelp("Also write failures and non-200 responses to this file (- for standard output).", valueName: "err"))
    var errors: String?

    @Flag(help: "Print the summary as a JSON object.")
    var json = false

    func validate() throws {
        if output == "-", errors == "-" { throw ValidationError("-o - and --errors - cannot both write to standard output") }
    }

    func run() async throws {
        let store = try global.openExistingStore()
        let jobID = try store.job(named: job)
        // Standard output gets the file the export wrote atomically elsewhere, so it is the same bytes.
        let temporary = FileManager.default.temporaryDirectory.path
        // What killed exports to standard output left there.
        if output == "-" || errors == "-" { LeftoverFiles.remove(in: temporary, prefix: "sluice-export-") }
        let staging = temporary + "/sluice-export-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let outputPath = output == "-" ? staging + ".results.jsonl" : output
        let errorsPath = errors == "-" ? staging + ".errors.jsonl" : errors
        defer {
            for path in [outputPath, errorsPath].compactMap({ $0 }) where path.hasPrefix(staging) {
                try? FileManager.default.removeItem(atPath: path)
            }
        }
        let report: ExportReport
        do {
            report = try store.export(job: jobID, to: outputPath, errors: errorsPath)
        } catch let error as QueueError {
            throw CLIError(description: error.description.replacingOccurrences(of: staging, with: "(standard output)"))
        }
        for path in [outputPath, errorsPath].compactMap({ $0 }) where path.hasPrefix(staging) {
            try copyToStandardOutput(path)
        }
        let outputName = output == "-" ? "standard output" : output
        if json {
            let summary = JSON.object([
                "job": .int(jobID), "output": .string(output), "errors_output": errors.map(JSON.string) ?? .null,
                "written": .int(report.written), "succeeded": .int(report.succeeded), "errors": .int(report.errors),
                "cancelled": .int(report.cancelled), "unfinished": .int(report.unfinished),
            ]).serialized
            if output == "-" || errors == "-" { printNote(summary) } else { print(summary) }
            return
        }
        var summary = "job \(jobID): wrote \(report.written) lines to \(outputName) (\(report.succeeded) succeeded, \(report.errors) errors, \(report.cancelled) cancelled)"
        if let errors { summary += "; \(report.errors) lines to \(errors == "-" ? "standard output" : errors)" }
        if report.unfinished > 0 { summary += "; \(report.unfinished) requests are not finished yet and were not written" }
        printNote(summary)
    }

    private func copyToStandardOutput(_ path: String) throws {
        guard let input = FileHandle(forReadingAtPath: path) else { throw CLIError(description: "cannot read back the export") }
        defer { try? input.close() }
        while let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty {
            do {
                try FileHandle.standardOutput.write(contentsOf: chunk)
            } catch {
                throw CLIError(description: "cannot write the results to standard output: \(error)")
            }
        }
    }
}
