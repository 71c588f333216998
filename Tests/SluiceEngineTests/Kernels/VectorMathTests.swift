import CSluiceKernels
import Foundation
import SluiceTestSupport
import Testing

@testable import SluiceEngine

/// The vector math against float64, over the ranges the models feed it.
@Suite(.ownThread) struct VectorMathTests {
    /// Evenly spread and random points in `range`, 16 at a time.
    func samples(_ range: ClosedRange<Float>, count: Int = 200_000) -> [SIMD16<Float>] {
        var generator = SplitMix64(seed: 7)
        var values: [Float] = (0..<count / 2).map { range.lowerBound + (range.upperBound - range.lowerBound) * Float($0) / Float(count / 2) }
        values += (0..<count / 2).map { _ in Float.random(in: range, using: &generator) }
        values += [0, -0, 1e-30, -1e-30, 0.0625, -0.0625, 0.062_499_996, range.lowerBound, range.upperBound]
        while values.count % 16 != 0 { values.append(0.5) }
        return stride(from: 0, to: values.count, by: 16).map { SIMD16(values[$0..<($0 + 16)]) }
    }

    @Test func expIsWithinTwoUlpsOfFloat64() {
        var worst: Double = 0
        for group in samples(-87...88) {
            let result = exp16(group)
            for lane in 0..<16 {
                let exact = Foundation.exp(Double(group[lane]))
                worst = max(worst, abs(Double(result[lane]) - exact) / Double(Float(exact).ulp))
            }
        }
        #expect(worst <= 2, "worst error \(worst) ulp")
        // Beyond the clamp: finite, no NaN.
        let extremes = exp16(SIMD16(repeating: -1000).replacing(with: SIMD16(repeating: 1000), where: SIMD16<Int32>(0..<16 as Range) .>= SIMD16(repeating: 8)))
        #expect((0..<16).allSatisfy { extremes[$0].isFinite && extremes[$0] >= 0 })
    }

    @Test func tanhIsWithinTwoUlpsOfOneOrOfItself() {
        var worst: Double = 0, worstInput: Float = 0
        for group in samples(-12...12) + samples(-0.1...0.1) {
            let result = tanh16(group)
            for lane in 0..<16 {
                let exact = Foundation.tanh(Double(group[lane]))
                // GELU adds tanh to 1, so what counts is the error beside 1's ulp (2⁻²³); below 1/16
                // the series keeps the value's own ulp too.
                let unit = abs(group[lane]) < 0.0625 ? Double(Float(exact).ulp) : max(Double(Float(exact).ulp), 0x1p-23)
                let error = abs(Double(result[lane]) - exact) / unit
                if error > worst { worst = error; worstInput = group[lane] }
                #expect(result[lane].sign == group[lane].sign || result[lane] == 0)
            }
        }
        #expect(worst <= 2, "worst error \(worst) units at \(worstInput)")
    }

    /// The clamps and selects work on the bits, so as to stay in vector registers; they must
    /// give exactly what the float comparisons give, at and around every boundary, for zeros,
    /// subnormals, infinities and NaN.
    @Test func bitwiseSelectsEqualFloatComparisonsBitForBit() {
        func maskedClamp(_ x: SIMD16<Float>, _ lower: Float, _ upper: Float) -> SIMD16<Float> {
            x.replacing(with: lower, where: x .< lower).replacing(with: upper, where: x .> upper)
        }
        func maskedTanh(_ x: SIMD16<Float>) -> SIMD16<Float> {
            let signBit = SIMD16<UInt32>(repeating: 0x8000_0000)
            let bits = unsafeBitCast(x, to: SIMD16<UInt32>.self)
            let magnitude = unsafeBitCast(bits & ~signBit, to: SIMD16<Float>.self)
            let a = magnitude.replacing(with: 9, where: magnitude .> 9)
            let large = 1 - 2 / (exp16(a + a) + 1)
            let a2 = a * a
            var series = SIMD16<Float>(repeating: -17.0 / 315)
            series = SIMD16(repeating: 2.0 / 15).addingProduct(series, a2)
            series = SIMD16(repeating: -1.0 / 3).addingProduct(series, a2)
            series = a.addingProduct(series * a2, a)
            let t = large.replacing(with: series, where: a .< SIMD16(repeating: 0.0625))
            return unsafeBitCast(unsafeBitCast(t, to: SIMD16<UInt32>.self) | (bits & signBit), to: SIMD16<Float>.self)
        }
        var special: [Float] = [0, .leastNonzeroMagnitude, .leastNormalMagnitude, .infinity, .nan, .greatestFiniteMagnitude]
        for edge: Float in [0.0625, 9, 87, 88, 1] { special += [edge, edge.nextUp, edge.nextDown] }
        special += special.map { -$0 }
        var generator = SplitMix64(seed: 5)
        let values = special + (0..<4000).map { _ in Float.random(in: -120...120, using: &generator) }
            + (0..<1000).map { _ in Float.random(in: -0.2...0.2, using: &generator) }
        var differences = 0
        for start in stride(from: 0, to: values.count, by: 16) {
            var group = SIMD16<Float>()
            for lane in 0..<16 { group[lane] = values[(start + lane) % values.count] }
            for (a, b) in [(clamp16(group, -87, 88), maskedClamp(group, -87, 88)), (tanh16(group), maskedTanh(group))] {
                for lane in 0..<16 where a[lane].bitPattern != b[lane].bitPattern && !(a[lane].isNaN && b[lane].isNaN) {
                    differences += 1
                }
            }
        }
        #expect(differences == 0)
    }

