import Foundation
import SluiceCore
import SluiceTestSupport
import Testing

/// The command line's conveniences for operators, through the built binary: --version, --json
/// summaries, durations with units, `-` for standard input and output, --db before the command,
/// options of the other engine refused, dated log lines, --metrics-host, and a notice URL without
/// its endpoint's path.
@Suite(.serialized) struct OperatorOptionsTests {
    /// Runs `sluice` with `input` written to its standard input through a pipe.
    static func sluiceWithInput(_ arguments: [String], stdin input: Data, in scratch: Scratch, children: Children) async throws -> CommandResult {
        let id = UUID().uuidString
        let out = scratch.path("stdin-\(id).out"), err = scratch.path("stdin-\(id).err")
        let pipe = try closeOnExecPipe()
        let process = try ChildProcess(executable: try sluiceBinary(), arguments: arguments, standardInput: .descriptor(pipe.read.fileDescriptor),
                                       standardOutput: .file(out), standardError: .file(err))
        try pipe.read.close()
        try pipe.write.write(contentsOf: input)
        try pipe.write.close()
        guard let status = try await waitForExit(process, seconds: 120) else {
            process.send(SIGKILL)
            process.waitUntilExit()
            throw EndToEndError.timeout("sluice \(arguments.first ?? "") with standard input")
        }
        return CommandResult(status: status, stdout: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
                             stderr: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
    }

    @Test func versionPrintsTheVersion() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let result = try await sluice(["--version"], in: scratch, children: children)
        #expect(result.status == 0)
        // The number first; other branches may add build details after it.
        #expect(result.stdout.prefixMatch(of: /sluice \d+\.\d+\.\d+/) != nil, "\(result.stdout)")
    }

