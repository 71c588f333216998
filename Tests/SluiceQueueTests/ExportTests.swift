import Foundation
import Synchronization
import SluiceCore
import Testing
@testable import SluiceQueue

@Suite struct ExportTests {
    @Test(arguments: StoreKind.all) func exportWritesTheBatchOutputFormatInInputOrder(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        let text = [requestLine("r1"), requestLine("r2"), #"{"custom_id":"r3"}"#, requestLine("r4"), requestLine("r5")]
            .joined(separator: "\n")
        let job = try #require(try store.enqueue(file: try dir.write("in.jsonl", text)).jobID)
        let w = try store.registerWorker(host: "h", pid: 1, description: "w")
        let claimed = try store.claim(worker: w, job: job, limit: 10, leaseSeconds: 30)
        // Commit out of order: the export is still in line order.
        var batch = CommitBatch()
        batch.results = [
            (lease: claimed[2].lease, outcome: .response(statusCode: 400, body: .object(["error": .object(["message": .string("bad model")])]),
                                                          usage: Usage(promptTokens: 0, completionTokens: 0))),
            (lease: claimed[0].lease, outcome: .response(statusCode: 200, body: try JSON.parse(#"{"id":"c1","choices":[],"n":1.50}"#),
                                                          usage: Usage(promptTokens: 1, completionTokens: 2))),
            (lease: claimed[1].lease, outcome: .failure(code: "timeout", message: "no answer \"in\" 30 s", retryable: true)),
        ]
        try store.commit(batch, worker: w)

        let out = dir.file("out.jsonl"), errors = dir.file("errors.jsonl")
        let report = try store.export(job: job, to: out, errors: errors)
        #expect(report == ExportReport(written: 4, succeeded: 1, errors: 3, cancelled: 0, unfinished: 1))
        let idBase = job << 32
        func hex(_ line: Int) -> String {
            let s = String(idBase | Int64(line), radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }
        let expected = [
            #"{"id":"batch_req_\#(hex(1))","custom_id":"r1","response":{"status_code":200,"request_id":"req_\#(hex(1))","body":{"id":"c1","choices":[],"n":1.50}},"error":null}"#,
            #"{"id":"batch_req_\#(hex(2))","custom_id":"r2","response":null,"error":{"code":"timeout","message":"no answer \"in\" 30 s"}}"#,
            #"{"id":"batch_req_\#(hex(3))","custom_id":"r3","response":null,"error":{"code":"missing_method","message":"line 3: missing \"method\" (must be \"POST\")"}}"#,
            #"{"id":"batch_req_\#(hex(4))","custom_id":"r4","response":{"status_code":400,"request_id":"req_\#(hex(4))","body":{"error":{"message":"bad model"}}},"error":null}"#,
        ]
        #expect(try readLines(out) == expected)
        #expect(try readLines(errors) == [expected[1], expected[2], expected[3]])
        for line in expected { #expect((try? JSON.parse(line)) != nil) }

        // Same contents, same bytes; no temporary files left behind.
        let again = dir.file("again.jsonl")
        _ = try store.export(job: job, to: again)
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == Data(contentsOf: URL(fileURLWithPath: again)))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty)
    }

    @Test(arguments: StoreKind.all) func exportReplacesAnOldFileOnlyWhenComplete(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        let job = try #require(try store.enqueue(file: try inputFile(dir, count: 2)).jobID)
        let out = try dir.write("out.jsonl", "old contents\n")
        #expect(throws: QueueError.noSuchJob("\(job + 1)")) { try store.export(job: job + 1, to: out) }
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "old contents\n")
        #expect(throws: QueueError.self) { try store.export(job: job, to: dir.file("missing-dir/out.jsonl")) }
        let report = try store.export(job: job, to: out)
        #expect(report.unfinished == 2 && report.written == 0)
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "")
    }

