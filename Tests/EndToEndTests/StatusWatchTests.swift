import Foundation
import SluiceCore
import Testing

/// `sluice status --watch` through the built binary.
@Suite(.serialized) struct StatusWatchTests {
    @Test func watchFollowsProgressFromTheStoreUntilFinished() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(["--delay", "0.05"], scratch: scratch, children: children)
        let input = scratch.path("batch.jsonl"), db = scratch.path("sluice.db")
        try writeBatchFile(input, count: 40)
        #expect(try await sluice(["enqueue", input, "--db", db], in: scratch, children: children).status == 0)
        let binary = try sluiceBinary()
        let watcher = try children.spawn(binary, ["status", "--db", db, "--watch", "--interval", "0.2", "--json"],
                                         stdout: scratch.path("watch.out"), stderr: scratch.path("watch.err"))
        let work = try await sluice(["work", "--db", db, "--engine", "openai", "--base-url", server.baseURL, "--concurrency", "2"],
                                    in: scratch, children: children)
        #expect(work.status == 0, "\(work.stderr)")
        #expect(try await waitForExit(watcher, seconds: 30) == 0)
        let samples = try readJSONLines(scratch.path("watch.out")).map { $0.arrayValue?.first }
        let done = samples.map { $0?["counts"]?["done"]?.intValue ?? -1 }
        #expect(samples.count >= 3, "\(done)")
        #expect(done == done.sorted(), "progress went backwards: \(done)")
        #expect(done.contains { $0 > 0 && $0 < 40 }, "no sample while the work was under way: \(done)")
        #expect(done.last == 40 && samples.last??["finished"]?.boolValue == true)
    }

    @Test func watchStopsOnSIGTERM() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let input = scratch.path("batch.jsonl"), db = scratch.path("sluice.db")
        try writeBatchFile(input, count: 3)
        #expect(try await sluice(["enqueue", input, "--db", db, "--name", "waiting"], in: scratch, children: children).status == 0)
        let watcher = try children.spawn(try sluiceBinary(), ["status", "waiting", "--db", db, "--watch", "--interval", "0.2"],
                                         stdout: scratch.path("watch.out"), stderr: scratch.path("watch.err"))
        try await waitUntil("two updates were printed") {
            ((try? String(contentsOfFile: scratch.path("watch.out"), encoding: .utf8)) ?? "")
                .components(separatedBy: "Ctrl-C to stop").count >= 3
        }
        kill(watcher.processIdentifier, SIGTERM)
        #expect(try await waitForExit(watcher, seconds: 10) == 0)
        let text = try String(contentsOfFile: scratch.path("watch.out"), encoding: .utf8)
        #expect(text.contains("job 1 \"waiting\"") && text.contains("3 queued") && !text.contains("\u{1B}["))
    }
}
