import Foundation
import SluiceCore
import SluiceQueue
import Synchronization
import Testing
@testable import SluiceSchedule

/// A temporary folder removed at the end of the test.
private final class Folder {
    let path: String
    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-schedule-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path + "/inbox", withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    func write(_ name: String, _ text: String, modified: Date? = nil) throws {
        try text.write(toFile: path + "/" + name, atomically: true, encoding: .utf8)
        if let modified {
            try FileManager.default.setAttributes([.modificationDate: modified], ofItemAtPath: path + "/" + name)
        }
    }

    func files(_ sub: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path + "/" + sub)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }
}

private func batch(_ ids: [String], extraBody: String = "") -> String {
    ids.map { #"{"custom_id":"\#($0)","method":"POST","url":"/v1/completions","body":{"prompt":"p \#($0)"\#(extraBody)}}"# }
        .joined(separator: "\n") + "\n"
}

private func spec(_ folder: Folder, extra: String = "", defaults: String = "") throws -> JobSpec {
    try JobSpec.parse("""
        name = "t"
        \(extra)
        [input]
        path = "inbox/"
        settle = "0s"
        [output]
        folder = "out"
        errors = "{stem}.errors.jsonl"
        \(defaults)
        """, path: folder.path + "/t.toml")
}

/// Stands in for `sluice work`: answers every request of the job, echoing its body
/// (failing ids that start with "fail").
private final class Seen: Sendable {
    let bodies = Mutex<[JSON]>([])
    var all: [JSON] { bodies.withLock { $0 } }
}

private func answerAll(_ store: SQLiteStore, seen: Seen = Seen()) -> (JobID, Double?) async throws -> Bool {
    { job, _ in
        let worker = try store.registerWorker(host: "test", pid: 1, description: "test")
        while true {
            let claimed = try store.claim(worker: worker, job: job, limit: 100, leaseSeconds: 60)
            if claimed.isEmpty { break }
            var batch = CommitBatch()
            for request in claimed {
                seen.bodies.withLock { $0.append(request.body) }
                let lease = LeaseRef(requestID: request.id, leaseGeneration: request.leaseGeneration)
                if request.customID.hasPrefix("fail") {
                    batch.results.append((lease, .failure(code: "boom", message: "failed on purpose", retryable: false)))
                } else {
                    batch.results.append((lease, .response(statusCode: 200, body: .object(["echo": request.body]),
                                                           usage: Usage(promptTokens: 1, completionTokens: 2))))
                }
            }
            try store.commit(batch, worker: worker)
        }
        try store.unregisterWorker(worker)
        return false
    }
}

@Test func repeatedRunsEnqueueAndExportEachFileOnce() async throws {
    let folder = try Folder()
    try folder.write("inbox/a.jsonl", batch(["a1", "a2"]))
    try folder.write("inbox/b.jsonl", batch(["b1"], extraBody: #","max_tokens":5"#))
    try folder.write("inbox/notes.txt", "not an input")
    try folder.write("inbox/.c.jsonl.part", batch(["c1"]))
    let store = try SQLiteStore(path: folder.path + "/sluice.db")
    let seen = Seen()
    let run = try SpecRun(spec: try spec(folder, defaults: "[defaults]\nmax_tokens = 9\ntemperature = 0"),
                          store: store, log: { _ in })

    let first = try await run.run(work: answerAll(store, seen: seen))
    #expect(first.outcome == .done)
    #expect(first.enqueued.map { ($0 as NSString).lastPathComponent } == ["a.jsonl", "b.jsonl"])
    #expect(folder.files("out") == ["a.results.jsonl", "b.results.jsonl"])
    // Defaults merged under each body: the line's own max_tokens wins.
    let bodies = seen.all.map(\.serialized).sorted()
    #expect(bodies == [#"{"prompt":"p a1","max_tokens":9,"temperature":0}"#, #"{"prompt":"p a2","max_tokens":9,"temperature":0}"#,
                       #"{"prompt":"p b1","max_tokens":5,"temperature":0}"#])
    let exportedA = try String(contentsOfFile: folder.path + "/out/a.results.jsonl", encoding: .utf8)
    #expect(exportedA.split(separator: "\n").count == 2 && exportedA.contains(#""custom_id":"a1""#))

    // Again, twice: nothing new, nothing re-exported (an export's file is left alone).
    try "tampered".write(toFile: folder.path + "/out/a.results.jsonl", atomically: true, encoding: .utf8)
    for _ in 0..<2 {
        let again = try await run.run(work: answerAll(store, seen: seen))
        #expect(again.outcome == .done && again.enqueued.isEmpty && again.exported.isEmpty && again.skippedKnown == 2)
    }
    #expect(try String(contentsOfFile: folder.path + "/out/a.results.jsonl", encoding: .utf8) == "tampered")
    #expect(try store.jobs().count == 2)
    #expect(seen.all.count == 3)

    // The same content under another name is known; a new file is not.
    try folder.write("inbox/a-copy.jsonl", batch(["a1", "a2"]))
    try folder.write("inbox/d.jsonl", batch(["d1", "fail-d2"]))
    let third = try await run.run(work: answerAll(store, seen: seen))
    #expect(third.enqueued.map { ($0 as NSString).lastPathComponent } == ["d.jsonl"])
    #expect(third.outcome == .doneWithFailures(1))
    #expect(third.outcome.exitCode == 5)
    #expect(folder.files("out") == ["a.results.jsonl", "b.results.jsonl", "d.errors.jsonl", "d.results.jsonl"])
    let names = try store.jobs().map { $0.name ?? "" }
    let shaA = try SpecRun.sha256(ofFile: folder.path + "/inbox/a.jsonl")
    #expect(names.count == 3 && names[0] == "t/a.jsonl/" + shaA.prefix(12))
    #expect(names[1].hasPrefix("t/b.jsonl/") && names[2].hasPrefix("t/d.jsonl/"))

    // A retried job finishes again at a new time: exported again, once.
    let d = try #require(try store.jobs().last)
    try store.retry(job: d.id)
    let fourth = try await run.run(work: answerAll(store, seen: seen))
    #expect(fourth.exported.count == 1 && fourth.enqueued.isEmpty)
}

@Test func settlingFilesWaitForTheNextRun() async throws {
    let folder = try Folder()
    try folder.write("inbox/old.jsonl", batch(["o1"]), modified: Date().addingTimeInterval(-120))
    try folder.write("inbox/new.jsonl", batch(["n1"]))
    let store = try SQLiteStore(path: folder.path + "/sluice.db")
    let settled = try JobSpec.parse("name = \"s\"\n[input]\npath = \"inbox/\"\nsettle = \"1m\"\n[output]\nfolder = \"out\"",
                                    path: folder.path + "/s.toml")
    let run = try SpecRun(spec: settled, store: store, log: { _ in })
    let report = try await run.run(work: answerAll(store))
    #expect(report.enqueued.map { ($0 as NSString).lastPathComponent } == ["old.jsonl"])
    #expect(report.settling == 1)
}

@Test func retentionDeletesOldJobsAndNeverReenqueuesThem() async throws {
    let folder = try Folder()
    try folder.write("inbox/a.jsonl", batch(["a1"]))
    let store = try SQLiteStore(path: folder.path + "/sluice.db")
    let run = try SpecRun(spec: try spec(folder, extra: "retention = \"1h\""), store: store, log: { _ in })
    let seen = Seen()
    let first = try await run.run(work: answerAll(store, seen: seen))
    #expect(first.exported.count == 1 && first.deleted.isEmpty)
    let later = try await run.run(now: Date().addingTimeInterval(3700), work: answerAll(store, seen: seen))
    #expect(later.deleted.count == 1)
    #expect(try store.jobs().isEmpty)
    #expect(folder.files("out") == ["a.results.jsonl"])
    let again = try await run.run(now: Date().addingTimeInterval(7200), work: answerAll(store, seen: seen))
    #expect(again.enqueued.isEmpty && again.skippedKnown == 1 && again.outcome == .done)
    #expect(seen.all.count == 1)
}

@Test func overlappingRunWithExitPolicyLeavesAtOnce() async throws {
    let folder = try Folder()
    try folder.write("inbox/a.jsonl", batch(["a1"]))
    let store = try SQLiteStore(path: folder.path + "/sluice.db")
    let run = try SpecRun(spec: try spec(folder), store: store, log: { _ in })
    let held = try #require(try run.state.lock("run.lock", wait: false))
    let report = try await run.run(work: answerAll(store))
    #expect(report.outcome == .skippedOverlap && report.outcome.exitCode == 6)
    #expect(try store.jobs().isEmpty)
    withExtendedLifetime(held) {}
}

@Test func deadlineLeavesWorkForTheNextRun() async throws {
    let folder = try Folder()
    try folder.write("inbox/a.jsonl", batch(["a1"]))
    try folder.write("inbox/b.jsonl", batch(["b1"]))
    let store = try SQLiteStore(path: folder.path + "/sluice.db")
    let run = try SpecRun(spec: try spec(folder, extra: "deadline = \"1s\""), store: store, log: { _ in })
    // The "worker" uses up the whole deadline on the first job without finishing it.
    let report = try await run.run { _, seconds in
        #expect(seconds != nil && seconds! <= 1)
        try await Task.sleep(for: .seconds(seconds! + 0.05))
        return true
    }
    #expect(report.outcome == .workRemains && report.outcome.exitCode == 4)
    #expect(report.exported.isEmpty)
    // The next run of the same spec (same name, inbox and state), given room: on a loaded test
    // machine a second 1 s deadline could run out before it answers both jobs.
    let next = try await SpecRun(spec: try spec(folder, extra: "deadline = \"10m\""), store: store, log: { _ in })
        .run(work: answerAll(store))
    #expect(next.outcome == .done && next.exported.count == 2, "\(next.outcome)")
}

/// The descriptor of this process's open file at `path`, found through /proc/self/fd.
private func openDescriptor(at path: String) throws -> Int32? {
    for name in try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
        guard let fd = Int32(name), (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + name)) == path
        else { continue }
        return fd
    }
    return nil
}

/// A child that still holds the lock's open file (as one spawned by another thread does until its exec
/// closes the descriptor) does not keep a released lock held: the next run can take it at once.
@Test func aReleasedRunLockIsFreeWhileAChildStillHoldsItsFile() throws {
    let folder = try Folder()
    let path = folder.path + "/run.lock"
    let child: ChildProcess
    do {
        let lock = try #require(try FileLock.acquire(path: path, wait: false))
        let fd = try #require(try openDescriptor(at: path), "the lock's descriptor is not in /proc/self/fd")
        // The child's standard input is the lock's open file, kept across its exec.
        child = try ChildProcess(executable: "/bin/sleep", arguments: ["60"], standardInput: .descriptor(fd))
        withExtendedLifetime(lock) {
            #expect((try? FileLock.acquire(path: path, wait: false)) == nil, "held while this process has it")
        }
    }  // the lock is released here
    defer {
        child.send(SIGKILL)
        _ = child.waitUntilExit()
    }
    #expect(try FileLock.acquire(path: path, wait: false) != nil,
            "the released lock is still held through the child's copy of its file")
}

