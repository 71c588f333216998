import Foundation
import Synchronization
import SluiceCore
import SluiceQueue
@testable import SluiceServer
import Testing

/// A scratch folder with a queue database and a service over it.
final class ServerFixture: @unchecked Sendable {
    let folder: String
    let store: SQLiteStore
    let service: BatchService
    let reconciler: Reconciler

    init(limits: ServeLimits = ServeLimits()) throws {
        folder = NSTemporaryDirectory() + "sluice-server-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        store = try SQLiteStore(path: folder + "/q.db")
        service = try BatchService(store: store, dataDirectory: folder + "/q.db.files", limits: limits)
        reconciler = Reconciler(service: service, log: { _ in })
    }

    deinit { try? FileManager.default.removeItem(atPath: folder) }

    /// Uploads `text` as a batch input file for `project`; returns its id.
    func upload(_ text: String, project: String = "p") async throws -> String {
        let sink = try service.makeUploadSink()
        try Array(text.utf8).withUnsafeBytes { try sink.write($0) }
        let json = try await service.storeUpload(sink, project: project, filename: "in.jsonl", purpose: "batch")
        return json["id"]!.stringValue!
    }

    func createBatch(file: String, window: String = "24h", project: String = "p") async throws -> String {
        let body = JSON.object(["input_file_id": .string(file), "endpoint": .string("/v1/chat/completions"),
                                "completion_window": .string(window)])
        return try await service.createBatch(project: project, body: body)["id"]!.stringValue!
    }

    func batch(_ id: String, project: String = "p") async throws -> JSON {
        try await service.batch(project: project, id: id)
    }

    /// Plays a worker: claims everything and answers 200 (or `status`) to each request.
    func work(limit: Int = 1000, status: Int = 200) throws -> Int {
        let worker = try store.registerWorker(host: "test", pid: 1, description: "test")
        let claimed = try store.claim(worker: worker, job: nil, limit: limit, leaseSeconds: 60)
        var batch = CommitBatch()
        for request in claimed {
            batch.results.append((LeaseRef(requestID: request.id, leaseGeneration: request.leaseGeneration),
                                  .response(statusCode: status, body: .object(["answer": .string(request.customID)]),
                                            usage: Usage(promptTokens: 1, completionTokens: 2))))
        }
        try store.commit(batch, worker: worker)
        return claimed.count
    }

    func content(_ fileID: String, project: String = "p") async throws -> [JSON] {
        let (path, _) = try await service.contentPath(project: project, id: fileID)
        return try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { try JSON.parse(String($0)) }
    }
}

func chatLines(_ prefix: String, _ count: Int) -> String {
    (1...count).map { i in
        #"{"custom_id":"\#(prefix)-\#(i)","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"q\#(i)"}]}}"#
    }.joined(separator: "\n") + "\n"
}

@Suite struct BatchLifecycleTests {
    @Test func batchRunsAsAJobAndEndsWithItsOutputFile() async throws {
        let f = try ServerFixture()
        let file = try await f.upload(chatLines("a", 5))
        let id = try await f.createBatch(file: file)
        #expect(try await f.batch(id)["status"] == .string("validating"))
        try f.reconciler.reconcileOnce()
        let running = try await f.batch(id)
        #expect(running["status"] == .string("in_progress"))
        #expect(running["request_counts"]?["total"] == .int(5))
        #expect(running["output_file_id"] == .null)
        #expect(try f.work() == 5)
        try f.reconciler.reconcileOnce()
        let done = try await f.batch(id)
        #expect(done["status"] == .string("completed"))
        #expect(done["request_counts"] == .object(["total": .int(5), "completed": .int(5), "failed": .int(0)]))
        #expect(done["error_file_id"] == .null)
        #expect(done["finalizing_at"] != .null && done["completed_at"] != .null)
        let lines = try await f.content(done["output_file_id"]!.stringValue!)
        #expect(lines.map { $0["custom_id"]!.stringValue! } == (1...5).map { "a-\($0)" })
        #expect(lines.allSatisfy { $0["response"]?["status_code"] == .int(200) && $0["error"] == .null })
        // A second pass changes nothing (the batch ended once).
        try f.reconciler.reconcileOnce()
        #expect(try await f.batch(id) == done)
    }

