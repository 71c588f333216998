import Foundation
import SluiceQueue

/// `sluice report`'s page: one self-contained HTML document (inline CSS and SVG; no script, no
/// font, image or link outside the file), so it opens offline and makes no network request.
public enum ReportPage {
    public static func html(_ report: ReportSummary) -> String {
        let data = report.data
        let job = data.job
        let title = "Sluice report: job \(job.id)" + (job.name.map { " “\($0)”" } ?? "")
        var body = "<header><h1>\(e(title))</h1>\n"
        body += "<p class=\"sub\">Input <code>\(e(job.inputPath))</code> (SHA-256 <code>\(e(String(job.inputSHA256.prefix(16))))…</code>) · "
            + "\(e(stateText(data))) · report made \(e(date(report.generatedAt)))</p></header>\n"
        body += cards(report)
        body += throughputSection(report)
        body += latencySection(report)
        body += tokensSection(report)
        body += failuresSection(report)
        body += preemptionSection(report)
        body += costSection(report)
        body += "<footer>Made by <code>sluice report</code>. Times are in UTC. This page is self-contained: it loads nothing and runs no script.</footer>\n"
        return """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(e(title))</title>
        <style>\(css)</style>
        </head>
        <body>
        <main>
        \(body)</main>
        </body>
        </html>

        """
    }

    // MARK: Sections

    private static func cards(_ report: ReportSummary) -> String {
        let counts = report.data.counts
        var cards: [(String, String, String)] = []
        cards.append(("Requests", number(counts.total),
                      "\(number(counts.done)) done · \(number(counts.failed)) failed"
                        + (counts.cancelled > 0 ? " · \(number(counts.cancelled)) cancelled" : "")
                        + (counts.unfinished > 0 ? " · \(number(counts.unfinished)) unfinished" : "")))
        cards.append(("Tokens in / out", "\(ReportSVG.compact(Double(report.promptTokens))) / \(ReportSVG.compact(Double(report.completionTokens)))",
                      "prompt / completion"))
        if let wall = report.wallSeconds, wall > 0 {
            cards.append(("Throughput", String(format: "%.1f tok/s", Double(report.completionTokens) / wall),
                          "completion tokens over \(ProgressFormat.duration(wall)) from first claim to last result"))
        }
        if let p50 = report.latencyPercentile(0.5), let p99 = report.latencyPercentile(0.99) {
            cards.append(("Latency p50 / p99", "\(seconds(p50)) / \(seconds(p99))", "claim → result, \(number(report.latencies.count)) results"))
        }
        cards.append(("Preemptions survived", number(report.preemptions),
                      "\(number(report.preemptedRequests)) finished requests were interrupted and resumed"))
        cards.append(("Cache hits", number(report.cacheHits), "\(number(report.cachedCompletionTokens)) completion tokens not recomputed"))
        if let cost = report.cost {
            cards.append(("Cost", money(cost), report.costPerMillionTokens.map { "\(money($0)) per million tokens" } ?? "no tokens"))
        }
        var html = "<div class=\"cards\">\n"
        for (label, value, note) in cards {
            html += "<div class=\"card\"><div class=\"label\">\(e(label))</div><div class=\"value\">\(e(value))</div><div class=\"note\">\(e(note))</div></div>\n"
        }
        return html + "</div>\n"
    }

    private static func throughputSection(_ report: ReportSummary) -> String {
        let series = report.throughput()
        let width = series.binSeconds
        let chart = ReportSVG.barChart(
            values: series.tokensPerMinute, yTitle: "completion tokens / min", xTitle: "time since the first claim",
            ariaLabel: "Completion tokens per minute over time",
            xLabel: { axisDuration(Double($0) * width) },
            barTitle: { index in
                "\(ProgressFormat.duration(Double(index) * width))–\(ProgressFormat.duration(Double(index + 1) * width)): "
                    + String(format: "%.0f", series.tokensPerMinute[index]) + " tokens/min"
            })
        return section("Throughput over time", chart,
                       note: "Completion tokens of the results committed in each \(axisDuration(width)) interval (by result time), as a rate per minute. Cache hits count with the tokens their usage reports.")
    }

