import CSluiceKernels
import Foundation

/// Root-mean-square normalization of `count` rows of `width` floats, scaled by `weight`.
///
/// The mean square is accumulated in Double: it costs nothing next to the
/// matrix products and keeps the scale as exact as the float64 reference's.
public func rmsNorm(_ x: UnsafePointer<Float>, rows: Int, width: Int, weight: UnsafePointer<Float>,
                    epsilon: Float, into y: UnsafeMutablePointer<Float>) {
    for r in 0..<rows {
        let row = x + r * width
        let out = y + r * width
        // Eight running lanes over the elements below the last multiple of 8, then the rest.
        var acc = SIMD8<Double>()
        let whole = width / 8 * 8
        if avx2Available {
            withUnsafeMutableBytes(of: &acc) { sluice_square_lanes_avx2(row, width, $0.baseAddress!.assumingMemoryBound(to: Double.self)) }
        } else {
            for k in stride(from: 0, to: whole, by: 8) {
                let v = SIMD8<Double>(UnsafeRawPointer(row + k).loadUnaligned(as: SIMD8<Float>.self))
                acc.addProduct(v, v)
            }
        }
        var sumSquares = acc.sum()
        var k = whole
        while k < width { sumSquares += Double(row[k]) * Double(row[k]); k += 1 }
        let scale = Float(1 / (sumSquares / Double(width) + Double(epsilon)).squareRoot())
        for i in 0..<width { out[i] = row[i] * scale * weight[i] }
    }
}

/// ``rmsNorm(_:rows:width:weight:epsilon:into:)`` with its rows spread over `pool` when there are
/// enough of them to pay for the hand-off. Each row is computed exactly as on one thread.
public func rmsNorm(_ x: UnsafePointer<Float>, rows: Int, width: Int, weight: UnsafePointer<Float>,
                    epsilon: Float, into y: UnsafeMutablePointer<Float>, pool: ComputePool) {
    forEachRange(rows, minimumPerChunk: ElementwiseSplit.rows(ofWidth: width), pool: pool) { range in
        rmsNorm(x + range.lowerBound * width, rows: range.count, width: width, weight: weight, epsilon: epsilon,
                into: y + range.lowerBound * width)
    }
}

/// `y += x` over `count` floats.
public func addInPlace(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
    for i in 0..<count { y[i] += x[i] }
}

/// `y *= s` over `count` floats.
public func scaleInPlace(_ y: UnsafeMutablePointer<Float>, by s: Float, count: Int) {
    for i in 0..<count { y[i] *= s }
}

/// `gate = gelu(gate) * up`, GELU in its tanh form as Gemma defines it.
///
/// Where the CPU runs AVX-512, `sluice_gelu_tanh_gate`: the same operations as
/// `portableGeluTanhGate`, bit for bit, which Swift lowers to split vectors and scalar code
/// (3.2 ns per element; GELU was 4.5% of a 32-sequence decode step); below, the same in C
/// (elementwise_kernels.h) compiled for AVX2 or for the baseline.
public func geluTanhGate(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
    if avx512Available {
        sluice_gelu_tanh_gate(gate, up, count)
    } else if avx2Available {
        sluice_gelu_tanh_gate_avx2(gate, up, count)
    } else {
        sluice_gelu_tanh_gate_baseline(gate, up, count)
    }
}

/// Whether this CPU (and build) runs the AVX-512 elementwise and attention kernels (`SLUICE_CPU` permitting).
let avx512Available = sluice_avx512_available() != 0

/// Whether the variant in use is `avx2` or above (`SLUICE_CPU` permitting). The build's Swift code
/// targets x86-64-v2, where every fused multiply-add of its SIMD code is a call into libm: the
/// kernels built on them run in C, the same operations lane for lane (vector16.h), compiled for
/// AVX2 + FMA (`_avx2`) and for the baseline (`_baseline`: software fused multiply-adds on
/// x86-64-v2, rounded as the instruction rounds), so every variant computes the same bits.
let avx2Available = sluice_avx2_available() != 0

/// `geluTanhGate` in Swift, the C kernels' reference: sixteen lanes at a time (a partial last group included), with
/// `tanh16` (the scalar `tanhf` took a tenth of a batched decode step).
func portableGeluTanhGate(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
    let c = SIMD16<Float>(repeating: Float((2.0 / Double.pi).squareRoot()))
    var i = 0
    while i < count {
        let n = min(16, count - i)
        let g = loadPartial16(gate + i, count: n), u = loadPartial16(up + i, count: n)
        let inner = c * (g + 0.044715 * g * g * g)
        storePartial16(0.5 * g * (1 + tanh16(inner)) * u, gate + i, count: n)
        i += 16
    }
}

/// `gate = silu(gate) * up`, the SwiGLU of Llama and Qwen: `portableSiluGate`, in C.
public func siluGate(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
    if avx2Available {
        sluice_silu_gate_avx2(gate, up, count)
    } else {
        sluice_silu_gate_baseline(gate, up, count)
    }
}

