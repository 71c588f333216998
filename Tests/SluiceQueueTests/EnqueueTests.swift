import Foundation
import SluiceCore
import Testing
@testable import SluiceQueue

@Suite struct EnqueueTests {
    /// One bad line per documented reason, each between good lines.
    static let corpus: [(line: String, reason: BadLineReason?, messageContains: String)] = [
        (requestLine("g1"), nil, ""),
        (#"{"custom_id": "x1", "method": "POST","#, .notJSON, "not JSON: invalid JSON at byte"),
        (#"[1, 2, 3]"#, .notObject, "not a JSON object (the line is an array)"),
        (#""just a string""#, .notObject, "a string"),
        (#"{"method":"POST","url":"/v1/completions","body":{}}"#, .missingCustomID, "missing \"custom_id\""),
        (#"{"custom_id":"","method":"POST","url":"/v1/completions","body":{}}"#, .emptyCustomID, "is empty"),
        (#"{"custom_id":17,"method":"POST","url":"/v1/completions","body":{}}"#, .customIDNotString, "not a number"),
        (requestLine("g1", content: "again"), .duplicateCustomID, "duplicate custom_id \"g1\" (first on line 1)"),
        (#"{"custom_id":"m1","url":"/v1/completions","body":{}}"#, .missingMethod, "missing \"method\""),
        (#"{"custom_id":"m2","method":"GET","url":"/v1/completions","body":{}}"#, .unsupportedMethod, "unsupported method \"GET\""),
        (#"{"custom_id":"u1","method":"POST","body":{}}"#, .missingURL, "missing \"url\""),
        (#"{"custom_id":"u2","method":"POST","url":"/v1/images/generations","body":{}}"#, .unsupportedURL, "unsupported url \"/v1/images/generations\""),
        (#"{"custom_id":"b1","method":"POST","url":"/v1/completions"}"#, .missingBody, "missing \"body\""),
        (#"{"custom_id":"b2","method":"POST","url":"/v1/completions","body":"hi"}"#, .bodyNotObject, "not a string"),
        (#"{"custom_id":"b3","method":"POST","url":"/v1/completions","body":[{}]}"#, .bodyNotObject, "not an array"),
        (#"{"custom_id":"f1","method":"POST","url":"/v1/completions","body":{},"extra":1}"#, .unknownField, "unknown field \"extra\""),
        (#"{"custom_id":"f2","custom_id":"f3","method":"POST","url":"/v1/completions","body":{}}"#, .duplicateField, "\"custom_id\" appears more than once"),
        (requestLine("g2", url: "/v1/completions"), nil, ""),
    ]

    @Test(arguments: StoreKind.all) func eachBadLineGetsItsReasonAndGoodLinesAreKept(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        var text = Self.corpus.map(\.line).joined(separator: "\n") + "\n"
        // Invalid UTF-8 inside a string (line 19), then a last good line without a newline (line 20).
        var bytes = Array(text.utf8)
        bytes += Array(#"{"custom_id":"bad-utf8","method":"POST","url":"/v1/completions","body":{"prompt":""#.utf8) + [0xC3, 0x28] + Array(#""}}"#.utf8) + [0x0A]
        text = requestLine("last")
        bytes += Array(text.utf8)
        let path = try dir.write("corpus.jsonl", bytes: bytes)

        let report = try store.enqueue(file: path, name: "corpus")
        let job = try #require(report.jobID)
        let expectedBad = Self.corpus.enumerated().filter { $0.element.reason != nil }
        #expect(report.lines == Self.corpus.count + 2)
        #expect(report.accepted == 3)
        #expect(report.badLineCount == expectedBad.count + 1)
        #expect(!report.rejected)
        for (index, entry) in expectedBad {
            let bad = report.badLines.first { $0.lineNumber == index + 1 }
            #expect(bad?.reason == entry.reason, "line \(index + 1): \(String(describing: bad))")
            #expect(bad?.message.contains(entry.messageContains) == true, "line \(index + 1): \(bad?.message ?? "-")")
        }
        let utf8 = report.badLines.first { $0.lineNumber == Self.corpus.count + 1 }
        #expect(utf8?.reason == .invalidUTF8)
        #expect(utf8?.message.hasPrefix("invalid UTF-8 at byte") == true)
        #expect(report.badLines.first { $0.lineNumber == 8 }?.customID == "g1")
        #expect(report.badLines.first { $0.lineNumber == 10 }?.customID == "m2")

        // The good lines are the queue.
        let worker = try store.registerWorker(host: "h", pid: 1, description: "t")
        let claimed = try store.claim(worker: worker, job: job, limit: 100, leaseSeconds: 30)
        #expect(claimed.map(\.customID) == ["g1", "g2", "last"])
        #expect(claimed.map(\.lineNumber) == [1, Self.corpus.count, Self.corpus.count + 2])
        #expect(claimed[1].endpoint == .completions)

        // Every bad line is a failed request in the export, with its line number.
        try store.commit(results(claimed.map { ($0.lease, okOutcome($0.customID)) }), worker: worker)
        let out = dir.file("out.jsonl"), errors = dir.file("errors.jsonl")
        let exported = try store.export(job: job, to: out, errors: errors)
        #expect(exported.written == report.lines)
        #expect(exported.errors == report.badLineCount)
        let errorLines = try readLines(errors)
        #expect(errorLines.count == report.badLineCount)
        #expect(errorLines[0].contains(#""error":{"code":"not_json","message":"line 2: not JSON"#))
        #expect(errorLines.contains { $0.contains(#""custom_id":"g1","response":null,"error":{"code":"duplicate_custom_id""#) })
        #expect(errorLines.contains { $0.contains(#""custom_id":null"#) })
    }

    @Test(arguments: StoreKind.all) func strictModeRejectsTheWholeFileButReportsEveryBadLine(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        let path = try dir.write("strict.jsonl", Self.corpus.map(\.line).joined(separator: "\n"))
        let report = try store.enqueue(file: path, strict: true)
        #expect(report.rejected)
        #expect(report.jobID == nil)
        #expect(report.badLineCount == Self.corpus.filter { $0.reason != nil }.count)
        #expect(report.badLines.map(\.lineNumber) == Self.corpus.enumerated().filter { $0.element.reason != nil }.map { $0.offset + 1 })
        #expect(try store.jobs().isEmpty)
        #expect(!(try store.hasUnfinishedWork(job: nil)))
        // A clean file in strict mode is accepted; the rejected content can be enqueued (nothing remembers it).
        let good = try inputFile(dir, count: 3)
        #expect(try store.enqueue(file: good, strict: true).jobID != nil)
        #expect(try store.enqueue(file: path).jobID != nil)
    }

    @Test(arguments: StoreKind.all) func emptyAndBlankFilesAreClearErrorsCreatingNothing(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        for (name, contents) in [("empty.jsonl", ""), ("blank.jsonl", "\n  \n\r\n\t\n")] {
            let path = try dir.write(name, contents)
            #expect(throws: QueueError.emptyInput(path: path)) { try store.enqueue(file: path) }
        }
        #expect(try store.jobs().isEmpty)
        #expect(throws: QueueError.self) { try store.enqueue(file: dir.file("missing.jsonl")) }
        let missing = (try? store.enqueue(file: dir.file("missing.jsonl"))) == nil
        #expect(missing)
        #expect(try store.jobs().isEmpty)
    }

    @Test(arguments: StoreKind.all) func crlfBlankLinesBOMAndAMissingFinalNewline(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        let text = "\u{FEFF}" + requestLine("a") + "\r\n\r\n" + requestLine("b") + "\r\n   \n" + requestLine("c")
        let report = try store.enqueue(file: try dir.write("crlf.jsonl", text))
        #expect(report.badLineCount == 0, "\(report.badLines)")
        #expect(report.accepted == 3 && report.blankLines == 2 && report.lines == 3)
        let worker = try store.registerWorker(host: "h", pid: 1, description: "t")
        let claimed = try store.claim(worker: worker, job: report.jobID, limit: 10, leaseSeconds: 30)
        #expect(claimed.map(\.customID) == ["a", "b", "c"])
        #expect(claimed.map(\.lineNumber) == [1, 3, 5])
        #expect(claimed[2].body["messages"]?.arrayValue?.first?["content"] == .string("Hi"))
    }

    @Test(arguments: StoreKind.all) func aTenMegabyteLineIsTooLongAndItsNeighboursSurvive(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        let huge = #"{"custom_id":"huge","method":"POST","url":"/v1/completions","body":{"prompt":""#
            + String(repeating: "x", count: 10_000_000) + #""}}"#
        let text = requestLine("before") + "\n" + huge + "\n" + requestLine("after") + "\n" + huge
        let report = try store.enqueue(file: try dir.write("huge.jsonl", text))
        #expect(report.accepted == 2)
        #expect(report.badLines.map(\.lineNumber) == [2, 4])
        #expect(report.badLines.allSatisfy { $0.reason == .lineTooLong && $0.message.contains("10000081 bytes") })
        // A smaller limit applies when asked; a line exactly at the limit is fine.
        let exact = requestLine("exact")
        let limited = try store.enqueue(file: try dir.write("limit.jsonl", exact + "\n" + requestLine("longer-id") + "\n"),
                                        maxLineBytes: exact.utf8.count)
        #expect(limited.accepted == 1 && limited.badLines.first?.reason == .lineTooLong)
    }

    @Test(arguments: StoreKind.all) func bodyIsStoredAsItsOriginalTextAndEscapedIDsAreDecoded(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        let body = #"{"model": "m",  "prompt": "caf\u00e9 \"q\"", "temperature": 1.50, "stop": ["\n"]}"#
        let lines = [
            #"{"body": "# + body + #", "url": "/v1/completions", "method": "POST", "custom_id": "r\u0031"}"#,
            #"{"custom_id":"r1","method":"POST","url":"/v1/completions","body":{}}"#,
            #"{"custom_id":"r\/2","method":"POST","url":"/v1/completions","body":{}}"#,
            #"{"custom_id":"r3","method":"P\u004fST","url":"\/v1\/chat\/completions","body":{}}"#,
        ]
        let report = try store.enqueue(file: try dir.write("escapes.jsonl", lines.joined(separator: "\n")))
        #expect(report.accepted == 3)
        #expect(report.badLines.map(\.reason) == [.duplicateCustomID])
        let stored = try store.testQueryText("SELECT body FROM requests ORDER BY id LIMIT 1")
        #expect(stored == body)
        let worker = try store.registerWorker(host: "h", pid: 1, description: "t")
        let claimed = try store.claim(worker: worker, job: nil, limit: 10, leaseSeconds: 30)
        #expect(claimed.map(\.customID) == ["r1", "r/2", "r3"])
        #expect(claimed[2].endpoint == .chatCompletions)
        #expect(claimed[0].body == (try JSON.parse(body)))
        #expect(claimed[0].body["temperature"] == .number("1.50"))
    }

    @Test(arguments: StoreKind.all) func sameContentIsRefusedUnlessAllowedAndNamesAreChecked(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        let path = try inputFile(dir, count: 5)
        let first = try store.enqueue(file: path, name: "nightly")
        let job = try #require(first.jobID)
        let copy = try dir.write("copy.jsonl", try String(contentsOfFile: path, encoding: .utf8))
        do {
            _ = try store.enqueue(file: copy)
            Issue.record("a duplicate was accepted")
        } catch let error as QueueError {
            #expect(error == .duplicateInput(path: copy, sha256: first.sha256, job: job, jobName: "nightly"))
            #expect(error.description.contains("job \(job) (\"nightly\")"))
            #expect(error.description.contains("--allow-duplicate"))
        }
        #expect(try store.jobs().count == 1)
        let again = try store.enqueue(file: copy, allowDuplicate: true)
        #expect(again.jobID != nil && again.sha256 == first.sha256)
        #expect(try store.resolveJob("nightly") == job)
        #expect(try store.resolveJob(String(job)) == job)
        #expect(throws: QueueError.noSuchJob("\"nope\"")) { try store.resolveJob("nope") }
        #expect(throws: QueueError.duplicateJobName(name: "nightly", job: job)) {
            try store.enqueue(file: try inputFile(dir, name: "other.jsonl", count: 1, salt: "x"), name: "nightly")
        }
        #expect(throws: QueueError.self) { try store.enqueue(file: path, name: "123", allowDuplicate: true) }
        #expect(first.sha256 == SHA256.hex(Array(try Data(contentsOf: URL(fileURLWithPath: path)))))
    }

    @Test(arguments: StoreKind.all) func aLoadingJobIsInvisibleAndAnAbandonedOneIsRemovedOnOpen(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let store = try openTestStore(kind, dir)
        let deadPID = try Self.pidOfExitedProcess()
        // What a killed enqueue leaves: a loading job with some requests.
        try store.testExecute("""
                INSERT INTO jobs (id, state, input_path, input_sha256, created_at, creator_host, creator_pid, loading_heartbeat)
                VALUES (7, 'loading', 'x.jsonl', '', 0, '\(SystemInfo.hostName)', \(deadPID), \(Date().timeIntervalSince1970));
                INSERT INTO requests (id, job_id, line, state, endpoint, custom_id, body)
                VALUES (\(RequestKey.id(job: 7, line: 1)), 7, 1, 'queued', 1, 'a', '{}');
                """)
        let worker = try store.registerWorker(host: "h", pid: 1, description: "t")
        #expect(try store.claim(worker: worker, job: nil, limit: 10, leaseSeconds: 30).isEmpty)
        #expect(!(try store.hasUnfinishedWork(job: nil)))
        #expect(try store.status(job: nil).isEmpty)
        #expect(throws: QueueError.noSuchJob("7")) { try store.resolveJob("7") }

        let reopened = try openTestStore(kind, dir)
        #expect(try reopened.jobs().isEmpty)
        let leftovers = try reopened.testQueryInt("SELECT count(*) FROM requests")
        #expect(leftovers == 0)
    }

    /// The pid of a child that has exited and been reaped.
    static func pidOfExitedProcess() throws -> Int32 {
        let process = try ChildProcess(executable: "/bin/true", arguments: [])
        process.waitUntilExit()
        return process.processIdentifier
    }

    @Test func validatorAgreesWithTheJSONParser() throws {
        // Mutations of a valid line: the scanner must accept exactly what JSON.parse accepts.
        let base = Array(#"{"custom_id":"a\u00e9\n","method":"POST","url":"/v1/completions","body":{"p":[1,-2.5e+3,true,false,null,"\ud83d\ude00 é"],"o":{}}}"#.utf8)
        let alphabet: [UInt8] = Array(#"{}[]",:\-+.eE0123456789 truefalsnul"#.utf8) + [0x00, 0x1F, 0x80, 0xC3, 0xA9, 0xED, 0xA0, 0xF4, 0x90, 0xFF]
        var generator = SystemRandomNumberGenerator()
        var checked = 0
        for _ in 0..<20_000 {
            var line = base
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                let position = Int.random(in: 0..<line.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: line[position] = alphabet.randomElement(using: &generator)!
                case 1: line.remove(at: position)
                default: line.insert(alphabet.randomElement(using: &generator)!, at: position)
                }
                if line.isEmpty { line = base }
            }
            let parsed = (try? JSON.parse(line)) != nil
            let scanned = line.withUnsafeBufferPointer { buffer -> Bool in
                var scanner = Scanner(bytes: buffer)
                return scanner.scanTopLevel() != nil
            }
            #expect(parsed == scanned, "\(String(decoding: line, as: UTF8.self))")
            if parsed != scanned { break }
            checked += 1
        }
        #expect(checked == 20_000)
        // Nesting: the limit is the parser's.
        for depth in [JSON.maximumDepth - 1, JSON.maximumDepth, JSON.maximumDepth + 1] {
            let body = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
            let line = Array(#"{"custom_id":"d","method":"POST","url":"/v1/completions","body":{"x":"#.utf8) + Array(body.utf8) + Array("}}".utf8)
            let parsed = (try? JSON.parse(line)) != nil
            let scanned = line.withUnsafeBufferPointer { buffer -> Bool in
                var scanner = Scanner(bytes: buffer)
                return scanner.scanTopLevel() != nil
            }
            #expect(parsed == scanned, "depth \(depth)")
        }
    }
}
