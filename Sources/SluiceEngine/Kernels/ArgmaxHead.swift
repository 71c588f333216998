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

    /// Rows kept per token before giving up on the first pass and computing every row: a flat
    /// distribution can keep many.
    static let candidateCapacity = 65_536

    /// Bytes of first-pass logits a work item holds at once: few enough to stay in cache until scanned.
    let chunkBytes: Int

    init(_ weights: Int8Weights, pool: ComputePool, chunkBytes: Int = 128 * 1024) {
        self.weights = weights
        self.chunkBytes = chunkBytes
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
    /// `scratch` holds `rows` floats (its contents are left undefined).
    func argmax(_ x: UnsafePointer<Float>, tokens: Int, usable: Int, scratch: UnsafeMutablePointer<Float>,
                pool: ComputePool) -> [Int32] {
        guard tokens > 0 else { return [] }
        let columns = weights.columns
        precondition(usable > 0 && usable <= weights.rows)
        let coarse = RoundedActivations(x, tokens: tokens, columns: columns, block: weights.block, lowBytes: false, pool: pool)
        let fine = RoundedActivations(x, tokens: tokens, columns: columns, block: weights.block, lowBytes: true, pool: pool)
        let bounds = UnsafeMutablePointer<TokenBound?>.allocate(capacity: tokens)
        bounds.initialize(repeating: nil, count: tokens)
        defer { bounds.deallocate() }
        pool.parallelFor(tokens) { t in bounds[t] = tokenBound(x + t * columns, token: t, coarse, fine) }
        // A row can hold the largest exact value only if its estimate is within both rows' bounds
        // of the largest estimate. NaN: no usable bound.
        let margins = (0..<tokens).map { t in bounds[t].map { 2 * $0.bound(rowNorm: largestRowNorm) } ?? .nan }
        let scans = firstPass(coarse, tokens: tokens, usable: usable, margins: margins, pool: pool)

        var chosen = [Int32](repeating: -1, count: tokens)
        chosen.withUnsafeMutableBufferPointer { chosen in
            let chosen = chosen.baseAddress!
            pool.parallelFor(tokens) { t in
                guard let bound = bounds[t], margins[t].isFinite, !scans.contains(where: { $0.overflowed[t] }) else { return }
                let maximum = scans.map { $0.maxima[t] }.max()!
                guard maximum.isFinite else { return }
                // Scans cover ascending row ranges and keep their rows in order, so candidates ascend.
                var rows: [Int32] = [], estimates: [Float] = []
                for scan in scans {
                    for (row, estimate) in zip(scan.rows[t], scan.estimates[t]) where estimate >= maximum - margins[t] {
                        rows.append(row)
                        estimates.append(estimate)
                    }
                }
                guard rows.count <= Self.candidateCapacity else { return }
                chosen[t] = exactArgmax(rows: rows, estimates: estimates, bound: bound, token: t, fine) ?? -1
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

    /// What one stretch of rows of the first pass kept for each token.
    final class Scan: @unchecked Sendable {
        // Sendable: each scan is written by one work item, then read after the pool's loop.
        var maxima: [Float]
        var rows: [[Int32]]
        var estimates: [[Float]]
        var overflowed: [Bool]

        init(tokens: Int) {
            maxima = Array(repeating: -.infinity, count: tokens)
            rows = Array(repeating: [], count: tokens)
            estimates = Array(repeating: [], count: tokens)
            overflowed = Array(repeating: false, count: tokens)
        }
    }

    /// Every logit at one byte per activation, scanned as it is made: contiguous stretches of
    /// rows, each computed a cache-sized chunk at a time and searched for rows near each
    /// token's running maximum before the next chunk overwrites it. The 262,144 × tokens
    /// logits never go to memory, and each stretch keeps its rows in ascending order.
    private func firstPass(_ coarse: RoundedActivations, tokens: Int, usable: Int, margins: [Float],
                           pool: ComputePool) -> [Scan] {
        let panels = (usable + 15) / 16
        let items = min(panels, 32 * pool.threadCount)
        let chunkPanels = max(1, chunkBytes / (16 * MemoryLayout<Float>.size * tokens))
        let scans = (0..<items).map { _ in Scan(tokens: tokens) }
        pool.parallelFor(items) { item in
            let scan = scans[item]
            let stretch = (item * panels / items)..<((item + 1) * panels / items)
            let chunkRows = 16 * min(chunkPanels, stretch.count)
            let logits = UnsafeMutablePointer<Float>.allocate(capacity: chunkRows * tokens)
            let rows = UnsafeMutablePointer<Int32>.allocate(capacity: chunkRows)
            let kept = UnsafeMutablePointer<Float>.allocate(capacity: chunkRows)
            defer { logits.deallocate(); rows.deallocate(); kept.deallocate() }
            var start = stretch.lowerBound
            while start < stretch.upperBound {
                let end = min(stretch.upperBound, start + chunkPanels)
                weights.multiply(panels: start..<end, coarse, tokens: 0..<tokens, into: logits, yStride: chunkRows)
                let count = min(usable, 16 * end) - 16 * start
                for t in 0..<tokens where margins[t].isFinite && !scan.overflowed[t] {
                    let found = Int(sluice_collect_near_maximum(logits + t * chunkRows, Int32(count), margins[t], &scan.maxima[t],
                                                                Int32(16 * start), rows, kept))
                    if scan.rows[t].count + found > Self.candidateCapacity {
                        scan.overflowed[t] = true
                        continue
                    }
                    scan.rows[t].append(contentsOf: UnsafeBufferPointer(start: rows, count: found))
                    scan.estimates[t].append(contentsOf: UnsafeBufferPointer(start: kept, count: found))
                }
                start = end
            }
        }
        return scans
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

    /// The lowest-id row of the largest exact value among the candidate rows (ascending, with
    /// their first-pass estimates), or nil to fall back.
    private func exactArgmax(rows candidates: [Int32], estimates: [Float], bound: TokenBound, token t: Int,
                             _ fine: RoundedActivations) -> Int32? {
        guard !candidates.isEmpty else { return nil }
        var lowest = -Float.infinity
        for (r, estimate) in zip(candidates, estimates) {
            lowest = max(lowest, estimate - bound.bound(rowNorm: rowNorms[Int(r)]))
        }
        var best: Int32 = -1
        var bestValue = -Float.infinity
        for (r, estimate) in zip(candidates, estimates) {
            guard estimate + bound.bound(rowNorm: rowNorms[Int(r)]) >= lowest else { continue }
            let value = weights.rowProduct(row: Int(r), fine, token: t)
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