@Test func enqueueMergesDefaultsUnderTheBody() throws {
    let folder = try Folder()
    try folder.write("in.jsonl", batch(["x"], extraBody: #","temperature":1,"stop":null"#) + "not json\n")
    let store = try SQLiteStore(path: folder.path + "/sluice.db")
    let report = try store.enqueue(file: folder.path + "/in.jsonl",
                                   bodyDefaults: .object(["temperature": .int(0), "seed": .int(7), "stop": .string("x")]))
    #expect(report.accepted == 1 && report.badLineCount == 1)
    let worker = try store.registerWorker(host: "t", pid: 1, description: "t")
    let claimed = try store.claim(worker: worker, job: nil, limit: 10, leaseSeconds: 10)
    #expect(claimed.map(\.body.serialized) == [#"{"prompt":"p x","temperature":1,"stop":null,"seed":7}"#])
}

// Issue 13, defect 1: a new file under an old input's name must not destroy the old job's results.
@Test func aNewInputUnderAnOldNameIsExportedBesideTheOldExportNeverOverIt() async throws {
    let folder = try Folder()
    try folder.write("inbox/b.jsonl", batch(["first", "fail-first"]))
    let store = try SQLiteStore(path: folder.path + "/sluice.db")
    let run = try SpecRun(spec: try spec(folder, extra: "retention = \"1h\""), store: store, log: { _ in })
    let first = try await run.run(work: answerAll(store))
    #expect(first.exported.count == 1)
    try folder.write("inbox/b.jsonl", batch(["second", "fail-second"]))
    let second = try await run.run(work: answerAll(store))
    #expect(second.enqueued.count == 1 && second.exported.count == 1)
    let jobs = try store.jobs()
    #expect(jobs.count == 2)
    let newJob = try #require(jobs.last?.id)
    #expect(folder.files("out") == ["b.errors.job\(newJob).jsonl", "b.errors.jsonl", "b.results.job\(newJob).jsonl", "b.results.jsonl"])
    let old = try String(contentsOfFile: folder.path + "/out/b.results.jsonl", encoding: .utf8)
    #expect(old.contains(#""custom_id":"first""#) && !old.contains("second"))
    let new = try String(contentsOfFile: folder.path + "/out/b.results.job\(newJob).jsonl", encoding: .utf8)
    #expect(new.contains(#""custom_id":"second""#) && !new.contains("first"))
    let oldErrors = try String(contentsOfFile: folder.path + "/out/b.errors.jsonl", encoding: .utf8)
    #expect(oldErrors.contains(#""custom_id":"fail-first""#) && !oldErrors.contains("second"))

    // A retried old job is exported again over its own files, not the new job's.
    try store.retry(job: jobs[0].id)
    let third = try await run.run(work: answerAll(store))
    #expect(third.exported == [folder.path + "/out/b.results.jsonl"])

    // Both exports are intact: retention may delete both jobs; their files stay.
    let later = try await run.run(now: Date().addingTimeInterval(3700), work: answerAll(store))
    #expect(later.deleted.count == 2)
    #expect(folder.files("out").count == 4)
}

/// SQLite gives a new job the id of the newest job once retention deleted it; the new job must
/// not take the deleted job's export for its own and write over it.
@Test func aNewJobWithADeletedJobsIdNeverOverwritesThatJobsExport() async throws {
    let folder = try Folder()
    try folder.write("inbox/daily.jsonl", batch(["day-one"]))
    let store = try SQLiteStore(path: folder.path + "/sluice.db")
    let run = try SpecRun(spec: try spec(folder, extra: "retention = \"1h\""), store: store, log: { _ in })
    let first = try await run.run(work: answerAll(store))
    let oldJob = try #require(try store.jobs().first?.id)
    #expect(first.exported == [folder.path + "/out/daily.results.jsonl"])
    let later = try await run.run(now: Date().addingTimeInterval(3700), work: answerAll(store))
    #expect(later.deleted.count == 1)
    #expect(try store.jobs().isEmpty)

    try folder.write("inbox/daily.jsonl", batch(["day-two"]))
    let next = try await run.run(work: answerAll(store))
    let newJob = try #require(try store.jobs().first?.id)
    #expect(next.enqueued.count == 1)
    if newJob == oldJob {
        // The reused id still gets its own files beside the deleted job's.
        #expect(next.exported == [folder.path + "/out/daily.results.job\(newJob).jsonl"])
    }
    let old = try String(contentsOfFile: folder.path + "/out/daily.results.jsonl", encoding: .utf8)
    #expect(old.contains("day-one") && !old.contains("day-two"))
    #expect(folder.files("out").contains { $0.hasPrefix("daily.results.job") })
}

// Issue 13, defect 1: retention keeps a job whose export is no longer the file Sluice wrote.
@Test func retentionKeepsAJobWhoseExportWasChangedOrRemoved() async throws {
    let folder = try Folder()
    try folder.write("inbox/a.jsonl", batch(["a1"]))
    try folder.write("inbox/b.jsonl", batch(["b1"]))
    try folder.write("inbox/c.jsonl", batch(["c1"]))
    let store = try SQLiteStore(path: folder.path + "/sluice.db")
    var lines: [String] = []
    let log = Mutex<[String]>([])
    let run = try SpecRun(spec: try spec(folder, extra: "retention = \"1h\""), store: store,
                          log: { line in log.withLock { $0.append(line) } })
    #expect(try await run.run(work: answerAll(store)).exported.count == 3)
    try "someone else's".write(toFile: folder.path + "/out/a.results.jsonl", atomically: true, encoding: .utf8)
    try FileManager.default.removeItem(atPath: folder.path + "/out/b.results.jsonl")
    let later = try await run.run(now: Date().addingTimeInterval(3700), work: answerAll(store))
    #expect(later.deleted.count == 1) // only c's export is intact
    #expect(try store.jobs().map { ($0.inputPath as NSString).lastPathComponent } == ["a.jsonl", "b.jsonl"])
    lines = log.withLock { $0 }
    #expect(lines.contains { $0.contains("a.results.jsonl was changed since Sluice wrote it") })
    #expect(lines.contains { $0.contains("b.results.jsonl was removed since Sluice wrote it") })
}

// A run killed after its export's rename, before the ledger's `exported` record: the next run
// knows the files as the job's (the `exporting` record written first says so) and writes them
// again in place, instead of exporting the job a second time beside them.
@Test func aRunKilledBetweenItsExportAndItsRecordExportsOnceInPlace() async throws {
    let folder = try Folder()
    try folder.write("inbox/k.jsonl", batch(["k1", "fail-k2"]))
    let store = try SQLiteStore(path: folder.path + "/sluice.db")
    let run = try SpecRun(spec: try spec(folder), store: store, log: { _ in })
    let first = try await run.run(work: answerAll(store))
    #expect(first.exported.count == 1)
    let written = try String(contentsOfFile: folder.path + "/out/k.results.jsonl", encoding: .utf8)
    // Take the last record back off the ledger: what a kill right after the rename leaves.
    let ledger = try String(contentsOfFile: run.state.ledgerPath, encoding: .utf8).split(separator: "\n")
    #expect(ledger.last?.hasPrefix("exported\t") == true && ledger.dropLast().last?.hasPrefix("exporting\t") == true)
    try (ledger.dropLast().joined(separator: "\n") + "\n").write(toFile: run.state.ledgerPath, atomically: true, encoding: .utf8)

    let second = try await run.run(work: answerAll(store))
    #expect(second.exported == [folder.path + "/out/k.results.jsonl"])
    #expect(folder.files("out") == ["k.errors.jsonl", "k.results.jsonl"])
    #expect(try String(contentsOfFile: folder.path + "/out/k.results.jsonl", encoding: .utf8) == written)
    let third = try await run.run(work: answerAll(store))
    #expect(third.exported.isEmpty)
}

@Test func anOutputFolderThatCannotBeOneIsNamed() async throws {
    let folder = try Folder()
    try folder.write("inbox/a.jsonl", batch(["a1"]))
    try folder.write("out", "a file where the output folder should be")
    let store = try SQLiteStore(path: folder.path + "/sluice.db")
    let run = try SpecRun(spec: try spec(folder), store: store, log: { _ in })
    await #expect {
        _ = try await run.run(work: answerAll(store))
    } throws: { error in
        "\(error)".contains("t.toml: output.folder") && "\(error)".contains("exists and is not a folder")
    }
    // A folder under a file: the system's reason.
    let nested = try JobSpec.parse("name = \"n\"\n[input]\npath = \"inbox/\"\n[output]\nfolder = \"out/sub\"\n",
                                   path: folder.path + "/n.toml")
    #expect {
        try SpecRun.makeOutputFolder(nested)
    } throws: { error in
        "\(error)".contains("n.toml: output.folder") && "\(error)".contains("Not a directory")
    }
}

