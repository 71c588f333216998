import Foundation
import SluiceCore
import SluiceTestSupport
import Testing

/// These tests run the built `sluice` binary as a user would, against scripts/fake-openai-server.py.
/// Serialized: they start several processes each and share two cores.
@Suite(.serialized) struct EndToEndTests {
    @Test func enqueueWorkExportAsAUser() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        // Every request's first attempt gets a 503: the worker must retry each once.
        let server = try await FakeServer(["--fail-first", "1", "--fail-status", "503", "--retry-after", "0"], scratch: scratch, children: children)
        let input = scratch.path("batch.jsonl"), db = scratch.path("sluice.db")
        // Request 7 is refused by the server with a 400: a final answer that goes to the errors file.
        try writeBatchFile(input, count: 30) { $0 == 7 ? #","x_fake_status":400"# : "" }

        let enqueue = try await sluice(["enqueue", input, "--db", db, "--name", "first"], in: scratch, children: children)
        #expect(enqueue.status == 0, "\(enqueue.stderr)")
        #expect(enqueue.stdout == "1\n")

        let work = try await sluice(["work", "--db", db, "--engine", "openai", "--base-url", server.baseURL,
                                     "--concurrency", "8", "--lease", "10"], in: scratch, children: children)
        #expect(work.status == 0, "\(work.stderr)")
        #expect(work.stderr.contains("started") && work.stderr.contains("no work left"))

        let output = scratch.path("out.jsonl"), errors = scratch.path("errors.jsonl")
        let export = try await sluice(["export", "first", "--db", db, "-o", output, "--errors", errors], in: scratch, children: children)
        #expect(export.status == 0, "\(export.stderr)")
        var answers = try await expectedAnswers(for: input, scratch: scratch, children: children)
        let lines = try readJSONLines(output)
        #expect(lines.count == 30)
        let refused = lines[6]
        #expect(refused["custom_id"]?.stringValue == "req-7")
        #expect(refused["response"]?["status_code"]?.intValue == 400)
        #expect(refused["response"]?["body"]?["error"]?["message"]?.stringValue == "forced status 400")
        let errorLines = try readJSONLines(errors)
        #expect(errorLines.map { $0["custom_id"]?.stringValue } == ["req-7"])
        // Everything else is the server's deterministic answer, in input order.
        let okPath = scratch.path("ok.jsonl")
        try lines.filter { $0["custom_id"]?.stringValue != "req-7" }.map(\.serialized).joined(separator: "\n")
            .write(toFile: okPath, atomically: true, encoding: .utf8)
        answers["req-7"] = nil
        try expectExportMatches(okPath, customIDs: (1...30).filter { $0 != 7 }.map { "req-\($0)" }, answers: answers)

        // Every request was sent exactly twice (a 503, then the answer), never twice at once.
        let logged = server.loggedRequests()
        let perKey = Dictionary(grouping: logged, by: { $0["key"]?.stringValue ?? "" })
        #expect(perKey.count == 30)
        #expect(perKey.filter { $0.key != "req-7" }.values.allSatisfy { $0.count == 2 })
        #expect(logged.allSatisfy { $0["same_key_in_flight"]?.intValue == 1 })

        let counts = try await jobCounts("1", db: db, scratch: scratch, children: children)
        #expect(counts["done"]?.intValue == 30 && counts["queued"]?.intValue == 0 && counts["leased"]?.intValue == 0)

        // Nothing left: exit status 3.
        let again = try await sluice(["work", "--db", db, "--engine", "openai", "--base-url", server.baseURL], in: scratch, children: children)
        #expect(again.status == 3, "\(again.stderr)")
        let jobs = try await sluice(["jobs", "--db", db], in: scratch, children: children)
        #expect(jobs.status == 0 && jobs.stdout.contains("first"))
        let status = try await sluice(["status", "--db", db], in: scratch, children: children)
        #expect(status.status == 0 && status.stdout.contains("30 done"))
    }

