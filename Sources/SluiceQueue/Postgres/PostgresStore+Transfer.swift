import Foundation
import SluiceCore

extension PostgresStore: JobTransfer {
    public func dumpJob(_ job: JobID) throws -> JobDump {
        try withConnection { db in
            try db.readOnlyTransaction("read job \(job) for copying") {
                let select = try db.execute("SELECT \(Self.jobColumns) FROM jobs WHERE id = $1 AND state <> 'loading'",
                                            [String(job)], operation: "read job")
                guard select.rowCount == 1 else { throw QueueError.noSuchJob(String(job)) }
                var dump = JobDump(job: Self.readJob(select, 0), startedAt: select.optionalDouble(0, 9),
                                   finishedAt: select.optionalDouble(0, 10), requests: [], results: [])
                let requests = try db.execute("""
                    SELECT line, state, endpoint, failed_attempts, input_error, custom_id, checkpoint_tokens, checkpoint_payload,
                           body, first_claimed_at, claimed_at, preemptions, interrupted, lost_leases
                    FROM requests WHERE job_id = $1 ORDER BY id
                    """, [String(job)], operation: "read requests")
                dump.requests.reserveCapacity(requests.rowCount)
                for row in 0..<requests.rowCount {
                    var state = RequestState(rawValue: requests.string(row, 1) ?? "") ?? .queued
                    var interrupted = requests.int(row, 12)
                    if state == .leased { state = .queued; interrupted = 1 }
                    dump.requests.append(JobDump.Request(
                        line: requests.int(row, 0), state: state,
                        endpoint: requests.isNull(row, 2) ? nil : requests.int(row, 2), failedAttempts: requests.int(row, 3),
                        inputError: requests.string(row, 4), customID: requests.string(row, 5),
                        checkpointTokens: requests.isNull(row, 6) ? nil : requests.int(row, 6),
                        checkpointPayload: requests.byteArray(row, 7), body: requests.string(row, 8),
                        firstClaimedAt: requests.optionalDouble(row, 9), claimedAt: requests.optionalDouble(row, 10),
                        preemptions: requests.int(row, 11), interrupted: interrupted, lostLeases: requests.int(row, 13)))
                }
                let results = try db.execute("""
                    SELECT r.line, res.status_code, res.error_code, res.error_message, res.prompt_tokens, res.completion_tokens,
                           res.finished_at, res.worker_id, res.lease_generation, res.body, res.from_cache
                    FROM results AS res JOIN requests AS r ON r.id = res.request_id WHERE res.job_id = $1 ORDER BY res.request_id
                    """, [String(job)], operation: "read results")
                dump.results.reserveCapacity(results.rowCount)
                for row in 0..<results.rowCount {
                    dump.results.append(JobDump.Result(
                        line: results.int(row, 0), statusCode: results.isNull(row, 1) ? nil : results.int(row, 1),
                        errorCode: results.string(row, 2), errorMessage: results.string(row, 3),
                        promptTokens: results.int(row, 4), completionTokens: results.int(row, 5),
                        finishedAt: results.double(row, 6), workerID: results.string(row, 7),
                        leaseGeneration: results.int(row, 8), body: results.string(row, 9), fromCache: results.int(row, 10)))
                }
                return dump
            }
        }
    }