    @Test func laneSumIsATreeOfHalves() {
        let v = SIMD16<Float>(1e8, 1, -1e8, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)
        let eight = v.lowHalf + v.highHalf, four = eight.lowHalf + eight.highHalf, two = four.lowHalf + four.highHalf
        #expect(laneSum(v) == two[0] + two[1])
    }

    @Test func gatesAreTheSameWhereverAnElementFalls() {
        // An element's result must not depend on the call's length or its offset within it.
        var generator = SplitMix64(seed: 3)
        let gate = (0..<53).map { _ in Float.random(in: -6...6, using: &generator) }
        let up = (0..<53).map { _ in Float.random(in: -2...2, using: &generator) }
        for (isGELU, gateFunction) in [(true, geluTanhGate(_:_:count:)), (false, siluGate(_:_:count:))] {
            var whole = gate
            whole.withUnsafeMutableBufferPointer { gateFunction($0.baseAddress!, up, 53) }
            for start in [0, 5, 17, 40] {
                var part = Array(gate[start...])
                part.withUnsafeMutableBufferPointer { pointer in
                    Array(up[start...]).withUnsafeBufferPointer { gateFunction(pointer.baseAddress!, $0.baseAddress!, 53 - start) }
                }
                #expect(part == Array(whole[start...]))
            }
            // And it is the formula, to float precision.
            for i in 0..<53 {
                let g = Double(gate[i])
                let expected = isGELU
                    ? 0.5 * g * (1 + Foundation.tanh((2 / Double.pi).squareRoot() * (g + 0.044715 * g * g * g))) * Double(up[i])
                    : g / (1 + Foundation.exp(-g)) * Double(up[i])
                #expect(abs(Double(whole[i]) - expected) <= 1e-5 * max(1, abs(expected)))
            }
        }
    }

