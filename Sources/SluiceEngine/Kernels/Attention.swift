import CSluiceKernels
import Foundation

/// Where one token of a batch sits: its sequence's cache slot and its position.
public struct TokenPlacement: Sendable {
    public var slot: Int
    public var position: Int

    public init(slot: Int, position: Int) {
        self.slot = slot
        self.position = position
    }
}

/// The shape of one attention layer.
public struct AttentionShape: Sendable {
    public var heads: Int
    public var kvHeads: Int
    public var headSize: Int
    /// Multiplies each query-key dot product.
    public var scale: Float
    /// A query at position p sees keys at positions p - window + 1 ... p; nil: all earlier positions.
    public var window: Int?

    public init(heads: Int, kvHeads: Int, headSize: Int, scale: Float, window: Int?) {
        self.heads = heads
        self.kvHeads = kvHeads
        self.headSize = headSize
        self.scale = scale
        self.window = window
    }
}

/// Causal attention of each token's query heads over its sequence's cached keys and values.
///
/// The cache must already hold the keys and values of every token in the batch.
/// Each (token, head) is computed by one fixed chain of operations, over positions
/// in increasing order, so its result does not depend on the batch, on the thread,
/// on whether the token came in a prefill chunk or a decode step, or on whether
/// the heads of a KV group were computed together (see `AttentionPath`).
///
/// - Parameters:
///   - queries: `tokens × heads × headSize`.
///   - output: `tokens × heads × headSize`.
public func causalAttention(queries: UnsafePointer<Float>, placements: [TokenPlacement], shape: AttentionShape,
                            cache: KVCache, layer: Int, output: UnsafeMutablePointer<Float>, pool: ComputePool) {
    causalAttention(queries: queries, placements: placements, shape: shape, cache: cache, layer: layer, output: output,
                    pool: pool, path: AttentionPath.choose(shape: shape, tokens: placements.count, threads: pool.threadCount))
}

/// How `causalAttention` splits its work. Both compute every element by the same chain of
/// operations, so they give the same bits; they differ in memory traffic and parallelism.
enum AttentionPath {
    /// One work item per (token, query head): every head reads its KV head's keys and values.
    case perHead
    /// One work item per (token, KV head): the group's query heads share each load of a key or value.
    case grouped

    /// Grouping divides the reads of the cache by the group size (4 for Gemma 3), but it also
    /// divides the number of work items: a single sequence decoding would be 1 item for the whole
    /// pool. So it is used only where it gives at least `itemsPerThread` items per thread, and only
    /// where a group has a block of 4 heads to share loads across (the kernels group 4 heads).
    static let itemsPerThread = 4

    static func choose(shape: AttentionShape, tokens: Int, threads: Int) -> AttentionPath {
        let groupSize = shape.heads / shape.kvHeads
        return groupSize >= 4 && tokens * shape.kvHeads >= itemsPerThread * threads ? .grouped : .perHead
    }
}

/// `causalAttention` along a given path (tests compare the two).
func causalAttention(queries: UnsafePointer<Float>, placements: [TokenPlacement], shape: AttentionShape,
                     cache: KVCache, layer: Int, output: UnsafeMutablePointer<Float>, pool: ComputePool,
                     path: AttentionPath) {
    switch cache.storage {
    case .float32:
        attend(Float.self, queries: queries, placements: placements, shape: shape, cache: cache, layer: layer,
               output: output, pool: pool, path: path)
    case .float16:
        attend(Float16.self, queries: queries, placements: placements, shape: shape, cache: cache, layer: layer,
               output: output, pool: pool, path: path)
    }
}

