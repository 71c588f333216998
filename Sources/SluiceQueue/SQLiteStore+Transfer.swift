import Foundation
import SluiceCore

extension SQLiteStore: JobTransfer {
    public func dumpJob(_ job: JobID) throws -> JobDump {
        try withConnection { db in
            try db.readTransaction("read job \(job) for copying") {
                let select = try db.prepare("SELECT \(Self.jobColumns) FROM jobs WHERE id = ?1 AND state <> 'loading'",
                                            operation: "read job")
                select.bind(1, job)
                guard try select.step() else { throw QueueError.noSuchJob(String(job)) }
                var dump = JobDump(job: Self.readJob(select), startedAt: select.optionalDouble(9),
                                   finishedAt: select.optionalDouble(10), requests: [], results: [])
                let requests = try db.prepare("""
                    SELECT line, state, endpoint, failed_attempts, input_error, custom_id, checkpoint_tokens, checkpoint_payload,
                           body, first_claimed_at, claimed_at, preemptions, interrupted, lost_leases
                    FROM requests WHERE job_id = ?1 ORDER BY id
                    """, operation: "read requests")
                requests.bind(1, job)
                while try requests.step() {
                    var state = RequestState(rawValue: requests.text(1) ?? "") ?? .queued
                    var interrupted = requests.int(12)
                    if state == .leased { state = .queued; interrupted = 1 }
                    dump.requests.append(JobDump.Request(
                        line: requests.int(0), state: state, endpoint: requests.optionalInt(2), failedAttempts: requests.int(3),
                        inputError: requests.text(4), customID: requests.text(5), checkpointTokens: requests.optionalInt(6),
                        checkpointPayload: requests.isNull(7) ? nil : (requests.blob(7) ?? []), body: requests.text(8),
                        firstClaimedAt: requests.optionalDouble(9), claimedAt: requests.optionalDouble(10),
                        preemptions: requests.int(11), interrupted: interrupted, lostLeases: requests.int(13)))
                }
                let results = try db.prepare("""
                    SELECT r.line, res.status_code, res.error_code, res.error_message, res.prompt_tokens, res.completion_tokens,
                           res.finished_at, res.worker_id, res.lease_generation, res.body, res.from_cache
                    FROM results AS res JOIN requests AS r ON r.id = res.request_id WHERE res.job_id = ?1 ORDER BY res.request_id
                    """, operation: "read results")
                results.bind(1, job)
                while try results.step() {
                    dump.results.append(JobDump.Result(
                        line: results.int(0), statusCode: results.optionalInt(1), errorCode: results.text(2),
                        errorMessage: results.text(3), promptTokens: results.int(4), completionTokens: results.int(5),
                        finishedAt: results.double(6), workerID: results.text(7), leaseGeneration: results.int(8),
                        body: results.text(9), fromCache: results.int(10)))
                }
                return dump
            }
        }
    }

