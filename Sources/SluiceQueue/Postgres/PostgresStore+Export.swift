import Foundation
import SluiceCore

extension PostgresStore {
    /// Rows fetched per round trip while exporting (keyset pages inside one snapshot).
    static let exportPageRows = 20_000

    /// Writes the job's results exactly as `SQLiteStore.export` does: the same database
    /// contents give the same bytes on both stores.
    public func export(job: JobID, to outputPath: String, errors errorsPath: String?) throws -> ExportReport {
        let output = try AtomicFileWriter(path: outputPath)
        let errors = try errorsPath.map { try AtomicFileWriter(path: $0) }
        do {
            let report = try withConnection { db in
                try db.readOnlyTransaction("export job \(job)") {
                    let exists = try db.execute("SELECT 1 FROM jobs WHERE id = $1 AND state <> 'loading'", [String(job)],
                                                operation: "export")
                    guard exists.rowCount == 1 else { throw QueueError.noSuchJob(String(job)) }
                    return try writeExport(db, job: job, output: output, errors: errors)
                }
            }
            try output.commit()
            try errors?.commit()
            return report
        } catch {
            output.discard()
            errors?.discard()
            throw error
        }
    }

    private func writeExport(_ db: PGConnection, job: JobID, output: AtomicFileWriter,
                             errors: AtomicFileWriter?) throws -> ExportReport {
        let range = RequestKey.range(of: job)
        var report = ExportReport(written: 0, succeeded: 0, errors: 0, cancelled: 0, unfinished: 0)
        var line: [UInt8] = []
        line.reserveCapacity(4096)
        var after = range.lowerBound - 1
        while true {
            let rows = try db.execute("""
                SELECT r.id, r.custom_id, r.state, res.status_code, res.error_code, res.error_message, res.body
                FROM requests AS r LEFT JOIN results AS res ON res.request_id = r.id
                WHERE r.id > $1 AND r.id <= $2 ORDER BY r.id LIMIT $3
                """, [String(after), String(range.upperBound), String(Self.exportPageRows)], operation: "export job \(job)")
            if rows.rowCount == 0 { break }
            for row in 0..<rows.rowCount {
                let id = rows.int64(row, 0)
                after = id
                let state = RequestState(rawValue: rows.string(row, 2) ?? "")
                if state == .queued || state == .leased || state == nil {
                    report.unfinished += 1
                    continue
                }
                line.removeAll(keepingCapacity: true)
                let isError = ExportLine.append(
                    id: id, customID: rows.string(row, 1), cancelled: state == .cancelled,
                    statusCode: rows.isNull(row, 3) ? nil : rows.int(row, 3), errorCode: rows.string(row, 4),
                    errorMessage: rows.string(row, 5), body: rows.isNull(row, 6) ? nil : rows.bytes(row, 6),
                    to: &line, report: &report)
                try output.write(line)
                if isError { try errors?.write(line) }
                report.written += 1
            }
            if rows.rowCount < Self.exportPageRows { break }
        }
        return report
    }

