import ArgumentParser
import Foundation
import SluiceCore
import SluiceEngine

/// Measures the built-in engine's forward pass the way llama.cpp's benchmarks do:
/// prompt processing (one prefill of `--prompt-tokens`, as llama-bench's pp) and
/// aggregate generation at several batch sizes (as llama-batched-bench's S_TG).
struct EngineBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract: "Prompt and generation throughput of the built-in engine's forward pass.")

    @Option(help: "Model file or cache name (default: the default model).")
    var model: String?

    @Option(help: "Compute threads (default: all cores).")
    var threads: Int = ComputePool.availableCores

    @Option(name: .customLong("pp"), help: "Prompt tokens for the prompt-processing test (0: no prompt test).")
    var promptTokens = 512

    @Option(name: .customLong("npp"), help: "Prompt tokens per sequence before the generation test.")
    var generationPrompt = 128

    @Option(name: .customLong("ntg"), help: "Tokens generated per sequence.")
    var generated = 128

    @Option(name: .customLong("npl"), help: "Comma-separated numbers of parallel sequences.")
    var parallel = "1"

    @Option(help: "Repetitions of the prompt test (best is kept).")
    var repetitions = 2

    @Option(name: .customLong("json"), help: "Append a JSON record of the results to this file.")
    var jsonPath: String?

    @Option(help: "How matrix products treat activations: f32, int16 or int8 (default: the engine's).")
    var precision: MatmulPrecision = .engineDefault

    @Flag(name: .customLong("full-logits"), help: "Compute every logit of each greedy step instead of only the argmax (as sampling with a temperature or log-probabilities needs).")
    var fullLogits = false

    func run() throws {
        let path = try ModelCache().resolve(model)
        let file = try GGUFFile(path: path)
        let pool = ComputePool(threads: threads)
        let lm = try loadLanguageModel(file, pool: pool, precision: precision)
        let vocabulary = lm.shape.vocabularySize
        var generator = SystemRandomNumberGenerator()
        func randomTokens(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(Int.random(in: 1000..<min(vocabulary, 200_000), using: &generator)) } }
        let logits = UnsafeMutablePointer<Float>.allocate(capacity: vocabulary * 64)
        defer { logits.deallocate() }
        let clock = ContinuousClock()
        func argmaxRows(_ count: Int) -> ArgmaxRows? {
            fullLogits ? nil : ArgmaxRows(flags: Array(repeating: true, count: count), usableVocabulary: vocabulary)
        }

        // Prompt processing: one sequence, all prompt tokens in one step, logits for the last.
        var bestPrompt = Double.infinity
        for _ in 0..<(promptTokens > 0 ? max(1, repetitions) : 0) {
            let cache = lm.makeCache()
            let tokens = randomTokens(promptTokens)
            cache.reserve(slot: 0, positions: promptTokens)
            let elapsed = clock.measure {
                lm.forward(tokens: tokens, placements: tokens.indices.map { TokenPlacement(slot: 0, position: $0) },
                           logitRows: [tokens.count - 1], cache: cache, logits: logits)
            }
            bestPrompt = min(bestPrompt, elapsed.inSeconds)
        }
        let promptRate = Double(promptTokens) / bestPrompt
        if promptTokens > 0 {
            print(String(format: "pp%d: %.1f tok/s (threads %d, %@)", promptTokens, promptRate, threads, precision.rawValue))
        }

        var generation: [(Int, Double)] = []
        for npl in parallel.split(separator: ",").compactMap({ Int($0) }) where npl > 0 {
            let cache = lm.makeCache()
            var lastTokens: [Int32] = []
            for s in 0..<npl {
                let prompt = randomTokens(generationPrompt)
                cache.reserve(slot: s, positions: generationPrompt + generated)
                lm.forward(tokens: prompt, placements: prompt.indices.map { TokenPlacement(slot: s, position: $0) },
                           logitRows: [prompt.count - 1], cache: cache, logits: logits)
                lastTokens.append(Sampler.argmax(logits, count: vocabulary))
            }
            let stepLogits = UnsafeMutablePointer<Float>.allocate(capacity: vocabulary * npl)
            defer { stepLogits.deallocate() }
            let elapsed = clock.measure {
                for step in 0..<generated {
                    // Greedy decoding, as the engine runs it: only each row's most likely token.
                    let chosen = lm.forward(tokens: lastTokens, placements: (0..<npl).map { TokenPlacement(slot: $0, position: generationPrompt + step) },
                                            logitRows: Array(0..<npl), argmaxRows: argmaxRows(npl), cache: cache, logits: stepLogits)
                    for s in 0..<npl { lastTokens[s] = chosen[s] ?? Sampler.argmax(stepLogits + s * vocabulary, count: vocabulary) }
                }
            }
            let rate = Double(npl * generated) / elapsed.inSeconds
            generation.append((npl, rate))
            print(String(format: "tg%d x %d sequences: %.1f tok/s aggregate", generated, npl, rate))
        }
        let peakMB = Double(ProcessMemory.peakResidentKB()) / 1024
        print(String(format: "peak RSS: %.0f MB", peakMB))
        if let jsonPath {
            let record = """
            {"tool":"sluice","precision":"\(precision.rawValue)","full_logits":\(fullLogits),"model":"\(URL(fileURLWithPath: path).lastPathComponent)","threads":\(threads),"pp":\(promptTokens),"pp_tok_s":\(promptTokens > 0 ? String(format: "%.2f", promptRate) : "null"),"npp":\(generationPrompt),"ntg":\(generated),"tg":[\(generation.map { "{\"npl\":\($0.0),\"tok_s\":\(String(format: "%.2f", $0.1))}" }.joined(separator: ","))],"peak_rss_mb":\(String(format: "%.0f", peakMB))}

            """
            try appendJSONRecord(record, to: jsonPath)
        }
    }
}
