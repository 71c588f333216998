import CSQLite
import Foundation
import SluiceCore

extension SQLiteStore {
    /// Rows inserted per transaction while loading: large enough that commits cost little,
    /// small enough that workers on other jobs get the write lock every few tens of milliseconds.
    static let enqueueRowsPerTransaction = 20_000
    /// Bytes of input lines read ahead (from a pipe or FIFO) before they are inserted in one transaction.
    static let enqueueBytesPerBatch = 16 << 20

    /// Streams the OpenAI Batch input file at `path` into a new job, validating every line.
    ///
    /// Good lines become queued requests; bad lines become failed requests (line number,
    /// custom_id if readable, reason) that appear in the errors export. With `strict`, any bad
    /// line rejects the whole file: nothing is created and the report has `rejected == true`.
    /// Blank lines are skipped (they still count for line numbers); `\r\n` endings and a last
    /// line without a newline are fine. Memory stays constant whatever the file size.
    ///
    /// The job is loaded in state `loading`, which claims ignore, and becomes `active` in the
    /// last transaction: a crash part-way leaves nothing visible, and the leftovers are deleted
    /// the next time a store opens the database.
    ///
    /// `bodyDefaults` (an object) is merged under each good line's body: a top-level key the
    /// body lacks is added with the default's value; the body's own keys always win.
    /// - Throws: `QueueError.emptyInput`, `.duplicateInput` (same content enqueued before,
    ///   unless `allowDuplicate`), `.duplicateJobName`, `.invalidJobName`, `.cannotReadInput`, database errors.
    public func enqueue(file path: String, name: String? = nil, priority: Int = 0, strict: Bool = false,
                        allowDuplicate: Bool = false,
                        maxLineBytes: Int = SQLiteStore.defaultMaxLineBytes,
                        bodyDefaults: JSON? = nil) throws -> EnqueueReport {
        let startTime = DispatchTime.now().uptimeNanoseconds
        if let name { try Self.checkJobName(name) }
        guard maxLineBytes > 0, maxLineBytes < Int(Int32.max) else {
            throw QueueError.invalidArgument("the line length limit must be between 1 and \(Int32.max - 1) bytes")
        }
        let reader = try LineReader(path: path, maxLineBytes: maxLineBytes)
        let stampBefore = reader.fileStamp()
        let hasher: FileHasher?
        if stampBefore?.isRegular == true {
            hasher = FileHasher(path: path)
        } else {
            hasher = nil
            reader.hasher = SHA256()
        }
        defer { hasher?.cancel() }

        let job = try createLoadingJob(name: name, priority: priority, path: path)
        var load = LoadState()
        do {
            try withConnection { db in
                try loadLines(db, reader: reader, job: job, strict: strict, bodyDefaults: bodyDefaults, into: &load) {
                    // Between transactions: give up early on a duplicate once the hash is known.
                    if !allowDuplicate, let digest = hasher?.finishedDigest,
                       let earlier = try earlierJob(db, sha256: digest.hex, excluding: job) {
                        throw QueueError.duplicateInput(path: path, sha256: digest.hex, job: earlier.id, jobName: earlier.name)
                    }
                }
            }
            let digest: FileHasher.Digest
            if let hasher {
                digest = try hasher.wait()
                if reader.fileStamp() != stampBefore || digest.bytes != reader.bytesRead {
                    throw QueueError.cannotReadInput(path: path, reason: "the file changed while it was being enqueued")
                }
            } else {
                digest = FileHasher.Digest(hex: reader.hasher!.hexDigest(), bytes: reader.bytesRead)
            }
            let outcome = try finishLoad(job: job, path: path, sha256: digest.hex, load: load, strict: strict,
                                         allowDuplicate: allowDuplicate)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - startTime) / 1e9
            return EnqueueReport(
                jobID: outcome == .created ? job : nil, name: name, sha256: digest.hex, bytesRead: reader.bytesRead,
                lines: load.lines, blankLines: load.blankLines, accepted: load.accepted, badLineCount: load.badLineCount,
                badLines: load.reportedBadLines, rejected: outcome == .rejected, seconds: seconds)
        } catch {
            try? withConnection { db in
                try db.writeTransaction("remove unfinished job \(job)") { try deleteJob(db, job, onlyIfLoading: true) }
            }
            throw error
        }
    }

    static func checkJobName(_ name: String) throws {
        if name.isEmpty { throw QueueError.invalidJobName(name: name, reason: "a name may not be empty") }
        if name.allSatisfy(\.isNumber) {
            throw QueueError.invalidJobName(name: name, reason: "a name may not be a number (numbers are job ids)")
        }
        if name.unicodeScalars.contains(where: { $0.value < 0x20 }) {
            throw QueueError.invalidJobName(name: name, reason: "a name may not contain control characters")
        }
    }

    private func createLoadingJob(name: String?, priority: Int, path: String) throws -> JobID {
        let now = clock()
        return try withConnection { db in
            try db.writeTransaction("create job") {
                if let name {
                    let existing = try db.cached("SELECT id FROM jobs WHERE name = ?1", operation: "create job")
                    existing.bind(1, name)
                    if try existing.step() {
                        let id = existing.int64(0)
                        existing.reset()
                        throw QueueError.duplicateJobName(name: name, job: id)
                    }
                    existing.reset()
                }
                let insert = try db.cached("""
                    INSERT INTO jobs (name, state, priority, input_path, input_sha256, created_at,
                                      creator_host, creator_pid, loading_heartbeat)
                    VALUES (?1, 'loading', ?2, ?3, '', ?4, ?5, ?6, ?4)
                    """, operation: "create job")
                insert.bind(1, name)
                insert.bind(2, priority)
                insert.bind(3, path)
                insert.bind(4, now)
                insert.bind(5, SystemInfo.hostName)
                insert.bind(6, Int64(getpid()))
                try insert.run()
                let job = db.lastInsertRowID
                guard job <= RequestKey.maximumJob else {
                    throw QueueError.invalidArgument("the database holds the largest possible job id; it cannot take more jobs")
                }
                return job
            }
        }
    }

    struct LoadState {
        var lines = 0
        var blankLines = 0
        var accepted = 0
        var badLineCount = 0
        var reportedBadLines: [BadLine] = []
    }

    /// Reads every line into the loading job, in transactions of `enqueueRowsPerTransaction` rows.
    private func loadLines(_ db: SQLiteConnection, reader: LineReader, job: JobID, strict: Bool, bodyDefaults: JSON?,
                           into load: inout LoadState, betweenTransactions: () throws -> Void) throws {
        let insertGood = try db.prepare("""
            INSERT INTO requests (id, job_id, line, state, endpoint, custom_id, body)
            VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6)
            """, operation: "enqueue requests")
        let insertBad = try db.prepare("""
            INSERT INTO requests (id, job_id, line, state, input_error, custom_id) VALUES (?1, ?2, ?3, 'failed', ?4, ?5)
            """, operation: "enqueue bad lines")
        let insertBadResult = try db.prepare("""
            INSERT INTO results (request_id, job_id, error_code, error_message, finished_at) VALUES (?1, ?2, ?3, ?4, ?5)
            """, operation: "enqueue bad lines")
        let findFirst = try db.prepare("""
            SELECT line FROM requests WHERE job_id = ?1 AND custom_id = ?2 AND input_error IS NULL
            """, operation: "find duplicate custom_id")
        let heartbeat = try db.prepare("UPDATE jobs SET loading_heartbeat = ?1 WHERE id = ?2", operation: "enqueue requests")
        let now = clock()

        func recordBad(_ number: Int, customID: String?, reason: BadLineReason, message: String) throws {
            load.badLineCount += 1
            if load.reportedBadLines.count < Self.maxReportedBadLines {
                load.reportedBadLines.append(BadLine(lineNumber: number, customID: customID, reason: reason, message: message))
            }
            if strict { return } // the job will be deleted: only duplicate detection needs rows
            let id = RequestKey.id(job: job, line: number)
            insertBad.bind(1, id)
            insertBad.bind(2, job)
            insertBad.bind(3, number)
            insertBad.bind(4, reason.rawValue)
            insertBad.bind(5, customID)
            try insertBad.run()
            insertBadResult.bind(1, id)
            insertBadResult.bind(2, job)
            insertBadResult.bind(3, reason.rawValue)
            insertBadResult.bind(4, "line \(number): \(message)")
            insertBadResult.bind(5, now)
            try insertBadResult.run()
        }

        /// Inserts one line's request (or bad-line record); false for a blank line, which adds no row.
        func insert(_ line: LineReader.Line) throws -> Bool {
            switch line {
            case let .tooLong(number, length):
                try checkLineNumber(number)
                load.lines += 1
                try recordBad(number, customID: nil, reason: .lineTooLong,
                              message: "line too long: \(length) bytes (the limit is \(reader.maxLineBytes))")
            case let .text(number, rawBytes):
                var bytes = rawBytes
                if number == 1, bytes.starts(with: [0xEF, 0xBB, 0xBF]) {
                    bytes = UnsafeBufferPointer(rebasing: bytes[3...]) // a UTF-8 byte order mark
                }
                if Self.isBlank(bytes) {
                    load.blankLines += 1
                    return false
                }
                try checkLineNumber(number)
                load.lines += 1
                switch BatchLineValidator.validate(bytes) {
                case let .failure(problem):
                    try recordBad(number, customID: problem.customID, reason: problem.reason, message: problem.message)
                case let .success(valid):
                    insertGood.bind(1, RequestKey.id(job: job, line: number))
                    insertGood.bind(2, job)
                    insertGood.bind(3, number)
                    insertGood.bind(4, StoredEndpoint.code(valid.endpoint))
                    if let decoded = valid.decodedCustomID {
                        insertGood.bind(5, decoded)
                    } else {
                        insertGood.bindTextNoCopy(5, valid.customID)
                    }
                    if let defaults = bodyDefaults?.objectValue, !defaults.isEmpty {
                        insertGood.bind(6, try Self.mergeDefaults(defaults, under: valid.body, line: number))
                    } else {
                        insertGood.bindTextNoCopy(6, valid.body)
                    }
                    let rc = insertGood.stepCode()
                    sqlite3_reset(insertGood.pointer)
                    if rc == SQLITE_DONE {
                        load.accepted += 1
                    } else if rc == sqliteConstraintUnique {
                        let customID = valid.customIDString
                        findFirst.bind(1, job)
                        findFirst.bind(2, customID)
                        let first = try findFirst.step() ? findFirst.int(0) : nil
                        findFirst.reset()
                        let earlier = first.map { " (first on line \($0))" } ?? ""
                        try recordBad(number, customID: customID, reason: .duplicateCustomID,
                                      message: "duplicate custom_id \"\(customID)\"\(earlier)")
                    } else {
                        throw db.error(rc, operation: "enqueue line \(number)")
                    }
                }
            }
            return true
        }

        var inTransaction = false
        defer { if inTransaction { db.rollback() } }
        func commit() throws {
            heartbeat.bind(1, clock())
            heartbeat.bind(2, job)
            try heartbeat.run()
            try db.execute("COMMIT", operation: "enqueue requests")
            inTransaction = false
        }

        guard reader.fileStamp()?.isRegular != true else {
            // A regular file never makes a read wait for its writer: stream it straight into transactions.
            var rowsInTransaction = 0
            while let line = try reader.next() {
                if !inTransaction {
                    try db.execute("BEGIN IMMEDIATE", operation: "enqueue requests")
                    inTransaction = true
                }
                if try insert(line) { rowsInTransaction += 1 }
                if rowsInTransaction >= Self.enqueueRowsPerTransaction {
                    try commit()
                    rowsInTransaction = 0
                    try betweenTransactions()
                }
            }
            if inTransaction { try commit() }
            return
        }

        // A pipe, FIFO or terminal can make a read wait without end: read a batch of lines first
        // (copied out of the reader), and hold the write lock only to insert it, never while waiting.
        // While input is slow to come, the loading job's heartbeat is kept fresh in a short
        // transaction of its own, so no other process takes it for an abandoned enqueue.
        reader.onIdle = { [clock = self.clock] in
            try db.writeTransaction("enqueue requests (waiting for input)") {
                heartbeat.bind(1, clock())
                heartbeat.bind(2, job)
                try heartbeat.run()
            }
        }
        defer { reader.onIdle = nil }
        enum Pending {
            case text(number: Int, bytes: [UInt8])
            case tooLong(number: Int, length: Int)
        }
        var pending: [Pending] = []
        while true {
            pending.removeAll(keepingCapacity: true)
            var bytes = 0
            while pending.count < Self.enqueueRowsPerTransaction, bytes < Self.enqueueBytesPerBatch, let line = try reader.next() {
                switch line {
                case let .text(number, lineBytes):
                    pending.append(.text(number: number, bytes: Array(lineBytes)))
                    bytes += lineBytes.count
                case let .tooLong(number, length):
                    pending.append(.tooLong(number: number, length: length))
                }
            }
            if pending.isEmpty { return }
            try db.execute("BEGIN IMMEDIATE", operation: "enqueue requests")
            inTransaction = true
            for line in pending {
                switch line {
                case let .text(number, lineBytes):
                    _ = try lineBytes.withUnsafeBufferPointer { try insert(.text(number: number, bytes: $0)) }
                case let .tooLong(number, length):
                    _ = try insert(.tooLong(number: number, length: length))
                }
            }
            try commit()
            try betweenTransactions()
        }
    }

    /// The body with every default key it lacks appended (the body's own keys and their order kept).
    static func mergeDefaults(_ defaults: [(key: String, value: JSON)], under body: UnsafeBufferPointer<UInt8>,
                              line: Int) throws -> String {
        let parsed: JSON
        do {
            parsed = try JSON.parse(body)
        } catch {
            throw QueueError.invalidArgument("line \(line): the body could not be read to merge defaults: \(error)")
        }
        guard case var .object(pairs) = parsed else { return parsed.serialized }
        for (key, value) in defaults where !pairs.contains(where: { $0.key == key }) {
            pairs.append((key: key, value: value))
        }
        return JSON.object(pairs).serialized
    }

    private func checkLineNumber(_ number: Int) throws {
        if number > RequestKey.maximumLine {
            throw QueueError.invalidArgument("input files are limited to \(RequestKey.maximumLine) lines")
        }
    }

    static func isBlank(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        for b in bytes where b != 0x20 && b != 0x09 && b != 0x0D { return false }
        return true
    }

    private func earlierJob(_ db: SQLiteConnection, sha256: String, excluding job: JobID) throws -> (id: JobID, name: String?)? {
        let statement = try db.cached("""
            SELECT id, name FROM jobs WHERE input_sha256 = ?1 AND state <> 'loading' AND id <> ?2 ORDER BY id LIMIT 1
            """, operation: "look for an earlier job with the same input")
        defer { statement.reset() }
        statement.bind(1, sha256)
        statement.bind(2, job)
        guard try statement.step() else { return nil }
        return (statement.int64(0), statement.text(1))
    }

    private enum LoadOutcome { case created, rejected }

    /// The last transaction: the job becomes visible, or is deleted (empty, duplicate, strict rejection).
    private func finishLoad(job: JobID, path: String, sha256: String, load: LoadState, strict: Bool,
                            allowDuplicate: Bool) throws -> LoadOutcome {
        let now = clock()
        return try withConnection { db in
            try db.writeTransaction("finish enqueue of job \(job)") {
                if load.lines == 0 { throw QueueError.emptyInput(path: path) }
                if !allowDuplicate, let earlier = try earlierJob(db, sha256: sha256, excluding: job) {
                    throw QueueError.duplicateInput(path: path, sha256: sha256, job: earlier.id, jobName: earlier.name)
                }
                if strict && load.badLineCount > 0 {
                    try deleteJob(db, job, onlyIfLoading: true)
                    return .rejected
                }
                let activate = try db.cached("""
                    UPDATE jobs SET state = 'active', input_sha256 = ?1, request_count = ?2, bad_line_count = ?3,
                                    loading_heartbeat = NULL, finished_at = CASE WHEN ?4 = 0 THEN ?5 END
                    WHERE id = ?6 AND state = 'loading'
                    """, operation: "finish enqueue")
                activate.bind(1, sha256)
                activate.bind(2, load.lines)
                activate.bind(3, load.badLineCount)
                activate.bind(4, load.accepted)
                activate.bind(5, now)
                activate.bind(6, job)
                try activate.run()
                guard db.changes == 1 else {
                    throw QueueError.sqlite(path: self.path, operation: "finish enqueue", code: SQLITE_ERROR,
                                            message: "job \(job) was removed while it was loading")
                }
                return .created
            }
        }
    }
}