    /// What the path names decides how the export is written: a link's target is replaced and the
    /// link stays; a FIFO (or a device, such as `/dev/null`) is written in place, never replaced by
    /// a regular file; a name near the 255-byte limit still gets its temporary file.
    @Test func exportsThroughLinksIntoFIFOsAndUnderLongNames() throws {
        let dir = try TempDir()
        let store = try openTestStore(.sqlite, dir)
        let job = try #require(try store.enqueue(file: try inputFile(dir, count: 3)).jobID)
        let worker = try store.registerWorker(host: "h", pid: 1, description: "w")
        var answers = CommitBatch()
        for request in try store.claim(worker: worker, job: job, limit: 10, leaseSeconds: 30) {
            answers.results.append((lease: request.lease, outcome: .response(statusCode: 200, body: .object(["ok": .bool(true)]),
                                                                             usage: Usage(promptTokens: 1, completionTokens: 1))))
        }
        try store.commit(answers, worker: worker)
        let reference = dir.file("reference.jsonl")
        _ = try store.export(job: job, to: reference)
        let expected = try Data(contentsOf: URL(fileURLWithPath: reference))
        #expect(!expected.isEmpty)
        func kind(_ path: String) -> mode_t {
            var info = stat()
            return lstat(path, &info) == 0 ? info.st_mode & S_IFMT : 0
        }

        // A relative link, and a dangling one: the file it names is written, the link stays.
        let target = try dir.write("target.jsonl", "old\n")
        let link = dir.file("link.jsonl")
        #expect(symlink("target.jsonl", link) == 0)
        _ = try store.export(job: job, to: link)
        #expect(kind(link) == S_IFLNK)
        #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == expected)
        let dangling = dir.file("dangling.jsonl")
        #expect(symlink(dir.file("created.jsonl"), dangling) == 0)
        _ = try store.export(job: job, to: dangling)
        #expect(kind(dangling) == S_IFLNK && kind(dir.file("created.jsonl")) == S_IFREG)

        // A FIFO a reader waits on gets the bytes and stays a FIFO.
        let fifo = dir.file("pipe")
        #expect(mkfifo(fifo, 0o600) == 0)
        let received = Mutex<Data?>(nil)
        let reader = Thread {
            let bytes = FileHandle(forReadingAtPath: fifo).flatMap { try? $0.readToEnd() } ?? Data()
            received.withLock { $0 = bytes }
        }
        reader.start()
        _ = try store.export(job: job, to: fifo)
        let deadline = Date().addingTimeInterval(30)
        while received.withLock({ $0 }) == nil && Date() < deadline { usleep(1000) }
        #expect(received.withLock { $0 } == expected)
        #expect(kind(fifo) == S_IFIFO)
        #expect(throws: QueueError.self) { try store.export(job: job, to: dir.path) }

        // 250 bytes of name: the temporary name is cut to fit, the export keeps the full name.
        let long = dir.file(String(repeating: "é", count: 120) + "x.jsonl")
        _ = try store.export(job: job, to: long)
        #expect(try Data(contentsOf: URL(fileURLWithPath: long)) == expected)
        #expect(AtomicFileWriter.temporaryPrefix(for: String(repeating: "é", count: 200)).utf8.count <= 255 - 21)
    }

    /// A killed export's temporary file is removed by a later export of the same name once its
    /// writer is gone and it went unwritten for an hour; a recent one (a writer elsewhere) stays.
    @Test func leftoversOfKilledExportsAreRemoved() throws {
        let dir = try TempDir()
        let store = try openTestStore(.sqlite, dir)
        let job = try #require(try store.enqueue(file: try inputFile(dir, count: 1)).jobID)
        let prefix = AtomicFileWriter.temporaryPrefix(for: "out.jsonl")
        // A pid that is not running: a reaped child's.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()
        let old = try dir.write(prefix + "\(child.processIdentifier)-17", "partial")
        let recent = try dir.write(prefix + "\(child.processIdentifier)-18", "partial")
        let live = try dir.write(prefix + "\(getpid())-19", "partial")
        let hourAgo = timespec(tv_sec: time(nil) - 7200, tv_nsec: 0)
        for path in [old, live] { #expect(utimensat(AT_FDCWD, path, [hourAgo, hourAgo], 0) == 0) }
        _ = try store.export(job: job, to: dir.file("out.jsonl"))
        #expect(!FileManager.default.fileExists(atPath: old))
        #expect(FileManager.default.fileExists(atPath: recent) && FileManager.default.fileExists(atPath: live))
    }
}
