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
        var acc = SIMD8<Double>()
        var k = 0
        while k + 8 <= width {
            let v = SIMD8<Double>(UnsafeRawPointer(row + k).loadUnaligned(as: SIMD8<Float>.self))
            acc.addProduct(v, v)
            k += 8
        }
        var sumSquares = acc.sum()
        while k < width { sumSquares += Double(row[k]) * Double(row[k]); k += 1 }
        let scale = Float(1 / (sumSquares / Double(width) + Double(epsilon)).squareRoot())
        for i in 0..<width { out[i] = row[i] * scale * weight[i] }
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
/// Sixteen lanes at a time (a partial last group included), with `tanh16`: the scalar `tanhf`
/// took a tenth of a batched decode step.
public func geluTanhGate(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
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

/// `gate = silu(gate) * up`, the SwiGLU of Llama and Qwen, sixteen lanes at a time.
public func siluGate(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
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