    @Test func non200AnswersGoToTheErrorFile() async throws {
        let f = try ServerFixture()
        let id = try await f.createBatch(file: try await f.upload(chatLines("e", 3)))
        try f.reconciler.reconcileOnce()
        _ = try f.work(status: 400)
        try f.reconciler.reconcileOnce()
        let done = try await f.batch(id)
        #expect(done["status"] == .string("completed"))
        #expect(done["output_file_id"] == .null)
        #expect(done["request_counts"]?["failed"] == .int(3))
        #expect(try await f.content(done["error_file_id"]!.stringValue!).count == 3)
    }

    @Test func badLinesFailTheBatchNamingEachLine() async throws {
        let f = try ServerFixture()
        var lines = chatLines("b", 4).split(separator: "\n").map(String.init)
        lines[1] = "{not json"
        lines[2] = #"{"custom_id":"x","method":"POST","url":"/v1/completions","body":{"prompt":"p"}}"#
        let id = try await f.createBatch(file: try await f.upload(lines.joined(separator: "\n")))
        try f.reconciler.reconcileOnce()
        let failed = try await f.batch(id)
        #expect(failed["status"] == .string("failed"))
        let data = failed["errors"]?["data"]?.arrayValue ?? []
        #expect(data.map { $0["line"]!.intValue! } == [2, 3])
        #expect(data[1]["message"]?.stringValue?.contains("endpoint") == true)
        #expect(try f.store.jobs().isEmpty, "a failed batch creates no job")
    }

    @Test func duplicateCustomIDsFailTheBatchNamingTheLaterLines() async throws {
        let f = try ServerFixture()
        var lines = chatLines("d", 5).split(separator: "\n").map(String.init)
        lines[2] = lines[0]                     // line 3 repeats line 1's custom_id
        lines[3] = "{not json"                  // a line bad for another reason claims no id
        lines[4] = lines[0].replacingOccurrences(of: #""d-1""#, with: #""d\u002d1""#) // the same id, escaped
        let id = try await f.createBatch(file: try await f.upload(lines.joined(separator: "\n")))
        try f.reconciler.reconcileOnce()
        let failed = try await f.batch(id)
        #expect(failed["status"] == .string("failed"))
        let data = failed["errors"]?["data"]?.arrayValue ?? []
        #expect(data.map { $0["line"]!.intValue! } == [3, 4, 5])
        #expect(data[0]["code"] == .string("duplicate_custom_id"))
        #expect(data[0]["message"]?.stringValue?.contains("first on line 1") == true)
        #expect(data[2]["code"] == .string("duplicate_custom_id"))
        #expect(try f.store.jobs().isEmpty)
    }

    @Test func aFileTheStoreRefusesFailsTheBatchInsteadOfRetryingForever() async throws {
        let f = try ServerFixture()
        let file = try await f.upload(chatLines("r", 3))
        let stored = try #require(try f.store.file(id: file, project: "p"))
        let path = f.service.storage.path(of: stored.storageName)
        // The store's strict enqueue refuses what it finds bad, with the lines and reasons.
        try (chatLines("r", 2) + chatLines("r", 1)).write(toFile: path + ".dup", atomically: true, encoding: .utf8)
        let outcome = try f.store.enqueueBatchInput(path: path + ".dup", batchID: "probe", maxLineBytes: 1 << 20)
        guard case let .rejected(lines, badCount, bad) = outcome else { Issue.record("refused: \(outcome)"); return }
        #expect(lines == 3 && badCount == 1 && bad.map(\.lineNumber) == [3] && bad[0].reason == .duplicateCustomID)
        #expect(try f.store.jobs().isEmpty)
        // A file that changes between the reconciler's check and the enqueue: the store's refusal
        // fails the batch, with its reasons, instead of being retried every pass.
        let id = try await f.createBatch(file: file)
        let reconciler = Reconciler(service: f.service, store: SwappingStore(base: f.store, replacement: path + ".dup"),
                                    log: { _ in })
        try reconciler.reconcileOnce()
        let failed = try await f.batch(id)
        #expect(failed["status"] == .string("failed"))
        #expect(failed["errors"]?["data"]?.arrayValue?.first?["code"] == .string("duplicate_custom_id"))
        #expect(failed["request_counts"]?["total"] == .int(3))
    }

    @Test func aBatchStillValidatingWhenItsWindowClosesExpires() async throws {
        let f = try ServerFixture()
        let id = try await f.createBatch(file: try await f.upload(chatLines("v", 2)), window: "1s")
        try f.reconciler.reconcileOnce(now: Date().timeIntervalSince1970 + 2)
        let done = try await f.batch(id)
        #expect(done["status"] == .string("expired"))
        #expect(done["output_file_id"] == .null && done["error_file_id"] == .null)
        #expect(try f.store.jobs().isEmpty, "no request ran")
    }

    @Test func aRepeatingFailureIsLoggedOnce() async throws {
        let logged = Mutex<[String]>([])
        let f = try ServerFixture()
        let reconciler = Reconciler(service: f.service, log: { line in logged.withLock { $0.append(line) } })
        let file = try await f.upload(chatLines("f", 2))
        let id = try await f.createBatch(file: file)
        let stored = try #require(try f.store.file(id: file, project: "p"))
        let path = f.service.storage.path(of: stored.storageName)
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false) // unreadable as a file
        for _ in 0..<3 { try reconciler.reconcileOnce() }
        #expect(try await f.batch(id)["status"] == .string("validating"))
        #expect(logged.withLock { $0.count } == 1, "\(logged.withLock { $0 })")
    }

