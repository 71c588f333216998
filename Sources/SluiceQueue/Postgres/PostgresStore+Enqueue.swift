import Foundation
import SluiceCore

extension PostgresStore {
    /// Rows sent per `COPY` statement while loading: between statements the job's loading
    /// heartbeat advances, so no other process takes the load for abandoned.
    static let enqueueRowsPerCopy = 200_000

    /// Streams the input file into a new job through `COPY`, with the same validation,
    /// duplicate detection and reports as `SQLiteStore.enqueue`. The job stays `loading`
    /// (invisible to claims) until the last transaction makes it `active`.
    public func enqueue(file path: String, options: EnqueueOptions) throws -> EnqueueReport {
        let startTime = DispatchTime.now().uptimeNanoseconds
        if let name = options.name { try SQLiteStore.checkJobName(name) }
        guard options.maxLineBytes > 0, options.maxLineBytes < Int(Int32.max) else {
            throw QueueError.invalidArgument("the line length limit must be between 1 and \(Int32.max - 1) bytes")
        }
        let reader = try LineReader(path: path, maxLineBytes: options.maxLineBytes)
        let stampBefore = reader.fileStamp()
        let hasher: FileHasher?
        if stampBefore?.isRegular == true {
            hasher = FileHasher(path: path)
        } else {
            hasher = nil
            reader.hasher = SHA256()
        }
        defer { hasher?.cancel() }

        let job = try createLoadingJob(name: options.name, priority: options.priority, path: path)
        do {
            let load = try withConnection { db in try loadLines(db, reader: reader, job: job, options: options) }
            let digest: FileHasher.Digest
            if let hasher {
                digest = try hasher.wait()
                if reader.fileStamp() != stampBefore || digest.bytes != reader.bytesRead {
                    throw QueueError.cannotReadInput(path: path, reason: "the file changed while it was being enqueued")
                }
            } else {
                digest = FileHasher.Digest(hex: reader.hasher!.hexDigest(), bytes: reader.bytesRead)
            }
            let created = try finishLoad(job: job, path: path, sha256: digest.hex, load: load, options: options)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - startTime) / 1e9
            return EnqueueReport(
                jobID: created ? job : nil, name: options.name, sha256: digest.hex, bytesRead: reader.bytesRead,
                lines: load.lines, blankLines: load.blankLines, accepted: load.accepted, badLineCount: load.badLineCount,
                badLines: load.reportedBadLines, rejected: !created, seconds: seconds)
        } catch {
            try? withConnection { db in
                try db.transaction("remove unfinished job \(job)") { try deleteJob(db, job) }
            }
            throw error
        }
    }

    private func createLoadingJob(name: String?, priority: Int, path: String) throws -> JobID {
        try withConnection { db in
            if let name {
                let existing = try db.execute("SELECT id FROM jobs WHERE name = $1", [name], operation: "create job")
                if existing.rowCount == 1 { throw QueueError.duplicateJobName(name: name, job: existing.int64(0, 0)) }
            }
            let inserted: PGResult
            do {
                inserted = try db.execute("""
                    INSERT INTO jobs (name, state, priority, input_path, input_sha256, created_at, creator_host, creator_pid,
                                      loading_heartbeat)
                    VALUES ($1, 'loading', $2, $3, '', sluice_now(), $4, $5, sluice_now()) RETURNING id
                    """, [name, String(priority), path, SystemInfo.hostName, String(getpid())], operation: "create job")
            } catch let PostgresError.server(_, _, state, _) where state == "23505" {
                throw QueueError.duplicateJobName(name: name ?? "", job: 0)
            }
            let job = inserted.int64(0, 0)
            guard job <= RequestKey.maximumJob else {
                throw QueueError.invalidArgument("the database holds the largest possible job id; it cannot take more jobs")
            }
            return job
        }
    }

    struct LoadState {
        var lines = 0
        var blankLines = 0
        var accepted = 0
        var badLineCount = 0
        var reportedBadLines: [BadLine] = []
    }

    /// Reads every line, sending good and bad lines to `COPY` and bad lines' results after them.
    /// A custom_id seen before in the file makes the line bad (first one wins), as in SQLite.
    private func loadLines(_ db: PGConnection, reader: LineReader, job: JobID, options: EnqueueOptions) throws -> LoadState {
        var load = LoadState()
        var firstLineOf: [String: Int] = [:]
        var badResults: [UInt8] = []
        var buffer: [UInt8] = []
        buffer.reserveCapacity(1 << 20)
        var rowsInCopy = 0
        var done = false
        let defaults = options.bodyDefaults?.objectValue.flatMap { $0.isEmpty ? nil : $0 }
        let jobText = Array(String(job).utf8)
        let now = Array((try db.execute("SELECT sluice_now()", operation: "read the server's clock").string(0, 0) ?? "0").utf8)

        func checkLineNumber(_ number: Int) throws {
            if number > RequestKey.maximumLine {
                throw QueueError.invalidArgument("input files are limited to \(RequestKey.maximumLine) lines")
            }
        }
        func recordBad(_ number: Int, customID: String?, reason: BadLineReason, message: String) {
            load.badLineCount += 1
            if load.reportedBadLines.count < SQLiteStore.maxReportedBadLines {
                load.reportedBadLines.append(BadLine(lineNumber: number, customID: customID, reason: reason, message: message))
            }
            if options.strict { return }
            let id = Array(String(RequestKey.id(job: job, line: number)).utf8)
            // id, job_id, line, state, endpoint, input_error, custom_id, body
            buffer.append(contentsOf: id); buffer.append(9)
            buffer.append(contentsOf: jobText); buffer.append(9)
            buffer.append(contentsOf: String(number).utf8); buffer.append(contentsOf: "\tfailed\t\\N\t".utf8)
            Self.appendCopyText(Array(reason.rawValue.utf8), to: &buffer); buffer.append(9)
            if let customID { Self.appendCopyText(Array(customID.utf8), to: &buffer) } else { buffer.append(contentsOf: "\\N".utf8) }
            buffer.append(contentsOf: "\t\\N\n".utf8)
            // request_id, job_id, error_code, error_message
            badResults.append(contentsOf: id); badResults.append(9)
            badResults.append(contentsOf: jobText); badResults.append(9)
            Self.appendCopyText(Array(reason.rawValue.utf8), to: &badResults); badResults.append(9)
            Self.appendCopyText(Array("line \(number): \(message)".utf8), to: &badResults); badResults.append(9)
            badResults.append(contentsOf: now); badResults.append(10)
        }

        while !done {
            try db.copyIn("""
                COPY requests (id, job_id, line, state, endpoint, input_error, custom_id, body) FROM STDIN
                """, operation: "enqueue requests") { send in
                rowsInCopy = 0
                while rowsInCopy < Self.enqueueRowsPerCopy {
                    guard let line = try reader.next() else { done = true; break }
                    switch line {
                    case let .tooLong(number, length):
                        try checkLineNumber(number)
                        load.lines += 1
                        recordBad(number, customID: nil, reason: .lineTooLong,
                                  message: "line too long: \(length) bytes (the limit is \(reader.maxLineBytes))")
                    case let .text(number, rawBytes):
                        var bytes = rawBytes
                        if number == 1, bytes.starts(with: [0xEF, 0xBB, 0xBF]) {
                            bytes = UnsafeBufferPointer(rebasing: bytes[3...])
                        }
                        if SQLiteStore.isBlank(bytes) {
                            load.blankLines += 1
                            continue
                        }
                        try checkLineNumber(number)
                        load.lines += 1
                        switch BatchLineValidator.validate(bytes) {
                        case let .failure(problem):
                            recordBad(number, customID: problem.customID, reason: problem.reason, message: problem.message)
                        case let .success(valid):
                            let customID = valid.customIDString
                            if let first = firstLineOf[customID] {
                                recordBad(number, customID: customID, reason: .duplicateCustomID,
                                          message: "duplicate custom_id \"\(customID)\" (first on line \(first))")
                                break
                            }
                            firstLineOf[customID] = number
                            load.accepted += 1
                            buffer.append(contentsOf: String(RequestKey.id(job: job, line: number)).utf8); buffer.append(9)
                            buffer.append(contentsOf: jobText); buffer.append(9)
                            buffer.append(contentsOf: String(number).utf8); buffer.append(contentsOf: "\tqueued\t".utf8)
                            buffer.append(contentsOf: String(StoredEndpoint.code(valid.endpoint)).utf8)
                            buffer.append(contentsOf: "\t\\N\t".utf8)
                            if let decoded = valid.decodedCustomID {
                                Self.appendCopyText(Array(decoded.utf8), to: &buffer)
                            } else {
                                Self.appendCopyText(valid.customID, to: &buffer)
                            }
                            buffer.append(9)
                            if let defaults {
                                let merged = try SQLiteStore.mergeDefaults(defaults, under: valid.body, line: number)
                                Self.appendCopyText(Array(merged.utf8), to: &buffer)
                            } else {
                                Self.appendCopyText(valid.body, to: &buffer)
                            }
                            buffer.append(10)
                        }
                    }
                    rowsInCopy += 1
                    if buffer.count >= 1 << 20 {
                        try send(buffer)
                        buffer.removeAll(keepingCapacity: true)
                    }
                }
                if !buffer.isEmpty {
                    try send(buffer)
                    buffer.removeAll(keepingCapacity: true)
                }
            }
            try db.execute("UPDATE jobs SET loading_heartbeat = sluice_now() WHERE id = $1", [String(job)],
                           operation: "enqueue requests")
        }
        if !badResults.isEmpty {
            try db.copyIn("""
                COPY results (request_id, job_id, error_code, error_message, finished_at) FROM STDIN
                """, operation: "enqueue bad lines") { send in try send(badResults) }
        }
        return load
    }

    /// Appends bytes as a field of COPY's text format (backslash, tab, newline and CR escaped).
    static func appendCopyText<C: Collection>(_ bytes: C, to out: inout [UInt8]) where C.Element == UInt8 {
        for b in bytes {
            switch b {
            case UInt8(ascii: "\\"): out.append(contentsOf: [92, 92])
            case 9: out.append(contentsOf: [92, UInt8(ascii: "t")])
            case 10: out.append(contentsOf: [92, UInt8(ascii: "n")])
            case 13: out.append(contentsOf: [92, UInt8(ascii: "r")])
            default: out.append(b)
            }
        }
    }

    /// The last transaction: the job becomes visible, or is deleted (empty, duplicate, strict rejection).
    /// Returns whether the job was created.
    private func finishLoad(job: JobID, path: String, sha256: String, load: LoadState, options: EnqueueOptions) throws -> Bool {
        try withConnection { db in
            try db.transaction("finish enqueue of job \(job)") {
                if load.lines == 0 { throw QueueError.emptyInput(path: path) }
                // Serializes finishing loads, so two copies of one file cannot both pass the check.
                try db.execute("SELECT pg_advisory_xact_lock($1)", [String(PostgresSchema.migrationLock + 1)],
                               operation: "finish enqueue")
                if !options.allowDuplicate {
                    let earlier = try db.execute("""
                        SELECT id, name FROM jobs WHERE input_sha256 = $1 AND state <> 'loading' AND id <> $2 ORDER BY id LIMIT 1
                        """, [sha256, String(job)], operation: "look for an earlier job with the same input")
                    if earlier.rowCount == 1 {
                        throw QueueError.duplicateInput(path: path, sha256: sha256, job: earlier.int64(0, 0),
                                                        jobName: earlier.string(0, 1))
                    }
                }
                if options.strict && load.badLineCount > 0 {
                    try deleteJob(db, job)
                    return false
                }
                let activated = try db.execute("""
                    UPDATE jobs SET state = 'active', input_sha256 = $1, request_count = $2, bad_line_count = $3,
                                    loading_heartbeat = NULL,
                                    finished_at = CASE WHEN $4::bigint = 0 THEN sluice_now() END
                    WHERE id = $5 AND state = 'loading'
                    """, [sha256, String(load.lines), String(load.badLineCount), String(load.accepted), String(job)],
                    operation: "finish enqueue").affectedRows
                guard activated == 1 else {
                    throw PostgresError.server(url: location, operation: "finish enqueue", sqlState: "P0002",
                                               message: "job \(job) was removed while it was loading")
                }
                return true
            }
        }
    }
}
