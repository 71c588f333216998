/// Vector forms of the scalar math the kernels need. Each computes every lane the same way, so an
/// elementwise result does not depend on where its element falls in a call.

/// The sum of 16 lanes as a balanced tree: halves, then quarters, and so on.
///
/// The standard library's `sum()` adds the lanes one after another, a chain of 15 dependent adds
/// per dot product that cost more than the multiplies in a batched matrix product. Every dot
/// product in the kernels ends here, so all of them keep one reduction order.
@inline(__always)
func laneSum(_ v: SIMD16<Float>) -> Float {
    let eight = v.lowHalf + v.highHalf
    let four = eight.lowHalf + eight.highHalf
    let two = four.lowHalf + four.highHalf
    return two[0] + two[1]
}

/// `e^x` per lane, within about one unit in the last place for results in the normal range.
///
/// `x` is split as `n·ln 2 + r` with `|r| ≤ ln 2 / 2` (ln 2 in two parts, so that `n·ln2High` is
/// exact), `e^r` comes from its Taylor polynomial to degree 7 (truncation error below 2⁻²⁷), and
/// `2^n` is built in the exponent bits. Inputs are clamped to where results are normal floats.
@inline(__always)
func exp16(_ x: SIMD16<Float>) -> SIMD16<Float> {
    let clamped = clamp16(x, -87, 88)
    // Adding 1.5·2²³ rounds to the nearest integer, which then sits in the low mantissa bits.
    let roundingShift = SIMD16<Float>(repeating: 12_582_912)
    let shifted = roundingShift.addingProduct(clamped, SIMD16(repeating: 1.442_695_04))
    let n = shifted - roundingShift
    let ln2High: Float = 0.693_145_751_953_125  // 12 significant bits: exact times any |n| ≤ 128
    let ln2Low: Float = 1.428_606_765_330_187e-6
    let r = clamped.addingProduct(n, SIMD16(repeating: -ln2High)).addingProduct(n, SIMD16(repeating: -ln2Low))
    // Horner's rule, one fused multiply-add per degree (written out: a loop over an array
    // literal is not reliably unrolled).
    var p = SIMD16<Float>(repeating: 1.0 / 5040)
    p = SIMD16(repeating: 1.0 / 720).addingProduct(p, r)
    p = SIMD16(repeating: 1.0 / 120).addingProduct(p, r)
    p = SIMD16(repeating: 1.0 / 24).addingProduct(p, r)
    p = SIMD16(repeating: 1.0 / 6).addingProduct(p, r)
    p = SIMD16(repeating: 0.5).addingProduct(p, r)
    p = SIMD16(repeating: 1).addingProduct(p, r)
    p = SIMD16(repeating: 1).addingProduct(p, r)
    let integer = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- unsafeBitCast(roundingShift, to: SIMD16<Int32>.self)
    return p * unsafeBitCast((integer &+ 127) &<< 23, to: SIMD16<Float>.self)
}

/// `x` limited to `lower...upper` per lane, for `lower < 0 < upper`; NaN stays NaN. (The
/// standard library's `clamped`, and float comparison masks, are lowered lane by lane; sign and
/// magnitude tests on the bits stay in vector registers.)
@inline(__always)
func clamp16(_ x: SIMD16<Float>, _ lower: Float, _ upper: Float) -> SIMD16<Float> {
    let bits = unsafeBitCast(x, to: SIMD16<Int32>.self)
    let negative = bits &>> 31
    let magnitude = unsafeBitCast(bits & SIMD16(repeating: Int32.max), to: SIMD16<Float>.self)
    let number = below(magnitude, bits: Float.infinity.bitPattern + 1)
    // At or beyond a bound (at it, replacing changes nothing) on the bound's side.
    let tooLow = negative & ~below(magnitude, -lower) & number
    let tooHigh = ~negative & ~below(magnitude, upper) & number
    return select16(tooLow, SIMD16(repeating: lower), select16(tooHigh, SIMD16(repeating: upper), x))
}