    @Test func fourWorkersShareTwoThousandRequests() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(["--delay", "0.002"], scratch: scratch, children: children)
        let input = scratch.path("batch.jsonl"), db = scratch.path("sluice.db")
        try writeBatchFile(input, count: 2000)
        let enqueue = try await sluice(["enqueue", input, "--db", db], in: scratch, children: children)
        #expect(enqueue.status == 0, "\(enqueue.stderr)")

        let binary = try sluiceBinary()
        var workers: [ChildProcess] = []
        for index in 0..<4 {
            workers.append(try children.spawn(binary, ["work", "--db", db, "--engine", "openai", "--base-url", server.baseURL,
                                                       "--concurrency", "8", "--lease", "30"],
                                              stdout: scratch.path("w\(index).out"), stderr: scratch.path("w\(index).err")))
        }
        for (index, worker) in workers.enumerated() {
            let status = try await waitForExit(worker, seconds: 180)
            let log = (try? String(contentsOfFile: scratch.path("w\(index).err"), encoding: .utf8)) ?? ""
            #expect(status == 0, "worker \(index) exit \(String(describing: status)): \(log.suffix(2000))")
        }

        let output = scratch.path("out.jsonl")
        let export = try await sluice(["export", "1", "--db", db, "-o", output], in: scratch, children: children)
        #expect(export.status == 0, "\(export.stderr)")
        let answers = try await expectedAnswers(for: input, scratch: scratch, children: children)
        try expectExportMatches(output, customIDs: (1...2000).map { "req-\($0)" }, answers: answers)