    public func reportData(job: JobID) throws -> JobReportData {
        try withConnection { db in
            try db.readOnlyTransaction("read job report") {
                let select = try db.execute("SELECT \(Self.jobColumns) FROM jobs WHERE id = $1 AND state <> 'loading'",
                                            [String(job)], operation: "read job report")
                guard select.rowCount == 1 else { throw QueueError.noSuchJob(String(job)) }
                let info = Self.readJob(select, 0)
                let startedAt = select.optionalDouble(0, 9), finishedAt = select.optionalDouble(0, 10)

                var counts = RequestCounts()
                var unfinishedPreempted = 0
                let states = try db.execute("""
                    SELECT state, count(*), count(*) FILTER (WHERE preemptions > 0 OR interrupted <> 0)
                    FROM requests WHERE job_id = $1 GROUP BY state
                    """, [String(job)], operation: "count requests")
                for row in 0..<states.rowCount {
                    let n = states.int(row, 1)
                    switch RequestState(rawValue: states.string(row, 0) ?? "") {
                    case .queued: counts.queued = n; unfinishedPreempted += states.int(row, 2)
                    case .leased: counts.leased = n; unfinishedPreempted += states.int(row, 2)
                    case .done: counts.done = n
                    case .failed: counts.failed = n
                    case .cancelled: counts.cancelled = n
                    case nil: break
                    }
                }

                let rows = try db.execute("""
                    SELECT r.claimed_at, r.first_claimed_at, res.finished_at, res.status_code, res.prompt_tokens,
                           res.completion_tokens, res.from_cache, r.preemptions, w.host
                    FROM results AS res JOIN requests AS r ON r.id = res.request_id
                    LEFT JOIN workers AS w ON w.id = res.worker_id
                    WHERE res.job_id = $1
                    ORDER BY res.finished_at, res.request_id
                    """, [String(job)], operation: "read job results")
                var results: [ReportResult] = []
                results.reserveCapacity(rows.rowCount)
                for row in 0..<rows.rowCount {
                    results.append(ReportResult(
                        claimedAt: rows.optionalDouble(row, 0), firstClaimedAt: rows.optionalDouble(row, 1),
                        finishedAt: rows.double(row, 2), statusCode: rows.isNull(row, 3) ? nil : rows.int(row, 3),
                        promptTokens: rows.int(row, 4), completionTokens: rows.int(row, 5),
                        fromCache: rows.int(row, 6) != 0, preemptions: rows.int(row, 7), host: rows.string(row, 8)))
                }

                // The body of a non-200 answer is the server's JSON; its error.message says what was wrong.
                let groups = try db.execute("""
                    SELECT code, message, count(*), bad FROM (
                        SELECT coalesce(res.error_code, 'http_' || res.status_code) AS code,
                               substr(coalesce(res.error_message, sluice_error_message(res.body), ''), 1, $2) AS message,
                               r.input_error IS NOT NULL AS bad
                        FROM results AS res JOIN requests AS r ON r.id = res.request_id
                        WHERE res.job_id = $1 AND (res.status_code IS NULL OR res.status_code <> 200)) AS failures
                    GROUP BY code, message, bad ORDER BY count(*) DESC, code, message LIMIT $3
                    """, [String(job), String(SQLiteStore.failureMessageLength), String(SQLiteStore.maxFailureGroups)],
                    operation: "group job failures")
                var failures: [FailureGroup] = []
                for row in 0..<groups.rowCount {
                    failures.append(FailureGroup(code: groups.string(row, 0) ?? "unknown", message: groups.string(row, 1) ?? "",
                                                 count: groups.int(row, 2), badInput: groups.bool(row, 3)))
                }
                return JobReportData(job: info, counts: counts, startedAt: startedAt, finishedAt: finishedAt,
                                     results: results, failures: failures, unfinishedPreempted: unfinishedPreempted)
            }
        }
    }
}

/// One line of the OpenAI Batch output format, shared by the stores so both write the same bytes.
enum ExportLine {
    /// Appends the line (with its newline) and counts it; returns whether it also goes to the errors file.
    static func append(id: Int64, customID: String?, cancelled: Bool, statusCode: Int?, errorCode: String?,
                       errorMessage: String?, body: UnsafeBufferPointer<UInt8>?, to line: inout [UInt8],
                       report: inout ExportReport) -> Bool {
        line.append(contentsOf: #"{"id":"batch_req_"#.utf8)
        SQLiteStore.appendHex(id, to: &line)
        line.append(contentsOf: #"","custom_id":"#.utf8)
        if let customID {
            JSON.writeString(customID, into: &line)
        } else {
            line.append(contentsOf: "null".utf8)
        }
        var isError = false
        if let status = statusCode {
            line.append(contentsOf: #","response":{"status_code":"#.utf8)
            line.append(contentsOf: String(status).utf8)
            line.append(contentsOf: #","request_id":"req_"#.utf8)
            SQLiteStore.appendHex(id, to: &line)
            line.append(contentsOf: #"","body":"#.utf8)
            if let body, !body.isEmpty { line.append(contentsOf: body) } else { line.append(contentsOf: "null".utf8) }
            line.append(contentsOf: #"},"error":null}"#.utf8)
            if status == 200 { report.succeeded += 1 } else { report.errors += 1; isError = true }
        } else {
            let code: String
            let message: String
            if cancelled {
                code = "cancelled"
                message = "the job was cancelled before this request finished"
                report.cancelled += 1
            } else {
                code = errorCode ?? "failed"
                message = errorMessage ?? "the request failed"
                report.errors += 1
            }
            isError = true
            line.append(contentsOf: #","response":null,"error":{"code":"#.utf8)
            JSON.writeString(code, into: &line)
            line.append(contentsOf: #","message":"#.utf8)
            JSON.writeString(message, into: &line)
            line.append(contentsOf: "}}".utf8)
        }
        line.append(0x0A)
        return isError
    }
}