    @Test func cancelKeepsResultsAndCancelsTheRest() async throws {
        let f = try ServerFixture()
        let id = try await f.createBatch(file: try await f.upload(chatLines("c", 10)))
        try f.reconciler.reconcileOnce()
        #expect(try f.work(limit: 4) == 4)
        let cancelling = try await f.service.cancelBatch(project: "p", id: id)
        #expect(cancelling["status"] == .string("cancelling"))
        try f.reconciler.reconcileOnce()
        let done = try await f.batch(id)
        #expect(done["status"] == .string("cancelled"))
        #expect(done["request_counts"] == .object(["total": .int(10), "completed": .int(4), "failed": .int(6)]))
        let errors = try await f.content(done["error_file_id"]!.stringValue!)
        #expect(errors.allSatisfy { $0["error"]?["code"] == .string("batch_cancelled") })
        #expect(try f.work() == 0, "no request of a cancelled batch is claimed")
        await #expect(throws: APIError.self) { try await f.service.cancelBatch(project: "p", id: id) }
    }

    @Test func pastTheDeadlineTheBatchExpires() async throws {
        let f = try ServerFixture()
        let id = try await f.createBatch(file: try await f.upload(chatLines("x", 6)), window: "1s")
        try f.reconciler.reconcileOnce()
        _ = try f.work(limit: 2)
        try f.reconciler.reconcileOnce(now: Date().timeIntervalSince1970 + 2)
        let done = try await f.batch(id)
        #expect(done["status"] == .string("expired"))
        #expect(done["expired_at"] != .null)
        #expect(try await f.content(done["output_file_id"]!.stringValue!).count == 2)
        let errors = try await f.content(done["error_file_id"]!.stringValue!)
        #expect(errors.map { $0["custom_id"]!.stringValue! } == (3...6).map { "x-\($0)" })
        #expect(errors.allSatisfy { $0["error"]?["code"] == .string("batch_expired") })
    }

    @Test func projectsSeeOnlyTheirOwnObjects() async throws {
        let f = try ServerFixture()
        let file = try await f.upload(chatLines("i", 2), project: "alpha")
        let id = try await f.createBatch(file: file, project: "alpha")
        await #expect(throws: APIError.self) { try await f.service.file(project: "beta", id: file) }
        await #expect(throws: APIError.self) { try await f.batch(id, project: "beta") }
        await #expect(throws: APIError.self) { try await f.service.contentPath(project: "beta", id: file) }
        await #expect(throws: APIError.self) { try await f.service.deleteFile(project: "beta", id: file) }
        await #expect(throws: APIError.self) { try await f.createBatch(file: file, project: "beta") }
        #expect(try await f.service.listFiles(project: "beta", purpose: nil, after: nil, limit: nil, order: nil)["data"] == .array([]))
        #expect(try await f.service.listBatches(project: "beta", after: nil, limit: nil)["data"] == .array([]))
        // A path-like id never reaches the file system.
        await #expect(throws: APIError.self) { try await f.service.contentPath(project: "alpha", id: "../q.db") }
    }

