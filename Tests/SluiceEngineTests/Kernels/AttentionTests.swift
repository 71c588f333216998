import CSluiceKernels
import SluiceTestSupport
import Testing

@testable import SluiceEngine

/// `causalAttention` against a plain reference that follows the documented order of every element,
/// compared bit for bit: the engine's determinism (batch invariance, resume) rests on both of its
/// paths (per head, and per KV group) computing each element by the same chain of operations.
/// Both cache storages are checked: float16 elements are widened exactly, so the chain is the
/// same over the stored values.
@Suite(.ownThread)
struct AttentionTests {
    struct Shape: Sendable, CustomTestStringConvertible {
        var heads: Int
        var kvHeads: Int
        var headSize: Int
        var testDescription: String { "\(heads) heads / \(kvHeads) KV heads × \(headSize)" }
    }

    static let shapes = [
        Shape(heads: 4, kvHeads: 1, headSize: 256),  // Gemma 3 270M
        Shape(heads: 8, kvHeads: 2, headSize: 64),
        Shape(heads: 4, kvHeads: 4, headSize: 80),  // no sharing; 80 is not a multiple of 64
        Shape(heads: 4, kvHeads: 1, headSize: 72),  // 64 + 8: vector and scalar tails of a 4-head group
        Shape(heads: 6, kvHeads: 1, headSize: 40),  // a 4-head block plus 2 heads alone; 32 + 8
    ]
    static let windows: [Int?] = [nil, 24]

    /// Keys and values of several sequences in layer 1 of a two-layer cache, and a batch of queries:
    /// decode tokens of three sequences and a prefill chunk of a fourth, at positions that cross blocks.
    final class Batch {
        let cache: KVCache
        let placements: [TokenPlacement]
        let queries: [Float]
        let layer = 1

        init(_ shape: Shape, window: Int?, onlyFirstToken: Bool, seed: UInt64, storage: KVStorage) {
            var generator = SplitMix64(seed: seed)
            let width = shape.kvHeads * shape.headSize
            cache = KVCache(layerCount: 2, width: width, slidingWindows: [nil, window], blockPositions: 16, storage: storage)
            var placements = [TokenPlacement(slot: 3, position: 70)]
            if !onlyFirstToken {
                placements += [TokenPlacement(slot: 0, position: 44), TokenPlacement(slot: 2, position: 3)]
                placements += (20..<37).map { TokenPlacement(slot: 1, position: $0) }
            }
            self.placements = placements
            for slot in Set(placements.map(\.slot)).sorted() {
                let positions = placements.filter { $0.slot == slot }.map(\.position)
                #expect(cache.reserve(slot: slot, positions: positions.max()! + 1))
                for layer in 0..<2 {
                    for p in 0...positions.max()! {
                        let keys = (0..<width).map { _ in Float.random(in: -1...1, using: &generator) }
                        let values = (0..<width).map { _ in Float.random(in: -1...1, using: &generator) }
                        storeKeysAndValues(keys, values, width: width, placements: [TokenPlacement(slot: slot, position: p)],
                                           layer: layer, cache: cache)
                    }
                }
                // Blocks before the window are gone, as in the engine: the kernel must not read them.
                cache.trimWindows(slot: slot, nextPosition: positions.min()!)
            }
            queries = (0..<(placements.count * shape.heads * shape.headSize)).map { _ in
                Float.random(in: -1...1, using: &generator)
            }
        }
    }

    static func attentionShape(_ shape: Shape, window: Int?) -> AttentionShape {
        AttentionShape(heads: shape.heads, kvHeads: shape.kvHeads, headSize: shape.headSize,
                       scale: 1 / Float(shape.headSize).squareRoot(), window: window)
    }

    /// `count` stored key (or value) elements of `view` at `position` from `offset`, as floats.
    static func stored(_ cache: KVCache, _ view: LayerView, key: Bool, position: Int, offset: Int, count: Int) -> [Float] {
        switch cache.storage {
        case .float32:
            let p = key ? view.key(position, as: Float.self) : view.value(position, as: Float.self)
            return (0..<count).map { p[offset + $0] }
        case .float16:
            let p = key ? view.key(position, as: Float16.self) : view.value(position, as: Float16.self)
            return (0..<count).map { Float(p[offset + $0]) }
        }
    }

