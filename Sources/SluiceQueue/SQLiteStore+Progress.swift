import SluiceCore

/// The counts a progress display or a metrics scrape needs for one job, read in one snapshot.
public struct JobProgress: Sendable, Equatable {
    public var job: JobID
    public var name: String?
    public var state: JobState
    public var counts: RequestCounts
    /// Input lines that failed validation (counted among `counts.failed`).
    public var badLineCount: Int
    /// Sums of `usage` over the job's results.
    public var promptTokens: Int
    public var completionTokens: Int
    /// Results answered from the result cache.
    public var cacheHits: Int

    public init(job: JobID, name: String?, state: JobState, counts: RequestCounts, badLineCount: Int,
                promptTokens: Int, completionTokens: Int, cacheHits: Int) {
        self.job = job
        self.name = name
        self.state = state
        self.counts = counts
        self.badLineCount = badLineCount
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cacheHits = cacheHits
    }

    /// Nothing is queued or leased.
    public var isFinished: Bool { counts.unfinished == 0 }
}

extension SQLiteStore {
    /// Progress of the given jobs (those that exist and are not loading), in id order, read in one
    /// transaction so the counts agree with each other.
    public func progress(jobs: [JobID]) throws -> [JobProgress] {
        guard !jobs.isEmpty else { return [] }
        return try withConnection { db in
            try db.readTransaction("read job progress") {
                var result: [JobProgress] = []
                for job in Set(jobs).sorted() {
                    if let progress = try jobProgress(db, job: job) { result.append(progress) }
                }
                return result
            }
        }
    }

    /// Jobs that have queued or leased requests (of `job` only, when given), in id order.
    public func jobsWithUnfinishedWork(job: JobID? = nil) throws -> [JobID] {
        try withConnection { db in
            let statement = try db.cached("""
                SELECT id FROM jobs AS j
                WHERE state = 'active' AND (?1 IS NULL OR id = ?1)
                  AND EXISTS (SELECT 1 FROM requests WHERE job_id = j.id AND state IN ('queued', 'leased'))
                ORDER BY id
                """, operation: "find jobs with unfinished work")
            defer { statement.reset() }
            statement.bind(1, job)
            var ids: [JobID] = []
            while try statement.step() { ids.append(statement.int64(0)) }
            return ids
        }
    }

    private func jobProgress(_ db: SQLiteConnection, job: JobID) throws -> JobProgress? {
        let select = try db.cached("SELECT name, state, bad_line_count FROM jobs WHERE id = ?1 AND state <> 'loading'",
                                   operation: "read job progress")
        select.bind(1, job)
        guard try select.step() else { select.reset(); return nil }
        let name = select.text(0)
        let state = JobState(rawValue: select.text(1) ?? "") ?? .active
        let badLines = select.int(2)
        select.reset()

        let counts = try requestCounts(db, job: job)

        let sums = try db.cached("""
            SELECT coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), coalesce(sum(from_cache), 0)
            FROM results WHERE job_id = ?1
            """, operation: "sum job tokens")
        defer { sums.reset() }
        sums.bind(1, job)
        _ = try sums.step()
        return JobProgress(job: job, name: name, state: state, counts: counts, badLineCount: badLines,
                           promptTokens: sums.int(0), completionTokens: sums.int(1), cacheHits: sums.int(2))
    }
}
