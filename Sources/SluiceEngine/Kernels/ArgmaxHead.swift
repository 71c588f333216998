import CSluiceKernels

/// The most likely token of each row of an `int16` output projection, found without
/// computing every logit at two bytes per activation: the same token, from bit for bit
/// the same logits, as an argmax over the full product.
///
/// A greedy step needs one token out of 262,144 logits, and the projection is most of a
/// small model's arithmetic. So a first pass computes every logit at one byte per
/// activation (the `int8` kernel, half the integer work), and bounds how far each can be
/// from the `int16` kernel's value: both multiply the same weights w, by x rounded two
/// ways (x̂ and x̃), so by Cauchy–Schwarz
///
///     |int8 logit − int16 logit| ≤ ‖x̂ − x̃‖₂ · ‖w‖₂ + float rounding.
///
/// Every row whose upper bound falls short of the best lower bound cannot be the argmax;
/// the few that remain are computed exactly by `sluice_int8_row_product`, the `int16`
/// kernel's own arithmetic for one row. Ties go to the lowest id, as in `Sampler.argmax`.
final class ArgmaxHead: @unchecked Sendable {
    // Sendable: written once in init, read-only afterwards.

    let weights: Int8Weights
    /// ‖w‖₂ of each row, rounded up.
    let rowNorms: UnsafeMutablePointer<Float>
    private let largestRowNorm: Float
    /// Bounds the magnitude of every partial sum the kernels form, per unit of ‖x‖₁.
    private let largestMagnitude: Float

    /// Rows kept per token: a first try that suits nearly every token, then one for flat
    /// distributions, before giving up on the first pass and computing every row.
    static let candidateCapacities = [4096, 65_536]

    init(_ weights: Int8Weights, pool: ComputePool) {
        self.weights = weights
        let rows = weights.rows
        let rowNorms = UnsafeMutablePointer<Float>.allocate(capacity: rows)
        let magnitudes = UnsafeMutablePointer<Float>.allocate(capacity: rows)
        defer { magnitudes.deallocate() }
        pool.parallelFor(weights.panels) { panel in
            for row in (panel * 16)..<min(rows, panel * 16 + 16) {
                let (norm, largestTerm) = weights.normAndLargestTerm(row: row)
                rowNorms[row] = Float(norm).nextUp
                magnitudes[row] = Float(largestTerm).nextUp
            }
        }
        self.rowNorms = rowNorms
        largestRowNorm = UnsafeBufferPointer(start: rowNorms, count: rows).max() ?? 0
        largestMagnitude = UnsafeBufferPointer(start: magnitudes, count: rows).max() ?? 0
    }

    deinit { rowNorms.deallocate() }

    /// The argmax over rows `0..<usable` of each of `tokens` rows of `x` times the weights,
    /// at `int16`: what `Sampler.argmax` picks from the full product.
    ///
    /// `scratch` holds `tokens × rows` floats (its contents are left undefined).
    func argmax(_ x: UnsafePointer<Float>, tokens: Int, usable: Int, scratch: UnsafeMutablePointer<Float>,
                pool: ComputePool) -> [Int32] {
        guard tokens > 0 else { return [] }
        let rows = weights.rows, columns = weights.columns
        precondition(usable > 0 && usable <= rows)
        let coarse = RoundedActivations(x, tokens: tokens, columns: columns, block: weights.block, lowBytes: false, pool: pool)
        let fine = RoundedActivations(x, tokens: tokens, columns: columns, block: weights.block, lowBytes: true, pool: pool)
        integerMatmuls(x, tokens: tokens, [IntegerProduct(weights: weights, lowBytes: false, output: scratch)],
                       alreadyRounded: [coarse], pool: pool)

        var chosen = [Int32](repeating: -1, count: tokens)
        chosen.withUnsafeMutableBufferPointer { chosen in
            let chosen = chosen.baseAddress!
            pool.parallelFor(tokens) { t in
                guard let bound = tokenBound(x + t * columns, token: t, coarse, fine) else { return }
                chosen[t] = exactArgmax(estimates: scratch + t * rows, usable: usable, bound: bound, token: t, fine) ?? -1
            }
        }
        // Rows the first pass could not narrow down (too many near the top, or non-finite
        // activations): the full product, as the general path computes it.
        for t in 0..<tokens where chosen[t] < 0 {
            integerMatmuls(x + t * columns, tokens: 1, [IntegerProduct(weights: weights, lowBytes: true, output: scratch)], pool: pool)
            chosen[t] = Sampler.argmax(scratch, count: usable)
        }
        return chosen
    }

