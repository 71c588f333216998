import Foundation
import SluiceCore

extension Schema {
    /// Migration 5: the files and batches of `sluice serve` (OpenAI Files and Batches API).
    /// A batch runs as an ordinary job (`job_id`); file bytes live on disk beside the database,
    /// under names the server chose (`storage_name`). `IF NOT EXISTS`: a database taken back to an
    /// older version by hand (as a test does) still migrates forward.
    static let batchTables = """
        CREATE TABLE IF NOT EXISTS files (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            purpose TEXT NOT NULL,
            filename TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            lines INTEGER NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,
            storage_name TEXT NOT NULL UNIQUE
        ) STRICT;
        CREATE INDEX IF NOT EXISTS files_project ON files(project, purpose);
        CREATE INDEX IF NOT EXISTS files_expiry ON files(expires_at) WHERE expires_at IS NOT NULL;

        CREATE TABLE IF NOT EXISTS batches (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            status TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            input_file_id TEXT NOT NULL,
            completion_window TEXT NOT NULL,
            deadline REAL NOT NULL,
            metadata TEXT,
            output_expires_after REAL,
            job_id INTEGER,
            output_file_id TEXT NOT NULL,
            error_file_id TEXT NOT NULL,
            has_output_file INTEGER NOT NULL DEFAULT 0,
            has_error_file INTEGER NOT NULL DEFAULT 0,
            errors TEXT,
            total INTEGER,
            completed INTEGER,
            failed INTEGER,
            created_at REAL NOT NULL,
            in_progress_at REAL,
            finalizing_at REAL,
            completed_at REAL,
            failed_at REAL,
            expired_at REAL,
            cancelling_at REAL,
            cancelled_at REAL
        ) STRICT;
        CREATE INDEX IF NOT EXISTS batches_project ON batches(project);
        CREATE INDEX IF NOT EXISTS batches_active ON batches(status)
            WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling');
        """

    /// Migration 6: where deleted files were in the list (their rowid), for a week, so that a page
    /// may start after a file deleted since the last page was read.
    static let deletedFiles = """
        CREATE TABLE IF NOT EXISTS deleted_files (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            position INTEGER NOT NULL,
            deleted_at REAL NOT NULL
        ) STRICT;
        CREATE INDEX IF NOT EXISTS deleted_files_age ON deleted_files(deleted_at);
        """
}

/// What a look at a batch input file found (see `SQLiteStore.checkBatchInput`).
public struct BatchInputCheck: Sendable, Equatable {
    /// Non-blank lines.
    public var lines = 0
    public var bytes = 0
    public var badLineCount = 0
    /// The first bad lines, in file order.
    public var badLines: [BadLine] = []
    public init() {}
}

/// Validation of batch input files, line by line in constant memory.
public enum BatchInputValidation {
    /// Reads a batch input file line by line in constant memory and validates every line as
    /// `sluice enqueue` does; with `endpoint`, a line whose url differs is bad too (OpenAI: one
    /// endpoint per batch). Stops reading after `maxLines` non-blank lines (then `lines > maxLines`).
    public static func check(path: String, endpoint: String?, maxLineBytes: Int, maxLines: Int,
                             maxReported: Int = SQLiteStore.maxReportedBadLines) throws -> BatchInputCheck {
        let reader = try LineReader(path: path, maxLineBytes: maxLineBytes)
        var check = BatchInputCheck()
        // The line each custom_id was first seen on, by SHA-256 of the id: constant memory per line
        // however long the ids are. As in `sluice enqueue`, the first line with an id is kept and any
        // later one is a duplicate; a line that is bad for another reason claims no id.
        var firstLine: [[UInt8]: Int] = [:]
        func bad(_ line: Int, _ customID: String?, _ reason: BadLineReason, _ message: String) {
            check.badLineCount += 1
            if check.badLines.count < maxReported {
                check.badLines.append(BadLine(lineNumber: line, customID: customID, reason: reason, message: message))
            }
        }
        while let line = try reader.next() {
            switch line {
            case let .tooLong(number, length):
                check.lines += 1
                bad(number, nil, .lineTooLong, "line too long: \(length) bytes (the limit is \(maxLineBytes))")
            case let .text(number, rawBytes):
                var bytes = rawBytes
                if number == 1, bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = UnsafeBufferPointer(rebasing: bytes[3...]) }
                if SQLiteStore.isBlank(bytes) { continue }
                check.lines += 1
                switch BatchLineValidator.validate(bytes) {
                case let .failure(problem):
                    bad(number, problem.customID, problem.reason, problem.message)
                case let .success(valid):
                    var hasher = SHA256()
                    if let decoded = valid.decodedCustomID { hasher.update(decoded) } else { hasher.update(UnsafeRawBufferPointer(valid.customID)) }
                    let digest = hasher.finalize()
                    if let first = firstLine[digest] {
                        bad(number, valid.customIDString, .duplicateCustomID,
                            "duplicate custom_id \"\(valid.customIDString)\" (first on line \(first))")
                        break
                    }
                    firstLine[digest] = number
                    if let endpoint, valid.endpoint.rawValue != endpoint {
                        bad(number, valid.customIDString, .unsupportedURL,
                            "url \"\(valid.endpoint.rawValue)\" differs from the batch's endpoint \"\(endpoint)\"")
                    }
                }
            }
            if check.lines > maxLines { break }
        }
        check.bytes = reader.bytesRead
        return check
    }
}

