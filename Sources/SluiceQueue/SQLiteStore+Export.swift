import Foundation
import SluiceCore

extension SQLiteStore {
    /// Writes the job's results in the OpenAI Batch output format, one line per request in input
    /// order; queued or leased requests are skipped and counted in `unfinished`.
    ///
    /// A response line is `{"id","custom_id","response":{"status_code","request_id","body"},"error":null}`;
    /// a failure (bad input lines included, their message naming the line) or a cancelled request is
    /// `{"id","custom_id","response":null,"error":{"code","message"}}`. Failures and non-200 responses
    /// also go to `errorsPath` if given. Ids derive from the request ids, so the same database
    /// contents give the same bytes. Each file is written to a temporary file and renamed into place.
    public func export(job: JobID, to outputPath: String, errors errorsPath: String? = nil) throws -> ExportReport {
        let output = try AtomicFileWriter(path: outputPath)
        let errors = try errorsPath.map { try AtomicFileWriter(path: $0) }
        do {
            let report = try withConnection { db in
                try db.readTransaction("export job \(job)") {
                    let exists = try db.cached("SELECT 1 FROM jobs WHERE id = ?1 AND state <> 'loading'", operation: "export")
                    exists.bind(1, job)
                    guard try exists.step() else { throw QueueError.noSuchJob(String(job)) }
                    exists.reset()
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

    private func writeExport(_ db: SQLiteConnection, job: JobID, output: AtomicFileWriter,
                             errors: AtomicFileWriter?) throws -> ExportReport {
        let range = RequestKey.range(of: job)
        let rows = try db.prepare("""
            SELECT r.id, r.custom_id, r.state, res.status_code, res.error_code, res.error_message, res.body
            FROM requests AS r LEFT JOIN results AS res ON res.request_id = r.id
            WHERE r.id BETWEEN ?1 AND ?2 ORDER BY r.id
            """, operation: "export job \(job)")
        rows.bind(1, range.lowerBound)
        rows.bind(2, range.upperBound)
        var report = ExportReport(written: 0, succeeded: 0, errors: 0, cancelled: 0, unfinished: 0)
        var line: [UInt8] = []
        line.reserveCapacity(4096)
        while try rows.step() {
            let state = RequestState(rawValue: rows.text(2) ?? "")
            if state == .queued || state == .leased || state == nil {
                report.unfinished += 1
                continue
            }
            let id = rows.int64(0)
            line.removeAll(keepingCapacity: true)
            line.append(contentsOf: #"{"id":"batch_req_"#.utf8)
            Self.appendHex(id, to: &line)
            line.append(contentsOf: #"","custom_id":"#.utf8)
            if let customID = rows.text(1) {
                JSON.writeString(customID, into: &line)
            } else {
                line.append(contentsOf: "null".utf8)
            }
            var isError = false
            if !rows.isNull(3) {
                let status = rows.int(3)
                line.append(contentsOf: #","response":{"status_code":"#.utf8)
                line.append(contentsOf: String(status).utf8)
                line.append(contentsOf: #","request_id":"req_"#.utf8)
                Self.appendHex(id, to: &line)
                line.append(contentsOf: #"","body":"#.utf8)
                let body = rows.textBytes(6)
                if body.isEmpty { line.append(contentsOf: "null".utf8) } else { line.append(contentsOf: body) }
                line.append(contentsOf: #"},"error":null}"#.utf8)
                if status == 200 { report.succeeded += 1 } else { report.errors += 1; isError = true }
            } else {
                let code: String
                let message: String
                if state == .cancelled {
                    code = "cancelled"
                    message = "the job was cancelled before this request finished"
                    report.cancelled += 1
                } else {
                    code = rows.text(4) ?? "failed"
                    message = rows.text(5) ?? "the request failed"
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
            try output.write(line)
            if isError { try errors?.write(line) }
            report.written += 1
        }
        return report
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// Sixteen lower-case hex digits.
    static func appendHex(_ value: Int64, to out: inout [UInt8]) {
        let bits = UInt64(bitPattern: value)
        for shift in stride(from: 60, through: 0, by: -4) {
            out.append(hexDigits[Int((bits >> UInt64(shift)) & 15)])
        }
    }
}