/// `causalAttention` over a cache that stores `Element`s.
private func attend<Element: CacheElement>(_: Element.Type, queries: UnsafePointer<Float>, placements: [TokenPlacement],
                                           shape: AttentionShape, cache: KVCache, layer: Int,
                                           output: UnsafeMutablePointer<Float>, pool: ComputePool, path: AttentionPath) {
    let d = shape.headSize
    let groupSize = shape.heads / shape.kvHeads
    let queryWidth = shape.heads * d
    let views = placements.map { cache.view(slot: $0.slot).layer(layer) }
    func positions(_ placement: TokenPlacement) -> ClosedRange<Int> {
        (shape.window.map { max(0, placement.position - $0 + 1) } ?? 0)...placement.position
    }
    switch path {
    case .perHead:
        pool.parallelFor(placements.count * shape.heads) { item in
            let t = item / shape.heads
            let h = item % shape.heads
            let range = positions(placements[t])
            let kvOffset = h / groupSize * d
            let q = queries + t * queryWidth + h * d
            let out = output + t * queryWidth + h * d
            withUnsafeTemporaryAllocation(of: Float.self, capacity: range.count) { buffer in
                let scores = buffer.baseAddress!
                attentionScores(Element.self, q, view: views[t], kvOffset: kvOffset, headSize: d, scale: shape.scale,
                                positions: range, into: scores)
                softmaxInPlace(scores, count: range.count)
                weightedValues(Element.self, scores, view: views[t], kvOffset: kvOffset, headSize: d, positions: range,
                               into: out)
            }
        }
    case .grouped:
        pool.parallelFor(placements.count * shape.kvHeads) { item in
            let t = item / shape.kvHeads
            let kvHead = item % shape.kvHeads
            let range = positions(placements[t])
            let count = range.count
            let kvOffset = kvHead * d
            let q = queries + t * queryWidth + kvHead * groupSize * d
            let out = output + t * queryWidth + kvHead * groupSize * d
            withUnsafeTemporaryAllocation(of: Float.self, capacity: groupSize * count) { buffer in
                // Head h's scores, then its weights, are at scores + h·count.
                let scores = buffer.baseAddress!
                var h = 0
                while h + 4 <= groupSize {
                    groupScores4(Element.self, q + h * d, view: views[t], kvOffset: kvOffset, headSize: d,
                                 scale: shape.scale, positions: range, into: scores + h * count, stride: count)
                    h += 4
                }
                while h < groupSize {
                    attentionScores(Element.self, q + h * d, view: views[t], kvOffset: kvOffset, headSize: d,
                                    scale: shape.scale, positions: range, into: scores + h * count)
                    h += 1
                }
                for h in 0..<groupSize { softmaxInPlace(scores + h * count, count: count) }
                h = 0
                while h + 4 <= groupSize {
                    groupWeightedValues4(Element.self, UnsafePointer(scores + h * count), stride: count, view: views[t],
                                         kvOffset: kvOffset, headSize: d, positions: range, into: out + h * d)
                    h += 4
                }
                while h < groupSize {
                    weightedValues(Element.self, scores + h * count, view: views[t], kvOffset: kvOffset, headSize: d,
                                   positions: range, into: out + h * d)
                    h += 1
                }
            }
        }
    }
}

extension LayerView {
    /// Where the C attention kernels find these keys (or values), from element `kvOffset` of each row.
    @inline(__always)
    func rows<E: CacheElement>(keys: Bool, from kvOffset: Int, as _: E.Type) -> sluice_kv_rows {
        sluice_kv_rows(blocks: table, offset: (keys ? keyOffset : valueOffset) + kvOffset * MemoryLayout<E>.stride,
                       row_bytes: rowBytes, shift: Int32(shift), half: E.self == Float16.self ? 1 : 0)
    }
}

// The kernels below run in C (`avx512Available` and `avx2Available` follow SLUICE_CPU): the same
// operations, lane for lane and in the same order, as the portable Swift versions, which are their
// reference. The build's Swift code targets x86-64-v2, where each fused multiply-add is a call into
// libm; attention_kernels.h is those Swift kernels in C, compiled for AVX2 and for the baseline
// (software fused multiply-adds on x86-64-v2, vector16.h), and the AVX-512 ones keep the grouped
// kernels' 16 sixteen-lane accumulators in registers (in AVX2 halves they spill: attention took 15%
// of a 32-sequence decode step instead of 7.8%).

/// `portableGroupScores4`, in C.
@inline(__always)
private func groupScores4<E: CacheElement>(_: E.Type, _ q: UnsafePointer<Float>, view: LayerView, kvOffset: Int,
                                           headSize d: Int, scale: Float, positions: ClosedRange<Int>,
                                           into scores: UnsafeMutablePointer<Float>, stride: Int) {
    if avx512Available {
        sluice_group_scores4(q, view.rows(keys: true, from: kvOffset, as: E.self), d, scale, positions.lowerBound,
                             positions.upperBound, scores, stride)
    } else if avx2Available {
        sluice_group_scores4_avx2(q, view.rows(keys: true, from: kvOffset, as: E.self), d, scale, positions.lowerBound,
                                  positions.upperBound, scores, stride)
    } else {
        sluice_group_scores4_baseline(q, view.rows(keys: true, from: kvOffset, as: E.self), d, scale, positions.lowerBound,
                                      positions.upperBound, scores, stride)
    }
}

