import Foundation
import SluiceCore
import SluiceQueue

/// The operator's view: an HTML page of batches with progress and throughput (links to each
/// batch's `sluice report` page), and Prometheus metrics.
struct OperatorView: Sendable {
    let store: any BatchStore
    let metrics: ServeMetrics
    /// The `sluice report` page of a job.
    let report: @Sendable (JobID) throws -> String
    let workerCount: @Sendable () -> Int

    struct Row {
        var batch: StoredBatch
        var counts: BatchRequestCounts
        var unfinished: Int
    }

    func rows(project: String?, limit: Int) throws -> [Row] {
        try (store.batches(project: project, after: nil, limit: limit) ?? []).map { batch in
            if let final = batch.finalCounts { return Row(batch: batch, counts: final, unfinished: 0) }
            guard let job = batch.jobID else { return Row(batch: batch, counts: .init(), unfinished: 0) }
            let live = try store.batchCounts(job: job)
            return Row(batch: batch, counts: live.counts, unfinished: live.unfinished)
        }
    }

    func statusPage(project: String?) async throws -> String {
        let rows = try await offload { try self.rows(project: project, limit: 200) }
        return Self.html(rows: rows, now: now(), workers: workerCount())
    }

    func reportPage(batchID: String, project: String?) async throws -> String {
        guard isWellFormedID(Substring(batchID)) else { throw APIError.notFound("batch", batchID) }
        return try await offload {
            let batch: StoredBatch? = if let project {
                try store.batch(id: batchID, project: project)
            } else {
                try store.batches(project: nil, after: nil, limit: 10_000)?.first { $0.id == batchID }
            }
            guard let batch else { throw APIError.notFound("batch", batchID) }
            guard let job = batch.jobID else {
                throw APIError(status: 404, message: "batch \(batchID) has no job yet (status \(batch.status.rawValue))")
            }
            return try report(job)
        }
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }

    static func time(_ t: Double?) -> String {
        guard let t else { return "" }
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: Date(timeIntervalSince1970: t.rounded(.down)))
    }

    static func html(rows: [Row], now: Double, workers: Int) -> String {
        var body = ""
        var active = 0
        var totalRate = 0.0
        for row in rows {
            let b = row.batch
            let done = row.counts.completed + row.counts.failed
            let fraction = row.counts.total > 0 ? Double(done) / Double(row.counts.total) : (b.status.isTerminal ? 1 : 0)
            let end = b.completedAt ?? b.expiredAt ?? b.cancelledAt ?? b.failedAt ?? b.finalizingAt ?? now
            let elapsed = b.inProgressAt.map { max(0.001, end - $0) }
            let rate = elapsed.map { Double(done) / $0 } ?? 0
            if !b.status.isTerminal { active += 1; totalRate += rate }
            let percent = String(format: "%.1f", fraction * 100)
            let report = b.jobID == nil ? "" : "<a href=\"/batches/\(escape(b.id))/report\">report</a>"
            body += """
            <tr class="\(b.status.rawValue)"><td><code>\(escape(b.id))</code></td><td>\(escape(b.project))</td>\
            <td class="status">\(b.status.rawValue)</td><td>\(escape(b.endpoint))</td>\
            <td><div class="bar"><div style="width:\(percent)%"></div></div>\(done) / \(row.counts.total) \
            (\(percent)%)\(row.counts.failed > 0 ? ", \(row.counts.failed) failed" : "")</td>\
            <td>\(String(format: "%.1f", rate)) req/s</td><td>\(time(b.createdAt))</td><td>\(time(b.deadline))</td>\
            <td>\(report)</td></tr>

            """
        }
        if rows.isEmpty { body = "<tr><td colspan=\"9\">No batches yet.</td></tr>" }
        return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
        <title>sluice serve</title>
        <style>
        body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
        table { border-collapse: collapse; width: 100%; }
        th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #ddd; white-space: nowrap; }
        th { background: #f4f4f4; }
        .bar { display: inline-block; width: 120px; height: 10px; background: #eee; margin-right: .5em; vertical-align: middle; }
        .bar div { height: 100%; background: #3a7; }
        .failed .status, .expired .status { color: #b33; } .completed .status { color: #286; }
        .in_progress .status, .finalizing .status, .validating .status { color: #26a; }
        .summary span { margin-right: 2em; }
        </style></head><body>
        <h1>sluice serve</h1>
        <p class="summary"><span>\(active) active batches</span><span>\(String(format: "%.1f", totalRate)) requests/s</span>\
        <span>\(workers) workers started by this server</span><span><a href="/metrics">metrics</a></span></p>
        <table><thead><tr><th>Batch</th><th>Project</th><th>Status</th><th>Endpoint</th><th>Progress</th>\
        <th>Throughput</th><th>Created</th><th>Deadline</th><th></th></tr></thead>
        <tbody>
        \(body)</tbody></table>
        <p>Refreshes every 5 seconds. Generated \(time(now)).</p>
        </body></html>

        """
    }

    func metricsText() async throws -> String {
        let active = try await offload { try self.store.activeBatches() }
        var byStatus: [String: Int] = [:]
        var requests = BatchRequestCounts()
        for batch in active {
            byStatus[batch.status.rawValue, default: 0] += 1
            if let job = batch.jobID, let counts = try? await offload({ try self.store.batchCounts(job: job).counts }) {
                requests.total += counts.total
                requests.completed += counts.completed
                requests.failed += counts.failed
            }
        }
        var out = "# HELP sluice_serve_batches_active Batches not yet ended, by status.\n# TYPE sluice_serve_batches_active gauge\n"
        for status in ["validating", "in_progress", "finalizing", "cancelling"] {
            out += "sluice_serve_batches_active{status=\"\(status)\"} \(byStatus[status] ?? 0)\n"
        }
        out += "# HELP sluice_serve_active_batch_requests Requests of active batches, by outcome.\n# TYPE sluice_serve_active_batch_requests gauge\n"
        out += "sluice_serve_active_batch_requests{state=\"total\"} \(requests.total)\n"
        out += "sluice_serve_active_batch_requests{state=\"completed\"} \(requests.completed)\n"
        out += "sluice_serve_active_batch_requests{state=\"failed\"} \(requests.failed)\n"
        out += "# HELP sluice_serve_batches_ended_total Batches this server ended, by final status.\n# TYPE sluice_serve_batches_ended_total counter\n"
        for (status, n) in metrics.endedCounts.sorted(by: { $0.key < $1.key }) {
            out += "sluice_serve_batches_ended_total{status=\"\(status)\"} \(n)\n"
        }
        out += "# HELP sluice_serve_http_responses_total HTTP responses, by status class.\n# TYPE sluice_serve_http_responses_total counter\n"
        for (code, n) in metrics.responseCounts.sorted(by: { $0.key < $1.key }) {
            out += "sluice_serve_http_responses_total{code=\"\(code)\"} \(n)\n"
        }
        out += "# HELP sluice_serve_uploaded_bytes_total Bytes of files uploaded.\n# TYPE sluice_serve_uploaded_bytes_total counter\n"
        out += "sluice_serve_uploaded_bytes_total \(metrics.uploadedBytes)\n"
        out += "# HELP sluice_serve_workers Worker processes this server keeps running.\n# TYPE sluice_serve_workers gauge\n"
        out += "sluice_serve_workers \(workerCount())\n"
        return out
    }
}
