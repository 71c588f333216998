import Foundation
import SluiceCore
import Testing

/// The same job through the built binary and the built-in engine gives byte-identical exports
/// whatever the batch size, thread count, number of workers, the result cache or prefix sharing:
/// greedy, seeded and derived-seed sampling, a stop string, a duplicate request, and requests
/// sharing a long system prompt in one job.
@Suite(.serialized) struct DeterminismTests {
    static func job() -> String {
        func line(_ id: String, _ url: String, _ body: String) -> String {
            #"{"custom_id":"\#(id)","method":"POST","url":"\#(url)","body":\#(body)}"# + "\n"
        }
        let completions = "/v1/completions", chat = "/v1/chat/completions"
        return line("greedy-1", completions, #"{"prompt":"The capital of France is","max_tokens":16,"temperature":0}"#)
            + line("greedy-2", completions, #"{"prompt":"def add(a, b):","max_tokens":16,"temperature":0}"#)
            + line("greedy-chat", chat, #"{"messages":[{"role":"user","content":"Name three rivers."}],"max_tokens":16,"temperature":0}"#)
            + line("seeded-1", completions, #"{"prompt":"Once upon a time","max_tokens":16,"temperature":0.8,"seed":11}"#)
            + line("seeded-2", completions, #"{"prompt":"The weather today","max_tokens":16,"temperature":1.0,"top_p":0.9,"seed":12}"#)
            // The same body as greedy-1 in another key order: answered from the cache, with its own response id.
            + line("greedy-1-again", completions, #"{"temperature":0,"max_tokens":16,"prompt":"The capital of France is"}"#)
            + line("derived-seed", completions, #"{"prompt":"My favourite colour","max_tokens":16,"temperature":0.7}"#)
            + line("seeded-chat", chat, #"{"messages":[{"role":"user","content":"Tell me a joke."}],"max_tokens":16,"temperature":0.9,"seed":5}"#)
            + line("greedy-stop", completions, #"{"prompt":"Count: 1, 2, 3,","max_tokens":16,"temperature":0,"stop":[" 7"]}"#)
            // Three requests sharing a long system prompt: its KV blocks are shared.
            + line("shared-greedy", chat, #"{"messages":[{"role":"system","content":"\#(systemPrompt)"},{"role":"user","content":"Who wrote Emma?"}],"max_tokens":16,"temperature":0,"logprobs":true,"top_logprobs":2}"#)
            + line("shared-seeded", chat, #"{"messages":[{"role":"system","content":"\#(systemPrompt)"},{"role":"user","content":"Is it open on Sunday?"}],"max_tokens":16,"temperature":0.8,"seed":3,"logprobs":true}"#)
            + line("shared-derived", chat, #"{"messages":[{"role":"system","content":"\#(systemPrompt)"},{"role":"user","content":"Where are the maps?"}],"max_tokens":16,"temperature":0.9}"#)
            // Structured outputs, several choices and penalties, and a Responses line: just as exact.
            + line("schema-seeded", chat, ##"{"messages":[{"role":"user","content":"A city as JSON."}],"max_tokens":24,"temperature":0.9,"seed":8,"response_format":{"type":"json_schema","json_schema":{"name":"city","strict":true,"schema":{"type":"object","properties":{"name":{"type":"string","maxLength":12},"size":{"enum":["small","large"]}},"required":["name","size"],"additionalProperties":false}}}}"##)
            + line("choice-n2", completions, #"{"prompt":"Is the sea salty? Answer:","max_tokens":4,"temperature":1,"n":2,"guided_choice":[" yes"," no"],"frequency_penalty":0.5}"#)
            + line("responses-greedy", "/v1/responses", #"{"input":"Name a fruit.","instructions":"One word.","max_output_tokens":6,"temperature":0}"#)
            // Prompt log-probabilities (echo with logprobs), and max_tokens 0 scoring a text: two prompts sharing the
            // long system prompt, so one may find the other's blocks cached and must still score those positions.
            + line("echo-logprobs", completions, #"{"prompt":"\#(systemPrompt)\nQuestion: Who wrote Emma?\nAnswer:","max_tokens":8,"temperature":0,"echo":true,"logprobs":2}"#)
            + line("score-text", completions, #"{"prompt":"\#(systemPrompt)\nQuestion: Is it open on Sunday?\nAnswer: No.","max_tokens":0,"echo":true,"logprobs":1}"#)
    }

    static let systemPrompt = "You are the reference desk of a small public library. Answer every question in one short sentence. "
        + "Quote book titles exactly as the catalogue spells them, never invent an author, a date or a page number, and say that "
        + "the catalogue does not know when it does not. Opening hours are nine to five on weekdays and ten to two on Saturdays."

    /// Enqueues the job into a fresh database, runs `workers` workers with `arguments`, returns the export's bytes.
    func run(_ arguments: [String], workers: Int = 1, scratch: Scratch, children: Children, name: String) async throws -> (export: Data, db: String) {
        let input = scratch.path("job.jsonl"), db = scratch.path("\(name).db"), output = scratch.path("\(name).jsonl")
        try Self.job().write(toFile: input, atomically: true, encoding: .utf8)
        let enqueue = try await sluice(["enqueue", input, "--db", db], in: scratch, children: children)
        #expect(enqueue.status == 0, "\(enqueue.stderr)")
        var processes: [ChildProcess] = []
        for index in 0..<workers {
            processes.append(try children.spawn(try sluiceBinary(), ["work", "--db", db, "--lease", "60"] + arguments,
                                                stdout: scratch.path("\(name)-\(index).out"), stderr: scratch.path("\(name)-\(index).err")))
        }
        for (index, process) in processes.enumerated() {
            let status = try await waitForExit(process, seconds: 300 * kernelTimeScale)
            let log = (try? String(contentsOfFile: scratch.path("\(name)-\(index).err"), encoding: .utf8)) ?? ""
            #expect(status == 0 || status == 3, "\(name) worker \(index): exit \(String(describing: status)): \(log)")
        }
        let export = try await sluice(["export", "1", "--db", db, "-o", output], in: scratch, children: children)
        #expect(export.status == 0, "\(export.stderr)")
        return (try Data(contentsOf: URL(fileURLWithPath: output)), db)
    }

    @Test func exportsAreByteIdenticalAcrossBatchThreadsWorkersAndCache() async throws {
        guard defaultModelInstalled() else {
            Issue.record("the default model is not installed: run scripts/fetch-model")
            return
        }
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let reference = try await run(["--concurrency", "32", "--threads", "2"], scratch: scratch, children: children, name: "batch32-threads2-cache")
        let lines = try readJSONLines(scratch.path("batch32-threads2-cache.jsonl"))
        // Required: the lines below are indexed, and a short export must fail the test, not trap.
        try #require(lines.count == 17 && lines.allSatisfy { $0["response"]?["status_code"]?.intValue == 200 })
        #expect(lines[13]["response"]?["body"]?["choices"]?.arrayValue?.count == 2)
        #expect(lines[14]["response"]?["body"]?["object"]?.stringValue == "response")
        // Echo with logprobs: the prompt's tokens come first, the very first with null; max_tokens 0: the prompt alone.
        #expect(lines[15]["response"]?["body"]?["choices"]?.arrayValue?.first?["logprobs"]?["token_logprobs"]?.arrayValue?.first == .null)
        #expect(lines[16]["response"]?["body"]?["usage"]?["completion_tokens"]?.intValue == 0)
        #expect((lines[16]["response"]?["body"]?["choices"]?.arrayValue?.first?["logprobs"]?["token_logprobs"]?.arrayValue?.count ?? 0) > 80)
        // The duplicate came from the cache within the job; status counts it.
        let status = try await sluice(["status", "1", "--db", reference.db, "--json"], in: scratch, children: children)
        let job = try JSON.parse(status.stdout).arrayValue?.first
        #expect(job?["cache_hits"]?.intValue == 1, "\(status.stdout)")
        #expect(job?["cached_completion_tokens"]?.intValue == lines[0]["response"]?["body"]?["usage"]?["completion_tokens"]?.intValue)
        // Its usage is what the computation cost, reported truthfully, and its id is its own.
        #expect(lines[5]["response"]?["body"]?["usage"] == lines[0]["response"]?["body"]?["usage"])
        #expect(lines[5]["response"]?["body"]?["choices"] == lines[0]["response"]?["body"]?["choices"])
        #expect(lines[5]["response"]?["body"]?["id"] != lines[0]["response"]?["body"]?["id"])

        let variants: [(name: String, arguments: [String], workers: Int)] = [
            ("batch1-no-cache", ["--concurrency", "1", "--threads", "2", "--no-cache"], 1),
            ("batch32-threads1", ["--concurrency", "32", "--threads", "1"], 1),
            ("three-workers", ["--concurrency", "4", "--threads", "1", "--no-checkpoints"], 3),
            ("no-prefix-sharing", ["--concurrency", "32", "--threads", "2", "--no-prefix-sharing", "--no-cache"], 1),
        ]
        for variant in variants {
            let other = try await run(variant.arguments, workers: variant.workers, scratch: scratch, children: children, name: variant.name)
            if variant.name == "batch1-no-cache" {
                // One request at a time: the later requests with the shared system prompt take its blocks, and the
                // worker's last line says how many prompt tokens that saved.
                let log = (try? String(contentsOfFile: scratch.path("\(variant.name)-0.err"), encoding: .utf8)) ?? ""
                let reused = log.split(separator: "\n").first { $0.contains("prompt tokens reused from shared prefixes") }
                    .flatMap { line in line.split(separator: " ").firstIndex(of: "prompt").flatMap { Int(line.split(separator: " ")[$0 - 1]) } }
                #expect((reused ?? 0) >= 32, "expected a count of reused prompt tokens in the worker's log:\n\(log)")
            }
            #expect(other.export == reference.export, "\(variant.name) exported different bytes than batch 32 / 2 threads / cache")
            if other.export != reference.export {
                let a = String(decoding: reference.export, as: UTF8.self).split(separator: "\n")
                let b = String(decoding: other.export, as: UTF8.self).split(separator: "\n")
                for (x, y) in zip(a, b) where x != y { Issue.record("first difference:\n\(x)\n\(y)"); break }
            }
        }

        // The same file again in the reference database: a second job answered wholly from the cache, same bodies.
        let input = scratch.path("job.jsonl")
        let again = try await sluice(["enqueue", input, "--db", reference.db, "--allow-duplicate"], in: scratch, children: children)
        #expect(again.status == 0, "\(again.stderr)")
        let work = try await sluice(["work", "--db", reference.db], in: scratch, children: children, seconds: 120)
        #expect(work.status == 0, "\(work.stderr)")
        let output = scratch.path("second-job.jsonl")
        _ = try await sluice(["export", "2", "--db", reference.db, "-o", output], in: scratch, children: children)
        let second = try readJSONLines(output)
        #expect(second.map { $0["response"]?["body"] } == lines.map { $0["response"]?["body"] })
        let secondStatus = try await sluice(["status", "2", "--db", reference.db, "--json"], in: scratch, children: children)
        #expect(try JSON.parse(secondStatus.stdout).arrayValue?.first?["cache_hits"]?.intValue == 17, "\(secondStatus.stdout)")
        #expect(work.stderr.contains("in 17 results from the cache"), "\(work.stderr)")
    }
}