/// `portableGroupWeightedValues4`, in C.
@inline(__always)
private func groupWeightedValues4<E: CacheElement>(_: E.Type, _ weights: UnsafePointer<Float>, stride: Int, view: LayerView,
                                                   kvOffset: Int, headSize d: Int, positions: ClosedRange<Int>,
                                                   into out: UnsafeMutablePointer<Float>) {
    if avx512Available {
        sluice_group_weighted_values4(weights, stride, view.rows(keys: false, from: kvOffset, as: E.self), d,
                                      positions.lowerBound, positions.upperBound, out)
    } else if avx2Available {
        sluice_group_weighted_values4_avx2(weights, stride, view.rows(keys: false, from: kvOffset, as: E.self), d,
                                           positions.lowerBound, positions.upperBound, out)
    } else {
        sluice_group_weighted_values4_baseline(weights, stride, view.rows(keys: false, from: kvOffset, as: E.self), d,
                                               positions.lowerBound, positions.upperBound, out)
    }
}

/// `portableAttentionScores`, in C.
@inline(__always)
private func attentionScores<E: CacheElement>(_: E.Type, _ q: UnsafePointer<Float>, view: LayerView, kvOffset: Int,
                                              headSize d: Int, scale: Float, positions: ClosedRange<Int>,
                                              into scores: UnsafeMutablePointer<Float>) {
    if avx512Available {
        sluice_attention_scores(q, view.rows(keys: true, from: kvOffset, as: E.self), d, scale, positions.lowerBound,
                                positions.upperBound, scores)
    } else if avx2Available {
        sluice_attention_scores_avx2(q, view.rows(keys: true, from: kvOffset, as: E.self), d, scale, positions.lowerBound,
                                     positions.upperBound, scores)
    } else {
        sluice_attention_scores_baseline(q, view.rows(keys: true, from: kvOffset, as: E.self), d, scale, positions.lowerBound,
                                         positions.upperBound, scores)
    }
}

/// `portableWeightedValues`, in C.
@inline(__always)
private func weightedValues<E: CacheElement>(_: E.Type, _ weights: UnsafePointer<Float>, view: LayerView, kvOffset: Int,
                                             headSize d: Int, positions: ClosedRange<Int>,
                                             into out: UnsafeMutablePointer<Float>) {
    if avx512Available {
        sluice_weighted_values(weights, view.rows(keys: false, from: kvOffset, as: E.self), d, positions.lowerBound,
                               positions.upperBound, out)
    } else if avx2Available {
        sluice_weighted_values_avx2(weights, view.rows(keys: false, from: kvOffset, as: E.self), d, positions.lowerBound,
                                    positions.upperBound, out)
    } else {
        sluice_weighted_values_baseline(weights, view.rows(keys: false, from: kvOffset, as: E.self), d, positions.lowerBound,
                                        positions.upperBound, out)
    }
}