    /// |int8 logit − int16 logit| ≤ (difference · ‖w‖₂ + floatSlack) · 1.001 for every row.
    struct TokenBound {
        /// ‖x̂ − x̃‖₂, rounded up.
        var difference: Float
        var floatSlack: Float

        @inline(__always)
        func bound(rowNorm: Float) -> Float {
            // The factor covers the rounding of this product and sum themselves.
            (difference * rowNorm + floatSlack) * 1.001
        }
    }

    /// Token `t`'s bound, or nil when its activations are not all finite.
    func tokenBound(_ x: UnsafePointer<Float>, token t: Int, _ coarse: RoundedActivations,
                    _ fine: RoundedActivations) -> TokenBound? {
        let columns = weights.columns, block = weights.block
        var squares = 0.0, absolute = 0.0
        for k in 0..<columns {
            let b = t * coarse.blocks + k / block, at = t * columns + k
            let oneByte = Double(coarse.scales[b]) * Double(coarse.quantized[at])
            let twoBytes = Double(fine.scales[b]) * (256 * Double(fine.quantized[at]) + Double(fine.low![at]))
            squares += (oneByte - twoBytes) * (oneByte - twoBytes)
            absolute += abs(Double(x[k]))
        }
        // Each kernel rounds at most 8 times per block of 16 columns, each time relative to a
        // partial sum below largestMagnitude · ‖x‖₁ (the rounding of x adds under 13% to ‖x‖₁).
        let slack = Double(16 * (columns / 16) + 16) * 0x1p-24 * absolute * Double(largestMagnitude)
        guard squares.isFinite, slack.isFinite else { return nil }
        return TokenBound(difference: Float(squares.squareRoot()).nextUp, floatSlack: Float(slack).nextUp)
    }

    /// The lowest-id row of the largest exact value among rows that may hold it, or nil to fall back.
    private func exactArgmax(estimates: UnsafePointer<Float>, usable: Int, bound: TokenBound, token t: Int,
                             _ fine: RoundedActivations) -> Int32? {
        let largestBound = bound.bound(rowNorm: largestRowNorm)
        guard largestBound.isFinite else { return nil }
        // A row can hold the largest exact value only if its estimate is within both rows'
        // bounds of the largest estimate.
        var candidates = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
        defer { candidates.deallocate() }
        var maximum: Float = 0
        var found = -1
        for capacity in Self.candidateCapacities where found < 0 {
            candidates.deallocate()
            candidates = .allocate(capacity: capacity)
            found = Int(sluice_collect_near_maximum(estimates, Int32(usable), 2 * largestBound, candidates, Int32(capacity), &maximum))
        }
        guard found > 0, maximum.isFinite else { return nil }
        var lowest = -Float.infinity
        for i in 0..<found {
            let r = Int(candidates[i])
            lowest = max(lowest, estimates[r] - bound.bound(rowNorm: rowNorms[r]))
        }
        let columns = weights.columns
        var best: Int32 = -1
        var bestValue = -Float.infinity
        for i in 0..<found {
            let r = candidates[i]
            guard estimates[Int(r)] + bound.bound(rowNorm: rowNorms[Int(r)]) >= lowest else { continue }
            let value = sluice_int8_row_product(weights.weights.assumingMemoryBound(to: UInt8.self), Int32(weights.kind.rawValue),
                                                weights.scales, weights.offsets, weights.bias, Int32(columns), r,
                                                fine.quantized + t * columns, fine.low! + t * columns,
                                                fine.scales + t * fine.blocks, fine.scaledSums + t * fine.blocks)
            // Candidates come in ascending order, so the first of equal values wins.
            if best < 0 || value > bestValue {
                best = r
                bestValue = value
            }
        }
        guard best >= 0, bestValue.isFinite, bestValue >= lowest else { return nil }
        return best
    }
}