// A typo in a spec's input must not look like "nothing new" forever: the run's log says what it found.
@Test func aMissingInputOrAnUnusableEntryIsTold() async throws {
    let folder = try Folder()
    let store = try SQLiteStore(path: folder.path + "/sluice.db")
    let lines = Mutex<[String]>([])
    let missing = try JobSpec.parse("name = \"m\"\n[input]\npath = \"nope.jsonl\"\n[output]\nfolder = \"out\"\n",
                                    path: folder.path + "/m.toml")
    let first = try await SpecRun(spec: missing, store: store, log: { line in lines.withLock { $0.append(line) } })
        .run(work: answerAll(store))
    #expect(first.outcome == .done)
    #expect(lines.withLock { $0 }.contains { $0.contains("nope.jsonl does not exist") }, "\(lines.withLock { $0 })")

    #expect(symlink(folder.path + "/gone.jsonl", folder.path + "/inbox/dangling.jsonl") == 0)
    try FileManager.default.createDirectory(atPath: folder.path + "/inbox/dir.jsonl", withIntermediateDirectories: true)
    try folder.write("inbox/ok.jsonl", batch(["o1"]))
    let second = try await SpecRun(spec: try spec(folder), store: store, log: { line in lines.withLock { $0.append(line) } })
        .run(work: answerAll(store))
    #expect(second.enqueued.count == 1)
    let told = lines.withLock { $0 }
    #expect(told.contains { $0.contains("skipped \(folder.path)/inbox/dangling.jsonl: not a regular file") })
    #expect(told.contains { $0.contains("skipped \(folder.path)/inbox/dir.jsonl: not a regular file") })
}