    public func loadJob(_ dump: JobDump) throws -> JobID {
        try withConnection { db in
            try db.transaction("copy job \(dump.job.id) in") {
                if let name = dump.job.name {
                    let existing = try db.execute("SELECT id FROM jobs WHERE name = $1", [name], operation: "copy job")
                    if existing.rowCount == 1 { throw QueueError.duplicateJobName(name: name, job: existing.int64(0, 0)) }
                }
                let inserted = try db.execute("""
                    INSERT INTO jobs (name, state, priority, input_path, input_sha256, request_count, bad_line_count,
                                      created_at, started_at, finished_at, creator_host, creator_pid)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id
                    """, [dump.job.name, dump.job.state == .cancelled ? "cancelled" : "active", String(dump.job.priority),
                          dump.job.inputPath, dump.job.inputSHA256, String(dump.job.requestCount), String(dump.job.badLineCount),
                          PG.number(dump.job.createdAt), dump.startedAt.map(PG.number), dump.finishedAt.map(PG.number),
                          SystemInfo.hostName, String(getpid())], operation: "copy job")
                let job = inserted.int64(0, 0)
                let jobText = String(job)
                func field(_ value: String?, _ out: inout [UInt8]) {
                    if let value { Self.appendCopyText(Array(value.utf8), to: &out) } else { out.append(contentsOf: "\\N".utf8) }
                    out.append(9)
                }
                try db.copyIn("""
                    COPY requests (id, job_id, line, state, endpoint, failed_attempts, input_error, custom_id, checkpoint_tokens,
                                   checkpoint_payload, body, first_claimed_at, claimed_at, preemptions, interrupted, lost_leases)
                    FROM STDIN
                    """, operation: "copy requests") { send in
                    var out: [UInt8] = []
                    for row in dump.requests {
                        field(String(RequestKey.id(job: job, line: row.line)), &out)
                        field(jobText, &out)
                        field(String(row.line), &out)
                        field(row.state.rawValue, &out)
                        field(row.endpoint.map { String($0) }, &out)
                        field(String(row.failedAttempts), &out)
                        field(row.inputError, &out)
                        field(row.customID, &out)
                        field(row.checkpointTokens.map { String($0) }, &out)
                        field(row.checkpointPayload.map { PG.bytea($0) }, &out)
                        field(row.body, &out)
                        field(row.firstClaimedAt.map(PG.number), &out)
                        field(row.claimedAt.map(PG.number), &out)
                        field(String(row.preemptions), &out)
                        field(String(row.interrupted), &out)
                        field(String(row.lostLeases), &out)
                        out[out.count - 1] = 10
                        if out.count > 1 << 20 { try send(out); out.removeAll(keepingCapacity: true) }
                    }
                    if !out.isEmpty { try send(out) }
                }
                try db.copyIn("""
                    COPY results (request_id, job_id, status_code, error_code, error_message, prompt_tokens, completion_tokens,
                                  finished_at, worker_id, lease_generation, body, from_cache)
                    FROM STDIN
                    """, operation: "copy results") { send in
                    var out: [UInt8] = []
                    for row in dump.results {
                        field(String(RequestKey.id(job: job, line: row.line)), &out)
                        field(jobText, &out)
                        field(row.statusCode.map { String($0) }, &out)
                        field(row.errorCode, &out)
                        field(row.errorMessage, &out)
                        field(String(row.promptTokens), &out)
                        field(String(row.completionTokens), &out)
                        field(PG.number(row.finishedAt), &out)
                        field(row.workerID, &out)
                        field(String(row.leaseGeneration), &out)
                        field(row.body, &out)
                        field(String(row.fromCache), &out)
                        out[out.count - 1] = 10
                        if out.count > 1 << 20 { try send(out); out.removeAll(keepingCapacity: true) }
                    }
                    if !out.isEmpty { try send(out) }
                }
                try db.execute("SELECT sluice_mark_finished($1, sluice_now())", [jobText], operation: "copy job")
                return job
            }
        }
    }

    public func dumpResultCache() throws -> [CacheEntryDump] {
        try withConnection { db in
            let rows = try db.execute(
                "SELECT key, status_code, body, prompt_tokens, completion_tokens, created_at, hits FROM result_cache ORDER BY key",
                operation: "read result cache")
            return (0..<rows.rowCount).map { row in
                CacheEntryDump(key: rows.string(row, 0) ?? "", statusCode: rows.int(row, 1), body: rows.string(row, 2) ?? "",
                               promptTokens: rows.int(row, 3), completionTokens: rows.int(row, 4),
                               createdAt: rows.double(row, 5), hits: rows.int(row, 6))
            }
        }
    }

    public func loadResultCache(_ entries: [CacheEntryDump]) throws -> Int {
        try withConnection { db in
            var added = 0
            try db.transaction("copy result cache") {
                for entry in entries {
                    added += try db.execute("""
                        INSERT INTO result_cache (key, status_code, body, prompt_tokens, completion_tokens, created_at, hits)
                        VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key) DO NOTHING
                        """, [entry.key, String(entry.statusCode), entry.body, String(entry.promptTokens),
                              String(entry.completionTokens), PG.number(entry.createdAt), String(entry.hits)],
                        operation: "copy result cache").affectedRows
                }
            }
            return added
        }
    }
}
