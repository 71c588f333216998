import ArgumentParser
import Foundation
import SluiceQueue
import SluiceRunner

struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write a one-page HTML report of a job: throughput, latency, tokens, failures, preemptions, cost.",
        discussion: """
        The page is self-contained (inline CSS and SVG charts, no script, no external resource), so it opens \
        offline and makes no network request. Cost = active machine time × --hourly-price; the page says how \
        active time is measured.
        """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("A job id or name.", valueName: "job"))
    var job: String

    @Option(name: [.short, .customLong("output")], help: ArgumentHelp("The HTML file to write.", valueName: "report.html"))
    var output: String

    @Option(name: .customLong("hourly-price"), help: ArgumentHelp("Price of one machine-hour in USD, for the cost figures.", valueName: "usd"))
    var hourlyPrice: Double?

    func validate() throws {
        if let hourlyPrice, !(hourlyPrice >= 0 && hourlyPrice.isFinite) {
            throw ValidationError("--hourly-price must be a non-negative number of dollars (got \(hourlyPrice))")
        }
    }

    func run() async throws {
        let store = try global.openExistingStore()
        let jobID = try store.job(named: job)
        let data: JobReportData
        do {
            data = try store.reportData(job: jobID)
        } catch let error as QueueError {
            throw CLIError(description: error.description)
        }
        let summary = ReportSummary(data: data, hourlyPrice: hourlyPrice, generatedAt: Date().timeIntervalSince1970)
        let html = ReportPage.html(summary)
        // Temporary file + rename: a reader never sees half a page.
        let url = URL(fileURLWithPath: output)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
        do {
            try Data(html.utf8).write(to: temporary)
            guard rename(temporary.path, url.path) == 0 else {
                throw CLIError(description: "cannot rename \(temporary.path) to \(output): \(String(cString: strerror(errno)))")
            }
        } catch let error as CLIError {
            try? FileManager.default.removeItem(at: temporary)
            throw error
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw CLIError(description: "cannot write \(output): \(error.localizedDescription)")
        }
        var note = "job \(jobID): wrote \(output) (\(data.results.count) results"
        if let cost = summary.cost { note += String(format: ", cost $%.4f", cost) }
        printNote(note + ")")
    }
}