/// `siluGate` in Swift, the C kernels' reference: sixteen lanes at a time.
func portableSiluGate(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
    var i = 0
    while i < count {
        let n = min(16, count - i)
        let g = loadPartial16(gate + i, count: n), u = loadPartial16(up + i, count: n)
        storePartial16(g / (1 + exp16(-g)) * u, gate + i, count: n)
        i += 16
    }
}

/// Adds a bias vector of `width` floats to each of `rows` rows.
public func addBias(_ y: UnsafeMutablePointer<Float>, rows: Int, width: Int, bias: UnsafePointer<Float>) {
    for r in 0..<rows { addInPlace(y + r * width, bias, count: width) }
}

/// ``addInPlace(_:_:count:)`` spread over `pool` when `count` is large enough to pay for the hand-off.
public func addInPlace(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int, pool: ComputePool) {
    forEachRange(count, minimumPerChunk: ElementwiseSplit.addElements, granule: 16, pool: pool) { range in
        addInPlace(y + range.lowerBound, x + range.lowerBound, count: range.count)
    }
}

/// ``geluTanhGate(_:_:count:)`` spread over `pool` when `count` is large enough to pay for the hand-off.
/// Chunks start at multiples of 16, so every element falls in the same SIMD group as on one thread.
public func geluTanhGate(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int, pool: ComputePool) {
    forEachRange(count, minimumPerChunk: ElementwiseSplit.gateElements, granule: 16, pool: pool) { range in
        geluTanhGate(gate + range.lowerBound, up + range.lowerBound, count: range.count)
    }
}

/// ``siluGate(_:_:count:)`` spread over `pool` when `count` is large enough to pay for the hand-off.
public func siluGate(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int, pool: ComputePool) {
    forEachRange(count, minimumPerChunk: ElementwiseSplit.gateElements, granule: 16, pool: pool) { range in
        siluGate(gate + range.lowerBound, up + range.lowerBound, count: range.count)
    }
}

/// ``addBias(_:rows:width:bias:)`` with its rows spread over `pool` when there are enough of them.
public func addBias(_ y: UnsafeMutablePointer<Float>, rows: Int, width: Int, bias: UnsafePointer<Float>, pool: ComputePool) {
    forEachRange(rows, minimumPerChunk: ElementwiseSplit.rows(ofWidth: width, elementsPerChunk: ElementwiseSplit.addElements),
                 pool: pool) { range in
        addBias(y + range.lowerBound * width, rows: range.count, width: width, bias: bias)
    }
}

/// How much elementwise work a chunk needs before handing it to another thread pays.
///
/// A `ComputePool` hand-off costs about a microsecond when its workers are spinning, as they are
/// right after a matrix product, so a chunk should hold a microsecond or more of work. Measured on
/// the 2-core Zen 4 dev machine with ElementwiseBenchmarkTests (one thread against two):
/// GELU 3.2 ns per element (one 2048-wide token: 6.6 → 4.0 µs; a third less since `tanh16`
/// selects on bits), SiLU 1.6 ns (3.3 → 2.3 µs);
/// additions 0.05 ns (even at 20k elements, 3.4 → 2.5 µs at 41k); row norms 0.2 ns
/// (8 rows of 640: 1.1 → 1.2 µs, 16 rows: 2.1 → 1.9, 32 rows: 4.2 → 2.7).
enum ElementwiseSplit {
    /// GELU and SiLU gates: one decode token of a 2048-wide feed-forward block already splits.
    static let gateElements = 1024
    /// Additions move memory more than they compute.
    static let addElements = 16384
    /// Row norms, and per-token work of about a norm's cost per element (RoPE, fused norm + residual).
    static let normElements = 4096
    /// Chunks per thread: the caller claims items too, so a few chunks per thread let whoever is
    /// running take more of them when another process keeps a worker off its core.
    static let chunksPerThread = 4

    /// Rows of `width` floats that make one chunk's worth of `elementsPerChunk`.
    static func rows(ofWidth width: Int, elementsPerChunk: Int = normElements) -> Int {
        max(1, elementsPerChunk / max(1, width))
    }
}

/// Runs `body` over consecutive ranges that together cover `0..<count` exactly once: spread over
/// `pool` when there are at least two chunks of `minimumPerChunk` units, else as one range on the
/// calling thread.
///
/// Range bounds other than `count` are multiples of `granule` (16 keeps SIMD groups whole). Which
/// thread runs a range never changes its result: `body` must write only inside its range.
func forEachRange(_ count: Int, minimumPerChunk: Int, granule: Int = 1, pool: ComputePool,
                  _ body: (Range<Int>) -> Void) {
    let granules = (count + granule - 1) / granule
    let chunks = min(pool.threadCount * ElementwiseSplit.chunksPerThread, count / max(1, minimumPerChunk), granules)
    guard pool.threadCount > 1, chunks >= 2 else {
        if count > 0 { body(0..<count) }
        return
    }
    pool.parallelFor(chunks) { chunk in
        let start = min(count, granule * (granules * chunk / chunks))
        let end = min(count, granule * (granules * (chunk + 1) / chunks))
        if start < end { body(start..<end) }
    }
}