/// `tanh x` per lane: within 2 ulps of 1 (2⁻²²) absolute, which is what matters where it is added
/// to 1 as in GELU, and within 2 of its own ulps below |x| = 1/16.
///
/// `1 − 2/(e^{2|x|} + 1)` with the sign put back; below |x| = 1/16, where that form loses
/// relative precision, the odd Taylor polynomial to x⁷ (error below 10⁻¹²·|x|). tanh rounds to
/// ±1 beyond |x| = 9.
@inline(__always)
func tanh16(_ x: SIMD16<Float>) -> SIMD16<Float> {
    let signBit = SIMD16<UInt32>(repeating: 0x8000_0000)
    let bits = unsafeBitCast(x, to: SIMD16<UInt32>.self)
    let magnitude = unsafeBitCast(bits & ~signBit, to: SIMD16<Float>.self)
    let a = select16(below(magnitude, 9), magnitude, SIMD16(repeating: 9))
    let large = 1 - 2 / (exp16(a + a) + 1)
    let a2 = a * a
    var series = SIMD16<Float>(repeating: -17.0 / 315)
    series = SIMD16(repeating: 2.0 / 15).addingProduct(series, a2)
    series = SIMD16(repeating: -1.0 / 3).addingProduct(series, a2)
    series = a.addingProduct(series * a2, a)
    let t = select16(below(a, 0.0625), series, large)
    let signed = unsafeBitCast(unsafeBitCast(t, to: SIMD16<UInt32>.self) | (bits & signBit), to: SIMD16<Float>.self)
    // NaN lanes (clamped to 9 above) stay NaN: every pattern above infinity's is a NaN.
    return select16(below(magnitude, bits: Float.infinity.bitPattern + 1), signed, x)
}

/// All ones in the lanes where `a`, whose sign bit is clear, is below the float `bound` (≥ 0).
/// For such floats the bit patterns order like the values, so one integer subtraction decides,
/// in vector registers: `replacing(with:where:)` with a float comparison is lowered lane by lane
/// (measured: GELU ran at 2–3 ns per element). NaN lanes are never below a number.
@inline(__always)
func below(_ a: SIMD16<Float>, _ bound: Float) -> SIMD16<Int32> {
    below(a, bits: bound.bitPattern)
}

/// `below(_:_:)` with the bound given by its bit pattern.
@inline(__always)
func below(_ a: SIMD16<Float>, bits bound: UInt32) -> SIMD16<Int32> {
    (unsafeBitCast(a, to: SIMD16<Int32>.self) &- SIMD16(repeating: Int32(bitPattern: bound))) &>> 31
}

/// `x` in the lanes where `mask` is all ones, `y` where it is zero.
@inline(__always)
func select16(_ mask: SIMD16<Int32>, _ x: SIMD16<Float>, _ y: SIMD16<Float>) -> SIMD16<Float> {
    let m = unsafeBitCast(mask, to: SIMD16<UInt32>.self)
    let chosen = (unsafeBitCast(x, to: SIMD16<UInt32>.self) & m) | (unsafeBitCast(y, to: SIMD16<UInt32>.self) & ~m)
    return unsafeBitCast(chosen, to: SIMD16<Float>.self)
}

/// The first `count` (at most 16) floats at `p`, zeros in the other lanes.
@inline(__always)
func loadPartial16(_ p: UnsafePointer<Float>, count: Int) -> SIMD16<Float> {
    if count >= 16 { return UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self) }
    var v = SIMD16<Float>()
    for j in 0..<count { v[j] = p[j] }
    return v
}

/// Stores the first `count` (at most 16) lanes of `v` at `p`.
@inline(__always)
func storePartial16(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>, count: Int) {
    if count >= 16 {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
    } else {
        for j in 0..<count { p[j] = v[j] }
    }
}
