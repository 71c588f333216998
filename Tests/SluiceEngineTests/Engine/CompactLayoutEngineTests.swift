import CSluiceKernels
import Foundation
import Testing

@testable import SluiceEngine

/// A whole model whose Q4_0, Q4_K and Q6_K matrices use the compact layouts computes bit for
/// bit what it computes with every matrix in bytes: the same logits at every step, so the same
/// tokens (no engine identity change).
@Suite(.serialized, .ownThread, .enabled(if: sluice_int4_available() != 0, "the CPU does not run the compact kernels"))
struct CompactLayoutEngineTests {
    /// Greedy continuation of `prompt` for `count` steps, and the logits of every step (the
    /// prompt's last position, then each generated token).
    static func greedyRun(_ model: any LanguageModel, prompt: [Int32], count: Int) -> (tokens: [Int32], logits: [UInt32]) {
        let cache = model.makeCache()
        let vocabulary = model.shape.vocabularySize
        cache.reserve(slot: 0, positions: prompt.count + count)
        var step = [Float](repeating: 0, count: vocabulary)
        var tokens: [Int32] = [], logits: [UInt32] = []
        var input = prompt
        for _ in 0..<count {
            let first = tokens.isEmpty ? 0 : prompt.count + tokens.count - 1
            step.withUnsafeMutableBufferPointer { out in
                model.forward(tokens: input, placements: input.indices.map { TokenPlacement(slot: 0, position: first + $0) },
                              logitRows: [input.count - 1], cache: cache, logits: out.baseAddress!)
            }
            logits += step.map(\.bitPattern)
            let next = step.withUnsafeBufferPointer { Sampler.argmax($0.baseAddress!, count: vocabulary) }
            tokens.append(next)
            input = [next]
        }
        cache.release(slot: 0)
        return (tokens, logits)
    }

    @Test(arguments: [MatmulPrecision.int16, .int8])
    func quantizedTinyModelGivesTheSameLogitsInEitherLayout(precision: MatmulPrecision) throws {
        let file = try GGUFFile(path: Fixtures.url("tiny/llama-spm-quant.gguf").path)
        let types = Set(file.tensors.map(\.type))
        #expect(types.contains(.q4_K) && types.contains(.q4_0) && types.contains(.q6_K), "the fixture has 4- and 6-bit matrices")
        let pool = ComputePool(threads: 2)
        #expect(Int8Weights.prefersCompact(.q4_K) && Int8Weights.prefersCompact(.q6_K))
        let compact = try loadLanguageModel(file, pool: pool, precision: precision)
        let bytes = try Int8Weights.$compactAllowed.withValue(false) {
            #expect(!Int8Weights.prefersCompact(.q4_K))
            return try loadLanguageModel(file, pool: pool, precision: precision)
        }
        let fixture = try Fixtures.json("tiny/llama-spm-quant.json")
        let records = fixture["records"]?.arrayValue ?? []
        #expect(!records.isEmpty)
        for record in records {
            let prompt = TinyModelTests.ids(record["prompt_ids"])
            let expected = Self.greedyRun(bytes, prompt: prompt, count: 12)
            let actual = Self.greedyRun(compact, prompt: prompt, count: 12)
            #expect(actual.tokens == expected.tokens, "\(precision.rawValue) '\(record["prompt"]?.stringValue ?? "")'")
            let differing = zip(actual.logits, expected.logits).filter { $0 != $1 }.count
            #expect(differing == 0, "\(precision.rawValue): \(differing) logits differ")
        }
    }
}