extension SQLiteStore: BatchStore {
    // MARK: Files

    static let fileColumns = "id, project, purpose, filename, bytes, lines, created_at, expires_at, storage_name"

    static func readFile(_ s: Statement) -> StoredFile {
        StoredFile(id: s.text(0) ?? "", project: s.text(1) ?? "", purpose: s.text(2) ?? "", filename: s.text(3) ?? "",
                   bytes: s.int(4), lines: s.int(5), createdAt: s.double(6), expiresAt: s.optionalDouble(7),
                   storageName: s.text(8) ?? "")
    }

    static func insertFileRow(_ db: SQLiteConnection, _ file: StoredFile) throws {
        let insert = try db.cached("""
            INSERT INTO files (\(fileColumns)) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
            """, operation: "store file")
        insert.bind(1, file.id)
        insert.bind(2, file.project)
        insert.bind(3, file.purpose)
        insert.bind(4, file.filename)
        insert.bind(5, file.bytes)
        insert.bind(6, file.lines)
        insert.bind(7, file.createdAt)
        insert.bind(8, file.expiresAt)
        insert.bind(9, file.storageName)
        try insert.run()
    }

    public func insertFile(_ file: StoredFile) throws {
        try withConnection { db in try db.writeTransaction("store file") { try Self.insertFileRow(db, file) } }
    }

    public func file(id: String, project: String) throws -> StoredFile? {
        try withConnection { db in
            let select = try db.cached("SELECT \(Self.fileColumns) FROM files WHERE id = ?1 AND project = ?2",
                                       operation: "read file")
            defer { select.reset() }
            select.bind(1, id)
            select.bind(2, project)
            return try select.step() ? Self.readFile(select) : nil
        }
    }

    /// How long a deleted file's place in the list is remembered, for pages that start after it.
    static let deletedFileMemory: Double = 7 * 86_400

    public func files(project: String, purpose: String?, after: String?, limit: Int, ascending: Bool) throws -> [StoredFile]? {
        try withConnection { db in
            try db.readTransaction("list files") {
                // Where the page starts: the cursor's place in upload order, live or deleted.
                var position: Int?
                var cursorDeleted = false
                if let after {
                    for (table, column) in [("files", "rowid"), ("deleted_files", "position")] where position == nil {
                        let find = try db.cached("SELECT \(column) FROM \(table) WHERE id = ?1 AND project = ?2",
                                                 operation: "list files")
                        defer { find.reset() }
                        find.bind(1, after)
                        find.bind(2, project)
                        if try find.step() {
                            position = find.int(0)
                            cursorDeleted = table == "deleted_files"
                        }
                    }
                    guard position != nil else { return nil }
                }
                // SQLite may give a deleted last row's rowid to the next upload; that file is newer
                // than the deleted cursor, so an ascending page after it includes it.
                let compare = ascending ? (cursorDeleted ? ">=" : ">") : "<"
                let select = try db.cached("""
                    SELECT \(Self.fileColumns) FROM files
                    WHERE project = ?1 AND (?2 IS NULL OR purpose = ?2) AND (?3 IS NULL OR rowid \(compare) ?3)
                    ORDER BY rowid \(ascending ? "ASC" : "DESC") LIMIT ?4
                    """, operation: "list files")
                defer { select.reset() }
                select.bind(1, project)
                select.bind(2, purpose)
                select.bind(3, position.map(Int64.init))
                select.bind(4, max(0, limit))
                var files: [StoredFile] = []
                while try select.step() { files.append(Self.readFile(select)) }
                return files
            }
        }
    }

