import Foundation
import SluiceCore
import SluiceQueue
@testable import SluiceRunner
import Synchronization
import Testing

/// Issue 13, defect 8: errors that cannot heal end the worker at once with a clear message,
/// instead of being logged and retried for minutes.
@Suite struct UnusableDatabaseTests {
    typealias Database = WorkerSQLiteTests.Database

    /// Runs `worker` until it returns or throws; a worker still running after `seconds` is drained
    /// and the test fails (so the test fails, rather than hangs, where the worker would go on).
    func outcome(of worker: Worker, within seconds: Double) async -> Result<WorkerExit, any Error> {
        let finished = Mutex<Result<WorkerExit, any Error>?>(nil)
        let run = Task {
            do {
                let exit = try await worker.run()
                finished.withLock { $0 = .success(exit) }
            } catch {
                finished.withLock { $0 = .failure(error) }
            }
        }
        let deadline = ContinuousClock.now + .seconds(seconds)
        while finished.withLock({ $0 }) == nil && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        if finished.withLock({ $0 }) == nil {
            Issue.record("the worker was still running \(seconds) s after the fault")
            worker.requestDrain(.requested)
        }
        await run.value
        return finished.withLock { $0 }!
    }

    /// Waits until `condition` holds (polling), failing the test after 60 s.
    func waitUntil(_ what: String, _ condition: () throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while try !condition() {
            if ContinuousClock.now > deadline {
                Issue.record("timed out waiting until \(what)")
                throw CancellationError()
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    @Test func aDatabaseReplacedUnderTheWorkerStopsIt() async throws {
        let database = try Database()
        let store = try SQLiteStore(path: database.path)
        let job = try database.enqueue(store, count: 20)
        // c1...c5 are answered at once; the rest wait (until the worker cancels them).
        let engine = ScriptedEngine(capacity: 32) { request in
            Int(request.customID.dropFirst())! <= 5 ? .respond(after: 0.001, okOutcome(request.id)) : .stall
        }
        let lines = Mutex<[String]>([])
        let worker = Worker(store: store, engine: engine, configuration: fastConfiguration(),
                            log: WorkerLog { line in lines.withLock { $0.append(line) } })
        let observer = try SQLiteStore(path: database.path)
        async let result = outcome(of: worker, within: 30)
        try await waitUntil("five results are committed") { try observer.status(job: job).first?.counts.done == 5 }

        // A restore from a backup, say: another database renamed over the path.
        let replacement = database.directory.appendingPathComponent("replacement.db").path
        _ = try SQLiteStore(path: replacement)
        #expect(rename(replacement, database.path) == 0)

        guard case let .failure(error) = await result else {
            Issue.record("the worker went on with a replaced database")
            return
        }
        guard case let WorkerError.databaseUnusable(message) = error else {
            Issue.record("unexpected error: \(error)")
            return
        }
        #expect(message.contains("replaced by another file"))
        #expect(lines.withLock { $0 }.contains { $0.contains("stopping after an error") && $0.contains("replaced") })
    }

    /// A worker on a fresh database whose first request is answered at once and the rest never: it
    /// runs in a task of its own; this returns once that first result is committed.
    func workerPastItsFirstResult() async throws -> (database: Database, outcome: Task<Result<WorkerExit, any Error>, Never>) {
        let database = try Database()
        let store = try SQLiteStore(path: database.path)
        let job = try database.enqueue(store, count: 4)
        let engine = ScriptedEngine(capacity: 8) { request in
            request.customID == "c1" ? .respond(after: 0.001, okOutcome(request.id)) : .stall
        }
        let worker = Worker(store: store, engine: engine, configuration: fastConfiguration(), log: .silent)
        let observer = try SQLiteStore(path: database.path)
        let outcome = Task { await self.outcome(of: worker, within: 30) }
        try await waitUntil("one result is committed") { try observer.status(job: job).first?.counts.done == 1 }
        return (database, outcome)
    }

    @Test func aDatabaseDeletedUnderTheWorkerStopsIt() async throws {
        let (database, outcome) = try await workerPastItsFirstResult()
        #expect(unlink(database.path) == 0)
        guard case let .failure(WorkerError.databaseUnusable(message)) = await outcome.value else {
            Issue.record("the worker went on with a deleted database")
            return
        }
        #expect(message.contains("deleted"))
    }

    /// Cut short in place (`: > q.db`), to nothing or to a part of a page: the worker stops (exit 7)
    /// instead of finishing from SQLite's cache and WAL into a file that lost everything else.
    @Test(arguments: [0, 1000]) func aDatabaseTruncatedUnderTheWorkerStopsIt(_ size: Int) async throws {
        let (database, outcome) = try await workerPastItsFirstResult()
        #expect(truncate(database.path, off_t(size)) == 0)
        guard case let .failure(WorkerError.databaseUnusable(message)) = await outcome.value else {
            Issue.record("the worker went on with a truncated database")
            return
        }
        #expect(message.contains("truncated to \(size) bytes"), "\(message)")
    }

    @Test func unhealableErrorsAreTold() {
        // SQLite's codes: 11 CORRUPT, 26 NOTADB, 8 READONLY (with an extended code), 14 CANTOPEN, 10 IOERR.
        func sqlite(_ code: Int32) -> QueueError { .sqlite(path: "q.db", operation: "claim", code: code, message: "m") }
        #expect(sqlite(11).unhealableReason == "the database file is corrupt")
        #expect(sqlite(26).unhealableReason == "the file is not a SQLite database")
        #expect(sqlite(8 | (1 << 8)).unhealableReason?.contains("cannot be written") == true)
        #expect(sqlite(14).unhealableReason != nil)
        #expect(sqlite(10).unhealableReason == nil)
        #expect(QueueError.databaseBusy(path: "q.db", operation: "claim", waitedSeconds: 1).unhealableReason == nil)
        #expect(QueueError.diskFull(path: "q.db", operation: "commit").unhealableReason == nil)
    }

    /// A failure that goes on (a full disk) is logged at first, when it changes, and every 10 s:
    /// not at each retry; past --db-timeout it ends the worker.
    @Test func aLastingFailureIsLoggedNowAndThen() throws {
        var outage = StoreOutage()
        let start = ContinuousClock.now
        let full = QueueError.diskFull(path: "q.db", operation: "commit")
        func fail(_ error: QueueError, at seconds: Double) throws -> Bool {
            try outage.failed(error, during: "commit", consequence: "commit results", now: start + .seconds(seconds), timeout: 300)
        }
        var logged: [Double] = []
        for step in 0..<60 where try fail(full, at: Double(step) * 0.5) { logged.append(Double(step) * 0.5) }
        #expect(logged == [0, 10, 20])
        #expect(try fail(.databaseBusy(path: "q.db", operation: "commit", waitedSeconds: 1), at: 30.2), "a new error is told")
        outage.succeeded()
        #expect(try fail(full, at: 31), "a new outage is told")
        #expect(throws: WorkerError.self) { try fail(full, at: 400) }
    }
}

