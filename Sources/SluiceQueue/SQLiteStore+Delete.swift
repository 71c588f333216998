import Foundation

extension SQLiteStore {
    /// Deletes a finished job (no request queued or leased) and all its requests and results,
    /// e.g. when a job spec's retention period has passed. Returns false, deleting nothing, when
    /// the job still has work or does not exist.
    @discardableResult
    public func deleteFinishedJob(_ job: JobID) throws -> Bool {
        try withConnection { db in
            try db.writeTransaction("delete job \(job)") {
                let check = try db.cached("""
                    SELECT state <> 'loading'
                           AND NOT EXISTS (SELECT 1 FROM requests WHERE job_id = ?1 AND state IN ('queued', 'leased'))
                    FROM jobs WHERE id = ?1
                    """, operation: "delete job")
                check.bind(1, job)
                let finished = try check.step() && check.int(0) == 1
                check.reset()
                guard finished else { return false }
                try deleteJob(db, job, onlyIfLoading: false)
                return true
            }
        }
    }
}
