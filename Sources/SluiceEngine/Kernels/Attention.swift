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
            var maximum = -Float.infinity
            for p in first...last {
                let s = dot(q, view.key(p) + kvHead * d, count: d) * shape.scale
                scores[p - first] = s
                maximum = max(maximum, s)
            }
            var total: Float = 0
            for i in 0...(last - first) {
                let e = expf(scores[i] - maximum)
                scores[i] = e
                total += e
            }
            let inverse = 1 / total
            out.initialize(repeating: 0, count: d)
            for p in first...last {
                let weight = scores[p - first] * inverse
                let v = UnsafePointer(view.value(p) + kvHead * d)
                var k = 0
                while k + 16 <= d {
                    var acc = UnsafeRawPointer(out + k).loadUnaligned(as: SIMD16<Float>.self)
                    acc.addProduct(SIMD16(repeating: weight), UnsafeRawPointer(v + k).loadUnaligned(as: SIMD16<Float>.self))
                    UnsafeMutableRawPointer(out + k).storeBytes(of: acc, as: SIMD16<Float>.self)
                    k += 16
                }
                while k < d { out[k] = out[k].addingProduct(weight, v[k]); k += 1 }
            }
        }
    }
}