    /// Per token and head: `dot(q, k) · scale` for each visible key (as stored), the kernels' softmax (16 running
    /// lane sums of `exp16`, then `laneSum`), and each output column summed from zero over positions
    /// in increasing order with one fused multiply-add each.
    static func reference(_ batch: Batch, _ shape: AttentionShape) -> [Float] {
        let d = shape.headSize
        let groupSize = shape.heads / shape.kvHeads
        var output = [Float](repeating: .nan, count: batch.queries.count)
        for (t, placement) in batch.placements.enumerated() {
            let view = batch.cache.view(slot: placement.slot).layer(batch.layer)
            let first = shape.window.map { max(0, placement.position - $0 + 1) } ?? 0
            let positions = Array(first...placement.position)
            for h in 0..<shape.heads {
                let kvOffset = h / groupSize * d
                let queryStart = (t * shape.heads + h) * d
                var weights = batch.queries.withUnsafeBufferPointer { q in
                    positions.map {
                        let key = stored(batch.cache, view, key: true, position: $0, offset: kvOffset, count: d)
                        return dot(q.baseAddress! + queryStart, key, count: d) * shape.scale
                    }
                }
                softmax(&weights)
                let values = positions.map { stored(batch.cache, view, key: false, position: $0, offset: kvOffset, count: d) }
                for c in 0..<d {
                    var sum: Float = 0
                    for i in positions.indices { sum = sum.addingProduct(weights[i], values[i][c]) }
                    output[queryStart + c] = sum
                }
            }
        }
        return output
    }

    static func softmax(_ scores: inout [Float]) {
        let maximum = scores.max()!
        var totals = SIMD16<Float>()
        for start in stride(from: 0, to: scores.count, by: 16) {
            let n = min(16, scores.count - start)
            var x = SIMD16<Float>()
            for j in 0..<n { x[j] = scores[start + j] - maximum }
            let e = exp16(x)
            for j in 0..<n {
                scores[start + j] = e[j]
                totals[j] += e[j]
            }
        }
        let inverse = 1 / laneSum(totals)
        for i in scores.indices { scores[i] *= inverse }
    }

    static func attend(_ batch: Batch, _ shape: AttentionShape, pool: ComputePool, path: AttentionPath?) -> [Float] {
        var output = [Float](repeating: .nan, count: batch.queries.count)
        batch.queries.withUnsafeBufferPointer { q in
            output.withUnsafeMutableBufferPointer { out in
                if let path {
                    causalAttention(queries: q.baseAddress!, placements: batch.placements, shape: shape, cache: batch.cache,
                                    layer: batch.layer, output: out.baseAddress!, pool: pool, path: path)
                } else {
                    causalAttention(queries: q.baseAddress!, placements: batch.placements, shape: shape, cache: batch.cache,
                                    layer: batch.layer, output: out.baseAddress!, pool: pool)
                }
            }
        }
        return output
    }

    /// Indices where the bits differ.
    static func mismatches(_ a: [Float], _ b: [Float]) -> [Int] {
        a.indices.filter { a[$0].bitPattern != b[$0].bitPattern }
    }