/// Scores of four query heads (`q`, `q + d`, `q + 2d`, `q + 3d`) against the same keys, four keys at
/// a time: each 16 floats of a key are loaded once for the four heads (16 independent chains).
/// Head i's scores go to `scores + i·stride`. Each score is the same chain as `dot(q, k) * scale`.
@inline(__always)
func portableGroupScores4<E: CacheElement>(_: E.Type, _ q: UnsafePointer<Float>, view: LayerView, kvOffset: Int,
                                           headSize d: Int, scale: Float, positions: ClosedRange<Int>,
                                           into scores: UnsafeMutablePointer<Float>, stride: Int) {
    let first = positions.lowerBound
    let q0 = q, q1 = q + d, q2 = q + 2 * d, q3 = q + 3 * d
    let s0 = scores, s1 = scores + stride, s2 = scores + 2 * stride, s3 = scores + 3 * stride
    var p = first
    while p + 4 <= positions.upperBound + 1 {
        let k0 = UnsafePointer(view.key(p, as: E.self) + kvOffset), k1 = UnsafePointer(view.key(p + 1, as: E.self) + kvOffset)
        let k2 = UnsafePointer(view.key(p + 2, as: E.self) + kvOffset), k3 = UnsafePointer(view.key(p + 3, as: E.self) + kvOffset)
        let products = dotProducts4x4(q0, q1, q2, q3, k0, k1, k2, k3, count: d)
        let i = p - first
        for j in 0..<4 {
            s0[i + j] = products[j] * scale; s1[i + j] = products[4 + j] * scale
            s2[i + j] = products[8 + j] * scale; s3[i + j] = products[12 + j] * scale
        }
        p += 4
    }
    while p <= positions.upperBound {
        let key = UnsafePointer(view.key(p, as: E.self) + kvOffset)
        let i = p - first
        s0[i] = dotProduct(q0, key, count: d) * scale; s1[i] = dotProduct(q1, key, count: d) * scale
        s2[i] = dotProduct(q2, key, count: d) * scale; s3[i] = dotProduct(q3, key, count: d) * scale
        p += 1
    }
}

/// `out_i = Σ_p weight_i[p] · v[p]` for four heads i sharing the values, 64 columns at a time:
/// each 16 floats of a value are loaded once for the four heads (16 independent chains), over
/// positions in increasing order. Head i's weights are at `weights + i·stride`, its output at
/// `out + i·d`. Each output element is the same chain of multiply-adds from zero as in `weightedValues`.
@inline(__always)
func portableGroupWeightedValues4<E: CacheElement>(_: E.Type, _ weights: UnsafePointer<Float>, stride: Int, view: LayerView,
                                                   kvOffset: Int, headSize d: Int, positions: ClosedRange<Int>,
                                                   into out: UnsafeMutablePointer<Float>) {
    let first = positions.lowerBound
    let w0 = weights - first, w1 = w0 + stride, w2 = w1 + stride, w3 = w2 + stride
    let out0 = out, out1 = out + d, out2 = out + 2 * d, out3 = out + 3 * d
    var k = 0
    while k + 64 <= d {
        var o00 = SIMD16<Float>(), o01 = SIMD16<Float>(), o02 = SIMD16<Float>(), o03 = SIMD16<Float>()
        var o10 = SIMD16<Float>(), o11 = SIMD16<Float>(), o12 = SIMD16<Float>(), o13 = SIMD16<Float>()
        var o20 = SIMD16<Float>(), o21 = SIMD16<Float>(), o22 = SIMD16<Float>(), o23 = SIMD16<Float>()
        var o30 = SIMD16<Float>(), o31 = SIMD16<Float>(), o32 = SIMD16<Float>(), o33 = SIMD16<Float>()
        for p in positions {
            let v = UnsafePointer(view.value(p, as: E.self) + kvOffset + k)
            let v0 = E.load16(v), v1 = E.load16(v + 16), v2 = E.load16(v + 32), v3 = E.load16(v + 48)
            let x0 = SIMD16<Float>(repeating: w0[p])
            o00.addProduct(x0, v0); o01.addProduct(x0, v1); o02.addProduct(x0, v2); o03.addProduct(x0, v3)
            let x1 = SIMD16<Float>(repeating: w1[p])
            o10.addProduct(x1, v0); o11.addProduct(x1, v1); o12.addProduct(x1, v2); o13.addProduct(x1, v3)
            let x2 = SIMD16<Float>(repeating: w2[p])
            o20.addProduct(x2, v0); o21.addProduct(x2, v1); o22.addProduct(x2, v2); o23.addProduct(x2, v3)
            let x3 = SIMD16<Float>(repeating: w3[p])
            o30.addProduct(x3, v0); o31.addProduct(x3, v1); o32.addProduct(x3, v2); o33.addProduct(x3, v3)
        }
        storePartial16(o00, out0 + k, count: 16); storePartial16(o01, out0 + k + 16, count: 16)
        storePartial16(o02, out0 + k + 32, count: 16); storePartial16(o03, out0 + k + 48, count: 16)
        storePartial16(o10, out1 + k, count: 16); storePartial16(o11, out1 + k + 16, count: 16)
        storePartial16(o12, out1 + k + 32, count: 16); storePartial16(o13, out1 + k + 48, count: 16)
        storePartial16(o20, out2 + k, count: 16); storePartial16(o21, out2 + k + 16, count: 16)
        storePartial16(o22, out2 + k + 32, count: 16); storePartial16(o23, out2 + k + 48, count: 16)
        storePartial16(o30, out3 + k, count: 16); storePartial16(o31, out3 + k + 16, count: 16)
        storePartial16(o32, out3 + k + 32, count: 16); storePartial16(o33, out3 + k + 48, count: 16)
        k += 64
    }
    while k + 16 <= d {
        var o0 = SIMD16<Float>(), o1 = SIMD16<Float>(), o2 = SIMD16<Float>(), o3 = SIMD16<Float>()
        for p in positions {
            let v = E.load16(UnsafePointer(view.value(p, as: E.self) + kvOffset + k))
            o0.addProduct(SIMD16(repeating: w0[p]), v); o1.addProduct(SIMD16(repeating: w1[p]), v)
            o2.addProduct(SIMD16(repeating: w2[p]), v); o3.addProduct(SIMD16(repeating: w3[p]), v)
        }
        storePartial16(o0, out0 + k, count: 16); storePartial16(o1, out1 + k, count: 16)
        storePartial16(o2, out2 + k, count: 16); storePartial16(o3, out3 + k, count: 16)
        k += 16
    }
    while k < d {
        var o0: Float = 0, o1: Float = 0, o2: Float = 0, o3: Float = 0
        for p in positions {
            let v = E.float(view.value(p, as: E.self)[kvOffset + k])
            o0 = o0.addingProduct(w0[p], v); o1 = o1.addingProduct(w1[p], v)
            o2 = o2.addingProduct(w2[p], v); o3 = o3.addingProduct(w3[p], v)
        }
        out0[k] = o0; out1[k] = o1; out2[k] = o2; out3[k] = o3
        k += 1
    }
}

