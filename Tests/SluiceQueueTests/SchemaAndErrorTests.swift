import CSQLite
import Foundation
import SluiceCore
import Testing
@testable import SluiceQueue

@Suite struct SchemaAndErrorTests {
    @Test func newDatabaseIsMigratedInWALWithStrictTablesAndForeignKeys() throws {
        let dir = try TempDir()
        let store = try SQLiteStore(path: dir.databasePath)
        try store.withConnection { db in
            #expect(try db.queryInt("PRAGMA user_version", operation: "t") == Int64(Schema.currentVersion))
            #expect(try db.queryText("PRAGMA journal_mode", operation: "t") == "wal")
            #expect(try db.queryInt("PRAGMA foreign_keys", operation: "t") == 1)
            #expect(try db.queryInt("PRAGMA synchronous", operation: "t") == 1) // NORMAL
            let strict = try db.queryInt("SELECT count(*) FROM pragma_table_list WHERE strict = 1 AND name IN ('jobs','requests','results','workers')", operation: "t")
            #expect(strict == 4)
            // STRICT rejects a wrong type; the foreign key rejects an orphan request.
            #expect(throws: QueueError.self) {
                try db.execute("INSERT INTO workers (id, host, pid, description, started_at, heartbeat_at) VALUES ('w', 'h', 'not a number', '', 0, 0)", operation: "t")
            }
            #expect(throws: QueueError.self) {
                try db.execute("INSERT INTO requests (id, job_id, line, state) VALUES (1, 999, 1, 'queued')", operation: "t")
            }
        }
        // Reopening applies nothing twice.
        _ = try SQLiteStore(path: dir.databasePath)
        let version = try store.withConnection { db in try db.queryInt("PRAGMA user_version", operation: "t") }
        #expect(version == Int64(Schema.currentVersion))
    }

    @Test func databaseFromANewerSluiceIsAClearError() throws {
        let dir = try TempDir()
        _ = try SQLiteStore(path: dir.databasePath)
        let raw = try SQLiteConnection(path: dir.databasePath, busyTimeout: 1)
        try raw.execute("PRAGMA user_version = \(Schema.currentVersion + 5)", operation: "t")
        do {
            _ = try SQLiteStore(path: dir.databasePath)
            Issue.record("opened a newer database")
        } catch let error as QueueError {
            #expect(error == .newerSchema(path: dir.databasePath, found: Schema.currentVersion + 5, supported: Schema.currentVersion))
            #expect(error.description.contains("newer Sluice"))
        }
    }

    @Test func lockedDatabaseGivesAClearErrorAndLosesNothing() throws {
        let dir = try TempDir()
        let store = try SQLiteStore(path: dir.databasePath, busyTimeout: 0.2)
        let job = try #require(try store.enqueue(file: try inputFile(dir, count: 3)).jobID)
        let worker = try store.registerWorker(host: "h", pid: 1, description: "t")
        let claimed = try store.claim(worker: worker, job: nil, limit: 1, leaseSeconds: 30)

        let other = try SQLiteConnection(path: dir.databasePath, busyTimeout: 1)
        try other.execute("BEGIN IMMEDIATE", operation: "hold the write lock")
        let started = Date()
        do {
            _ = try store.commit(results([(claimed[0].lease, okOutcome("x"))]), worker: worker)
            Issue.record("commit succeeded under another writer's lock")
        } catch let error as QueueError {
            guard case let .databaseBusy(path, operation, _) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(path == dir.databasePath)
            #expect(operation == "commit results")
            #expect(error.description.contains("locked by another process"))
        }
        #expect(Date().timeIntervalSince(started) >= 0.15)
        // Reads still work while another process writes.
        #expect(try store.status(job: job).first?.counts.leased == 1)
        try other.execute("ROLLBACK", operation: "release")
        // The same commit now goes through; nothing was lost or half-applied.
        #expect(try store.commit(results([(claimed[0].lease, okOutcome("x"))]), worker: worker).lostLeases.isEmpty)
        #expect(try store.status(job: job).first?.counts == RequestCounts(queued: 2, done: 1))
    }

    @Test func fullDiskFailsCleanlyAndKeepsCommittedData() throws {
        let dir = try TempDir()
        let store = try SQLiteStore(path: dir.databasePath)
        let first = try #require(try store.enqueue(file: try inputFile(dir, name: "small.jsonl", count: 10)).jobID)
        // Cap the file at its current size: the next large write hits SQLITE_FULL, as on a full disk.
        try store.withConnection { db in
            let pages = try db.queryInt("PRAGMA page_count", operation: "t")
            _ = try db.queryInt("PRAGMA max_page_count = \(pages + 2)", operation: "t")
        }
        do {
            _ = try store.enqueue(file: try inputFile(dir, name: "big.jsonl", count: 5000))
            Issue.record("enqueue fit in two pages")
        } catch let error as QueueError {
            guard case .diskFull = error else { Issue.record("unexpected error \(error)"); return }
            #expect(error.description.contains("disk full"))
        }
        try store.withConnection { db in _ = try db.queryInt("PRAGMA max_page_count = 1000000000", operation: "t") }
        #expect(try store.jobs().map(\.id) == [first])
        #expect(try store.status(job: first).first?.counts.queued == 10)
    }

    @Test func errorsNameTheOperationAndThePath() throws {
        let dir = try TempDir()
        let store = try SQLiteStore(path: dir.databasePath)
        let error = try store.withConnection { db in db.error(SQLITE_CORRUPT, operation: "claim requests") }
        #expect(error.description.contains(dir.databasePath))
        #expect(error.description.contains("claim requests"))
        #expect(throws: QueueError.self) { try SQLiteStore(path: dir.file("no/such/dir/queue.db")) }
    }
}