    @Test(arguments: shapes, windows)
    func bothPathsMatchTheReferenceBitForBit(shape: Shape, window: Int?) {
        for onlyFirstToken in [true, false] {
            for storage in KVStorage.allCases {
                let batch = Batch(shape, window: window, onlyFirstToken: onlyFirstToken, seed: UInt64(shape.headSize * 31 + shape.heads),
                                  storage: storage)
                let attention = Self.attentionShape(shape, window: window)
                let expected = Self.reference(batch, attention)
                #expect(!expected.contains { $0.isNaN })
                for threads in [1, 2] {
                    let pool = ComputePool(threads: threads)
                    for path in [nil, AttentionPath.perHead, .grouped] {
                        let got = Self.attend(batch, attention, pool: pool, path: path)
                        let wrong = Self.mismatches(got, expected)
                        #expect(wrong.isEmpty, """
                            \(wrong.count) of \(got.count) differ (\(batch.placements.count) tokens, \(threads) threads, \
                            path \(path.map { "\($0)" } ?? "chosen"), \(storage)); first at \(wrong.first ?? -1)
                            """)
                    }
                }
            }
        }
    }

    /// The C kernels (AVX-512, AVX2 and the baseline's, whose fused multiply-adds are software ones on
    /// x86-64-v2) and the portable Swift ones they stand in for, bit for bit, one kernel
    /// at a time: head sizes with and without 64-, 16- and 1-column tails, every count of positions
    /// up to 40 (each partial block of 16, 4 and 1 keys) and longer runs, first positions inside a
    /// cache block (as windows give), the second KV head of a row, both storages, and queries,
    /// keys, values and weights from 2⁻¹⁴⁰ (below the normal floats) to 2⁵⁰ with ±0 among them
    /// (no sum can overflow). Outputs start as NaN, a word past each is checked too.
    @Test(arguments: [1, 8, 16, 24, 40, 64, 72, 80, 128, 144, 200, 256])
    func theCKernelsEqualThePortableOnesBitForBit(headSize d: Int) {
        var generator = SplitMix64(seed: UInt64(d) * 7 + 1)
        func sample() -> Float {
            switch Int.random(in: 0..<20, using: &generator) {
            case 0: return 0
            case 1: return -0.0
            case 2...5:
                let magnitude = Float(sign: .plus, exponent: Int.random(in: -140...50, using: &generator),
                                      significand: Float.random(in: 1..<2, using: &generator))
                return Bool.random(using: &generator) ? magnitude : -magnitude
            default: return Float.random(in: -1...1, using: &generator)
            }
        }
        let kvHeads = 2, width = kvHeads * d, positions = 300
        var ranges = (1...40).flatMap { [(0, $0), (5, $0), (16, $0)] }
        ranges += [(17, 100), (0, 161), (3, 297), (0, 300)]
        let queries = (0..<(4 * d)).map { _ in sample() }
        let weights = (0..<(4 * (positions + 3))).map { _ in sample() }
        for storage in KVStorage.allCases {
            let cache = KVCache(layerCount: 1, width: width, slidingWindows: [nil], blockPositions: 16, storage: storage)
            #expect(cache.reserve(slot: 0, positions: positions))
            for p in 0..<positions {
                let keys = (0..<width).map { _ in sample() }, values = (0..<width).map { _ in sample() }
                storeKeysAndValues(keys, values, width: width, placements: [TokenPlacement(slot: 0, position: p)], layer: 0,
                                   cache: cache)
            }
            let view = cache.view(slot: 0).layer(0)
            for (first, count) in ranges {
                for kvOffset in [0, d] {
                    for scale in [1 / Float(d).squareRoot(), 0.37] {
                        let range = first...(first + count - 1)
                        for family in [KernelFamily.baseline] + (avx2Available ? [.avx2] : []) + (avx512Available ? [.avx512] : []) {
                            let failures = switch storage {
                            case .float32:
                                Self.kernelDifferences(Float.self, family, view: view, queries: queries, weights: weights,
                                                       headSize: d, kvOffset: kvOffset, scale: scale, positions: range)
                            case .float16:
                                Self.kernelDifferences(Float16.self, family, view: view, queries: queries, weights: weights,
                                                       headSize: d, kvOffset: kvOffset, scale: scale, positions: range)
                            }
                            #expect(failures.isEmpty,
                                    "\(family) \(storage), positions \(range), KV offset \(kvOffset), scale \(scale): \(failures)")
                        }
                    }
                }
            }
        }
    }

    /// The C attention kernels of one instruction set.
    enum KernelFamily { case baseline, avx2, avx512 }

    /// Each C attention kernel of `family` against its portable version over `positions`: what differs.
    static func kernelDifferences<E: CacheElement>(_: E.Type, _ family: KernelFamily, view: LayerView, queries: [Float], weights: [Float],
                                                   headSize d: Int, kvOffset: Int, scale: Float,
                                                   positions range: ClosedRange<Int>) -> [String] {
        let count = range.count, stride = count + 3
        var failures: [String] = []
        func compare(_ name: String, size: Int, _ portable: (UnsafeMutablePointer<Float>) -> Void,
                     _ accelerated: (UnsafeMutablePointer<Float>) -> Void) {
            var expected = [Float](repeating: .nan, count: size), got = expected
            expected.withUnsafeMutableBufferPointer { portable($0.baseAddress!) }
            got.withUnsafeMutableBufferPointer { accelerated($0.baseAddress!) }
            let wrong = mismatches(got, expected)
            if let i = wrong.first { failures.append("\(name): \(wrong.count) of \(size) differ, first at \(i): \(got[i]) for \(expected[i])") }
        }
        let keys = view.rows(keys: true, from: kvOffset, as: E.self)
        let values = view.rows(keys: false, from: kvOffset, as: E.self)
        queries.withUnsafeBufferPointer { queries in
            weights.withUnsafeBufferPointer { weights in
                let q = queries.baseAddress!, w = weights.baseAddress!
                compare("scores", size: count + 1, {
                    portableAttentionScores(E.self, q, view: view, kvOffset: kvOffset, headSize: d, scale: scale,
                                            positions: range, into: $0)
                }, {
                    switch family {
                    case .baseline: sluice_attention_scores_baseline(q, keys, d, scale, range.lowerBound, range.upperBound, $0)
                    case .avx2: sluice_attention_scores_avx2(q, keys, d, scale, range.lowerBound, range.upperBound, $0)
                    case .avx512: sluice_attention_scores(q, keys, d, scale, range.lowerBound, range.upperBound, $0)
                    }
                })
                compare("group scores", size: 4 * stride, {
                    portableGroupScores4(E.self, q, view: view, kvOffset: kvOffset, headSize: d, scale: scale,
                                         positions: range, into: $0, stride: stride)
                }, {
                    switch family {
                    case .baseline: sluice_group_scores4_baseline(q, keys, d, scale, range.lowerBound, range.upperBound, $0, stride)
                    case .avx2: sluice_group_scores4_avx2(q, keys, d, scale, range.lowerBound, range.upperBound, $0, stride)
                    case .avx512: sluice_group_scores4(q, keys, d, scale, range.lowerBound, range.upperBound, $0, stride)
                    }
                })
                compare("weighted values", size: d + 1, {
                    portableWeightedValues(E.self, w, view: view, kvOffset: kvOffset, headSize: d, positions: range,
                                           into: $0)
                }, {
                    switch family {
                    case .baseline: sluice_weighted_values_baseline(w, values, d, range.lowerBound, range.upperBound, $0)
                    case .avx2: sluice_weighted_values_avx2(w, values, d, range.lowerBound, range.upperBound, $0)
                    case .avx512: sluice_weighted_values(w, values, d, range.lowerBound, range.upperBound, $0)
                    }
                })
                compare("group weighted values", size: 4 * d + 1, {
                    portableGroupWeightedValues4(E.self, w, stride: stride, view: view, kvOffset: kvOffset, headSize: d,
                                                 positions: range, into: $0)
                }, {
                    switch family {
                    case .baseline:
                        sluice_group_weighted_values4_baseline(w, stride, values, d, range.lowerBound, range.upperBound, $0)
                    case .avx2: sluice_group_weighted_values4_avx2(w, stride, values, d, range.lowerBound, range.upperBound, $0)
                    case .avx512: sluice_group_weighted_values4(w, stride, values, d, range.lowerBound, range.upperBound, $0)
                    }
                })
            }
        }
        return failures
    }

    @Test func aSingleSequenceKeepsOneItemPerHeadAndABatchSharesLoads() {
        let gemma = AttentionShape(heads: 4, kvHeads: 1, headSize: 256, scale: 1, window: nil)
        #expect(AttentionPath.choose(shape: gemma, tokens: 1, threads: 2) == .perHead)
        #expect(AttentionPath.choose(shape: gemma, tokens: 32, threads: 2) == .grouped)
        #expect(AttentionPath.choose(shape: gemma, tokens: 512, threads: 1) == .grouped)
        // Without a 4-head group there is no load to share.
        let pairs = AttentionShape(heads: 8, kvHeads: 4, headSize: 64, scale: 1, window: nil)
        #expect(AttentionPath.choose(shape: pairs, tokens: 32, threads: 2) == .perHead)
    }
}