    /// The C gates (GELU in AVX-512; GELU, SiLU and BERT's erf GELU in AVX2 and in the baseline's
    /// software fused multiply-adds) are the portable ones' operations in other registers: equal bit
    /// for bit, over ordinary values, every `tanh16` and `exp16` boundary, and special values, at
    /// every length of a partial last group.
    @Test func acceleratedGatesEqualThePortableOnesBitForBit() {
        var generator = SplitMix64(seed: 11)
        var gate = (0..<4000).map { _ in Float.random(in: -12...12, using: &generator) }
        gate += (0..<1000).map { _ in Float.random(in: -0.2...0.2, using: &generator) }
        // tanh's argument is about 0.8 g: these land on and around its 1/16 and 9 switches,
        // exp16's clamps, and the special values.
        for boundary: Float in [0.0625, 9, 87 / 2, 44, 0.0625 / 0.7978846, 9 / 0.7978846] {
            for g in [boundary, boundary.nextUp, boundary.nextDown] { gate += [g, -g] }
        }
        gate += [0, -0.0, .infinity, -.infinity, .nan, Float(bitPattern: 0xFFC0_0001), .leastNonzeroMagnitude,
                 -.leastNonzeroMagnitude, .greatestFiniteMagnitude, -.greatestFiniteMagnitude, 1e-30, 3e4, -3e4]
        let up = gate.indices.map { _ in Float.random(in: -3...3, using: &generator) }
        typealias Gate = (UnsafeMutablePointer<Float>, Int) -> Void
        let exp: Gate = { pointer, count in
            var i = 0
            while i < count {
                let n = min(16, count - i)
                storePartial16(exp16(loadPartial16(pointer + i, count: n) - SIMD16(repeating: 0.75)), pointer + i, count: n)
                i += 16
            }
        }
        var pairs: [(name: String, portable: Gate, accelerated: Gate)] = [
            ("GELU baseline", { portableGeluTanhGate($0, up, count: $1) }, { sluice_gelu_tanh_gate_baseline($0, up, $1) }),
            ("SiLU baseline", { portableSiluGate($0, up, count: $1) }, { sluice_silu_gate_baseline($0, up, $1) }),
            ("erf GELU baseline", { portableGeluErf($0, count: $1) }, { sluice_gelu_erf_baseline($0, $1) }),
            ("exp baseline", exp, { sluice_exp_shifted_baseline($0, $1, 0.75) }),
        ]
        if avx2Available {
            pairs += [
                ("GELU avx2", { portableGeluTanhGate($0, up, count: $1) }, { sluice_gelu_tanh_gate_avx2($0, up, $1) }),
                ("SiLU avx2", { portableSiluGate($0, up, count: $1) }, { sluice_silu_gate_avx2($0, up, $1) }),
                ("erf GELU avx2", { portableGeluErf($0, count: $1) }, { sluice_gelu_erf_avx2($0, $1) }),
                ("exp avx2", exp, { sluice_exp_shifted_avx2($0, $1, 0.75) }),
            ]
        }
        if avx512Available {
            pairs.append(("GELU avx512", { portableGeluTanhGate($0, up, count: $1) }, { sluice_gelu_tanh_gate($0, up, $1) }))
        }
        for (name, portableGate, acceleratedGate) in pairs {
            for count in [gate.count, 1, 15, 16, 17, 33] {
                var portable = Array(gate.prefix(count)), accelerated = portable
                portable.withUnsafeMutableBufferPointer { portableGate($0.baseAddress!, count) }
                accelerated.withUnsafeMutableBufferPointer { acceleratedGate($0.baseAddress!, count) }
                let differing = (0..<count).filter { portable[$0].bitPattern != accelerated[$0].bitPattern }
                #expect(differing.isEmpty, "\(name), count \(count): \(differing.count) differ, first at \(differing.first ?? -1)")
            }
        }
    }

    /// The KV cache's rounding to half floats in C (F16C) is Swift's: to nearest even, saturating at
    /// ±65504, NaN to -65504, at every length of a partial last group.
    @Test(.enabled(if: avx2Available, "the CPU has no AVX2"))
    func acceleratedHalfFloatStoreEqualsThePortableOne() {
        var generator = SplitMix64(seed: 22)
        var values = (0..<500).map { _ in Float.random(in: -70_000...70_000, using: &generator) }
        values += (0..<500).map { _ in Float.random(in: -1...1, using: &generator) * 1e-5 }
        values += [65504, 65519.99, 65520, -65520, 1e30, -1e30, .infinity, -.infinity, .nan, 0, -0.0, 6e-8, 3e-8,
                   Float(bitPattern: 0x3F80_1000), Float(bitPattern: 0x3F80_3000)]
        for count in [values.count, 1, 15, 16, 17, 40] {
            var accelerated = [Float16](repeating: 7, count: count + 1), portable = accelerated
            accelerated.withUnsafeMutableBufferPointer { sluice_store_halves_saturated_avx2($0.baseAddress!, values, count) }
            portable.withUnsafeMutableBufferPointer { Float16.portableStore(values, into: $0.baseAddress!, count: count) }
            #expect(accelerated.map(\.bitPattern) == portable.map(\.bitPattern), "count \(count)")
        }
    }

