import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// Tiny random-weight models of each architecture and tensor type (scripts/make-tiny-models),
/// against llama.cpp's greedy outputs and the float64 reference pass (Fixtures/tiny/*.json,
/// format in scripts/README-fixtures.md).
@Suite(.serialized, .ownThread)
struct TinyModelTests {
    static let models = ["llama-spm-f32", "llama3-bpe-f16", "qwen2-bf16", "gemma3-swa-f16", "llama-spm-quant", "qwen3-f16",
                         "llama31-rope-f16"]

    /// The engine computes in float32 with exactly dequantized weights, so it differs from the
    /// float64 pass only by float32 rounding (relative 6e-8 per operation over sums of a few
    /// hundred terms, and in exp/tanh): measured 1e-6 mean and 2e-5 worst over ~13,000
    /// (position, token) pairs. The bounds are ten times that; a real error (a wrong RoPE base,
    /// a missing window mask or bias, llama.cpp's 8-bit activations) moves log-probabilities by
    /// 1e-3 to several nats.
    static let maxAbsoluteError = 2e-4
    static let meanAbsoluteError = 2e-5

    struct Loaded {
        let file: GGUFFile
        let model: any LanguageModel
        let tokenizer: Tokenizer
        let fixture: JSON
    }

    static let pool = ComputePool(threads: 2)

    static func load(_ name: String) throws -> Loaded {
        let file = try GGUFFile(path: Fixtures.url("tiny/\(name).gguf").path)
        return Loaded(file: file, model: try loadLanguageModel(file, pool: pool), tokenizer: try Tokenizer(gguf: file),
                      fixture: try Fixtures.json("tiny/\(name).json"))
    }

    static func ids(_ value: JSON?) -> [Int32] { (value?.arrayValue ?? []).compactMap { $0.intValue.map(Int32.init) } }

    @Test(arguments: models)
    func promptsTokenizeAsLlamaCpp(_ name: String) throws {
        let m = try Self.load(name)
        for record in m.fixture["records"]?.arrayValue ?? [] {
            let prompt = try #require(record["prompt"]?.stringValue)
            #expect(m.tokenizer.encode(prompt, addSpecial: true, parseSpecial: true) == Self.ids(record["prompt_ids"]), "\(name): \(prompt)")
        }
    }

