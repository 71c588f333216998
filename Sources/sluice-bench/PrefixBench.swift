import ArgumentParser
import Foundation
import SluiceCore
import SluiceEngine

/// The prompt phase of a job whose requests share a long system prompt, through the built-in
/// engine with prefix sharing on and off (issue 4: 64 requests sharing a 400-token prompt).
/// Each request is the common prompt plus its own short question, with `max_tokens` 1 by
/// default, so the job's time is its prompt phase. Outputs are compared as well: sharing must
/// not change a byte.
struct PrefixBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prefix",
        abstract: "Prompt phase of requests sharing a system prompt, with prefix sharing on and off.")

    @Option(help: "Model file or cache name (default: the default model).")
    var model: String?

    @Option(help: "Compute threads (default: all cores).")
    var threads: Int = ComputePool.availableCores

    @Option(help: "Requests in the job.")
    var requests = 64

    @Option(name: .customLong("system-tokens"), help: "Tokens of the common system prompt (beginning-of-sequence token included).")
    var systemTokens = 400

    @Option(name: .customLong("max-tokens"), help: "Tokens generated per request (1: the prompt phase alone).")
    var maxTokens = 1

    @Option(help: "Sequences per batch.")
    var concurrency = 32

    @Option(name: .customLong("block-positions"), help: "Comma-separated KV block sizes to run with sharing on.")
    var blockPositions = "\(KVCache.defaultBlockPositions)"

    @Option(name: .customLong("json"), help: "Append a JSON record of the results to this file.")
    var jsonPath: String?

    struct Run {
        var label: String
        var seconds: Double
        var reused: Int
        var bodies: [Int64: String]
    }

    func run() async throws {
        let path = try ModelCache().resolve(model)
        let blockSizes = blockPositions.split(separator: ",").compactMap { Int($0) }
        guard !blockSizes.isEmpty, blockSizes.allSatisfy({ $0 > 0 && $0 & ($0 - 1) == 0 }) else {
            throw ValidationError("--block-positions must list powers of two (got \(blockPositions))")
        }
        // The job: the system prompt is text cut to exactly `systemTokens` tokens; questions differ per request.
        let probe = try BuiltinEngine(modelPath: path, options: options(sharing: false, block: KVCache.defaultBlockPositions))
        let paragraph = "You are a meticulous assistant for a regional rail operator. Answer in one sentence, quote timetable entries exactly, "
            + "give times in 24-hour format, never guess a platform, and say when the timetable does not say. "
        var text = ""
        var index = 1
        while probe.tokenizer.encode(text, addSpecial: true, parseSpecial: false).count < systemTokens {
            text += "Rule \(index). " + paragraph
            index += 1
        }
        let system = Array(probe.tokenizer.encode(text, addSpecial: true, parseSpecial: false).prefix(systemTokens))
        await probe.shutdown()
        let job: [EngineRequest] = (0..<requests).map { i in
            let question = probe.tokenizer.encode("\nQuestion \(i + 1): when does train \(100 + i * 7) leave for the coast?\nAnswer:",
                                                  addSpecial: false, parseSpecial: false)
            let prompt = JSON.array((system + question).map { .int($0) })
            return EngineRequest(id: Int64(i), customID: "p\(i)", endpoint: .completions,
                                 body: .object([(key: "prompt", value: prompt), (key: "max_tokens", value: .int(maxTokens)),
                                                (key: "temperature", value: .int(0))]))
        }
        let promptTokens = job.reduce(0) { $0 + ($1.body["prompt"]?.arrayValue?.count ?? 0) }
        print("\(requests) requests, a \(systemTokens)-token common prompt, \(promptTokens) prompt tokens in all, max_tokens \(maxTokens), \(threads) threads, \(concurrency) sequences")

        var runs: [Run] = []
        runs.append(try await measure(path, job, label: "sharing off", sharing: false, block: KVCache.defaultBlockPositions))
        for block in blockSizes {
            runs.append(try await measure(path, job, label: "sharing on, \(block)-position blocks", sharing: true, block: block))
        }
        let off = runs[0]
        for run in runs {
            let same = run.bodies == off.bodies ? "identical outputs" : "OUTPUTS DIFFER"
            print(String(format: "%@: %.2f s, %.0f prompt tok/s, %d prompt tokens reused, %.2fx vs sharing off, %@",
                         run.label, run.seconds, Double(promptTokens) / run.seconds, run.reused, off.seconds / run.seconds, same))
        }
        if runs.contains(where: { $0.bodies != off.bodies }) { throw ExitCode(1) }
        if let jsonPath {
            let entries = runs.map { String(format: "{\"label\":\"%@\",\"seconds\":%.3f,\"reused\":%d,\"speedup\":%.3f}", $0.label, $0.seconds, $0.reused, off.seconds / $0.seconds) }
            let record = "{\"tool\":\"sluice-bench prefix\",\"model\":\"\(URL(fileURLWithPath: path).lastPathComponent)\",\"threads\":\(threads),\"requests\":\(requests),\"system_tokens\":\(systemTokens),\"prompt_tokens\":\(promptTokens),\"max_tokens\":\(maxTokens),\"runs\":[\(entries.joined(separator: ","))]}\n"
            try appendJSONRecord(record, to: jsonPath)
        }
    }

    func options(sharing: Bool, block: Int) -> BuiltinEngineOptions {
        var options = BuiltinEngineOptions()
        options.threads = threads
        options.maxSequences = concurrency
        options.prefixSharing = sharing
        options.kvBlockPositions = block
        return options
    }

    func measure(_ path: String, _ job: [EngineRequest], label: String, sharing: Bool, block: Int) async throws -> Run {
        let engine = try BuiltinEngine(modelPath: path, options: options(sharing: sharing, block: block))
        // Warm up (weights paged in, caches allocated) on a prompt that shares nothing with the job.
        let warmup = EngineRequest(id: -1, customID: "warmup", endpoint: .completions,
                                   body: .object([(key: "prompt", value: .string("Warm up")), (key: "max_tokens", value: .int(2))]))
        engine.submit(warmup)
        var iterator = engine.events.makeAsyncIterator()
        _ = await iterator.next()
        let reusedBefore = engine.reusedPromptTokens
        let clock = ContinuousClock()
        let start = clock.now
        for request in job { engine.submit(request) }
        var bodies: [Int64: String] = [:]
        while bodies.count < job.count, let event = await iterator.next() {
            switch event {
            case let .finished(id, .response(_, body, _)): bodies[id] = body.serialized
            case let .finished(id, outcome): bodies[id] = "\(outcome)"
            case let .stopped(id, _): bodies[id] = "stopped"
            }
        }
        let elapsed = clock.now - start
        let reused = engine.reusedPromptTokens - reusedBefore
        await engine.shutdown()
        return Run(label: label, seconds: elapsed.inSeconds, reused: reused, bodies: bodies)
    }
}