    @Test func listsPageNewestFirst() async throws {
        let f = try ServerFixture()
        let file = try await f.upload(chatLines("l", 1))
        var ids: [String] = []
        for _ in 0..<5 { ids.append(try await f.createBatch(file: file)) }
        var seen: [String] = []
        var after: String?
        while true {
            let page = try await f.service.listBatches(project: "p", after: after, limit: 2)
            let data = page["data"]!.arrayValue!.map { $0["id"]!.stringValue! }
            seen += data
            guard page["has_more"] == .bool(true) else { break }
            after = page["last_id"]!.stringValue!
        }
        #expect(seen == ids.reversed())
    }

    @Test func filePagesGoOnAfterTheFilesTheyReturnedWereDeleted() async throws {
        let f = try ServerFixture()
        /// The usual clean-up loop: list a page, delete it, ask for the page after its last file.
        func drain(order: String) async throws -> [String] {
            var seen: [String] = []
            var after: String?
            while true {
                let page = try await f.service.listFiles(project: "p", purpose: nil, after: after, limit: 2, order: order)
                let ids = page["data"]!.arrayValue!.map { $0["id"]!.stringValue! }
                seen += ids
                for id in ids { _ = try await f.service.deleteFile(project: "p", id: id) }
                guard page["has_more"] == .bool(true) else { return seen }
                after = page["last_id"]!.stringValue!
            }
        }
        var uploaded: [String] = []
        for i in 0..<5 { uploaded.append(try await f.upload(chatLines("p\(i)", 1))) }
        #expect(try await drain(order: "desc") == uploaded.reversed())
        uploaded = []
        for i in 0..<5 { uploaded.append(try await f.upload(chatLines("a\(i)", 1))) }
        #expect(try await drain(order: "asc") == uploaded)

        // After a deleted newest file whose place (SQLite's rowid) the next upload took.
        let older = try await f.upload(chatLines("o", 1))
        let deleted = try await f.upload(chatLines("d", 1))
        _ = try await f.service.deleteFile(project: "p", id: deleted)
        let newer = try await f.upload(chatLines("n", 1))
        func page(after: String, order: String) async throws -> [String] {
            try await f.service.listFiles(project: "p", purpose: nil, after: after, limit: 10, order: order)["data"]!
                .arrayValue!.map { $0["id"]!.stringValue! }
        }
        #expect(try await page(after: deleted, order: "asc") == [newer])
        #expect(try await page(after: deleted, order: "desc") == [older])
        // A cursor that names nothing is an error, not an empty last page.
        await #expect(throws: APIError.self) {
            try await f.service.listFiles(project: "p", purpose: nil, after: "file-nothing", limit: 2, order: nil)
        }
        await #expect(throws: APIError.self) { try await f.service.listBatches(project: "p", after: "batch_nothing", limit: 2) }
    }

    @Test func uploadsAreCheckedAgainstTheCaps() async throws {
        var limits = ServeLimits()
        limits.maxFileLines = 3
        let f = try ServerFixture(limits: limits)
        await #expect(throws: APIError.self) { try await f.upload(chatLines("u", 4)) }
        _ = try await f.upload(chatLines("u", 3))
        await #expect(throws: APIError.self) { try await f.upload("\n\n") }
        let sink = try f.service.makeUploadSink()
        await #expect(throws: APIError.self) {
            try await f.service.storeUpload(sink, project: "p", filename: "x", purpose: "fine-tune")
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: f.folder + "/q.db.files/tmp")
        #expect(leftovers.isEmpty, "failed uploads leave no temporary file")
    }

    @Test func createBatchChecksItsParameters() async throws {
        let f = try ServerFixture()
        let file = try await f.upload(chatLines("v", 1))
        func create(_ pairs: [(key: String, value: JSON)]) async throws -> JSON {
            try await f.service.createBatch(project: "p", body: .object(pairs))
        }
        let base: [(key: String, value: JSON)] = [("input_file_id", .string(file)), ("endpoint", .string("/v1/chat/completions")),
                                                  ("completion_window", .string("24h"))]
        _ = try await create(base)
        await #expect(throws: APIError.self) { try await create(base + [("bogus", .null)]) }
        await #expect(throws: APIError.self) { try await create([base[0], ("endpoint", .string("/v1/images")), base[2]]) }
        for window in ["0h", "-1h", "24", "h", "1e9d", "400d", "1.5.h"] {
            await #expect(throws: APIError.self) { try await create([base[0], base[1], ("completion_window", .string(window))]) }
        }
        #expect(try BatchService.parseWindow("90m") == 5400)
        #expect(try BatchService.parseWindow("1.5h") == 5400)
        await #expect(throws: APIError.self) { try await create(base + [("metadata", .object([("k", .int(1))]))]) }
        await #expect(throws: APIError.self) {
            try await create(base + [("output_expires_after", .object([("anchor", .string("created_at")), ("seconds", .int(10))]))])
        }
        let ok = try await create(base + [("metadata", .object([("k", .string("v"))])),
                                          ("output_expires_after", .object([("anchor", .string("created_at")), ("seconds", .int(3600))]))])
        #expect(ok["metadata"] == .object([("k", .string("v"))]))
    }
}