    private static func latencySection(_ report: ReportSummary) -> String {
        let bins = report.latencyBins()
        var values = bins.counts.map(Double.init)
        if bins.overflow > 0 { values.append(Double(bins.overflow)) }
        let width = bins.width
        let count = bins.counts.count
        let chart = ReportSVG.barChart(
            values: values, yTitle: "results", xTitle: "seconds from claim to result", ariaLabel: "Request latency distribution",
            color: "#2f9e77",
            xLabel: { $0 < count ? ReportSVG.compact(Double($0) * width) : "more" },
            barTitle: { index in
                index < count
                    ? "\(ReportSVG.compact(Double(index) * width))–\(ReportSVG.compact(Double(index + 1) * width)) s: \(Int(values[index])) results"
                    : "over \(ReportSVG.compact(Double(count) * width)) s: \(Int(values[index])) results"
            })
        var note = "Time from the claim of the lease that produced each result to the commit of the result"
            + " (a request resumed after a preemption counts from its last claim)."
        if let p50 = report.latencyPercentile(0.5), let p90 = report.latencyPercentile(0.9), let p99 = report.latencyPercentile(0.99),
           let maximum = report.latencies.last {
            note += " p50 \(seconds(p50)), p90 \(seconds(p90)), p99 \(seconds(p99)), max \(seconds(maximum))."
        }
        return section("Latency distribution", chart, note: note)
    }

    private static func tokensSection(_ report: ReportSummary) -> String {
        let answered = max(1, report.succeeded + report.errorResponses)
        let rows: [(label: String, value: Double, text: String, color: String)] = [
            ("prompt (in)", Double(report.promptTokens), number(report.promptTokens), "#8a6fd1"),
            ("completion (out)", Double(report.completionTokens), number(report.completionTokens), "#3b6fd4"),
            ("from cache", Double(report.cachedCompletionTokens), number(report.cachedCompletionTokens), "#9aa5b1"),
        ]
        let chart = ReportSVG.horizontalBars(rows, ariaLabel: "Tokens in and out")
        let note = String(format: "Per answered request: %.1f prompt and %.1f completion tokens on average. “From cache” completion tokens are included in the completion total but were not generated again.",
                          Double(report.promptTokens) / Double(answered), Double(report.completionTokens) / Double(answered))
        return section("Tokens in and out", chart, note: note)
    }

