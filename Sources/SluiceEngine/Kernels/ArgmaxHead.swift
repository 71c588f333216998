import CSluiceKernels
import Synchronization

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
/// Sampled rows share the same pass (`choose`; see SamplingHead.swift).
final class ArgmaxHead: @unchecked Sendable {
    // Sendable: written once in init, read-only afterwards.

    let weights: Int8Weights
    /// ‖w‖₂ of each row, rounded up.
    let rowNorms: UnsafeMutablePointer<Float>
    let largestRowNorm: Float
    /// Bounds the magnitude of every partial sum the kernels form, per unit of ‖x‖₁.
    private let largestMagnitude: Float

    /// Rows kept per token before giving up on the first pass and computing every row: a flat
    /// distribution can keep many.
    static let candidateCapacity = 65_536

    /// Bytes of weights a first-pass chunk reads when full rows share the pass: about half of
    /// a core's L2 cache, so the full rows' product reads them from there.
    static let fusedChunkWeightBytes = 512 * 1024

    /// Bytes of first-pass logits a work item holds at once: few enough to stay in cache until scanned.
    let chunkBytes: Int

    /// How often recent draws were decided by the first pass (see `drawsPay`).
    let drawHistory = Mutex(DrawHistory())

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
        choose(x, tokens: tokens, usable: usable, draws: Array(repeating: nil, count: tokens), scratch: scratch, pool: pool)
            .map { $0! }
    }

    /// Each token's pick over rows `0..<usable` of its row of `x` times the weights at `int16`:
    /// where `draws[t]` is nil, what `Sampler.argmax` picks from the full product; otherwise what
    /// `Sampler.sample` draws from it with that draw's parameters and uniform, or nil where the
    /// first pass's bounds cannot decide the draw (the caller then samples the full product).
    ///
    /// `full`, when given, are other rows whose every logit the caller needs: the first pass
    /// computes them at `int16` beside its estimates, while each stretch of weights is in cache,
    /// rather than in a second sweep over the weights (bit for bit `matmul`'s values).
    ///
    /// `scratch` holds `rows` floats (its contents are left undefined).
    func choose(_ x: UnsafePointer<Float>, tokens: Int, usable: Int, draws: [HeadDraw?], scratch: UnsafeMutablePointer<Float>,
                full: FullRows? = nil, pool: ComputePool) -> [Int32?] {
        let columns = weights.columns
        let fullProduct = full.flatMap { full in
            full.count > 0 ? (RoundedActivations(full.x, tokens: full.count, columns: columns, block: weights.block,
                                                 lowBytes: true, pool: pool), full) : nil
        }
        guard tokens > 0 else {
            if let (activations, full) = fullProduct {
                integerMatmuls(full.x, tokens: full.count, [IntegerProduct(weights: weights, lowBytes: true, output: full.output)],
                               alreadyRounded: [activations], pool: pool)
            }
            return []
        }
        precondition(usable > 0 && usable <= weights.rows && draws.count == tokens)
        let coarse = RoundedActivations(x, tokens: tokens, columns: columns, block: weights.block, lowBytes: false, pool: pool)
        let fine = RoundedActivations(x, tokens: tokens, columns: columns, block: weights.block, lowBytes: true, pool: pool)
        let bounds = UnsafeMutablePointer<TokenBound?>.allocate(capacity: tokens)
        bounds.initialize(repeating: nil, count: tokens)
        defer { bounds.deallocate() }
        pool.parallelFor(tokens) { t in bounds[t] = tokenBound(x + t * columns, token: t, coarse, fine) }
        // A row can hold the largest exact value only if its estimate is within both rows' bounds
        // of the largest estimate; a draw keeps a wider window (SamplingHead.swift). NaN: no usable bound.
        let targets = (0..<tokens).map { t -> PassTarget in
            guard let bound = bounds[t] else { return PassTarget(margin: .nan, capacity: 0, inverseTemperature: nil) }
            let largest = bound.bound(rowNorm: largestRowNorm)
            if let draw = draws[t] { return samplingTarget(draw, largestBound: largest) }
            return PassTarget(margin: 2 * largest, capacity: Self.candidateCapacity, inverseTemperature: nil)
        }
        let scans = firstPass(coarse, tokens: tokens, usable: usable, targets: targets, full: fullProduct, pool: pool)

        var chosen = [Int32](repeating: -1, count: tokens)
        chosen.withUnsafeMutableBufferPointer { chosen in
            let chosen = chosen.baseAddress!
            pool.parallelFor(tokens) { t in
                guard let bound = bounds[t], targets[t].margin.isFinite, !scans.contains(where: { $0.overflowed[t] }) else { return }
                let maximum = scans.map { $0.maxima[t] }.max()!
                guard maximum.isFinite else { return }
                // Scans cover ascending row ranges and keep their rows in order, so candidates ascend.
                var rows: [Int32] = [], estimates: [Float] = []
                for scan in scans {
                    for (row, estimate) in zip(scan.rows[t], scan.estimates[t]) where estimate >= maximum - targets[t].margin {
                        rows.append(row)
                        estimates.append(estimate)
                    }
                }
                guard rows.count <= targets[t].capacity else { return }
                if let draw = draws[t] {
                    chosen[t] = sampledToken(draw, rows: rows, estimates: estimates, largestEstimate: maximum, bound: bound,
                                             target: targets[t], scans: scans, token: t, usable: usable, fine) ?? -1
                } else {
                    chosen[t] = exactArgmax(rows: rows, estimates: estimates, bound: bound, token: t, fine) ?? -1
                }
            }
        }
        // Greedy rows the first pass could not narrow down (too many near the top, or non-finite
        // activations): the full product, as the general path computes it.
        for t in 0..<tokens where chosen[t] < 0 && draws[t] == nil {
            integerMatmuls(x + t * columns, tokens: 1, [IntegerProduct(weights: weights, lowBytes: true, output: scratch)], pool: pool)
            chosen[t] = Sampler.argmax(scratch, count: usable)
        }
        return chosen.map { $0 < 0 ? nil : $0 }
    }

    /// Rows of activations whose every logit is wanted: `count` rows of `x`, their logits into
    /// `output` (row i at `i * rows`).
    struct FullRows {
        var x: UnsafePointer<Float>
        var count: Int
        var output: UnsafeMutablePointer<Float>
    }

    /// What the first pass looks for in one token's row of estimates.
    struct PassTarget {
        /// Rows whose estimate is within this of the row's largest are kept (NaN: the token has no bound).
        var margin: Float
        /// More kept rows than this make the token fall back.
        var capacity: Int
        /// 1 / temperature where the pass also sums the row's weights (a drawn token).
        var inverseTemperature: Double?
    }

    /// What one stretch of rows of the first pass kept for each token.
    final class Scan: @unchecked Sendable {
        // Sendable: each scan is written by one work item, then read after the pool's loop.
        var maxima: [Float]
        var rows: [[Int32]]
        var estimates: [[Float]]
        var overflowed: [Bool]
        /// For drawn tokens: Σ e^((estimate − reference) / temperature) over the stretch's rows
        /// (`sluice_accumulate_weights`), and the reference, the stretch's largest estimate.
        var weightSums: [Double]
        var references: [Float]

        init(tokens: Int) {
            maxima = Array(repeating: -.infinity, count: tokens)
            rows = Array(repeating: [], count: tokens)
            estimates = Array(repeating: [], count: tokens)
            overflowed = Array(repeating: false, count: tokens)
            weightSums = Array(repeating: 0, count: tokens)
            references = Array(repeating: -.infinity, count: tokens)
        }

        /// Drops token `t`'s kept rows that its raised maximum now rules out.
        func compact(token t: Int, margin: Float) {
            let threshold = maxima[t] - margin
            var kept = 0
            for i in rows[t].indices where estimates[t][i] >= threshold {
                rows[t][kept] = rows[t][i]
                estimates[t][kept] = estimates[t][i]
                kept += 1
            }
            rows[t].removeLast(rows[t].count - kept)
            estimates[t].removeLast(estimates[t].count - kept)
        }
    }

    /// Every logit at one byte per activation, scanned as it is made: contiguous stretches of
    /// rows, each computed a cache-sized chunk at a time and searched for rows near each
    /// token's running maximum before the next chunk overwrites it. The 262,144 × tokens
    /// logits never go to memory, and each stretch keeps its rows in ascending order.
    private func firstPass(_ coarse: RoundedActivations, tokens: Int, usable: Int, targets: [PassTarget],
                           full: (activations: RoundedActivations, rows: FullRows)?, pool: ComputePool) -> [Scan] {
        let panels = (usable + 15) / 16
        let items = min(panels, 32 * pool.threadCount)
        var chunkPanels = max(1, chunkBytes / (16 * MemoryLayout<Float>.size * tokens))
        // Full rows read each chunk's weights a second time: a chunk of weights that stays in cache for it.
        if full != nil { chunkPanels = min(chunkPanels, Self.fusedChunkWeightBytes / (16 * weights.columns)) }
        chunkPanels = max(1, chunkPanels)
        let scans = (0..<items).map { _ in Scan(tokens: tokens) }
        let shared = SharedMaxima(count: tokens)
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
                if let full {
                    weights.multiply(panels: start..<end, full.activations, tokens: 0..<full.rows.count,
                                     into: full.rows.output + 16 * start, yStride: weights.rows)
                }
                let count = min(usable, 16 * end) - 16 * start
                for t in 0..<tokens where targets[t].margin.isFinite && !scan.overflowed[t] {
                    let target = targets[t], row = logits + t * chunkRows
                    if let inverseTemperature = target.inverseTemperature {
                        sluice_accumulate_weights(row, Int32(count), inverseTemperature, &scan.references[t], &scan.weightSums[t])
                        // The chunk's largest is known now: collecting against it from the chunk's
                        // first row keeps fewer rows that a later one rules out.
                        scan.maxima[t] = max(scan.maxima[t], scan.references[t])
                    }
                    // Other stretches' largest so far: rows far below it need not be kept here.
                    scan.maxima[t] = max(scan.maxima[t], shared.load(t))
                    let found = Int(sluice_collect_near_maximum(row, Int32(count), target.margin, &scan.maxima[t],
                                                                Int32(16 * start), rows, kept))
                    shared.raise(t, to: scan.maxima[t])
                    if scan.rows[t].count + found > target.capacity {
                        // Rows kept before the maximum rose may no longer be near it.
                        scan.compact(token: t, margin: target.margin)
                        if scan.rows[t].count + found > target.capacity {
                            scan.overflowed[t] = true
                            continue
                        }
                    }
                    scan.rows[t].append(contentsOf: UnsafeBufferPointer(start: rows, count: found))
                    scan.estimates[t].append(contentsOf: UnsafeBufferPointer(start: kept, count: found))
                }
                start = end
            }
        }
        // The full rows' panels past the usable vocabulary, which the pass does not reach.
        if let full, panels < weights.panels {
            weights.multiply(panels: panels..<weights.panels, full.activations, tokens: 0..<full.rows.count,
                             into: full.rows.output + 16 * panels, yStride: weights.rows)
        }
        return scans
    }

    /// Each token's largest first-pass estimate so far, shared by the stretches as they run: a
    /// stretch keeps only rows near the row's largest estimate yet seen anywhere, which is never
    /// above the final one, so what it keeps is still a superset of what the final threshold keeps.
    final class SharedMaxima: @unchecked Sendable {
        // Sendable: every access is atomic.
        private let values: UnsafeMutablePointer<Atomic<UInt32>>
        private let count: Int

        init(count: Int) {
            self.count = count
            values = .allocate(capacity: count)
            for t in 0..<count { (values + t).initialize(to: Atomic((-Float.infinity).bitPattern)) }
        }

        deinit {
            values.deinitialize(count: count)
            values.deallocate()
        }

        func load(_ t: Int) -> Float { Float(bitPattern: values[t].load(ordering: .relaxed)) }

        /// Raises token `t`'s value to `value` if that is larger (a NaN never is).
        func raise(_ t: Int, to value: Float) {
            var current = values[t].load(ordering: .relaxed)
            while value > Float(bitPattern: current) {
                let (exchanged, original) = values[t].compareExchange(expected: current, desired: value.bitPattern,
                                                                      ordering: .relaxed)
                if exchanged { return }
                current = original
            }
        }
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
