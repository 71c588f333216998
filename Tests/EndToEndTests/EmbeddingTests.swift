import Foundation
import SluiceCore
import SluiceTestSupport
import Testing

/// `/v1/embeddings` lines through the built binary and the built-in engine: accepted at enqueue,
/// answered in OpenAI's shape, and exported byte for byte the same whatever the batch size, the
/// thread count, the result cache and SIGKILLs part way through a long input list.
@Suite(.serialized) struct EmbeddingTests {
    static func job() -> String {
        func line(_ id: String, _ body: String) -> String {
            #"{"custom_id":"\#(id)","method":"POST","url":"/v1/embeddings","body":\#(body)}"# + "\n"
        }
        let words = ["river", "mountain", "Zürich", "東京", "coffee", "théorème", "Москва", "cloud", "¿qué?", "data"]
        let long = (0..<600).map { i in
            JSON.string("Passage \(i): \(words[i % 10]) \(words[(i * 7) % 10]) and \(words[(i * 3) % 10]), " + String(repeating: "more text ", count: i % 40))
        }
        return line("one", #"{"input":"The quick brown fox jumps over the lazy dog."}"#)
            + line("list", #"{"input":["Bonjour le monde","Hallo Welt","你好世界"],"model":"all-minilm-l6-v2","user":"u"}"#)
            + line("long-list", JSON.object(["input": .array(long)]).serialized)
            + line("tokens", #"{"input":[[101,7592,2088,102],[101,102]],"encoding_format":"base64"}"#)
            + line("bad-dimensions", #"{"input":"x","dimensions":64}"#)
            // The same body as "one" in another key order: answered from the cache.
            + line("one-again", #"{"input":"The quick brown fox jumps over the lazy dog."}"#)
    }

    static func embeddingModelInstalled() -> Bool {
        let environment = ProcessInfo.processInfo.environment
        let cache = environment["SLUICE_MODEL_CACHE"].flatMap { $0.isEmpty ? nil : $0 }
            ?? ((environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? ((environment["HOME"] ?? NSHomeDirectory()) + "/.cache")) + "/sluice/models")
        return FileManager.default.fileExists(atPath: cache + "/all-minilm-l6-v2/model.safetensors")
    }

    func enqueue(_ name: String, scratch: Scratch, children: Children) async throws -> String {
        let input = scratch.path("job.jsonl"), db = scratch.path("\(name).db")
        try Self.job().write(toFile: input, atomically: true, encoding: .utf8)
        let enqueue = try await sluice(["enqueue", input, "--db", db], in: scratch, children: children)
        #expect(enqueue.status == 0, "\(enqueue.stderr)")
        return db
    }

    func export(_ db: String, _ name: String, scratch: Scratch, children: Children) async throws -> Data {
        let output = scratch.path("\(name).jsonl")
        let export = try await sluice(["export", "1", "--db", db, "-o", output], in: scratch, children: children)
        #expect(export.status == 0, "\(export.stderr)")
        return try Data(contentsOf: URL(fileURLWithPath: output))
    }

    func run(_ arguments: [String], name: String, scratch: Scratch, children: Children) async throws -> Data {
        let db = try await enqueue(name, scratch: scratch, children: children)
        let work = try await sluice(["work", "--db", db, "--quiet"] + arguments, in: scratch, children: children,
                                  seconds: 600 * kernelTimeScale)
        #expect(work.status == 0, "\(name): \(work.stderr)")
        return try await export(db, name, scratch: scratch, children: children)
    }

    @Test func exportsAreByteIdenticalAcrossBatchThreadsCacheAndKills() async throws {
        guard Self.embeddingModelInstalled() else {
            Issue.record("the embedding model is not installed: run scripts/fetch-model --embedding")
            return
        }
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let reference = try await run(["--threads", "2"], name: "reference", scratch: scratch, children: children)
        let lines = try readJSONLines(scratch.path("reference.jsonl"))
        #expect(lines.count == 6, "\(lines.count) result lines")
        let byID = Dictionary(lines.map { ($0["custom_id"]?.stringValue ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        let one = try #require(byID["one"]?["response"]?["body"])
        #expect(one["object"]?.stringValue == "list" && one["data"]?.arrayValue?.count == 1)
        #expect(one["data"]?.arrayValue?.first?["embedding"]?.arrayValue?.count == 384)
        #expect(byID["list"]?["response"]?["body"]?["data"]?.arrayValue?.count == 3)
        #expect(byID["long-list"]?["response"]?["body"]?["data"]?.arrayValue?.count == 600)
        #expect(byID["tokens"]?["response"]?["body"]?["data"]?.arrayValue?.first?["embedding"]?.stringValue?.isEmpty == false)
        #expect(byID["one-again"]?["response"]?["body"] == one)
        #expect(byID["bad-dimensions"]?["response"]?["status_code"]?.intValue == 400)
        #expect(byID["bad-dimensions"]?["response"]?["body"]?["error"]?["param"]?.stringValue == "dimensions")

        let serial = try await run(["--threads", "1", "--concurrency", "1", "--no-cache"], name: "serial", scratch: scratch, children: children)
        #expect(serial == reference, "one request at a time on one thread exported different bytes")

        // SIGKILLs while the long list is being embedded; its checkpoints carry the finished vectors over.
        let db = try await enqueue("killed", scratch: scratch, children: children)
        let binary = try sluiceBinary()
        for round in 0..<4 {
            // The short requests wait behind the long list in the encoder, so every kill costs them a
            // lease lost without progress; four kills would reach --max-lost-leases (worker_lost).
            // This test is about exact resumption: lift the limit.
            let worker = try children.spawn(binary, ["work", "--db", db, "--quiet", "--lease", "2", "--threads", "\(round % 2 + 1)",
                                                     "--checkpoint-interval", "0.1", "--max-lost-leases", "1000"],
                                            stdout: scratch.path("k\(round).out"), stderr: scratch.path("k\(round).err"))
            // Kill once the worker has checkpointed more of the long list than the last one did (or it ended).
            let before = try checkpointedVectors(db: db)
            try await waitUntil("round \(round): more vectors checkpointed than \(before)", seconds: 300 * kernelTimeScale) {
                if !worker.isRunning { return true }
                return try checkpointedVectors(db: db) > before
            }
            kill(worker.processIdentifier, SIGKILL)
            worker.waitUntilExit()
        }
        let kept = try checkpointedVectors(db: db)
        #expect(kept > 0 && kept < 600, "vectors checkpointed before the last worker: \(kept)")
        let last = try await sluice(["work", "--db", db, "--quiet", "--max-lost-leases", "1000"], in: scratch, children: children,
                                  seconds: 600 * kernelTimeScale)
        #expect(last.status == 0, "\(last.stderr)")
        let killed = try await export(db, "killed", scratch: scratch, children: children)
        #expect(killed == reference, "the export after SIGKILLs differs from the uninterrupted run's")
    }
}

extension EmbeddingTests {
    /// A GGUF decoder model (the default generation model, by its cache name) as the embedding model:
    /// unit vectors of its width, and a result cache (in the store) that keys them by the pooling, so a
    /// worker pooling by the mean is never answered with last-token vectors cached by another.
    @Test func aDecoderModelEmbedsAndTheResultCacheKeepsPoolingsApart() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let input = scratch.path("decoder.jsonl"), db = scratch.path("decoder.db")
        try (#"{"custom_id":"d","method":"POST","url":"/v1/embeddings","body":{"input":["The quick brown fox jumps over the lazy dog.","Bonjour le monde"]}}"#
            + "\n").write(toFile: input, atomically: true, encoding: .utf8)
        var bodies: [JSON] = []
        for (index, pooling) in ["last", "mean", "last"].enumerated() {
            let enqueue = try await sluice(["enqueue", input, "--db", db, "--allow-duplicate"], in: scratch, children: children)
            #expect(enqueue.status == 0, "\(enqueue.stderr)")
            let work = try await sluice(["work", "--db", db, "--quiet", "--threads", "2", "--embedding-model", "gemma-3-270m-q4_k_m",
                                         "--pooling", pooling], in: scratch, children: children, seconds: 600)
            #expect(work.status == 0, "\(pooling): \(work.stderr)")
            let output = scratch.path("decoder-\(index).jsonl")
            let export = try await sluice(["export", "\(index + 1)", "--db", db, "-o", output], in: scratch, children: children)
            #expect(export.status == 0, "\(export.stderr)")
            let lines = try readJSONLines(output)
            bodies.append(try #require(lines.first?["response"]?["body"], "job \(index + 1) exported nothing"))
        }
        let vectors = (bodies[0]["data"]?.arrayValue ?? []).map { ($0["embedding"]?.arrayValue ?? []).compactMap(\.doubleValue) }
        #expect(vectors.count == 2 && vectors.allSatisfy { $0.count == 640 })
        #expect(vectors.allSatisfy { abs($0.reduce(0) { $0 + $1 * $1 } - 1) < 1e-5 })
        #expect(bodies[0]["model"]?.stringValue == "gemma-3-270m-q4_k_m")
        #expect(bodies[1]["data"] != bodies[0]["data"], "mean pooling was answered with last-token vectors")
        #expect(bodies[2] == bodies[0])
    }
}

/// The most vectors any request of `db` has checkpointed (Python's sqlite3 module reads the queue).
func checkpointedVectors(db: String) throws -> Int {
    let result = try runHelper(["python3", "-c", "import sqlite3,sys; c=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro',uri=True,timeout=5); "
        + "print(c.execute('select coalesce(max(checkpoint_tokens),0) from requests').fetchone()[0])", db])
    return Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
}