    public func loadJob(_ dump: JobDump) throws -> JobID {
        let now = clock()
        return try withConnection { db in
            try db.writeTransaction("copy job \(dump.job.id) in") {
                if let name = dump.job.name {
                    let existing = try db.prepare("SELECT id FROM jobs WHERE name = ?1", operation: "copy job")
                    existing.bind(1, name)
                    if try existing.step() { throw QueueError.duplicateJobName(name: name, job: existing.int64(0)) }
                }
                let insert = try db.prepare("""
                    INSERT INTO jobs (name, state, priority, input_path, input_sha256, request_count, bad_line_count,
                                      created_at, started_at, finished_at, creator_host, creator_pid)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                    """, operation: "copy job")
                insert.bind(1, dump.job.name)
                insert.bind(2, dump.job.state == .cancelled ? "cancelled" : "active")
                insert.bind(3, dump.job.priority)
                insert.bind(4, dump.job.inputPath)
                insert.bind(5, dump.job.inputSHA256)
                insert.bind(6, dump.job.requestCount)
                insert.bind(7, dump.job.badLineCount)
                insert.bind(8, dump.job.createdAt)
                insert.bind(9, dump.startedAt)
                insert.bind(10, dump.finishedAt)
                insert.bind(11, SystemInfo.hostName)
                insert.bind(12, Int64(getpid()))
                try insert.run()
                let job = db.lastInsertRowID
                guard job <= RequestKey.maximumJob else {
                    throw QueueError.invalidArgument("the database holds the largest possible job id; it cannot take more jobs")
                }
                let request = try db.prepare("""
                    INSERT INTO requests (id, job_id, line, state, endpoint, failed_attempts, input_error, custom_id,
                                          checkpoint_tokens, checkpoint_payload, body, first_claimed_at, claimed_at,
                                          preemptions, interrupted, lost_leases, not_before)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, 0)
                    """, operation: "copy requests")
                for row in dump.requests {
                    request.bind(1, RequestKey.id(job: job, line: row.line))
                    request.bind(2, job)
                    request.bind(3, row.line)
                    request.bind(4, row.state.rawValue)
                    request.bind(5, row.endpoint.map { Int64($0) })
                    request.bind(6, row.failedAttempts)
                    request.bind(7, row.inputError)
                    request.bind(8, row.customID)
                    request.bind(9, row.checkpointTokens.map { Int64($0) })
                    if let payload = row.checkpointPayload { request.bind(10, blob: payload) } else { request.bindNull(10) }
                    request.bind(11, row.body)
                    request.bind(12, row.firstClaimedAt)
                    request.bind(13, row.claimedAt)
                    request.bind(14, row.preemptions)
                    request.bind(15, row.interrupted)
                    request.bind(16, row.lostLeases)
                    try request.run()
                }
                let result = try db.prepare("""
                    INSERT INTO results (request_id, job_id, status_code, error_code, error_message, prompt_tokens,
                                         completion_tokens, finished_at, worker_id, lease_generation, body, from_cache)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                    """, operation: "copy results")
                for row in dump.results {
                    result.bind(1, RequestKey.id(job: job, line: row.line))
                    result.bind(2, job)
                    result.bind(3, row.statusCode.map { Int64($0) })
                    result.bind(4, row.errorCode)
                    result.bind(5, row.errorMessage)
                    result.bind(6, row.promptTokens)
                    result.bind(7, row.completionTokens)
                    result.bind(8, row.finishedAt)
                    result.bind(9, row.workerID)
                    result.bind(10, row.leaseGeneration)
                    result.bind(11, row.body)
                    result.bind(12, row.fromCache)
                    try result.run()
                }
                try markFinishedIfDone(db, job: job, now: now)
                return job
            }
        }
    }

    public func dumpResultCache() throws -> [CacheEntryDump] {
        try withConnection { db in
            let rows = try db.prepare(
                "SELECT key, status_code, body, prompt_tokens, completion_tokens, created_at, hits FROM result_cache ORDER BY key",
                operation: "read result cache")
            var entries: [CacheEntryDump] = []
            while try rows.step() {
                entries.append(CacheEntryDump(key: rows.text(0) ?? "", statusCode: rows.int(1), body: rows.text(2) ?? "",
                                              promptTokens: rows.int(3), completionTokens: rows.int(4),
                                              createdAt: rows.double(5), hits: rows.int(6)))
            }
            return entries
        }
    }

    public func loadResultCache(_ entries: [CacheEntryDump]) throws -> Int {
        try withConnection { db in
            try db.writeTransaction("copy result cache") {
                let insert = try db.prepare("""
                    INSERT OR IGNORE INTO result_cache (key, status_code, body, prompt_tokens, completion_tokens, created_at, hits)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                    """, operation: "copy result cache")
                var added = 0
                for entry in entries {
                    insert.bind(1, entry.key)
                    insert.bind(2, entry.statusCode)
                    insert.bind(3, entry.body)
                    insert.bind(4, entry.promptTokens)
                    insert.bind(5, entry.completionTokens)
                    insert.bind(6, entry.createdAt)
                    insert.bind(7, entry.hits)
                    try insert.run()
                    added += db.changes
                }
                return added
            }
        }
    }
}
