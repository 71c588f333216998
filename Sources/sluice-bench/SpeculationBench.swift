import ArgumentParser
import Foundation
import SluiceCore
import SluiceEngine

/// Runs a copy-heavy job (extraction prompts whose answers quote the input) through the
/// built-in engine with and without speculative decoding, checks that the responses are
/// identical, and prints the throughput ratio.
struct SpeculationBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "speculation",
        abstract: "Completion tokens/s of a copy-heavy job with and without speculative decoding.")

    @Option(help: "Model file or cache name (default: the default model).")
    var model: String?

    @Option(name: .customLong("draft-model"), help: "Draft with this model instead of prompt lookup.")
    var draftModel: String?

    @Option(help: "Compute threads (default: all cores).")
    var threads: Int = ComputePool.availableCores

    @Option(help: "Requests in the job.")
    var requests = 8

    @Option(help: "Comma-separated numbers of sequences the engine batches (--concurrency of sluice work).")
    var concurrency = "1,8"

    @Option(name: .customLong("max-tokens"), help: "max_tokens of every request.")
    var maxTokens = 96

    @Option(name: .customLong("draft-tokens"), help: "The most draft tokens per sequence and step.")
    var draftTokens = 8

    @Option(help: "Runs of each setting; the median time is kept. Settings alternate, so drift hits both.")
    var rounds = 3

    @Flag(help: "Ordinary prompts (no copying) instead of the extraction job: what speculation costs when it cannot help.")
    var ordinary = false

    @Option(name: .customLong("json"), help: "Append a JSON record of the results to this file.")
    var jsonPath: String?

    func run() async throws {
        let path = try ModelCache().resolve(model)
        let draftPath = try draftModel.map { try ModelCache().resolve($0) }
        let job = (ordinary ? Self.ordinaryJob(requests) : Self.extractionJob(requests)).enumerated().map { index, prompt in
            EngineRequest(id: Int64(index), customID: "spec-\(index)", endpoint: .completions, body: .object([
                (key: "prompt", value: .string(prompt)), (key: "max_tokens", value: .int(maxTokens)),
                (key: "temperature", value: .int(0)),
            ]))
        }
        let speculative: SpeculationMode = draftPath.map { .draftModel(path: $0) } ?? .promptLookup
        print("job: \(job.count) \(ordinary ? "ordinary" : "extraction") requests, max_tokens \(maxTokens), \(threads) threads, drafts: \(draftPath ?? "prompt lookup")")
        var records: [String] = []
        for sequences in concurrency.split(separator: ",").compactMap({ Int($0) }) where sequences > 0 {
            var times: [SpeculationMode: [Double]] = [:]
            var cpu: [SpeculationMode: [Double]] = [:]
            var tokens = 0
            var outputs: [SpeculationMode: [Int64: String]] = [:]
            var statistics = SpeculationStatistics()
            for round in 0..<max(1, rounds) {
                for mode in round % 2 == 0 ? [SpeculationMode.off, speculative] : [speculative, .off] {
                    var options = BuiltinEngineOptions()
                    options.threads = threads
                    options.maxSequences = sequences
                    options.speculation.mode = mode
                    options.speculation.maxDraftTokens = draftTokens
                    let engine = try BuiltinEngine(modelPath: path, options: options)
                    let started = ContinuousClock.now
                    let cpuBefore = ProcessMemory.cpuSeconds()
                    let results = await Self.complete(engine, job)
                    let elapsed = ContinuousClock.now - started
                    cpu[mode, default: []].append(ProcessMemory.cpuSeconds() - cpuBefore)
                    await engine.shutdown()
                    times[mode, default: []].append(elapsed.inSeconds)
                    tokens = results.values.reduce(0) { $0 + $1.completionTokens }
                    outputs[mode] = results.mapValues(\.body)
                    if mode != .off { statistics = engine.speculationStatistics }
                }
            }
            let identical = outputs[.off] == outputs[speculative]
            let plain = Self.median(times[.off] ?? []), sped = Self.median(times[speculative] ?? [])
            let ratio = plain / sped
            // CPU time is less disturbed than wall time by other processes on a shared machine.
            let cpuRatio = Self.median(cpu[.off] ?? []) / Self.median(cpu[speculative] ?? [])
            print(String(format: "%2d sequences: %7.1f tok/s without, %7.1f tok/s with speculation: %.2fx (CPU time %.2fx); drafts kept %d of %d (%.0f%%), %.2f s drafting; outputs %@",
                         sequences, Double(tokens) / plain, Double(tokens) / sped, ratio, cpuRatio, statistics.acceptedTokens,
                         statistics.draftedTokens, 100 * statistics.acceptanceRate, statistics.draftingSeconds, identical ? "identical" : "DIFFERENT"))
            records.append(String(format: "{\"sequences\":%d,\"completion_tokens\":%d,\"off_tok_s\":%.2f,\"spec_tok_s\":%.2f,\"ratio\":%.3f,\"cpu_ratio\":%.3f,\"drafted\":%d,\"accepted\":%d,\"identical\":%@}",
                                  sequences, tokens, Double(tokens) / plain, Double(tokens) / sped, ratio, cpuRatio, statistics.draftedTokens,
                                  statistics.acceptedTokens, identical ? "true" : "false"))
            if !identical { throw ValidationError("speculation changed the output at \(sequences) sequences") }
        }
        if let jsonPath {
            let record = "{\"tool\":\"sluice-bench speculation\",\"model\":\"\(URL(fileURLWithPath: path).lastPathComponent)\",\"job\":\"\(ordinary ? "ordinary" : "extraction")\",\"requests\":\(job.count),\"max_tokens\":\(maxTokens),\"threads\":\(threads),\"drafts\":\"\(draftPath.map { URL(fileURLWithPath: $0).lastPathComponent } ?? "prompt-lookup")\",\"results\":[\(records.joined(separator: ","))]}\n"
            try appendJSONRecord(record, to: jsonPath)
        }
    }

    static func complete(_ engine: BuiltinEngine, _ job: [EngineRequest]) async -> [Int64: (body: String, completionTokens: Int)] {
        for request in job { engine.submit(request) }
        var results: [Int64: (body: String, completionTokens: Int)] = [:]
        for await event in engine.events {
            if case let .finished(id, .response(_, body, usage)) = event {
                results[id] = (body.serialized, usage.completionTokens)
            } else if case let .finished(id, _) = event {
                results[id] = ("failed", 0)
            }
            if results.count == job.count { break }
        }
        return results
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.isEmpty ? .nan : sorted[sorted.count / 2]
    }

    /// Extraction prompts: a short report and an instruction to quote the sentence on one topic.
    /// Deterministic, so every run measures the same job.
    static func extractionJob(_ count: Int) -> [String] {
        let subjects = ["The committee", "The city council", "The board of the museum", "A group of residents", "The school director",
                        "The harbour authority", "The regional hospital", "The football club"]
        let actions = ["met on Tuesday to review", "published a long statement about", "voted unanimously to support",
                       "asked for more time to study", "held a public meeting on", "raised new questions about"]
        let objects = ["the new library project", "the plan to close the old bridge", "the summer festival", "the cost of the new tram line",
                       "the renovation of the central station", "the recycling programme"]
        let details = ["mostly because of higher steel prices", "after a long discussion with local shop owners",
                       "although several members were absent", "despite protests in front of the town hall",
                       "following a report by independent engineers", "to the surprise of many observers"]
        let topics = [("budget", "the budget for the east wing would increase to %d.%d million euros"),
                      ("schedule", "construction is now expected to finish in the spring of %d, %d months later than planned"),
                      ("staff", "%d new employees will be hired, and %d volunteers will help on weekends")]
        var state: UInt64 = 0x5EED
        func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        return (0..<count).map { _ in
            var sentences: [String] = []
            for _ in 0..<3 {
                sentences.append("\(subjects[next(subjects.count)]) \(actions[next(actions.count)]) \(objects[next(objects.count)]), \(details[next(details.count)]).")
            }
            let (topic, pattern) = topics[next(topics.count)]
            let fact = String(format: pattern, 2 + next(30), 1 + next(9))
            sentences.insert("After a long discussion, members agreed that \(fact).", at: 1 + next(3))
            return "Extract the complete sentence that mentions the \(topic), word for word.\n\nReport: \(sentences.joined(separator: " "))\n\nSentence:"
        }
    }

    /// Open-ended prompts whose continuations do not copy their input.
    static func ordinaryJob(_ count: Int) -> [String] {
        let stems = ["The history of the printing press began", "My favourite recipe for a rainy day is", "In the year 2100, cities will",
                     "The most important lesson I learned at school was", "A good way to start learning the piano is",
                     "The mountain village was quiet until", "Scientists recently discovered that octopuses",
                     "Here is a short story about a lighthouse keeper:"]
        return (0..<count).map { stems[$0 % stems.count] + (($0 / stems.count) > 0 ? " (\($0 / stems.count))" : "") }
    }
}