/// A store whose batch enqueue reads another file than the one named: an input file replaced
/// after the reconciler checked it.
struct SwappingStore: BatchStore {
    let base: SQLiteStore
    let replacement: String

    func enqueueBatchInput(path: String, batchID: String, maxLineBytes: Int) throws -> BatchEnqueueOutcome {
        try base.enqueueBatchInput(path: replacement, batchID: batchID, maxLineBytes: maxLineBytes)
    }

    func insertFile(_ file: StoredFile) throws { try base.insertFile(file) }
    func file(id: String, project: String) throws -> StoredFile? { try base.file(id: id, project: project) }
    func files(project: String, purpose: String?, after: String?, limit: Int, ascending: Bool) throws -> [StoredFile]? {
        try base.files(project: project, purpose: purpose, after: after, limit: limit, ascending: ascending)
    }
    func deleteFile(id: String, project: String) throws -> StoredFile? { try base.deleteFile(id: id, project: project) }
    func expiredFiles(now: Double, limit: Int) throws -> [StoredFile] { try base.expiredFiles(now: now, limit: limit) }
    func insertBatch(_ batch: StoredBatch) throws { try base.insertBatch(batch) }
    func batch(id: String, project: String) throws -> StoredBatch? { try base.batch(id: id, project: project) }
    func batches(project: String?, after: String?, limit: Int) throws -> [StoredBatch]? {
        try base.batches(project: project, after: after, limit: limit)
    }
    func activeBatches() throws -> [StoredBatch] { try base.activeBatches() }
    func transitionBatch(id: String, from: Set<BatchStatus>, to: BatchStatus, at: Double, jobID: JobID?) throws -> Bool {
        try base.transitionBatch(id: id, from: from, to: to, at: at, jobID: jobID)
    }
    func endBatch(id: String, _ ending: BatchEnding) throws -> Bool { try base.endBatch(id: id, ending) }
    func batchCounts(job: JobID) throws -> (counts: BatchRequestCounts, unfinished: Int) { try base.batchCounts(job: job) }
    func cancelBatchJob(_ job: JobID) throws { try base.cancelBatchJob(job) }
    func exportBatch(job: JobID, outputPath: String, errorPath: String, unfinishedCode: String,
                     unfinishedMessage: String) throws -> BatchExportReport {
        try base.exportBatch(job: job, outputPath: outputPath, errorPath: errorPath, unfinishedCode: unfinishedCode,
                             unfinishedMessage: unfinishedMessage)
    }
}
