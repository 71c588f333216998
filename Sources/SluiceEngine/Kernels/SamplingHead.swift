import CSluiceKernels

/// The argmax head's bound, generalised to sampled rows: the token `Sampler.sample` draws from
/// the full `int16` product, bit for bit, without computing most of its logits exactly.
///
/// A draw depends on every candidate's weight only through the row's total (top-p's threshold,
/// a plain draw's scale); `Sampler.drawFromPrefix` already decides a draw from the sorted most
/// likely candidates and bounds on that total. So the first pass, which computes every logit at
/// one byte per activation within a proven bound B of its `int16` value, also sums every row's
/// estimated weight e^((estimate − reference) / T). Then, per token:
///
/// - rows whose estimate lies within a window W = `windowNats` · T + 2B of the largest estimate
///   are computed exactly; W ≥ 2B puts the true maximum m among them;
/// - every other row's logit is below (largest estimate − W + B), so its weight is at most
///   `outsideBound`; the exact rows above that are the prefix, sorted as the sampler sorts;
/// - the other rows' total weight lies within e^(±B / T) of their estimated weights' sum (the
///   pass's sum less the exact rows' estimated terms), which bounds the row's total.
///
/// When those bounds leave the draw open (a flat distribution whose top-p boundary lies deep in
/// the tail, where the error bound's e^(B / T) swamps the margin), the token falls back to the
/// full product and the sampler, as before: the fast path only ever returns the token the
/// definition gives.
extension ArgmaxHead {
    /// Nats (at temperature) below the largest estimate that a drawn row's window reaches, beyond 2B.
    static let samplingWindowNats: Float = 8

    /// Rows of a drawn token's window computed exactly before giving up on the first pass: a flat
    /// distribution needs the full product anyway.
    static let samplingCapacity = 4096

    /// Recent drawn rows' outcome, per model: whether the first pass pays for them.
    struct DrawHistory {
        /// Moving average of the fraction of a step's draws the bounds left open.
        var openFraction = 0.0
        /// Steps whose draws went straight to the full product since the head last tried them.
        var skippedSteps = 0
    }

    /// Steps between tries of the first pass for a model whose draws it mostly leaves open.
    static let stepsBetweenTries = 32

    /// Whether this step's drawn rows should go through the first pass. Not while most recent
    /// draws were left open (a model whose bound is too loose for its distributions, such as a
    /// random-weight one, where each open row costs the first pass and then the full product),
    /// except one step in `stepsBetweenTries`, which measures again. The tokens are the same either way.
    func drawsPay() -> Bool {
        drawHistory.withLock { history in
            guard history.openFraction > 0.6 else { return true }
            history.skippedSteps += 1
            if history.skippedSteps < Self.stepsBetweenTries { return false }
            history.skippedSteps = 0
            return true
        }
    }

    /// Records a step whose `drawn` rows went through the first pass and `open` of them were left open.
    func recordDraws(drawn: Int, open: Int) {
        guard drawn > 0 else { return }
        drawHistory.withLock { history in
            history.openFraction = 0.75 * history.openFraction + 0.25 * Double(open) / Double(drawn)
        }
    }

    /// The first pass's target for a drawn token whose rows are within `largestBound` of their `int16` values.
    func samplingTarget(_ draw: HeadDraw, largestBound: Float) -> PassTarget {
        let inverseTemperature = 1 / draw.parameters.temperature
        let margin = Self.samplingWindowNats * Float(draw.parameters.temperature) + 2 * largestBound
        // A temperature the sampler treats specially, or one so small that the weight sums' float
        // scale (log2(e) / T) would overflow: no first pass.
        guard draw.parameters.temperature > 0, Float(inverseTemperature * 0x1.71547652b82fep0).isFinite,
              !draw.parameters.isGreedy, margin.isFinite else {
            return PassTarget(margin: .nan, capacity: 0, inverseTemperature: nil)
        }
        return PassTarget(margin: margin, capacity: Self.samplingCapacity, inverseTemperature: inverseTemperature)
    }

