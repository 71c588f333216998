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
}