    public func deleteFile(id: String, project: String) throws -> StoredFile? {
        try withConnection { db in
            try db.writeTransaction("delete file") {
                let select = try db.cached("SELECT \(Self.fileColumns) FROM files WHERE id = ?1 AND project = ?2",
                                           operation: "delete file")
                select.bind(1, id)
                select.bind(2, project)
                guard try select.step() else { select.reset(); return nil }
                let file = Self.readFile(select)
                select.reset()
                // Remember its place, so that a page starting after it (list, delete what came, list
                // on) still finds the files that were after it.
                let now = clock()
                let forget = try db.cached("DELETE FROM deleted_files WHERE deleted_at < ?1", operation: "delete file")
                forget.bind(1, now - Self.deletedFileMemory)
                try forget.run()
                let remember = try db.cached("""
                    INSERT OR REPLACE INTO deleted_files (id, project, position, deleted_at)
                    SELECT id, project, rowid, ?2 FROM files WHERE id = ?1
                    """, operation: "delete file")
                remember.bind(1, id)
                remember.bind(2, now)
                try remember.run()
                let delete = try db.cached("DELETE FROM files WHERE id = ?1", operation: "delete file")
                delete.bind(1, id)
                try delete.run()
                return file
            }
        }
    }

    public func expiredFiles(now: Double, limit: Int) throws -> [StoredFile] {
        try withConnection { db in
            let select = try db.cached("""
                SELECT \(Self.fileColumns) FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2
                """, operation: "find expired files")
            defer { select.reset() }
            select.bind(1, now)
            select.bind(2, limit)
            var files: [StoredFile] = []
            while try select.step() { files.append(Self.readFile(select)) }
            return files
        }
    }

    // MARK: Batches

    static let batchColumns = """
        id, project, status, endpoint, input_file_id, completion_window, deadline, metadata, output_expires_after,
        job_id, output_file_id, error_file_id, has_output_file, has_error_file, errors, total, completed, failed,
        created_at, in_progress_at, finalizing_at, completed_at, failed_at, expired_at, cancelling_at, cancelled_at
        """

    static func readBatch(_ s: Statement) -> StoredBatch {
        var batch = StoredBatch(
            id: s.text(0) ?? "", project: s.text(1) ?? "", status: BatchStatus(rawValue: s.text(2) ?? "") ?? .failed,
            endpoint: s.text(3) ?? "", inputFileID: s.text(4) ?? "", completionWindow: s.text(5) ?? "",
            deadline: s.double(6), metadata: s.text(7), outputExpiresAfter: s.optionalDouble(8),
            outputFileID: s.text(10) ?? "", errorFileID: s.text(11) ?? "", createdAt: s.double(18))
        batch.jobID = s.isNull(9) ? nil : s.int64(9)
        batch.hasOutputFile = s.int(12) != 0
        batch.hasErrorFile = s.int(13) != 0
        batch.errors = s.text(14)
        if let total = s.optionalInt(15) {
            batch.finalCounts = BatchRequestCounts(total: total, completed: s.int(16), failed: s.int(17))
        }
        batch.inProgressAt = s.optionalDouble(19)
        batch.finalizingAt = s.optionalDouble(20)
        batch.completedAt = s.optionalDouble(21)
        batch.failedAt = s.optionalDouble(22)
        batch.expiredAt = s.optionalDouble(23)
        batch.cancellingAt = s.optionalDouble(24)
        batch.cancelledAt = s.optionalDouble(25)
        return batch
    }

    public func insertBatch(_ batch: StoredBatch) throws {
        try withConnection { db in
            try db.writeTransaction("store batch") {
                let insert = try db.cached("""
                    INSERT INTO batches (id, project, status, endpoint, input_file_id, completion_window, deadline,
                                         metadata, output_expires_after, output_file_id, error_file_id, created_at)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                    """, operation: "store batch")
                insert.bind(1, batch.id)
                insert.bind(2, batch.project)
                insert.bind(3, batch.status.rawValue)
                insert.bind(4, batch.endpoint)
                insert.bind(5, batch.inputFileID)
                insert.bind(6, batch.completionWindow)
                insert.bind(7, batch.deadline)
                insert.bind(8, batch.metadata)
                insert.bind(9, batch.outputExpiresAfter)
                insert.bind(10, batch.outputFileID)
                insert.bind(11, batch.errorFileID)
                insert.bind(12, batch.createdAt)
                try insert.run()
            }
        }
    }

    public func batch(id: String, project: String) throws -> StoredBatch? {
        try withConnection { db in
            let select = try db.cached("SELECT \(Self.batchColumns) FROM batches WHERE id = ?1 AND project = ?2",
                                       operation: "read batch")
            defer { select.reset() }
            select.bind(1, id)
            select.bind(2, project)
            return try select.step() ? Self.readBatch(select) : nil
        }
    }

