import Foundation
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
}