/// `scale · q·k` for the keys at `positions`, eight keys at a time (eight independent chains keep
/// both multiply-add pipes busy); each score is the kernels' `dot`, so the order within one is fixed.
@inline(__always)
func portableAttentionScores<E: CacheElement>(_: E.Type, _ q: UnsafePointer<Float>, view: LayerView, kvOffset: Int,
                                              headSize d: Int, scale: Float, positions: ClosedRange<Int>,
                                              into scores: UnsafeMutablePointer<Float>) {
    let first = positions.lowerBound
    var p = first
    while p + 8 <= positions.upperBound + 1 {
        let k0 = UnsafePointer(view.key(p, as: E.self) + kvOffset), k1 = UnsafePointer(view.key(p + 1, as: E.self) + kvOffset)
        let k2 = UnsafePointer(view.key(p + 2, as: E.self) + kvOffset), k3 = UnsafePointer(view.key(p + 3, as: E.self) + kvOffset)
        let k4 = UnsafePointer(view.key(p + 4, as: E.self) + kvOffset), k5 = UnsafePointer(view.key(p + 5, as: E.self) + kvOffset)
        let k6 = UnsafePointer(view.key(p + 6, as: E.self) + kvOffset), k7 = UnsafePointer(view.key(p + 7, as: E.self) + kvOffset)
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
        var a4 = SIMD16<Float>(), a5 = SIMD16<Float>(), a6 = SIMD16<Float>(), a7 = SIMD16<Float>()
        var k = 0
        while k + 16 <= d {
            let x = load16(q + k)
            a0.addProduct(x, E.load16(k0 + k)); a1.addProduct(x, E.load16(k1 + k))
            a2.addProduct(x, E.load16(k2 + k)); a3.addProduct(x, E.load16(k3 + k))
            a4.addProduct(x, E.load16(k4 + k)); a5.addProduct(x, E.load16(k5 + k))
            a6.addProduct(x, E.load16(k6 + k)); a7.addProduct(x, E.load16(k7 + k))
            k += 16
        }
        let row = scores + (p - first)
        row[0] = finish(a0, q, k0, from: k, to: d) * scale; row[1] = finish(a1, q, k1, from: k, to: d) * scale
        row[2] = finish(a2, q, k2, from: k, to: d) * scale; row[3] = finish(a3, q, k3, from: k, to: d) * scale
        row[4] = finish(a4, q, k4, from: k, to: d) * scale; row[5] = finish(a5, q, k5, from: k, to: d) * scale
        row[6] = finish(a6, q, k6, from: k, to: d) * scale; row[7] = finish(a7, q, k7, from: k, to: d) * scale
        p += 8
    }
    while p <= positions.upperBound {
        scores[p - first] = dotProduct(q, view.key(p, as: E.self) + kvOffset, count: d) * scale
        p += 1
    }
}