    /// The baseline kernels' fused multiply-add (vector16.h: in double, with a round-to-odd repair
    /// where the double sum lands on a float midpoint or below float's normal range; software on
    /// x86-64-v2) rounds once, as the instruction does: over random operands of every magnitude,
    /// cancellations, sums one double rounding away from a float midpoint (where rounding the
    /// double sum would be wrong, checked here), results below the normal floats, and special values.
    @Test func theBaselinesFusedMultiplyAddRoundsOnce() {
        var generator = SplitMix64(seed: 31)
        func anyMagnitude() -> Float {
            let magnitude = Float(sign: .plus, exponent: Int.random(in: -149...127, using: &generator),
                                  significand: Float.random(in: 1..<2, using: &generator))
            return Bool.random(using: &generator) ? magnitude : -magnitude
        }
        var weights: [Float] = [], values: [Float] = [], addends: [Float] = []
        func add(_ weight: Float, _ lanes: [(value: Float, addend: Float)]) {
            // One weight per call of the kernel: 16 lanes each.
            for chunk in stride(from: 0, to: lanes.count, by: 16) {
                let part = lanes[chunk..<min(lanes.count, chunk + 16)]
                weights.append(weight)
                values += part.map(\.value) + Array(repeating: 1, count: 16 - part.count)
                addends += part.map(\.addend) + Array(repeating: 0, count: 16 - part.count)
            }
        }
        for _ in 0..<4000 {
            let weight = Int.random(in: 0..<3, using: &generator) == 0 ? anyMagnitude() : Float.random(in: -4...4, using: &generator)
            add(weight, (0..<16).map { _ in
                let value = Bool.random(using: &generator) ? anyMagnitude() : Float.random(in: -4...4, using: &generator)
                let addend = switch Int.random(in: 0..<4, using: &generator) {
                case 0: -(weight * value)  // cancellation down to the product's rounding error
                case 1: anyMagnitude()
                default: Float.random(in: -8...8, using: &generator)
                }
                return (value, addend)
            })
        }
        // a·b = 2^(e-24)·(1 - 2^-2k) beside c = 2^e·(odd significand): the double sum rounds to the
        // midpoint above c, the exact sum is just below it, so the answer is c.
        var midpoints = 0
        for k in 15...23 {
            for _ in 0..<40 {
                let e = Int.random(in: -100...100, using: &generator)
                let odd = Float(sign: .plus, exponent: e, significand: 1 + Float(2 * Int.random(in: 0..<(1 << 22), using: &generator) + 1) * 0x1p-23)
                let weight = Float(sign: .plus, exponent: e - 24, significand: 1 + Float(sign: .plus, exponent: -k, significand: 1))
                let value = 1 - Float(sign: .plus, exponent: -k, significand: 1)
                let negate = Bool.random(using: &generator)
                let doubleRounded = Float(Double(weight) * Double(value) + Double(odd))
                if doubleRounded != odd.addingProduct(weight, value) { midpoints += 1 }
                add(negate ? -weight : weight, [(value, negate ? -odd : odd)])
            }
        }
        #expect(midpoints == 360, "the midpoint cases must be ones that rounding the double sum gets wrong")
        // Products and sums below the normal floats, and special values.
        for _ in 0..<500 {
            let weight = Float(sign: .plus, exponent: Int.random(in: -80 ... -60, using: &generator),
                               significand: Float.random(in: 1..<2, using: &generator))
            add(weight, (0..<16).map { _ in
                let value = Float(sign: .plus, exponent: Int.random(in: -75 ... -50, using: &generator),
                                  significand: Float.random(in: 1..<2, using: &generator))
                let addend = Float(sign: Bool.random(using: &generator) ? .minus : .plus,
                                   exponent: Int.random(in: -149 ... -120, using: &generator), significand: 1)
                return (value, addend)
            })
        }
        let specials: [Float] = [0, -0.0, .infinity, -.infinity, .nan, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                                 .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .leastNormalMagnitude, 1, -1]
        for weight in specials {
            add(weight, specials.flatMap { value in specials.map { (value, $0) } })
        }
        var got = addends
        got.withUnsafeMutableBufferPointer { got in
            for (call, weight) in weights.enumerated() {
                values.withUnsafeBufferPointer { sluice_multiply_add_baseline(got.baseAddress! + 16 * call, weight, $0.baseAddress! + 16 * call, 16) }
            }
        }
        let wrong = addends.indices.filter { i in
            let expected = addends[i].addingProduct(weights[i / 16], values[i])
            return expected.isNaN ? !got[i].isNaN : expected.bitPattern != got[i].bitPattern
        }
        #expect(wrong.isEmpty, "\(wrong.count) of \(addends.count) differ, first: \(wrong.first.map { "\(weights[$0 / 16]) × \(values[$0]) + \(addends[$0]) gave \(got[$0])" } ?? "")")
    }

