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
/// Each (token, head) is computed alone, over positions in increasing order, so
/// its result does not depend on the batch, on the thread, or on whether the
/// token came in a prefill chunk or a decode step.
///
/// - Parameters:
///   - queries: `tokens × heads × headSize`.
///   - output: `tokens × heads × headSize`.
public func causalAttention(queries: UnsafePointer<Float>, placements: [TokenPlacement], shape: AttentionShape,
                            cache: KVCache, layer: Int, output: UnsafeMutablePointer<Float>, pool: ComputePool) {
    let d = shape.headSize
    let groupSize = shape.heads / shape.kvHeads
    let queryWidth = shape.heads * d
    let items = placements.count * shape.heads
    let longest = placements.map(\.position).max().map { $0 + 1 } ?? 0
    let views = placements.map { cache.view(slot: $0.slot).layer(layer) }
    pool.parallelFor(items) { item in
        let t = item / shape.heads
        let h = item % shape.heads
        let placement = placements[t]
        let kvHead = h / groupSize
        let first = shape.window.map { max(0, placement.position - $0 + 1) } ?? 0
        let last = placement.position
        let q = queries + t * queryWidth + h * d
        let view = views[t]
        let out = output + t * queryWidth + h * d
        withUnsafeTemporaryAllocation(of: Float.self, capacity: min(longest, last - first + 1)) { buffer in
            let scores = buffer.baseAddress!
            let count = last - first + 1
            attentionScores(q, view: view, kvOffset: kvHead * d, headSize: d, scale: shape.scale,
                            positions: first...last, into: scores)
            softmaxInPlace(scores, count: count)
            weightedValues(scores, view: view, kvOffset: kvHead * d, headSize: d, positions: first...last, into: out)
        }
    }
}

/// `scale · q·k` for the keys at `positions`, eight keys at a time (eight independent chains keep
/// both multiply-add pipes busy); each score is the kernels' `dot`, so the order within one is fixed.
@inline(__always)
private func attentionScores(_ q: UnsafePointer<Float>, view: LayerView, kvOffset: Int, headSize d: Int, scale: Float,
                             positions: ClosedRange<Int>, into scores: UnsafeMutablePointer<Float>) {
    let first = positions.lowerBound
    var p = first
    while p + 8 <= positions.upperBound + 1 {
        let k0 = UnsafePointer(view.key(p) + kvOffset), k1 = UnsafePointer(view.key(p + 1) + kvOffset)
        let k2 = UnsafePointer(view.key(p + 2) + kvOffset), k3 = UnsafePointer(view.key(p + 3) + kvOffset)
        let k4 = UnsafePointer(view.key(p + 4) + kvOffset), k5 = UnsafePointer(view.key(p + 5) + kvOffset)
        let k6 = UnsafePointer(view.key(p + 6) + kvOffset), k7 = UnsafePointer(view.key(p + 7) + kvOffset)
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
        var a4 = SIMD16<Float>(), a5 = SIMD16<Float>(), a6 = SIMD16<Float>(), a7 = SIMD16<Float>()
        var k = 0
        while k + 16 <= d {
            let x = load16(q + k)
            a0.addProduct(x, load16(k0 + k)); a1.addProduct(x, load16(k1 + k))
            a2.addProduct(x, load16(k2 + k)); a3.addProduct(x, load16(k3 + k))
            a4.addProduct(x, load16(k4 + k)); a5.addProduct(x, load16(k5 + k))
            a6.addProduct(x, load16(k6 + k)); a7.addProduct(x, load16(k7 + k))
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
        scores[p - first] = dot(q, view.key(p) + kvOffset, count: d) * scale
        p += 1
    }
}

/// Softmax over `count` scores, 16 lanes at a time; the sum is 16 running lanes, then `laneSum`.
@inline(__always)
private func softmaxInPlace(_ scores: UnsafeMutablePointer<Float>, count: Int) {
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
private func weightedValues(_ weights: UnsafePointer<Float>, view: LayerView, kvOffset: Int, headSize d: Int,
                            positions: ClosedRange<Int>, into out: UnsafeMutablePointer<Float>) {
    let first = positions.lowerBound
    var k = 0
    while k + 128 <= d {
        var o0 = SIMD16<Float>(), o1 = SIMD16<Float>(), o2 = SIMD16<Float>(), o3 = SIMD16<Float>()
        var o4 = SIMD16<Float>(), o5 = SIMD16<Float>(), o6 = SIMD16<Float>(), o7 = SIMD16<Float>()
        for p in positions {
            let w = SIMD16<Float>(repeating: weights[p - first])
            let v = UnsafePointer(view.value(p) + kvOffset + k)
            o0.addProduct(w, load16(v)); o1.addProduct(w, load16(v + 16))
            o2.addProduct(w, load16(v + 32)); o3.addProduct(w, load16(v + 48))
            o4.addProduct(w, load16(v + 64)); o5.addProduct(w, load16(v + 80))
            o6.addProduct(w, load16(v + 96)); o7.addProduct(w, load16(v + 112))
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
        for p in positions { o.addProduct(SIMD16(repeating: weights[p - first]), load16(UnsafePointer(view.value(p) + kvOffset + k))) }
        storePartial16(o, out + k, count: 16)
        k += 16
    }
    while k < d {
        var o: Float = 0
        for p in positions { o = o.addingProduct(weights[p - first], view.value(p)[kvOffset + k]) }
        out[k] = o
        k += 1
    }
}