    public func batches(project: String?, after: String?, limit: Int) throws -> [StoredBatch]? {
        try withConnection { db in
            try db.readTransaction("list batches") {
                var position: Int?
                if let after {
                    let find = try db.cached("SELECT rowid FROM batches WHERE id = ?1 AND (?2 IS NULL OR project = ?2)",
                                             operation: "list batches")
                    defer { find.reset() }
                    find.bind(1, after)
                    find.bind(2, project)
                    guard try find.step() else { return nil }
                    position = find.int(0)
                }
                let select = try db.cached("""
                    SELECT \(Self.batchColumns) FROM batches
                    WHERE (?1 IS NULL OR project = ?1) AND (?2 IS NULL OR rowid < ?2)
                    ORDER BY rowid DESC LIMIT ?3
                    """, operation: "list batches")
                defer { select.reset() }
                select.bind(1, project)
                select.bind(2, position.map(Int64.init))
                select.bind(3, max(0, limit))
                var batches: [StoredBatch] = []
                while try select.step() { batches.append(Self.readBatch(select)) }
                return batches
            }
        }
    }

    public func activeBatches() throws -> [StoredBatch] {
        try withConnection { db in
            let select = try db.cached("""
                SELECT \(Self.batchColumns) FROM batches
                WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling') ORDER BY rowid
                """, operation: "list active batches")
            defer { select.reset() }
            var batches: [StoredBatch] = []
            while try select.step() { batches.append(Self.readBatch(select)) }
            return batches
        }
    }

    static func timeColumn(_ status: BatchStatus) -> String {
        switch status {
        case .validating: return "created_at"
        case .inProgress: return "in_progress_at"
        case .finalizing: return "finalizing_at"
        case .completed: return "completed_at"
        case .failed: return "failed_at"
        case .expired: return "expired_at"
        case .cancelling: return "cancelling_at"
        case .cancelled: return "cancelled_at"
        }
    }

    public func transitionBatch(id: String, from: Set<BatchStatus>, to: BatchStatus, at: Double, jobID: JobID?) throws -> Bool {
        let allowed = from.map { "'\($0.rawValue)'" }.sorted().joined(separator: ", ")
        return try withConnection { db in
            try db.writeTransaction("update batch") {
                let update = try db.prepare("""
                    UPDATE batches SET status = ?1, \(Self.timeColumn(to)) = coalesce(\(Self.timeColumn(to)), ?2),
                                       job_id = coalesce(?3, job_id)
                    WHERE id = ?4 AND status IN (\(allowed))
                    """, operation: "update batch")
                update.bind(1, to.rawValue)
                update.bind(2, at)
                update.bind(3, jobID)
                update.bind(4, id)
                try update.run()
                return db.changes == 1
            }
        }
    }

    public func endBatch(id: String, _ ending: BatchEnding) throws -> Bool {
        try withConnection { db in
            try db.writeTransaction("end batch") {
                let update = try db.prepare("""
                    UPDATE batches SET status = ?1, \(Self.timeColumn(ending.status)) = ?2, total = ?3, completed = ?4,
                                       failed = ?5, errors = coalesce(?6, errors), has_output_file = ?7, has_error_file = ?8
                    WHERE id = ?9 AND status IN ('validating', 'in_progress', 'finalizing', 'cancelling')
                    """, operation: "end batch")
                update.bind(1, ending.status.rawValue)
                update.bind(2, ending.at)
                update.bind(3, ending.counts.total)
                update.bind(4, ending.counts.completed)
                update.bind(5, ending.counts.failed)
                update.bind(6, ending.errors)
                update.bind(7, ending.outputFile == nil ? 0 : 1)
                update.bind(8, ending.errorFile == nil ? 0 : 1)
                update.bind(9, id)
                try update.run()
                guard db.changes == 1 else { return false }
                if let file = ending.outputFile { try Self.insertFileRow(db, file) }
                if let file = ending.errorFile { try Self.insertFileRow(db, file) }
                return true
            }
        }
    }

    // MARK: The batch's job

    public func enqueueBatchInput(path: String, batchID: String, maxLineBytes: Int) throws -> BatchEnqueueOutcome {
        do {
            let report = try enqueue(file: path, name: batchID, strict: true, allowDuplicate: true, maxLineBytes: maxLineBytes)
            guard let job = report.jobID else {
                return .rejected(lines: report.lines, badLineCount: report.badLineCount, badLines: report.badLines)
            }
            return .enqueued(job)
        } catch QueueError.duplicateJobName(_, let job) {
            return .enqueued(job) // created before a crash or restart: the same batch's job
        }
    }

