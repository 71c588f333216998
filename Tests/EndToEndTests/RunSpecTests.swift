import Foundation
import SluiceCore
import Testing

/// `sluice run SPEC`, `sluice cron print` and `sluice scheduler` through the built binary,
/// against scripts/fake-openai-server.py.
@Suite(.serialized) struct RunSpecTests {
    /// A spec over `scratch/inbox` with the fake server as engine.
    func writeSpec(_ scratch: Scratch, server: FakeServer?, name: String = "nightly", extra: String = "",
                   engine: String? = nil) throws -> String {
        let engineTable = engine ?? """
            [engine]
            kind = "openai"
            base_url = "\(server!.baseURL)"
            concurrency = 4
            """
        let path = scratch.path("jobs/\(name).toml")
        try FileManager.default.createDirectory(atPath: scratch.path("jobs"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: scratch.path("inbox"), withIntermediateDirectories: true)
        try """
            name = "\(name)"
            database = "../sluice.db"
            \(extra)

            [input]
            path = "../inbox/"
            settle = "0s"

            \(engineTable)

            [defaults]
            max_tokens = 7
            seed = 11

            [output]
            folder = "../out"
            name = "{stem}.results.jsonl"
            errors = "{stem}.errors.jsonl"
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The input with the spec's defaults merged in, as the server should receive it.
    func mergedCopy(of input: String, in scratch: Scratch) throws -> String {
        let merged = try readJSONLines(input).map { line -> String in
            var body = line["body"]!
            if body["max_tokens"] == nil { body = body.setting("max_tokens", to: .int(7)) }
            if body["seed"] == nil { body = body.setting("seed", to: .int(11)) }
            return line.setting("body", to: body).serialized
        }
        let path = scratch.path("merged-\(UUID().uuidString).jsonl")
        try (merged.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func outputs(_ scratch: Scratch) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: scratch.path("out"))) ?? []).sorted()
    }

    func modificationTime(_ path: String) throws -> Date {
        try FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as! Date
    }

    @Test func threeRunsOverOneInboxEnqueueAndExportEachFileOnce() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(scratch: scratch, children: children)
        let spec = try writeSpec(scratch, server: server)
        try writeBatchFile(scratch.path("inbox/a.jsonl"), count: 12, prefix: "a")
        // The lines carry their own max_tokens (which must win over the default) but no seed (the default's is added).
        try writeBatchFile(scratch.path("inbox/b.jsonl"), count: 8, prefix: "b") { $0 == 3 ? #","x_fake_status":400"# : "" }

        let first = try await sluice(["run", spec], in: scratch, children: children)
        #expect(first.status == 5, "a 400 answer is a failed request: \(first.stderr)")
        #expect(first.stderr.contains("2 new input file(s) enqueued") && first.stderr.contains("2 export(s) written"), "\(first.stderr)")
        #expect(outputs(scratch) == ["a.results.jsonl", "b.errors.jsonl", "b.results.jsonl"])
        let answersA = try await expectedAnswers(for: try mergedCopy(of: scratch.path("inbox/a.jsonl"), in: scratch),
                                                 scratch: scratch, children: children)
        try expectExportMatches(scratch.path("out/a.results.jsonl"), customIDs: (1...12).map { "a-\($0)" }, answers: answersA)
        let bLines = try readJSONLines(scratch.path("out/b.results.jsonl"))
        #expect(bLines.count == 8 && bLines[2]["response"]?["status_code"]?.intValue == 400)
        #expect(try readJSONLines(scratch.path("out/b.errors.jsonl")).map { $0["custom_id"]?.stringValue } == ["b-3"])
        let stamp = try modificationTime(scratch.path("out/a.results.jsonl"))

        for _ in 0..<2 {
            let again = try await sluice(["run", spec], in: scratch, children: children)
            #expect(again.status == 0, "\(again.stderr)")
            #expect(again.stderr.contains("0 new input file(s) enqueued, 2 known") && again.stderr.contains("0 export(s) written"),
                    "\(again.stderr)")
        }
        #expect(try modificationTime(scratch.path("out/a.results.jsonl")) == stamp)
        #expect(outputs(scratch) == ["a.results.jsonl", "b.errors.jsonl", "b.results.jsonl"])
        let jobs = try await sluice(["jobs", "--db", scratch.path("sluice.db")], in: scratch, children: children)
        #expect(jobs.stdout.split(separator: "\n").filter { $0.contains("nightly/") }.count == 2, "\(jobs.stdout)")
        // Every request reached the server exactly once.
        let perKey = Dictionary(grouping: server.loggedRequests(), by: { $0["key"]?.stringValue ?? "" })
        #expect(perKey.count == 20 && perKey.values.allSatisfy { $0.count == 1 })
    }

    @Test func secondRunExitsAtOnceWhileTheFirstWorks() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(["--delay", "0.1"], scratch: scratch, children: children)
        let spec = try writeSpec(scratch, server: server)
        try writeBatchFile(scratch.path("inbox/a.jsonl"), count: 80, prefix: "a")
        let first = try children.spawn(try sluiceBinary(), ["run", spec], stdout: scratch.path("first.out"), stderr: scratch.path("first.err"))
        try await waitUntil("the first run sends requests") { !server.loggedRequests().isEmpty }
        let second = try await sluice(["run", spec], in: scratch, children: children)
        #expect(second.status == 6, "\(second.stderr)")
        #expect(second.stderr.contains("another run of this spec is working"))
        #expect(try await waitForExit(first, seconds: 60) == 0)
        let perKey = Dictionary(grouping: server.loggedRequests(), by: { $0["key"]?.stringValue ?? "" })
        #expect(perKey.count == 80 && perKey.values.allSatisfy { $0.count == 1 })
        #expect(outputs(scratch) == ["a.results.jsonl"])
        #expect(try readJSONLines(scratch.path("out/a.results.jsonl")).count == 80)
    }

    @Test func joinedRunsShareTheWorkWithoutDoingItTwice() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(["--delay", "0.02"], scratch: scratch, children: children)
        let spec = try writeSpec(scratch, server: server, extra: "on_overlap = \"join\"")
        for name in ["a", "b", "c"] { try writeBatchFile(scratch.path("inbox/\(name).jsonl"), count: 30, prefix: name) }
        let binary = try sluiceBinary()
        let runs = try (0..<2).map { index in
            try children.spawn(binary, ["run", spec], stdout: scratch.path("run\(index).out"), stderr: scratch.path("run\(index).err"))
        }
        for run in runs {
            let status = try await waitForExit(run, seconds: 90)
            #expect(status == 0, "\((try? String(contentsOfFile: scratch.path("run0.err"), encoding: .utf8)) ?? "")")
        }
        let logged = server.loggedRequests()
        let perKey = Dictionary(grouping: logged, by: { $0["key"]?.stringValue ?? "" })
        #expect(perKey.count == 90 && perKey.values.allSatisfy { $0.count == 1 })
        #expect(logged.allSatisfy { $0["same_key_in_flight"]?.intValue == 1 })
        #expect(outputs(scratch) == ["a.results.jsonl", "b.results.jsonl", "c.results.jsonl"])
        let logs = try (0..<2).map { try String(contentsOfFile: scratch.path("run\($0).err"), encoding: .utf8) }
        let enqueued = logs.compactMap { $0.firstMatch(of: /(\d+) new input file\(s\) enqueued/).map { Int($0.1)! } }
        let exported = logs.compactMap { $0.firstMatch(of: /(\d+) export\(s\) written/).map { Int($0.1)! } }
        #expect(enqueued.reduce(0, +) == 3 && exported.reduce(0, +) == 3, "\(logs)")
        for name in ["a", "b", "c"] {
            #expect(try readJSONLines(scratch.path("out/\(name).results.jsonl")).count == 30)
        }
    }

    @Test func sigtermStopsARunThatTheNextRunFinishes() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(["--delay", "0.1"], scratch: scratch, children: children)
        let spec = try writeSpec(scratch, server: server, extra: "grace = \"5s\"")
        try writeBatchFile(scratch.path("inbox/a.jsonl"), count: 80, prefix: "a")
        let run = try children.spawn(try sluiceBinary(), ["run", spec], stdout: scratch.path("run.out"), stderr: scratch.path("run.err"))
        // From a thread of its own: a starved task could see the four requests only after the run ended.
        try await act(when: "the run sends requests", { server.loggedRequests().count >= 4 }, then: { run.send(SIGTERM) })
        #expect(try await waitForExit(run, seconds: 10) == 4)
        #expect(outputs(scratch).isEmpty)
        let next = try await sluice(["run", spec], in: scratch, children: children)
        #expect(next.status == 0, "\(next.stderr)")
        #expect(next.stderr.contains("0 new input file(s) enqueued, 1 known") && next.stderr.contains("1 export(s) written"))
        #expect(try readJSONLines(scratch.path("out/a.results.jsonl")).count == 80)
        let perKey = Dictionary(grouping: server.loggedRequests(), by: { $0["key"]?.stringValue ?? "" })
        #expect(perKey.count == 80)
    }

    @Test func badSpecsAreUsageErrorsNamingFieldAndLine() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let spec = scratch.path("bad.toml")
        try "name = \"x\"\nschedule = \"0 25 * * *\"\n[input]\npath = \"in/\"\n[output]\nfolder = \"o\"\n"
            .write(toFile: spec, atomically: true, encoding: .utf8)
        let result = try await sluice(["run", spec], in: scratch, children: children)
        #expect(result.status == 2)
        #expect(result.stderr.contains("bad.toml:2: schedule: cron expression \"0 25 * * *\": hour: 25 is out of range 0-23"),
                "\(result.stderr)")
        let missing = try await sluice(["run", scratch.path("nope.toml")], in: scratch, children: children)
        #expect(missing.status == 2 && missing.stderr.contains("nope.toml: cannot read the file"))
        #expect(!FileManager.default.fileExists(atPath: scratch.path("sluice.db")))
    }

    @Test func cronPrintWritesAbsoluteLockedLoggedLines() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        _ = try writeSpec(scratch, server: nil, extra: "schedule = \"*/5 1-3 * * mon-fri\"", engine: "")
        _ = try writeSpec(scratch, server: nil, name: "joined", extra: "schedule = \"@daily\"\non_overlap = \"join\"", engine: "")
        _ = try writeSpec(scratch, server: nil, name: "manual", engine: "")
        let result = try await sluice(["cron", "print", "--jobs", scratch.path("jobs")], in: scratch, children: children)
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        let binary = try sluiceBinary()
        let db = scratch.path("sluice.db")
        #expect(lines == [
            "@daily \(binary) run \(scratch.path("jobs/joined.toml")) --db \(db) >> \(db)-runs/joined/cron.log 2>&1",
            "*/5 1-3 * * mon-fri /usr/bin/flock -n -E 6 \(db)-runs/nightly/cron.lock \(binary) run \(scratch.path("jobs/nightly.toml")) --db \(db) >> \(db)-runs/nightly/cron.log 2>&1",
        ])
        #expect(FileManager.default.fileExists(atPath: db + "-runs/nightly"))
    }

    /// The scheduler fires a spec scheduled every minute, and stops cleanly on SIGTERM.
    @Test func schedulerFiresOnTheMinuteAndStopsOnSIGTERM() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(scratch: scratch, children: children)
        _ = try writeSpec(scratch, server: server, extra: "schedule = \"* * * * *\"")
        try writeBatchFile(scratch.path("inbox/a.jsonl"), count: 5, prefix: "a")
        let scheduler = try children.spawn(try sluiceBinary(), ["scheduler", "--jobs", scratch.path("jobs")],
                                           stdout: scratch.path("scheduler.out"), stderr: scratch.path("scheduler.err"))
        try await waitUntil("the scheduled run exported", seconds: 75) {
                (try? String(contentsOfFile: scratch.path("scheduler.err"), encoding: .utf8))?.contains("exited with status 0") == true
        }
        #expect(outputs(scratch) == ["a.results.jsonl"])
        kill(scheduler.processIdentifier, SIGTERM)
        #expect(try await waitForExit(scheduler, seconds: 20) == 0)
        let log = try String(contentsOfFile: scratch.path("scheduler.err"), encoding: .utf8)
        #expect(log.contains("next at") && log.contains("stopped"), "\(log)")
    }

    /// One small run on the built-in engine (the default model), when it is installed.
    @Test func builtinEngineRun() async throws {
        let model = FileManager.default.homeDirectoryForCurrentUser.path + "/.cache/sluice/models/gemma-3-270m-q4_k_m.gguf"
        guard FileManager.default.fileExists(atPath: model) else {
            Issue.record("the default model is not installed (scripts/fetch-model)")
            return
        }
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let spec = try writeSpec(scratch, server: nil, engine: "[engine]\nkind = \"builtin\"\nthreads = 2")
        try #"{"custom_id":"q","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"Say hi"}],"temperature":0}}"#
            .appending("\n").write(toFile: scratch.path("inbox/q.jsonl"), atomically: true, encoding: .utf8)
        let result = try await sluice(["run", spec], in: scratch, children: children, seconds: 180)
        #expect(result.status == 0, "\(result.stderr)")
        let lines = try readJSONLines(scratch.path("out/q.results.jsonl"))
        #expect(lines.count == 1)
        #expect(lines.first?["response"]?["status_code"]?.intValue == 200)
        // The default max_tokens = 7 was merged in and obeyed.
        #expect(lines.first?["response"]?["body"]?["usage"]?["completion_tokens"]?.intValue ?? 99 <= 7)
    }
}