/// Softmax over `count` scores: `portableSoftmax`, in C.
@inline(__always)
private func softmaxInPlace(_ scores: UnsafeMutablePointer<Float>, count: Int) {
    if avx512Available {
        sluice_softmax(scores, count)
    } else if avx2Available {
        sluice_softmax_avx2(scores, count)
    } else {
        sluice_softmax_baseline(scores, count)
    }
}

/// Softmax over `count` scores, 16 lanes at a time; the sum is 16 running lanes, then `laneSum`.
func portableSoftmax(_ scores: UnsafeMutablePointer<Float>, count: Int) {
    var maximum = -Float.infinity
    for i in 0..<count { maximum = max(maximum, scores[i]) }
    let lanes = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    var totals = SIMD16<Float>()
    var i = 0
    while i < count {
        let n = min(16, count - i)
        let e = exp16(loadPartial16(scores + i, count: n) - SIMD16(repeating: maximum))
            .replacing(with: 0, where: lanes .>= SIMD16(repeating: Int32(n)))
        storePartial16(e, scores + i, count: n)
        totals += e
        i += 16
    }
    let inverse = 1 / laneSum(totals)
    for i in 0..<count { scores[i] *= inverse }
}

/// `out = Σ_p weight[p] · v[p]` over `positions` in increasing order, 128 columns at a time held in
/// registers across all positions: eight independent chains, and each output element is the same
/// chain of multiply-adds from zero as one column at a time would be.
@inline(__always)
func portableWeightedValues<E: CacheElement>(_: E.Type, _ weights: UnsafePointer<Float>, view: LayerView, kvOffset: Int,
                                             headSize d: Int, positions: ClosedRange<Int>,
                                             into out: UnsafeMutablePointer<Float>) {
    let first = positions.lowerBound
    var k = 0
    while k + 128 <= d {
        var o0 = SIMD16<Float>(), o1 = SIMD16<Float>(), o2 = SIMD16<Float>(), o3 = SIMD16<Float>()
        var o4 = SIMD16<Float>(), o5 = SIMD16<Float>(), o6 = SIMD16<Float>(), o7 = SIMD16<Float>()
        for p in positions {
            let w = SIMD16<Float>(repeating: weights[p - first])
            let v = UnsafePointer(view.value(p, as: E.self) + kvOffset + k)
            o0.addProduct(w, E.load16(v)); o1.addProduct(w, E.load16(v + 16))
            o2.addProduct(w, E.load16(v + 32)); o3.addProduct(w, E.load16(v + 48))
            o4.addProduct(w, E.load16(v + 64)); o5.addProduct(w, E.load16(v + 80))
            o6.addProduct(w, E.load16(v + 96)); o7.addProduct(w, E.load16(v + 112))
        }
        let o = out + k
        storePartial16(o0, o, count: 16); storePartial16(o1, o + 16, count: 16)
        storePartial16(o2, o + 32, count: 16); storePartial16(o3, o + 48, count: 16)
        storePartial16(o4, o + 64, count: 16); storePartial16(o5, o + 80, count: 16)
        storePartial16(o6, o + 96, count: 16); storePartial16(o7, o + 112, count: 16)
        k += 128
    }
    while k + 16 <= d {
        var o = SIMD16<Float>()
        for p in positions {
            o.addProduct(SIMD16(repeating: weights[p - first]), E.load16(UnsafePointer(view.value(p, as: E.self) + kvOffset + k)))
        }
        storePartial16(o, out + k, count: 16)
        k += 16
    }
    while k < d {
        var o: Float = 0
        for p in positions { o = o.addingProduct(weights[p - first], E.float(view.value(p, as: E.self)[kvOffset + k])) }
        out[k] = o
        k += 1
    }
}
