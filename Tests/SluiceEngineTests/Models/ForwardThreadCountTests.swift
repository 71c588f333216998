import SluiceTestSupport
import Testing

@testable import SluiceEngine

/// A forward step gives the same logits bit for bit on 1, 2 or 3 threads, with the elementwise
/// work between the matrix products split over the pool (batches large enough to split it) or not.
@Suite(.serialized, .ownThread)
struct ForwardThreadCountTests {
    /// Logits of `logitRows` after a 64-token prefill of two sequences (40 + 24 tokens: every
    /// elementwise kernel splits), then after one decode token per sequence, then one for a single sequence.
    func logits(_ model: any LanguageModel) -> [[UInt32]] {
        var generator = SplitMix64(seed: 21)
        let vocabulary = model.shape.vocabularySize
        func randomTokens(_ count: Int) -> [Int32] { (0..<count).map { _ in Int32(generator.next() % UInt64(vocabulary)) } }
        let cache = model.makeCache()
        cache.reserve(slot: 0, positions: 48)
        cache.reserve(slot: 1, positions: 48)
        defer {
            cache.release(slot: 0)
            cache.release(slot: 1)
        }
        let steps: [(tokens: [Int32], placements: [TokenPlacement], logitRows: [Int])] = [
            (randomTokens(64), (0..<40).map { TokenPlacement(slot: 0, position: $0) } + (0..<24).map { TokenPlacement(slot: 1, position: $0) },
             [0, 39, 63]),
            (randomTokens(2), [TokenPlacement(slot: 0, position: 40), TokenPlacement(slot: 1, position: 24)], [0, 1]),
            (randomTokens(1), [TokenPlacement(slot: 1, position: 25)], [0]),
        ]
        return steps.map { step in
            var out = [Float](repeating: .nan, count: step.logitRows.count * vocabulary)
            out.withUnsafeMutableBufferPointer { out in
                model.forward(tokens: step.tokens, placements: step.placements, logitRows: step.logitRows, cache: cache,
                              logits: out.baseAddress!)
            }
            return out.map(\.bitPattern)
        }
    }

    @Test func defaultModelLogitsDoNotDependOnTheThreadCount() throws {
        let shared = try DefaultModel.require()
        let expected = logits(try loadLanguageModel(shared.file, pool: ComputePool(threads: 1), precision: .engineDefault))
        #expect(expected.allSatisfy { step in step.allSatisfy { !Float(bitPattern: $0).isNaN } })
        for threads in [2, 3] {
            let model = try loadLanguageModel(shared.file, pool: ComputePool(threads: threads), precision: .engineDefault)
            let actual = logits(model)
            for (step, (a, e)) in zip(actual, expected).enumerated() {
                // A count, not `a == e`: a failing `==` on 786k elements would print a diff for minutes.
                let differing = zip(a, e).filter { $0 != $1 }.count
                #expect(differing == 0, "step \(step), \(threads) threads: \(differing) logits differ from one thread's")
            }
        }
    }
}
