import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// A request stopped at token k and resumed from its checkpoint gives exactly the uninterrupted
/// response: greedy and seeded sampling, k = 0, k in the middle, k inside a stop string.
@Suite(.serialized, .ownThread)
struct ResumeDeterminismTests {
    func engine(threads: Int = ComputePool.availableCores, sequences: Int = 32) throws -> BuiltinEngine {
        var options = BuiltinEngineOptions()
        options.threads = threads
        options.maxSequences = sequences
        // Publish after every step, so the test sees a checkpoint at (nearly) every token.
        options.checkpointInterval = .zero
        return try BuiltinEngine(modelPath: try DefaultModel.require().path, options: options)
    }

    func run(_ engine: BuiltinEngine, _ requests: [EngineRequest]) async -> [Int64: EngineEvent] {
        let events = await runToCompletion(engine, requests)
        await engine.shutdown()
        return events
    }

    /// The same request under another engine id (same custom id, so the same sampling stream).
    func copy(_ request: EngineRequest, id: Int64, from tokens: [Int32]?) -> EngineRequest {
        var copy = request
        copy.id = id
        copy.resumeFrom = tokens.map { CheckpointState(tokens: $0, logprobs: []).encoded() }
        return copy
    }

    @Test func seededSampledRequestResumesExactlyFromEveryCheckpoint() async throws {
        let request = completionRequest(1, prompt: "My favourite animal is", maxTokens: 32,
                                        extra: [("temperature", .double(0.9)), ("seed", .int(77)), ("top_k", .int(40))])
        // One uninterrupted run, watching its checkpoints go by.
        let first = try engine()
        first.submit(request)
        var uninterrupted: JSON?
        let watcher = CheckpointWatcher(first)
        for await event in first.events {
            uninterrupted = event.response?.body
            break
        }
        var seen: [Int: [Int32]] = [:]
        for state in watcher.stop() { seen[state.tokens.count] = state.tokens }
        await first.shutdown()
        let expected = try #require(uninterrupted)
        // How many checkpoints the watcher sees depends on scheduling (the engine publishes every step);
        // one mid-generation checkpoint plus k = 0 is the least that tests resuming.
        #expect(seen.count >= 1, "saw checkpoints at \(seen.keys.sorted())")

        // Resume from k = 0 and from every checkpoint seen, all at once in one batch and alone on one thread.
        var ks = [0] + seen.keys.sorted()
        if ks.count > 6 { ks = [ks[0], ks[1], ks[ks.count / 3], ks[ks.count / 2], ks[2 * ks.count / 3], ks[ks.count - 1]] }
        let resumed = ks.enumerated().map { index, k in copy(request, id: Int64(100 + index), from: k == 0 ? [] : seen[k]) }
        let batched = await run(try engine(), resumed)
        for (index, k) in ks.enumerated() {
            #expect(batched[Int64(100 + index)]?.response?.body == expected, "resumed at token \(k) in a batch")
        }
        let alone = try engine(threads: 1, sequences: 1)
        let single = await runToCompletion(alone, [resumed[resumed.count / 2]])
        await alone.shutdown()
        #expect(single.values.first?.response?.body == expected, "resumed at token \(ks[ks.count / 2]) alone on one thread")
    }

    @Test func greedyRequestResumedInsideItsStopStringStopsThereExactly() async throws {
        let m = try DefaultModel.require()
        let prompt = "Here is a list of colours: red, green,"
        let promptTokens = m.tokenizer.encode(prompt, addSpecial: true, parseSpecial: true)
        let (tokens, _) = greedyTokens(m.model, prompt: promptTokens, count: 24)
        // A stop string that starts inside token j-1 and ends inside token j: two characters from each side.
        var chosen: (j: Int, stop: String)?
        for j in 6..<20 {
            let before = Array(m.tokenizer.decode(Array(tokens[..<j])))
            let after = Array(m.tokenizer.decode(Array(tokens[...j])))
            let lastTokenChars = before.count - Array(m.tokenizer.decode(Array(tokens[..<(j - 1)]))).count
            guard lastTokenChars >= 2, after.count >= before.count + 2, Array(after.prefix(before.count)) == before else { continue }
            let stop = String(after[(before.count - 2)..<(before.count + 2)])
            // It must not occur earlier, or the request would stop before token j.
            if !String(before).contains(stop), stop.trimmingCharacters(in: .whitespaces).count == stop.count {
                chosen = (j, stop)
                break
            }
        }
        let (j, stop) = try #require(chosen, "no token boundary to put a stop string across in \(m.tokenizer.decode(tokens))")
        let request = completionRequest(1, prompt: prompt, maxTokens: 24, extra: [("stop", .array([.string(stop)]))])
        let uninterrupted = try #require(await run(try engine(), [request])[1]?.response?.body)
        #expect(uninterrupted["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue == "stop")

        // k = j: the checkpoint holds the first half of the stop string; k = 0 and k = j - 1 for good measure.
        let ks = [0, j - 1, j]
        let resumed = ks.enumerated().map { index, k in copy(request, id: Int64(10 + index), from: Array(tokens.prefix(k))) }
        let events = await run(try engine(), resumed)
        for (index, k) in ks.enumerated() {
            #expect(events[Int64(10 + index)]?.response?.body == uninterrupted, "resumed at token \(k) (stop string \(stop.debugDescription) spans tokens \(j - 1) and \(j))")
        }
    }
}
