import Foundation
import SluiceCore
import Testing
@testable import SluiceQueue

/// The PostgreSQL connection's own behaviour: a server that stops answering is a lost connection
/// after a bounded wait, never a hang, and passwords stay out of every message.
@Suite struct PostgresConnectionTests {
    /// A lock held elsewhere stands for any stall (a stuck server, a full pool, a frozen network):
    /// the store's call fails as a lost connection after the answer timeout, and the next call,
    /// once the lock is gone, works on a new connection.
    @Test func aStatementWithNoAnswerFailsInsteadOfHanging() throws {
        guard StoreKind.all.contains(.postgres) else { return } // SQLite only, and not under CI
        let dir = try TempDir()
        let url = try PostgresTestServer.url(for: dir)
        let store = try PostgresStore(url: url, answerTimeoutSeconds: 2)
        let job = try #require(try store.enqueue(file: try inputFile(dir, count: 3)).jobID)
        let worker = try store.registerWorker(host: "h", pid: 1, description: "w")
        let holder = try PGConnection(url: url)
        try holder.execute("BEGIN", operation: "test")
        try holder.execute("LOCK TABLE requests IN ACCESS EXCLUSIVE MODE", operation: "test")
        let started = ContinuousClock.now
        #expect {
            _ = try store.claim(worker: worker, job: job, limit: 3, leaseSeconds: 60)
        } throws: { error in
            guard case let PostgresError.connectionLost(_, _, message) = error else { return false }
            return message.contains("no answer for 2 s") && (error as? PostgresError)?.isTransient == true
        }
        #expect(ContinuousClock.now - started < .seconds(20))
        // The abandoned statement is cancelled on the server too, not left to claim once the lock is free.
        let deadline = ContinuousClock.now + .seconds(30)
        // (Statistics are read once per transaction unless the snapshot is cleared: the holder's is open.)
        func waiting() throws -> Int {
            try holder.execute("SELECT pg_stat_clear_snapshot()", operation: "test")
            return try holder.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'", operation: "test").int(0, 0)
        }
        while try waiting() > 0 {
            #expect(ContinuousClock.now < deadline, "the abandoned claim still waits for the lock")
            if ContinuousClock.now > deadline { break }
            usleep(20_000)
        }
        try holder.execute("ROLLBACK", operation: "test")
        #expect(try store.claim(worker: worker, job: job, limit: 3, leaseSeconds: 60).count == 3)
    }

    @Test func passwordsStayOutOfMessages() {
        let url = "postgresql://user:S3cret%21x@db.example:5432/q"
        #expect(redactedURL(url) == "postgresql://user:***@db.example:5432/q")
        let libpq = #"invalid percent-encoded token: "S3cret%21x"; also "S3cret!x" and \#(url)"#
        let scrubbed = scrubbingPassword(of: url, from: libpq)
        #expect(!scrubbed.contains("S3cret") && scrubbed.contains("postgresql://user:***@db.example:5432/q"), "\(scrubbed)")
        // An @ in the password (percent-encoded or not) does not end the user information early.
        #expect(redactedURL("postgresql://u:p@ss@h/q") == "postgresql://u:***@h/q")
        #expect(scrubbingPassword(of: "postgresql://u@h/q", from: "plain") == "plain")
    }
}
