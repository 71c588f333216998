import Foundation
import SluiceCore
import Testing

/// The bad-input corpus through the binary. Documented outcomes (README "Input files"):
/// by default a bad line is reported on stderr as "FILE: line N: reason" and stored as a failed request
/// (it appears in the errors export with `error.code` naming the reason) while good lines become the job;
/// `--strict` rejects the whole file (exit 1, nothing created); an empty file is an error (exit 1).
@Suite(.serialized) struct BadInputTests {
    static func good(_ id: String, _ text: String) -> String {
        #"{"custom_id":"\#(id)","method":"POST","url":"/v1/chat/completions","body":{"model":"gemma-3-270m","messages":[{"role":"user","content":"\#(text)"}],"max_tokens":32}}"#
    }

    /// Line number → the error code the export must carry for it (nil: a good line or a blank line).
    static let badLines: [Int: String] = [
        2: "not_json", 3: "not_object", 4: "missing_custom_id", 5: "empty_custom_id", 6: "duplicate_custom_id",
        7: "unsupported_method", 8: "unsupported_url", 9: "body_not_object", 10: "invalid_utf8", 13: "line_too_long",
    ]

    /// The corpus: every reason, a blank line, CRLF endings, a 10 MB line, and a last line without a newline.
    static func corpus() -> (bytes: [UInt8], goodLines: [String]) {
        let g1 = good("g1", "first"), g2 = good("g2", "second"), g3 = good("g3", "third")
        var bytes: [UInt8] = []
        func line(_ text: String, ending: String = "\n") { bytes += Array(text.utf8) + Array(ending.utf8) }
        line(g1)                                                                                     // 1
        line("this is not json")                                                                     // 2
        line("[1,2,3]")                                                                              // 3
        line(#"{"method":"POST","url":"/v1/completions","body":{"prompt":"x"}}"#)                    // 4
        line(#"{"custom_id":"","method":"POST","url":"/v1/completions","body":{"prompt":"x"}}"#)     // 5
        line(#"{"custom_id":"g1","method":"POST","url":"/v1/completions","body":{"prompt":"x"}}"#)   // 6
        line(#"{"custom_id":"m","method":"GET","url":"/v1/completions","body":{"prompt":"x"}}"#)     // 7
        line(#"{"custom_id":"u","method":"POST","url":"/v1/images/generations","body":{"input":"x"}}"#)      // 8
        line(#"{"custom_id":"b","method":"POST","url":"/v1/completions","body":"hello"}"#)           // 9
        bytes += Array(#"{"custom_id":"bad-"#.utf8) + [0xFF, 0xFE] + Array(#"","method":"POST","url":"/v1/completions","body":{}}"#.utf8) + [0x0A] // 10
        line("")                                                                                     // 11 (blank)
        line(g2, ending: "\r\n")                                                                     // 12
        line(#"{"custom_id":"huge","method":"POST","url":"/v1/completions","body":{"prompt":""# + String(repeating: "a", count: 10 << 20) + #""}}"#) // 13
        line(g3, ending: "")                                                                         // 14, no newline
        return (bytes, [g1, g2, g3])
    }

    @Test func everyBadLineIsReportedAndGoodLinesAreNeverLost() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(scratch: scratch, children: children)
        let (bytes, goodLines) = Self.corpus()
        let input = scratch.path("corpus.jsonl"), db = scratch.path("sluice.db")
        try Data(bytes).write(to: URL(fileURLWithPath: input))

        let enqueue = try await sluice(["enqueue", input, "--db", db], in: scratch, children: children)
        #expect(enqueue.status == 0, "\(enqueue.stderr)")
        #expect(enqueue.stdout == "1\n")
        for number in 1...14 {
            let reported = enqueue.stderr.contains("corpus.jsonl: line \(number): ")
            #expect(reported == (Self.badLines[number] != nil), "line \(number) reported: \(reported)\n\(enqueue.stderr)")
        }
        #expect(!enqueue.stderr.contains(String(repeating: "a", count: 1000)), "a 10 MB line must not be echoed")

        let work = try await sluice(["work", "--db", db, "--engine", "openai", "--base-url", server.baseURL], in: scratch, children: children)
        #expect(work.status == 0, "\(work.stderr)")
        let output = scratch.path("out.jsonl"), errors = scratch.path("errors.jsonl")
        let export = try await sluice(["export", "1", "--db", db, "-o", output, "--errors", errors], in: scratch, children: children)
        #expect(export.status == 0, "\(export.stderr)")

        let lines = try readJSONLines(output)
        #expect(lines.count == 13, "one output line per non-blank input line")
        let errorLines = try readJSONLines(errors)
        #expect(errorLines.count == Self.badLines.count)
        #expect(errorLines.compactMap { $0["error"]?["code"]?.stringValue } == Self.badLines.keys.sorted().map { Self.badLines[$0]! })
        #expect(errorLines.allSatisfy { $0["response"] == .null && ($0["error"]?["message"]?.stringValue?.isEmpty == false) })

        // The three good lines (one with CRLF, one without a final newline) got the server's answers.
        let goodFile = scratch.path("good.jsonl")
        try goodLines.map { $0 + "\n" }.joined().write(toFile: goodFile, atomically: true, encoding: .utf8)
        let answers = try await expectedAnswers(for: goodFile, scratch: scratch, children: children)
        let succeeded = lines.filter { $0["response"]?["status_code"]?.intValue == 200 }
        #expect(succeeded.map { $0["custom_id"]?.stringValue ?? "" } == ["g1", "g2", "g3"])
        for line in succeeded {
            #expect(line["response"]?["body"] == answers[line["custom_id"]?.stringValue ?? ""])
        }
    }

    @Test func strictRejectsTheWholeFileAndCreatesNothing() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let input = scratch.path("corpus.jsonl"), db = scratch.path("sluice.db")
        try Data(Self.corpus().bytes).write(to: URL(fileURLWithPath: input))
        let strict = try await sluice(["enqueue", input, "--db", db, "--strict"], in: scratch, children: children)
        #expect(strict.status == 1)
        #expect(strict.stdout.isEmpty)
        #expect(strict.stderr.contains("line 2: ") && strict.stderr.contains("created nothing"))
        let jobs = try await sluice(["jobs", "--db", db], in: scratch, children: children)
        #expect(jobs.status == 0 && jobs.stdout.contains("no jobs"))
    }

    @Test func emptyFilesAreErrors() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let db = scratch.path("sluice.db")
        for (name, content) in [("empty.jsonl", ""), ("blank.jsonl", "\n  \n\r\n")] {
            let input = scratch.path(name)
            try content.write(toFile: input, atomically: true, encoding: .utf8)
            let result = try await sluice(["enqueue", input, "--db", db], in: scratch, children: children)
            #expect(result.status == 1, "\(name): \(result.stderr)")
            #expect(result.stderr.hasPrefix("sluice: error: ") && result.stderr.contains("holds no requests"), "\(name): \(result.stderr)")
        }
    }

    @Test func theSameFileTwiceIsNoticed() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let input = scratch.path("batch.jsonl"), db = scratch.path("sluice.db")
        try writeBatchFile(input, count: 5)
        let first = try await sluice(["enqueue", input, "--db", db], in: scratch, children: children)
        #expect(first.status == 0 && first.stdout == "1\n")
        let second = try await sluice(["enqueue", input, "--db", db], in: scratch, children: children)
        #expect(second.status == 1 && second.stderr.contains("same content") && second.stderr.contains("--allow-duplicate"))
        let forced = try await sluice(["enqueue", input, "--db", db, "--allow-duplicate"], in: scratch, children: children)
        #expect(forced.status == 0 && forced.stdout == "2\n", "\(forced.stderr)")
    }
}