    private static func failuresSection(_ report: ReportSummary) -> String {
        let groups = report.data.failures
        guard !groups.isEmpty else {
            return "<section><h2>Failures by reason</h2><p class=\"ok\">No failures: every finished request got a 200 answer.</p></section>\n"
        }
        let largest = groups.map(\.count).max() ?? 1
        var table = "<table class=\"failures\"><thead><tr><th>Reason</th><th>Message</th><th class=\"num\">Requests</th><th></th></tr></thead><tbody>\n"
        for group in groups {
            let share = Double(group.count) / Double(largest) * 100
            table += "<tr><td><code>\(e(group.code))</code>\(group.badInput ? " <span class=\"tag\">bad input line</span>" : "")</td>"
                + "<td class=\"message\">\(e(group.message))</td><td class=\"num\">\(number(group.count))</td>"
                + "<td class=\"barcell\"><div class=\"hbar\" style=\"width: \(String(format: "%.1f", share))%\"></div></td></tr>\n"
        }
        table += "</tbody></table>\n"
        let listed = groups.reduce(0) { $0 + $1.count }
        let total = report.failures + report.errorResponses
        var note = "\(number(total)) requests did not get a 200 answer: \(number(report.failures)) failed without an answer"
            + " (\(number(report.badInputLines)) of them bad input lines) and \(number(report.errorResponses)) got a final error answer."
            + " Grouped by error code (or <code>http_STATUS</code>) and message (first \(SQLiteStore.failureMessageLength) characters)."
        if listed < total { note += " The \(groups.count) largest groups are shown; \(number(total - listed)) requests are in smaller ones." }
        return "<section><h2>Failures by reason</h2>\n\(table)<p class=\"note\">\(note)</p></section>\n"
    }

    private static func preemptionSection(_ report: ReportSummary) -> String {
        let histogram = report.preemptionHistogram
        let rows: [(label: String, value: Double, text: String, color: String)] = [
            ("never interrupted", Double(histogram[0]), number(histogram[0]), "#9aa5b1"),
            ("1 preemption", Double(histogram[1]), number(histogram[1]), "#e0a030"),
            ("2 preemptions", Double(histogram[2]), number(histogram[2]), "#d9822b"),
            ("3 or more", Double(histogram[3]), number(histogram[3]), "#c0392b"),
        ]
        let chart = ReportSVG.horizontalBars(rows, ariaLabel: "Finished requests by preemptions survived")
        var note = "A preemption is a lease that ended without a result and was claimed again: the worker was killed (the lease expired),"
            + " drained on SIGTERM or a spot notice, or the request was resumed from a checkpoint."
            + " \(number(report.preemptions)) preemptions were survived by \(number(report.preemptedRequests)) finished requests."
        if report.data.unfinishedPreempted > 0 {
            note += " \(number(report.data.unfinishedPreempted)) unfinished requests have been preempted too."
        }
        return section("Preemptions survived", chart, note: note)
    }

    private static func costSection(_ report: ReportSummary) -> String {
        var html = "<section><h2>Cost</h2>\n"
        let active = report.activeSeconds
        html += "<p>Active time: <strong>\(e(ProgressFormat.duration(active)))</strong>"
            + String(format: " (%.3f machine-hours)", active / 3600)
            + " on \(report.activeSecondsByHost.count) machine\(report.activeSecondsByHost.count == 1 ? "" : "s")"
        if let wall = report.wallSeconds { html += "; \(e(ProgressFormat.duration(wall))) from the first claim to the last result" }
        html += ".</p>\n"
        if let price = report.hourlyPrice, let cost = report.cost {
            html += "<p>At \(money(price)) per machine-hour: <strong>\(money(cost))</strong> for this job"
            if let perMillion = report.costPerMillionTokens { html += ", \(money(perMillion)) per million tokens (prompt + completion)" }
            if let perCompletion = report.costPerMillionCompletionTokens { html += ", \(money(perCompletion)) per million completion tokens" }
            html += ".</p>\n"
        } else {
            html += "<p>Pass <code>--hourly-price USD</code> to see what the job cost.</p>\n"
        }
        if report.activeSecondsByHost.count > 1 {
            html += "<table><thead><tr><th>Machine</th><th class=\"num\">Active time</th></tr></thead><tbody>\n"
            for entry in report.activeSecondsByHost {
                html += "<tr><td><code>\(e(entry.host))</code></td><td class=\"num\">\(e(ProgressFormat.duration(entry.seconds)))</td></tr>\n"
            }
            html += "</tbody></table>\n"
        }
        html += "<p class=\"note\">How it is computed: for each machine (host) that wrote results of this job, the active time is the union of the intervals"
            + " from each request's claim to its result, i.e. the wall-clock time during which that machine had at least one of the job's requests in progress."
            + " Idle time between runs is not charged, and neither is work lost to a preemption before the request's last claim."
            + " Cost = the sum of the machines' active hours × the hourly price. Per million tokens = cost ÷ tokens × 1,000,000.</p>\n"
        return html + "</section>\n"
    }

    // MARK: Helpers

    private static func section(_ title: String, _ chart: String, note: String) -> String {
        "<section><h2>\(e(title))</h2>\n<figure>\(chart)</figure>\n<p class=\"note\">\(e(note))</p></section>\n"
    }

    private static func stateText(_ data: JobReportData) -> String {
        if data.job.state == .cancelled { return "cancelled" }
        if data.counts.unfinished > 0 { return "in progress (\(number(data.counts.unfinished)) requests unfinished)" }
        return data.finishedAt.map { "finished \(date($0))" } ?? "finished"
    }

    private static func e(_ text: String) -> String { HTMLText.escape(text) }

    static func number(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var out = ""
        for (index, character) in digits.enumerated() {
            if index > 0, (digits.count - index) % 3 == 0 { out += "," }
            out.append(character)
        }
        return (value < 0 ? "-" : "") + out
    }

    static func seconds(_ value: Double) -> String {
        value < 10 ? String(format: "%.2f s", value) : ProgressFormat.duration(value)
    }

    /// Axis labels: `0s`, `15s`, `2m`, `1m30s`, `3h`, `2h30m`.
    static func axisDuration(_ seconds: Double) -> String {
        let total = Int(seconds.rounded())
        if total < 60 { return "\(total)s" }
        if total < 3600 { return total % 60 == 0 ? "\(total / 60)m" : "\(total / 60)m\(total % 60)s" }
        return total % 3600 == 0 ? "\(total / 3600)h" : "\(total / 3600)h\((total % 3600) / 60)m"
    }

    static func money(_ value: Double) -> String {
        value >= 100 ? String(format: "$%.0f", value) : value >= 0.1 ? String(format: "$%.2f", value) : String(format: "$%.4f", value)
    }

    static func date(_ seconds: Double) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        return String(format: "%04d-%02d-%02d %02d:%02d:%02d UTC", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec)
    }

    static let css = """
    :root { color-scheme: light; }
    body { margin: 0; background: #f4f5f7; color: #1d2430; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
    main { max-width: 820px; margin: 0 auto; padding: 24px 20px 40px; }
    header h1 { font-size: 22px; margin: 0 0 4px; }
    .sub { color: #5b6573; margin: 0 0 18px; }
    code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
    .cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(185px, 1fr)); gap: 10px; margin-bottom: 18px; }
    .card { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: 10px 12px; }
    .card .label { color: #5b6573; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
    .card .value { font-size: 21px; font-weight: 600; margin: 2px 0; white-space: nowrap; }
    .card .note { color: #6b7482; font-size: 12px; }
    section { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: 14px 18px; margin-bottom: 14px; }
    h2 { font-size: 16px; margin: 0 0 8px; }
    figure { margin: 0; }
    .chart { display: block; max-width: 100%; height: auto; }
    .chart .grid { stroke: #e6e9ee; stroke-width: 1; }
    .chart .axis { stroke: #8a93a0; stroke-width: 1; }
    .chart text { font-size: 11px; fill: #4a5361; }
    .chart .axis-title { font-size: 12px; fill: #2b3340; }
    .chart .label, .chart .value { font-size: 12.5px; }
    .chart .empty { font-size: 14px; fill: #8a93a0; }
    .note { color: #5b6573; font-size: 12.5px; margin: 8px 0 0; }
    .ok { color: #2f7d4f; }
    table { width: 100%; border-collapse: collapse; font-size: 13px; }
    th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eceef2; vertical-align: top; }
    th { color: #5b6573; font-weight: 600; }
    .num { text-align: right; white-space: nowrap; }
    .message { word-break: break-word; }
    .barcell { width: 120px; }
    .hbar { height: 12px; background: #d9534f; border-radius: 2px; margin-top: 3px; }
    .tag { background: #fdecea; color: #a23b2c; border-radius: 4px; padding: 0 5px; font-size: 11.5px; white-space: nowrap; }
    footer { color: #8a93a0; font-size: 12px; text-align: center; margin-top: 18px; }
    """
}