    public func batchCounts(job: JobID) throws -> (counts: BatchRequestCounts, unfinished: Int) {
        try withConnection { db in
            try db.readTransaction("count batch requests") {
                let states = try requestCounts(db, job: job)
                let ok = try db.cached("SELECT count(*) FROM results WHERE job_id = ?1 AND status_code = 200",
                                       operation: "count batch requests")
                defer { ok.reset() }
                ok.bind(1, job)
                _ = try ok.step()
                let completed = ok.int(0)
                let finished = states.finished + states.cancelled
                return (BatchRequestCounts(total: states.total, completed: completed, failed: max(0, finished - completed)),
                        states.unfinished)
            }
        }
    }

    public func cancelBatchJob(_ job: JobID) throws {
        try cancel(job: job)
    }

    public func exportBatch(job: JobID, outputPath: String, errorPath: String, unfinishedCode: String,
                            unfinishedMessage: String) throws -> BatchExportReport {
        let output = try AtomicFileWriter(path: outputPath)
        let errors = try AtomicFileWriter(path: errorPath)
        do {
            let report = try withConnection { db in
                try db.readTransaction("export batch job \(job)") {
                    try writeBatchExport(db, job: job, output: output, errors: errors,
                                         unfinishedCode: unfinishedCode, unfinishedMessage: unfinishedMessage)
                }
            }
            try output.commit()
            try errors.commit()
            return report
        } catch {
            output.discard()
            errors.discard()
            throw error
        }
    }

    /// OpenAI's output line shapes: `{"id","custom_id","response":{"status_code","request_id","body"},"error":null}`
    /// for answers, `{"id","custom_id","response":null,"error":{"code","message"}}` for the rest.
    private func writeBatchExport(_ db: SQLiteConnection, job: JobID, output: AtomicFileWriter, errors: AtomicFileWriter,
                                  unfinishedCode: String, unfinishedMessage: String) throws -> BatchExportReport {
        let range = RequestKey.range(of: job)
        let rows = try db.prepare("""
            SELECT r.id, r.custom_id, r.state, res.status_code, res.error_code, res.error_message, res.body
            FROM requests AS r LEFT JOIN results AS res ON res.request_id = r.id
            WHERE r.id BETWEEN ?1 AND ?2 ORDER BY r.id
            """, operation: "export batch job \(job)")
        rows.bind(1, range.lowerBound)
        rows.bind(2, range.upperBound)
        var report = BatchExportReport()
        var line: [UInt8] = []
        line.reserveCapacity(4096)
        while try rows.step() {
            report.counts.total += 1
            let id = rows.int64(0)
            line.removeAll(keepingCapacity: true)
            line.append(contentsOf: #"{"id":"batch_req_"#.utf8)
            Self.appendHex(id, to: &line)
            line.append(contentsOf: #"","custom_id":"#.utf8)
            if let customID = rows.text(1) { JSON.writeString(customID, into: &line) } else { line.append(contentsOf: "null".utf8) }
            let state = RequestState(rawValue: rows.text(2) ?? "")
            var isAnswer = false
            if !rows.isNull(3), state == .done {
                let status = rows.int(3)
                line.append(contentsOf: #","response":{"status_code":"#.utf8)
                line.append(contentsOf: String(status).utf8)
                line.append(contentsOf: #","request_id":"req_"#.utf8)
                Self.appendHex(id, to: &line)
                line.append(contentsOf: #"","body":"#.utf8)
                let body = rows.textBytes(6)
                if body.isEmpty { line.append(contentsOf: "null".utf8) } else { line.append(contentsOf: body) }
                line.append(contentsOf: #"},"error":null}"#.utf8)
                isAnswer = status == 200
            } else {
                let code: String
                let message: String
                if state == .failed {
                    code = rows.text(4) ?? "failed"
                    message = rows.text(5) ?? "the request failed"
                } else {
                    code = unfinishedCode
                    message = unfinishedMessage
                }
                line.append(contentsOf: #","response":null,"error":{"code":"#.utf8)
                JSON.writeString(code, into: &line)
                line.append(contentsOf: #","message":"#.utf8)
                JSON.writeString(message, into: &line)
                line.append(contentsOf: "}}".utf8)
            }
            line.append(0x0A)
            if isAnswer {
                try output.write(line)
                report.outputLines += 1
                report.outputBytes += line.count
                report.counts.completed += 1
            } else {
                try errors.write(line)
                report.errorLines += 1
                report.errorBytes += line.count
                report.counts.failed += 1
            }
        }
        rows.reset()
        return report
    }
}