    /// enqueue - reads a pipe, --db comes before the command, every summary has --json, export -o -
    /// writes to standard output the same bytes as to a file, and the worker's log lines carry the date.
    @Test func pipesJSONSummariesAndLeadingDatabaseOption() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(scratch: scratch, children: children)
        let db = scratch.path("ops.db"), input = scratch.path("in.jsonl")
        try writeBatchFile(input, count: 6)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: input))

        let enqueue = try await Self.sluiceWithInput(["--db", db, "enqueue", "-", "--name", "piped", "--json"],
                                            stdin: bytes, in: scratch, children: children)
        #expect(enqueue.status == 0, "\(enqueue.stderr)")
        let summary = try JSON.parse(enqueue.stdout)
        #expect(summary["job"]?.intValue == 1)
        #expect(summary["accepted"]?.intValue == 6)
        #expect(summary["bad_lines"]?.intValue == 0)
        #expect(summary["name"]?.stringValue == "piped")

        let jobs = try await sluice(["--db=\(db)", "jobs", "--json"], in: scratch, children: children)
        #expect(jobs.status == 0, "\(jobs.stderr)")
        let list = try #require(try JSON.parse(jobs.stdout).arrayValue)
        #expect(list.count == 1)
        #expect(list.first?["name"]?.stringValue == "piped")
        #expect(list.first?["requests"]?.intValue == 6)
        #expect(list.first?["state"]?.stringValue == "active")

        let work = try await sluice(["--db", db, "work", "--engine", "openai", "--base-url", server.baseURL,
                                     "--lease", "1m30s", "--grace", "10s", "--max-runtime", "2h", "--request-timeout", "1m",
                                     "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--no-progress"],
                                    in: scratch, children: children)
        #expect(work.status == 0, "\(work.stderr)")
        #expect(work.stderr.contains("metrics: serving http://127.0.0.1:"), "\(work.stderr)")
        let logLines = work.stderr.split(separator: "\n").filter { !$0.hasPrefix("sluice") }
        #expect(!logLines.isEmpty)
        for line in logLines {
            #expect(line.prefixMatch(of: #/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z /#) != nil, "log line without a date: \(line)")
        }

        let listedAfter = try await sluice(["--db", db, "jobs", "--json"], in: scratch, children: children)
        #expect(try JSON.parse(listedAfter.stdout).arrayValue?.first?["state"]?.stringValue == "finished", "as `status` says")
        // Cancelling a finished job changes nothing (it would read as cancelled with nothing left undone).
        let cancelled = try await sluice(["--db", db, "cancel", "piped"], in: scratch, children: children)
        #expect(cancelled.status == 0 && cancelled.stderr.contains("already finished"), "\(cancelled.stderr)")
        let status = try await sluice(["--db", db, "status", "piped", "--json"], in: scratch, children: children)
        #expect(status.stdout.contains(#""state":"finished""#), "\(status.stdout)")

        let toFile = try await sluice(["export", "piped", "--db", db, "-o", scratch.path("out.jsonl"), "--json"],
                                      in: scratch, children: children)
        #expect(toFile.status == 0, "\(toFile.stderr)")
        let exported = try JSON.parse(toFile.stdout)
        #expect(exported["written"]?.intValue == 6)
        #expect(exported["succeeded"]?.intValue == 6)
        #expect(exported["unfinished"]?.intValue == 0)

        let toStdout = try await sluice(["--db", db, "export", "piped", "-o", "-"], in: scratch, children: children)
        #expect(toStdout.status == 0, "\(toStdout.stderr)")
        #expect(toStdout.stdout == (try String(contentsOfFile: scratch.path("out.jsonl"), encoding: .utf8)))
        #expect(toStdout.stdout.split(separator: "\n").count == 6)
        #expect(toStdout.stderr.contains("wrote 6 lines to standard output"), "\(toStdout.stderr)")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: FileManager.default.temporaryDirectory.path)
            .filter { $0.hasPrefix("sluice-export-") }
        #expect(leftovers.isEmpty, "the staged export was left behind: \(leftovers)")
    }

    @Test func modelsListsTheCacheAsJSON() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let cache = scratch.path("models")
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        let tiny = repositoryRoot.appendingPathComponent("Tests/SluiceEngineTests/Fixtures/tiny/llama-spm-f32.gguf").path
        try FileManager.default.copyItem(atPath: tiny, toPath: cache + "/tiny.gguf")
        let result = try await sluice(["models", "--details", "--json"], in: scratch, children: children,
                                      environment: ["SLUICE_MODEL_CACHE": cache])
        #expect(result.status == 0, "\(result.stderr)")
        let listing = try JSON.parse(result.stdout)
        #expect(listing["cache"]?.stringValue == cache)
        let model = try #require(listing["models"]?.arrayValue?.first)
        #expect(model["name"]?.stringValue == "tiny.gguf")
        #expect(model["default"]?.boolValue == false)
        #expect(model["architecture"]?.stringValue == "llama")
        #expect((model["tensors"]?.intValue ?? 0) > 0)
    }

    /// Usage errors (exit 2) that name the option and say what is wrong, before anything runs.
    @Test(arguments: [
        (["work", "--lease", "10x"], "unknown unit \"x\""),
        (["work", "--grace", "99999d"], "longer than the maximum"),
        (["work", "--max-runtime=-5"], "not a duration"),
        (["status", "--watch", "--interval", "soon"], "not a duration"),
        (["work", "--engine", "builtin", "--base-url", "http://127.0.0.1:1"], "--base-url is an option of --engine openai"),
        (["work", "--api-key-env", "KEY"], "--api-key-env is an option of --engine openai"),
        (["work", "--engine", "openai", "--base-url", "http://127.0.0.1:1", "--threads", "2", "--precision", "int8"],
         "--threads, --precision are options of --engine builtin"),
        (["work", "--preemption-notice", "http://127.0.0.1:1", "--preemption-style", "aws"],
         "http://127.0.0.1:1/latest/meta-data/spot/instance-action"),
        (["work", "--preemption-notice", "http://127.0.0.1:1/"], "/computeMetadata/v1/instance/preempted"),
        (["work", "--metrics-host", "0.0.0.0"], "--metrics-host needs --metrics-port"),
        (["work", "--metrics-host", "example.com", "--metrics-port", "0"], "must be an IPv4 address"),
        (["export", "1", "-o", "-", "--errors", "-"], "cannot both write to standard output"),
        (["work", "--precision", "fp8"], "'auto', 'f32', 'int16' or 'int8'"),
    ])
    func refusesWithAClearMessage(_ arguments: [String], _ message: String) async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let result = try await sluice(arguments + ["--db", scratch.path("none.db")], in: scratch, children: children)
        #expect(result.status == 2, "\(arguments): \(result.stderr)")
        #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
    }

    /// Durations with units (and `--precision auto`) get past validation: a worker with no database has nothing to do (exit 3).
    @Test func durationsWithUnitsAreAccepted() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let result = try await sluice(["--db", scratch.path("none.db"), "work", "--lease", "90s", "--grace", "1m30s",
                                       "--max-runtime", "2h", "--checkpoint-interval", "250ms", "--progress-interval", "1m",
                                       "--metrics-interval", "5", "--preemption-poll", "0.5", "--precision", "auto"],
                                      in: scratch, children: children)
        #expect(result.status == 3, "\(result.stderr)")
        #expect(result.stderr.contains("nothing to do"), "\(result.stderr)")
    }

    /// `db copy` onto itself is refused by name, and a job FROM lacks leaves no TO behind.
    @Test func dbCopyRefusesItselfAndUnknownJobsBeforeCreatingAnything() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let db = scratch.path("q.db"), input = scratch.path("in.jsonl")
        try writeBatchFile(input, count: 2)
        #expect(try await sluice(["--db", db, "enqueue", input], in: scratch, children: children).status == 0)
        let itself = try await sluice(["db", "copy", db, scratch.path("./q.db")], in: scratch, children: children)
        #expect(itself.status == 1 && itself.stderr.contains("are the same database"), "\(itself.stderr)")
        let target = scratch.path("to.db")
        let unknown = try await sluice(["db", "copy", db, target, "--job", "nosuch"], in: scratch, children: children)
        #expect(unknown.status != 0 && unknown.stderr.contains("nosuch"), "\(unknown.stderr)")
        #expect(!FileManager.default.fileExists(atPath: target))
    }
}