    /// The AVX2 fused multiply-add loops (the norms' sums of squares, BERT's weighted values, `dot`)
    /// are the portable ones' operations, bit for bit, at lengths around every multiple of 8 and 16.
    @Test(.enabled(if: avx2Available, "the CPU has no AVX2"))
    func acceleratedMultiplyAddsEqualThePortableOnesBitForBit() {
        var generator = SplitMix64(seed: 21)
        let a = (0..<300).map { _ in Float.random(in: -3...3, using: &generator) * (Bool.random(using: &generator) ? 1 : 1e-20) }
        let b = (0..<300).map { _ in Float.random(in: -3...3, using: &generator) }
        for count in [0, 1, 7, 8, 9, 15, 16, 17, 31, 64, 100, 257, 300] {
            var lanes = SIMD8<Double>(), expected = SIMD8<Double>()
            withUnsafeMutableBytes(of: &lanes) { sluice_square_lanes_avx2(a, count, $0.baseAddress!.assumingMemoryBound(to: Double.self)) }
            var k = 0
            while k + 8 <= count {
                let v = SIMD8<Double>(SIMD8<Float>(a[k..<(k + 8)]))
                expected.addProduct(v, v)
                k += 8
            }
            #expect(lanes == expected, "sums of squares, count \(count)")
            var reference = Array(b.prefix(count))
            for i in 0..<count { reference[i] = reference[i].addingProduct(0.3, a[i]) }
            for (name, multiplyAdd) in [("avx2", sluice_multiply_add_avx2), ("baseline", sluice_multiply_add_baseline)] {
                var accumulator = Array(b.prefix(count))
                accumulator.withUnsafeMutableBufferPointer { multiplyAdd($0.baseAddress!, 0.3, a, count) }
                #expect(accumulator.map(\.bitPattern) == reference.map(\.bitPattern), "multiply-add \(name), count \(count)")
            }
            let dot = dotProduct(a, b, count: count).bitPattern
            #expect(sluice_dot_avx2(a, b, count).bitPattern == dot, "dot avx2, count \(count)")
            #expect(sluice_dot_baseline(a, b, count).bitPattern == dot, "dot baseline, count \(count)")
        }
    }

    /// The C softmaxes (AVX-512, AVX2, the baseline's) are the portable one's operations: equal bit
    /// for bit, at every length of a partial last group, with scores spanning exp16's clamps, ties
    /// and infinities.
    @Test func acceleratedSoftmaxEqualsThePortableOneBitForBit() {
        var generator = SplitMix64(seed: 12)
        for count in [1, 2, 15, 16, 17, 31, 100, 257, 1000] {
            for spread: Float in [0.5, 8, 200] {
                var scores = (0..<count).map { _ in Float.random(in: -spread...spread, using: &generator) }
                if count > 20 { scores[3] = -.infinity; scores[7] = 0; scores[9] = -0.0; scores[11] = scores[12] }
                var portable = scores, baseline = scores, avx2 = scores, avx512 = scores
                portable.withUnsafeMutableBufferPointer { portableSoftmax($0.baseAddress!, count: count) }
                baseline.withUnsafeMutableBufferPointer { sluice_softmax_baseline($0.baseAddress!, count) }
                if avx2Available {
                    avx2.withUnsafeMutableBufferPointer { sluice_softmax_avx2($0.baseAddress!, count) }
                } else {
                    avx2 = portable
                }
                if avx512Available {
                    avx512.withUnsafeMutableBufferPointer { sluice_softmax($0.baseAddress!, count) }
                } else {
                    avx512 = portable
                }
                for (name, accelerated) in [("baseline", baseline), ("avx2", avx2), ("avx512", avx512)] {
                    let differing = (0..<count).filter { portable[$0].bitPattern != accelerated[$0].bitPattern }
                    #expect(differing.isEmpty, "\(name), count \(count), spread \(spread): \(differing.count) differ")
                }
            }
        }
    }
}