    @Test(arguments: models)
    func greedyTokensMatchLlamaCppUntilItsFirstNearTie(_ name: String) throws {
        let m = try Self.load(name)
        let records = m.fixture["records"]?.arrayValue ?? []
        #expect(!records.isEmpty)
        for record in records {
            let expected = Self.ids(record["llamacpp"]?["output_ids"])
            let comparable = record["llamacpp"]?["first_small_gap_step"]?.intValue ?? expected.count
            let (tokens, _) = greedyTokens(m.model, prompt: Self.ids(record["prompt_ids"]), count: expected.count)
            #expect(Array(tokens.prefix(comparable)) == Array(expected.prefix(comparable)),
                    "\(name) '\(record["prompt"]?.stringValue ?? "")': \(tokens) vs llama.cpp \(expected) (first \(comparable) compared)")
        }
    }

    @Test(arguments: models)
    func logprobsMatchTheFloat64Pass(_ name: String) throws {
        let m = try Self.load(name)
        let vocabulary = m.model.shape.vocabularySize
        var total = 0.0, count = 0, worst = 0.0
        for record in m.fixture["records"]?.arrayValue ?? [] {
            let ids = Self.ids(record["fp64"]?["ids"])
            let positions = record["fp64"]?["positions"]?.arrayValue ?? []
            #expect(positions.count == ids.count)
            // Teacher-forced along llama.cpp's continuation, all positions in one prefill.
            let cache = m.model.makeCache()
            cache.reserve(slot: 0, positions: ids.count)
            var logits = [Float](repeating: 0, count: ids.count * vocabulary)
            logits.withUnsafeMutableBufferPointer { out in
                m.model.forward(tokens: ids, placements: ids.indices.map { TokenPlacement(slot: 0, position: $0) },
                                logitRows: Array(ids.indices), cache: cache, logits: out.baseAddress!)
            }
            for (i, position) in positions.enumerated() {
                let ours = logSoftmax(Array(logits[(i * vocabulary)..<((i + 1) * vocabulary)]))
                for entry in position["top"]?.arrayValue ?? [] {
                    guard let pair = entry.arrayValue, let id = pair[0].intValue, let reference = pair[1].doubleValue else { continue }
                    let delta = abs(ours[id] - reference)
                    total += delta
                    count += 1
                    worst = max(worst, delta)
                }
            }
        }
        let mean = total / Double(max(count, 1))
        print("\(name): log-probs vs float64 over \(count) (position, id) pairs: mean |Δ| \(mean), max \(worst) nats")
        #expect(count > 0)
        #expect(worst <= Self.maxAbsoluteError, "\(name): max |Δ| \(worst)")
        #expect(mean <= Self.meanAbsoluteError, "\(name): mean |Δ| \(mean)")
    }

    /// Every architecture's forward pass is batch-invariant (Llama's Q/K/V biases and NeoX RoPE
    /// included, as Qwen2 uses them): two prompts prefilled in one batch on three threads, then
    /// decoded one token each in one step, give bit for bit the logits each gets alone on one thread.
    @Test(arguments: models)
    func logitsDoNotDependOnBatchOrThreads(_ name: String) throws {
        let file = try GGUFFile(path: Fixtures.url("tiny/\(name).gguf").path)
        let alone = try loadLanguageModel(file, pool: ComputePool(threads: 1))
        let together = try loadLanguageModel(file, pool: ComputePool(threads: 3))
        let fixture = try Fixtures.json("tiny/\(name).json")
        // Prompts long enough that the per-token work between the products (biases, RoPE) splits over threads.
        let length = min(150, alone.shape.contextLength / 2 - 2)
        let prompts = (fixture["records"]?.arrayValue ?? []).prefix(2).map { record in
            let ids = Self.ids(record["prompt_ids"])
            return (0..<length).map { ids[$0 % ids.count] }
        }
        try #require(prompts.count == 2 && length >= 64)
        let vocabulary = alone.shape.vocabularySize
        let next: [Int32] = [3, 5]

        /// Every row's logits of `rows` (slot, position, token) in one forward pass.
        func forward(_ model: any LanguageModel, _ cache: KVCache, _ rows: [(slot: Int, position: Int, token: Int32)]) -> [Float] {
            var logits = [Float](repeating: .nan, count: rows.count * vocabulary)
            logits.withUnsafeMutableBufferPointer { out in
                model.forward(tokens: rows.map(\.token), placements: rows.map { TokenPlacement(slot: $0.slot, position: $0.position) },
                              logitRows: Array(rows.indices), cache: cache, logits: out.baseAddress!)
            }
            return logits
        }
        func rows(_ s: Int) -> [(slot: Int, position: Int, token: Int32)] {
            prompts[s].enumerated().map { (slot: s, position: $0.offset, token: $0.element) }
        }

        var expected: [Float] = [], decodeExpected: [Float] = []
        for s in 0..<2 {
            let cache = alone.makeCache()
            cache.reserve(slot: s, positions: prompts[s].count + 1)
            expected += forward(alone, cache, rows(s))
            decodeExpected += forward(alone, cache, [(slot: s, position: prompts[s].count, token: next[s])])
        }
        let cache = together.makeCache()
        for s in 0..<2 { cache.reserve(slot: s, positions: prompts[s].count + 1) }
        let prefill = forward(together, cache, rows(0) + rows(1))
        let decode = forward(together, cache, (0..<2).map { (slot: $0, position: prompts[$0].count, token: next[$0]) })
        func differing(_ a: [Float], _ b: [Float]) -> Int { zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count }
        #expect(prefill.count == expected.count && differing(prefill, expected) == 0,
                "\(name): \(differing(prefill, expected)) prefill logits differ in a batch on 3 threads")
        #expect(decode.count == decodeExpected.count && differing(decode, decodeExpected) == 0,
                "\(name): \(differing(decode, decodeExpected)) decode logits differ in a batch on 3 threads")
    }
}
