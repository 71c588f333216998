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

    @Option(name: .customLong("precision"), help: "How matrix products treat activations: auto (the engine's default for the model), f32, int16 or int8.")
    var precisionSetting = "auto"

    @Flag(name: .customLong("full-logits"), help: "Compute every logit of each step instead of only the chosen token (the argmax, or a draw the output head decides from its bounds).")
    var fullLogits = false

    @Option(help: "Sample each generated token at this temperature (0: greedy, as llama-batched-bench).")
    var temperature = 0.0

    @Option(name: .customLong("top-p"), help: "Top-p of the sampled tokens (with --temperature).")
    var topP = 1.0

    @Option(help: "Also compute this many top log-probabilities of each generated token (as a request's logprobs).")
    var logprobs: Int?

    @Option(name: .customLong("prompt-file"), help: "Take each sequence's prompt from this text (tokenized, from a different offset per sequence) instead of random tokens.")
    var promptFile: String?

    @Flag(name: .customLong("no-deferral"), help: "Give each sampled row the head leaves open its logits in its own step (a second product over the output head's weights) instead of deferring its draw to the next step's first pass, as the engine does.")
    var noDeferral = false

    @Flag(name: .customLong("count-candidates"), help: "Report how many rows of each sampled step lie within the sampler's cutoff (40 nats at temperature) of the maximum: the rows a sampling head would have to compute exactly.")
    var countCandidates = false

    /// How each generated token is chosen, as a request with these parameters has it chosen.
    var sampling: SamplingParameters {
        var parameters = SamplingParameters()
        parameters.temperature = temperature
        parameters.topP = topP
        return parameters
    }

    /// A name for the way tokens are chosen, in the JSON record.
    var mode: String {
        var name = sampling.isGreedy ? "greedy" : String(format: "t%g-p%g", temperature, topP)
        if let logprobs { name += "-logprobs\(logprobs)" }
        return name
    }

    var npl64Fits: Bool { parallel.split(separator: ",").compactMap { Int($0) }.allSatisfy { $0 <= 64 } }

    func validate() throws {
        guard (0...2).contains(temperature) else { throw ValidationError("--temperature must be from 0 to 2") }
        guard topP > 0 && topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        if let logprobs, !(0...20).contains(logprobs) { throw ValidationError("--logprobs must be from 0 to 20") }
    }

    /// `--precision`, with `auto` resolved as the engine resolves it for `file`.
    func resolvedPrecision(_ file: GGUFFile) throws -> MatmulPrecision {
        if precisionSetting == "auto" { return MatmulPrecision.automatic(for: file) }
        guard let precision = MatmulPrecision(rawValue: precisionSetting) else {
            throw ValidationError("--precision must be auto, f32, int16 or int8 (got \(precisionSetting))")
        }
        return precision
    }

    func run() throws {
        guard npl64Fits else { throw ValidationError("at most 64 sequences") }
        let path = try ModelCache().resolve(model)
        let file = try GGUFFile(path: path)
        let pool = ComputePool(threads: threads)
        let precision = try resolvedPrecision(file)
        let lm = try loadLanguageModel(file, pool: pool, precision: precision)
        let vocabulary = lm.shape.vocabularySize
        var generator = SystemRandomNumberGenerator()
        func randomTokens(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(Int.random(in: 1000..<min(vocabulary, 200_000), using: &generator)) } }
        let text: [Int32] = try promptFile.map { path in
            let tokens = try Tokenizer(gguf: file).encode(String(contentsOfFile: path, encoding: .utf8), addSpecial: false, parseSpecial: false)
            guard tokens.count > 1 else { throw ValidationError("\(path) holds no text to prompt with") }
            return tokens
        } ?? []
        /// Sequence `s`'s prompt of `n` tokens: random, or a stretch of the prompt file.
        func promptFor(_ s: Int, _ n: Int) -> [Int32] {
            text.isEmpty ? randomTokens(n) : (0..<n).map { text[(s * 97 + $0) % text.count] }
        }
        // Per sequence: rows within the cutoff, summed over its sampled steps, and those steps.
        let candidateRows = UnsafeMutablePointer<Int>.allocate(capacity: 128)
        candidateRows.initialize(repeating: 0, count: 128)
        defer { candidateRows.deallocate() }
        let logits = UnsafeMutablePointer<Float>.allocate(capacity: vocabulary * 64)
        defer { logits.deallocate() }
        let clock = ContinuousClock()
        // Rows without log-probabilities need only their chosen token, as in the engine: the most
        // likely one, or the one drawn (the head draws it where its bounds decide, and defers the
        // others to the next step's first pass unless told not to).
        let headOnly = !fullLogits && sampling.isGreedy && logprobs == nil
        // Counting candidates reads every sampled row's logits, so those rows are not drawn in the head.
        let drawnInHead = !fullLogits && !countCandidates && !sampling.isGreedy && logprobs == nil
        let parameters = sampling, logprobs = logprobs
        /// Sequence `s`'s draw for its token `index`.
        func uniform(_ s: Int, _ index: Int) -> Double { CounterRandom.uniform(seed: 0, key: UInt64(s), index: UInt64(index)) }
        func argmaxRows(_ sequences: [Int], produced: [Int]) -> ArgmaxRows? {
            if headOnly { return ArgmaxRows(flags: Array(repeating: true, count: sequences.count), usableVocabulary: vocabulary) }
            guard drawnInHead else { return nil }
            let draws = sequences.map { HeadDraw(parameters: parameters, uniform: uniform($0, produced[$0])) }
            return ArgmaxRows(flags: Array(repeating: true, count: sequences.count), draws: draws, usableVocabulary: vocabulary)
        }
        let workspaces = (0..<64).map { _ in SamplerWorkspace() }
        /// The token of each item (a sequence, its row of the step's logits, the head's pick) as
        /// the engine picks it: sampled (and its log-probabilities computed) on the pool, one row per item.
        func pick(_ items: [(sequence: Int, row: Int, chosen: Int32?)], _ stepLogits: UnsafeMutablePointer<Float>,
                  produced: [Int], into tokens: inout [Int32]) {
            tokens.withUnsafeMutableBufferPointer { tokens in
                let tokens = tokens.baseAddress!
                pool.parallelFor(items.count) { item in
                    let (s, rowIndex, chosen) = items[item]
                    let row = stepLogits + rowIndex * vocabulary
                    let token: Int32
                    if let chosen {
                        token = chosen
                    } else if parameters.isGreedy && logprobs == nil {
                        token = Sampler.argmax(row, count: vocabulary)
                    } else {
                        token = Sampler.sample(row, count: vocabulary, parameters: parameters, uniform: uniform(s, produced[s]),
                                               workspace: workspaces[s])
                    }
                    if let logprobs { _ = Sampler.logProbabilities(row, count: vocabulary, token: token, top: logprobs) }
                    if countCandidates && chosen == nil && !parameters.isGreedy {
                        var maximum = row[0]
                        for i in 1..<vocabulary { maximum = max(maximum, row[i]) }
                        let cutoff = Double(maximum) - 40 * parameters.temperature
                        var within = 0
                        for i in 0..<vocabulary where Double(row[i]) >= cutoff { within += 1 }
                        candidateRows[2 * s] += within
                        candidateRows[2 * s + 1] += 1
                    }
                    tokens[s] = token
                }
            }
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
                let prompt = promptFor(s, generationPrompt)
                cache.reserve(slot: s, positions: generationPrompt + 2 * generated)
                lm.forward(tokens: prompt, placements: prompt.indices.map { TokenPlacement(slot: s, position: $0) },
                           logitRows: [prompt.count - 1], cache: cache, logits: logits)
                lastTokens.append(Sampler.argmax(logits, count: vocabulary))
            }
            let stepLogits = UnsafeMutablePointer<Float>.allocate(capacity: vocabulary * npl)
            defer { stepLogits.deallocate() }
            // Per sequence: tokens drawn so far, and the hidden state of a row whose draw the head deferred.
            // Every sequence steps until the batch has drawn npl x ntg tokens: with deferred draws some
            // draw a few more than ntg and some fewer, and the batch stays full to the end, as
            // llama-batched-bench's lockstep batch does (stopping each sequence at ntg would leave the
            // ones that waited most to finish alone, in steps of a few rows).
            var produced = [Int](repeating: 0, count: npl)
            var waiting = [[Float]?](repeating: nil, count: npl)
            let elapsed = clock.measure {
                while produced.reduce(0, +) < npl * generated {
                    // Decoding as the engine runs it: each sequence whose draw is not waiting steps, and
                    // the waiting ones' logits come out of the step's first pass.
                    let stepping = (0..<npl).filter { waiting[$0] == nil && produced[$0] < 2 * generated }
                    let carried = (0..<npl).filter { waiting[$0] != nil }
                    var rows = argmaxRows(stepping, produced: produced)
                    let carry = drawnInHead && !noDeferral
                        ? HeadCarry(mayDefer: Array(repeating: true, count: stepping.count), incoming: carried.map { waiting[$0]! })
                        : nil
                    rows?.carry = carry
                    let chosen = lm.forward(tokens: stepping.map { lastTokens[$0] },
                                            placements: stepping.map { TokenPlacement(slot: $0, position: generationPrompt + produced[$0]) },
                                            logitRows: Array(stepping.indices), argmaxRows: rows, cache: cache, logits: stepLogits)
                    let deferred = carry?.deferred ?? [:]
                    let items = stepping.indices.filter { deferred[$0] == nil }.map { (sequence: stepping[$0], row: $0, chosen: chosen[$0]) }
                        + carried.enumerated().map { (sequence: $0.element, row: stepping.count + $0.offset, chosen: nil) }
                    pick(items, stepLogits, produced: produced, into: &lastTokens)
                    for item in items { produced[item.sequence] += 1 }
                    for s in carried { waiting[s] = nil }
                    for (i, state) in deferred { waiting[stepping[i]] = state }
                }
            }
            let rate = Double(produced.reduce(0, +)) / elapsed.inSeconds
            generation.append((npl, rate))
            print(String(format: "tg%d x %d sequences (%@): %.1f tok/s aggregate", generated, npl, mode, rate))
        }
        let sampledRows = (0..<64).reduce(0) { $0 + candidateRows[2 * $1 + 1] }
        if countCandidates, sampledRows > 0 {
            let mean = Double((0..<64).reduce(0) { $0 + candidateRows[2 * $1] }) / Double(sampledRows)
            print(String(format: "rows within the sampling cutoff: %.0f of %d per sampled token (%.1f%%), over %d tokens",
                         mean, vocabulary, 100 * mean / Double(vocabulary), sampledRows))
        }
        let peakMB = Double(ProcessMemory.peakResidentKB()) / 1024
        print(String(format: "peak RSS: %.0f MB", peakMB))
        if let jsonPath {
            let record = """
            {"tool":"sluice","precision":"\(precision.rawValue)","mode":"\(mode)","full_logits":\(fullLogits),"model":"\(URL(fileURLWithPath: path).lastPathComponent)","threads":\(threads),"pp":\(promptTokens),"pp_tok_s":\(promptTokens > 0 ? String(format: "%.2f", promptRate) : "null"),"npp":\(generationPrompt),"ntg":\(generated),"tg":[\(generation.map { "{\"npl\":\($0.0),\"tok_s\":\(String(format: "%.2f", $0.1))}" }.joined(separator: ","))],"peak_rss_mb":\(String(format: "%.0f", peakMB))}

            """
            try appendJSONRecord(record, to: jsonPath)
        }
    }
}
