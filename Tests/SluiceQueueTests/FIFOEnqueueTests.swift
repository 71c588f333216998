import Foundation
import SluiceCore
import Synchronization
import Testing
@testable import SluiceQueue

/// Waits (polling, never a fixed sleep) until `condition` holds, failing the test after `seconds`.
private func waitUntil(_ what: String, seconds: Double = 60, _ condition: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while try !condition() {
        if Date() > deadline {
            Issue.record("timed out waiting until \(what)")
            throw CancellationError()
        }
        usleep(5_000)
    }
}

// Issue 13, defect 2: `sluice enqueue` from a pipe whose writer is slow must not hold SQLite's
// write lock while it waits: other processes keep writing and reading with a short busy timeout.
@Test func enqueueFromAStalledFIFONeverHoldsTheWriteLock() throws {
    let dir = try TempDir()
    let fifo = dir.file("input.fifo")
    #expect(mkfifo(fifo, 0o600) == 0)
    let store = try SQLiteStore(path: dir.databasePath)
    let outcome = Mutex<String?>(nil)
    let enqueuer = Thread {
        do {
            let report = try store.enqueue(file: fifo, name: "from-fifo")
            outcome.withLock { $0 = "accepted \(report.accepted), bad \(report.badLineCount)" }
        } catch {
            outcome.withLock { $0 = "error: \(error)" }
        }
    }
    enqueuer.start()
    var writer = open(fifo, O_WRONLY | O_CLOEXEC) // waits for the enqueue to open the FIFO
    #expect(writer >= 0)
    // Closed once: a second close could close a descriptor another test's thread has opened since
    // under the same number (it once closed a concurrent test's SQLite file: "disk I/O error").
    defer { if writer >= 0 { close(writer) } }
    func send(_ text: String) {
        let bytes = Array(text.utf8)
        #expect(bytes.withUnsafeBytes { write(writer, $0.baseAddress, $0.count) } == bytes.count)
    }
    send((1...3).map { requestLine("r\($0)") + "\n" }.joined() + "not json\n")
    // The enqueue has read everything written so far and now waits for more.
    try waitUntil("the enqueue drained the FIFO") {
        var unread: Int32 = 0
        return ioctl(writer, UInt(FIONREAD), &unread) == 0 && unread == 0
    }

    // Meanwhile another connection, giving up on a lock after 1 s, writes and reads.
    let other = try SQLiteStore(path: dir.databasePath, busyTimeout: 1)
    let worker = try other.registerWorker(host: "elsewhere", pid: 1, description: "test")
    let small = try inputFile(dir, name: "small.jsonl", count: 2)
    let smallJob = try other.enqueue(file: small, name: "small")
    #expect(smallJob.accepted == 2)
    #expect(try other.status(job: nil).count == 1) // the FIFO's job is still loading: not shown
    try other.unregisterWorker(worker)
    #expect(outcome.withLock { $0 } == nil)

    // The writer finishes: every line is in the job.
    send(requestLine("r4") + "\n")
    close(writer)
    writer = -1
    try waitUntil("the enqueue finished") { outcome.withLock { $0 } != nil }
    #expect(outcome.withLock { $0 } == "accepted 4, bad 1")
    let job = try #require(try store.jobs().first { $0.name == "from-fifo" })
    #expect(try store.status(job: job.id).first?.counts.total == 5)
}