    /// The token `Sampler.sample` draws from token `t`'s row of the full product, or nil when the
    /// bounds leave it open. `rows` (ascending) are every usable row whose estimate is within the
    /// target's margin of `largestEstimate`, with their estimates.
    func sampledToken(_ draw: HeadDraw, rows: [Int32], estimates: [Float], largestEstimate: Float, bound: TokenBound,
                      target: PassTarget, scans: [Scan], token t: Int, usable: Int, _ fine: RoundedActivations) -> Int32? {
        let parameters = draw.parameters
        guard let inverse = target.inverseTemperature, !rows.isEmpty else { return nil }
        let largestBound = Double(bound.bound(rowNorm: largestRowNorm))
        // Every row outside the window has an estimate below this float (the first pass and the
        // window compare in float against it or against a lower running maximum less the margin),
        // so its logit is below threshold + B.
        let threshold = Double(largestEstimate - target.margin)
        var exact = [Float](repeating: 0, count: rows.count)
        var maximum = -Float.infinity
        for (i, row) in rows.enumerated() {
            exact[i] = weights.rowProduct(row: Int(row), fine, token: t)
            maximum = max(maximum, exact[i])
        }
        // The window's largest logit is the row's largest when no row outside can reach it. W ≥ 2B
        // makes that so (see above) unless float rounding ate the margin (a temperature near 0).
        guard maximum.isFinite, Double(maximum) >= threshold + largestBound else { return nil }
        let top = Double(maximum)
        let cutoff = top - 40 * parameters.temperature
        guard cutoff.isFinite else { return nil }

        // Every estimated weight, relative to the maximum: the pass's sums, rescaled.
        var estimatedTotal = 0.0
        for scan in scans where scan.weightSums[t] != 0 {
            estimatedTotal += scan.weightSums[t] * sluice_exp((Double(scan.references[t]) - top) * inverse)
        }
        var windowEstimated = 0.0
        for estimate in estimates { windowEstimated += sluice_exp((Double(estimate) - top) * inverse) }
        guard estimatedTotal.isFinite else { return nil }
        // The pass's terms are each within SLUICE_WEIGHT_TERM_ERROR (the rescaling and these sums
        // add far less than the 1e-9 allowed beside it); the window's terms within 1e-15.
        let termError = SLUICE_WEIGHT_TERM_ERROR + 1e-9
        let outsideLow = max(0, estimatedTotal * (1 - termError) - windowEstimated * (1 + 1e-12))
        let outsideHigh = max(0, estimatedTotal * (1 + termError) - windowEstimated * (1 - 1e-12))
            + Double(usable) * 0x1p-100 * sluice_exp((Double(largestEstimate) - top) * inverse)
        // Every row outside the window: true logit below largestEstimate − margin + B.
        let outsideCount = usable - rows.count
        let spread = sluice_exp(largestBound * inverse) * (1 + 1e-9)
        // Non-candidates among them (logit below the cutoff) count in the estimated sum but not in
        // the total; each estimated term of one is below e^-40 · spread.
        let nonCandidates = Double(outsideCount) * sluice_exp(-40) * spread
        let restLow = max(0, (outsideLow - nonCandidates) / spread)
        let restHigh = outsideHigh * spread
        let outsideBound = sluice_exp((threshold + largestBound - top) * inverse) * (1 + 1e-9)

        // The window's candidates with the sampler's exact weights: heavier than any row outside
        // it (the prefix), or known exactly and added to the total.
        var prefix: [(token: Int32, weight: Double)] = []
        var lighterSum = 0.0, lighterCount = 0
        for (i, row) in rows.enumerated() where Double(exact[i]) >= cutoff {
            let weight = sluice_exp((Double(exact[i]) - top) * inverse)
            if weight > outsideBound {
                prefix.append((row, weight))
            } else {
                lighterSum += weight
                lighterCount += 1
            }
        }
        guard !prefix.isEmpty else { return nil }
        prefix.sort(by: Sampler.candidateOrder)
        let known = prefix.reduce(0) { $0 + $1.weight } + lighterSum
        // As in the sampler: the definition's total is a sequential sum of up to `usable` weights.
        let relative = (2e-13 + Double(2 * usable + 64) * 0x1p-53) * 1.01
        let lower = (known + restLow) * (1 - relative), upper = (known + restHigh) * (1 + relative)
        guard lower.isFinite, upper.isFinite else { return nil }
        return Sampler.drawFromPrefix(&prefix, candidateCount: prefix.count + lighterCount + outsideCount,
                                      outsideBound: outsideBound, lower: lower, upper: upper, parameters: parameters,
                                      uniform: draw.uniform)
    }
}