        let logged = server.loggedRequests()
        let perKey = Dictionary(grouping: logged, by: { $0["key"]?.stringValue ?? "" })
        #expect(perKey.count == 2000)
        // No request was ever in flight twice at once, and each was answered 200 exactly once.
        #expect(logged.allSatisfy { $0["same_key_in_flight"]?.intValue == 1 })
        #expect(perKey.values.allSatisfy { $0.filter { $0["outcome"]?.stringValue == "200" }.count == 1 })
        // All four took part.
        let workersWithResults = (0..<4).filter { index in
            let log = (try? String(contentsOfFile: scratch.path("w\(index).err"), encoding: .utf8)) ?? ""
            return !log.contains("stopped (no work left): 0 results")
        }
        #expect(workersWithResults.count >= 2, "the work was not shared")
        let counts = try await jobCounts("1", db: db, scratch: scratch, children: children)
        #expect(counts["done"]?.intValue == 2000)
    }

    @Test func twentySigkillsThenOneMoreWorkerGiveTheUninterruptedExport() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(["--delay", "0.02"], scratch: scratch, children: children)
        let input = scratch.path("batch.jsonl"), db = scratch.path("killed.db"), referenceDB = scratch.path("reference.db")
        let count = 1500
        try writeBatchFile(input, count: count)
        for database in [db, referenceDB] {
            let enqueue = try await sluice(["enqueue", input, "--db", database], in: scratch, children: children)
            #expect(enqueue.status == 0, "\(enqueue.stderr)")
        }
        // A remote engine leaves no partial output, so each kill costs the requests in flight a lease
        // lost without progress; twenty kills in a row would reach --max-lost-leases (worker_lost) for
        // the requests at the head of the queue. This test is about exact resumption: lift the limit.
        let workArguments = ["work", "--engine", "openai", "--base-url", server.baseURL, "--concurrency", "8", "--lease", "2",
                             "--max-lost-leases", "1000", "--quiet"]
        let binary = try sluiceBinary()
        var random = SplitMix64(seed: 20_261_127)
        for round in 0..<20 {
            let before = try server.stats()["received"]?.intValue ?? 0
            // Kill after a random number of requests reached the server: 0 is right after start,
            // 120 is well past the first commits (one every ~150 ms).
            let target = Int.random(in: 0...120, using: &random)
            let worker = try children.spawn(binary, workArguments + ["--db", db],
                                            stdout: scratch.path("k\(round).out"), stderr: scratch.path("k\(round).err"))
            let pid = worker.processIdentifier
            do {
                try await act(when: "round \(round): \(target) requests sent", seconds: 30, {
                    try (server.stats()["received"]?.intValue ?? 0) >= before + target || !worker.isRunning
                }, then: { kill(pid, SIGKILL) })
            } catch {
                Issue.record("round \(round): \(error)")
                throw error
            }
            worker.waitUntilExit()
        }
        // The kills landed mid-job: some results were committed, some work was left.
        let midway = try await jobCounts("1", db: db, scratch: scratch, children: children)
        #expect((midway["done"]?.intValue ?? 0) > 0 && (midway["done"]?.intValue ?? count) < count, "counts after the kills: \(midway.serialized)")
        let last = try await sluice(workArguments + ["--db", db], in: scratch, children: children, seconds: 120)
        #expect(last.status == 0, "\(last.stderr)")

        let reference = try await sluice(workArguments + ["--db", referenceDB], in: scratch, children: children, seconds: 120)
        #expect(reference.status == 0, "\(reference.stderr)")

        let output = scratch.path("killed.jsonl"), referenceOutput = scratch.path("reference.jsonl")
        for (database, path) in [(db, output), (referenceDB, referenceOutput)] {
            let export = try await sluice(["export", "1", "--db", database, "-o", path], in: scratch, children: children)
            #expect(export.status == 0, "\(export.stderr)")
        }
        let answers = try await expectedAnswers(for: input, scratch: scratch, children: children)
        try expectExportMatches(output, customIDs: (1...count).map { "req-\($0)" }, answers: answers)
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == Data(contentsOf: URL(fileURLWithPath: referenceOutput)),
                "the export after 20 SIGKILLs differs from the uninterrupted run's")
        let counts = try await jobCounts("1", db: db, scratch: scratch, children: children)
        #expect(counts["done"]?.intValue == count && counts["failed"]?.intValue == 0)
    }

    @Test func sigtermWith64InFlightExitsZeroWithinGraceAndLosesNothing() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(["--stall"], scratch: scratch, children: children)
        let input = scratch.path("batch.jsonl"), db = scratch.path("sluice.db")
        try writeBatchFile(input, count: 100)
        let enqueue = try await sluice(["enqueue", input, "--db", db], in: scratch, children: children)
        #expect(enqueue.status == 0, "\(enqueue.stderr)")

        // The worker plans to be out by grace - grace/8; the rest is slack for a loaded machine.
        let grace = 8.0
        let worker = try children.spawn(try sluiceBinary(), ["work", "--db", db, "--engine", "openai", "--base-url", server.baseURL,
                                                             "--concurrency", "64", "--lease", "30", "--grace", "\(grace)"],
                                        stdout: scratch.path("w.out"), stderr: scratch.path("w.err"))
        try await waitUntil("64 requests in flight at the server") { try server.stats()["in_flight"]?.intValue == 64 }
        let signalled = ContinuousClock.now
        kill(worker.processIdentifier, SIGTERM)
        let status = try await waitForExit(worker, seconds: grace + 5)
        let took = ContinuousClock.now - signalled
        let log = (try? String(contentsOfFile: scratch.path("w.err"), encoding: .utf8)) ?? ""
        #expect(status == 0, "exit status \(String(describing: status)): \(log)")
        #expect(took < .seconds(grace), "took \(took) to exit after SIGTERM with --grace \(grace)")
        #expect(log.contains("SIGTERM") && log.contains("draining"))

        // Nothing lost, nothing counted as failed, nothing still leased.
        let counts = try await jobCounts("1", db: db, scratch: scratch, children: children)
        #expect(counts["queued"]?.intValue == 100 && counts["leased"]?.intValue == 0 && counts["failed"]?.intValue == 0)

        try server.control(.object(["stall": .bool(false)]))
        let next = try await sluice(["work", "--db", db, "--engine", "openai", "--base-url", server.baseURL, "--concurrency", "16"],
                                    in: scratch, children: children)
        #expect(next.status == 0, "\(next.stderr)")
        let output = scratch.path("out.jsonl")
        let export = try await sluice(["export", "1", "--db", db, "-o", output], in: scratch, children: children)
        #expect(export.status == 0, "\(export.stderr)")
        let answers = try await expectedAnswers(for: input, scratch: scratch, children: children)
        try expectExportMatches(output, customIDs: (1...100).map { "req-\($0)" }, answers: answers)
    }

    @Test func aSecondSigintExitsAtOnceAndHandsLeasesBack() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(["--stall"], scratch: scratch, children: children)
        let input = scratch.path("batch.jsonl"), db = scratch.path("sluice.db")
        try writeBatchFile(input, count: 20)
        _ = try await sluice(["enqueue", input, "--db", db], in: scratch, children: children)
        let worker = try children.spawn(try sluiceBinary(), ["work", "--db", db, "--engine", "openai", "--base-url", server.baseURL,
                                                             "--concurrency", "8", "--lease", "60", "--grace", "60"],
                                        stdout: scratch.path("w.out"), stderr: scratch.path("w.err"))
        try await waitUntil("8 requests in flight") { try server.stats()["in_flight"]?.intValue == 8 }
        kill(worker.processIdentifier, SIGINT)
        try await waitUntil("the worker logs that it is draining") {
            ((try? String(contentsOfFile: scratch.path("w.err"), encoding: .utf8)) ?? "").contains("draining")
        }
        kill(worker.processIdentifier, SIGINT)
        let status = try await waitForExit(worker, seconds: 10)
        #expect(status == 130)
        // The leases went back at once: a new worker need not wait 60 s for them to expire.
        let counts = try await jobCounts("1", db: db, scratch: scratch, children: children)
        #expect(counts["leased"]?.intValue == 0 && counts["queued"]?.intValue == 20 && counts["failed"]?.intValue == 0)
    }

    @Test func maxRuntimeExitsFourWithWorkLeft() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(["--delay", "0.2"], scratch: scratch, children: children)
        let input = scratch.path("batch.jsonl"), db = scratch.path("sluice.db")
        try writeBatchFile(input, count: 200)
        _ = try await sluice(["enqueue", input, "--db", db], in: scratch, children: children)
        let work = try await sluice(["work", "--db", db, "--engine", "openai", "--base-url", server.baseURL, "--concurrency", "4",
                                     "--max-runtime", "1", "--grace", "2"], in: scratch, children: children)
        #expect(work.status == 4, "\(work.stderr)")
        let counts = try await jobCounts("1", db: db, scratch: scratch, children: children)
        #expect((counts["done"]?.intValue ?? 0) > 0 && (counts["queued"]?.intValue ?? 0) > 0 && counts["leased"]?.intValue == 0)
    }

    @Test func usageErrorsAndMissingThingsAreClearMessages() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let db = scratch.path("sluice.db")
        let missingDB = try await sluice(["status", "--db", db], in: scratch, children: children)
        #expect(missingDB.status == 1 && missingDB.stderr.hasPrefix("sluice: error: no database at \(db)"))
        let badFlag = try await sluice(["work", "--lease", "0"], in: scratch, children: children)
        #expect(badFlag.status == 2 && badFlag.stderr.contains("--lease"))
        let noFile = try await sluice(["enqueue", scratch.path("absent.jsonl"), "--db", db], in: scratch, children: children)
        #expect(noFile.status == 1 && noFile.stderr.contains("absent.jsonl"))
        let input = scratch.path("one.jsonl")
        try writeBatchFile(input, count: 1)
        _ = try await sluice(["enqueue", input, "--db", db], in: scratch, children: children)
        let noBaseURL = try await sluice(["work", "--db", db, "--engine", "openai"], in: scratch, children: children,
                                         environment: ["SLUICE_BASE_URL": ""])
        #expect(noBaseURL.status == 2 && noBaseURL.stderr.contains("--base-url"))
        let noJob = try await sluice(["export", "42", "--db", db, "-o", scratch.path("x.jsonl")], in: scratch, children: children)
        #expect(noJob.status == 1 && noJob.stderr.contains("no job 42"))
        let help = try await sluice(["work", "--help"], in: scratch, children: children)
        #expect(help.status == 0 && help.stdout.contains("Exit status"))
        for result in [missingDB, badFlag, noFile, noBaseURL, noJob] {
            #expect(!result.stderr.contains("Fatal error") && !result.stderr.contains("Stack dump"))
        }
    }
}
