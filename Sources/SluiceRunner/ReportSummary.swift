import Foundation
import SluiceCore
import SluiceQueue

/// The figures of a job report, computed from the store's data (pure, so it can be tested).
public struct ReportSummary: Sendable {
    public var data: JobReportData
    /// When the report was made (seconds since the Unix epoch).
    public var generatedAt: Double
    public var hourlyPrice: Double?

    public var promptTokens = 0
    public var completionTokens = 0
    /// Completion tokens of results answered from the result cache (reported in usage, not computed again).
    public var cachedCompletionTokens = 0
    public var cacheHits = 0
    /// 200 answers; other final answers; failures (errors without an answer, bad input lines included).
    public var succeeded = 0
    public var errorResponses = 0
    public var failures = 0
    public var badInputLines = 0
    /// Claim-to-result seconds of every result with a known claim time, ascending.
    public var latencies: [Double] = []
    /// Finished requests that survived at least one preemption, and the preemptions they survived.
    public var preemptedRequests = 0
    public var preemptions = 0
    /// Finished requests by preemptions survived: index 0, 1, 2, and 3 for "3 or more".
    public var preemptionHistogram = [0, 0, 0, 0]
    /// The first claim and the last result of the job.
    public var firstClaim: Double?
    public var lastResult: Double?
    /// Per machine (host), the union of the intervals from each request's claim to its result: the
    /// time that machine spent on this job. The sum over machines is what is charged.
    public var activeSecondsByHost: [(host: String, seconds: Double)] = []

    public init(data: JobReportData, hourlyPrice: Double?, generatedAt: Double) {
        self.data = data
        self.hourlyPrice = hourlyPrice
        self.generatedAt = generatedAt
        var intervals: [String: [(Double, Double)]] = [:]
        for result in data.results {
            // Counts read from the database may predate range checks: never trap on them.
            promptTokens.add(saturating: max(0, result.promptTokens))
            completionTokens.add(saturating: max(0, result.completionTokens))
            if result.fromCache {
                cacheHits += 1
                cachedCompletionTokens.add(saturating: max(0, result.completionTokens))
            }
            switch result.statusCode {
            case 200?: succeeded += 1
            case .some: errorResponses += 1
            case nil: failures += 1
            }
            if let latency = result.latency { latencies.append(latency) }
            if result.preemptions > 0 {
                preemptedRequests += 1
                preemptions += result.preemptions
            }
            preemptionHistogram[min(3, max(0, result.preemptions))] += 1
            if let claimed = result.claimedAt {
                firstClaim = min(firstClaim ?? result.firstClaimedAt ?? claimed, result.firstClaimedAt ?? claimed)
                intervals[result.host ?? "unknown host", default: []].append((claimed, max(claimed, result.finishedAt)))
            }
            lastResult = max(lastResult ?? result.finishedAt, result.finishedAt)
        }
        badInputLines = data.failures.filter(\.badInput).reduce(0) { $0 + $1.count }
        latencies.sort()
        activeSecondsByHost = intervals.map { (host: $0.key, seconds: Self.unionLength($0.value)) }
            .sorted { $0.seconds > $1.seconds || ($0.seconds == $1.seconds && $0.host < $1.host) }
    }

    /// Total length of the union of `intervals` (start, end).
    public static func unionLength(_ intervals: [(Double, Double)]) -> Double {
        var total = 0.0
        var current: (start: Double, end: Double)?
        for (start, end) in intervals.sorted(by: { $0.0 < $1.0 }) where end >= start {
            if let open = current, start <= open.end {
                current = (open.start, max(open.end, end))
            } else {
                if let open = current { total += open.end - open.start }
                current = (start, end)
            }
        }
        if let open = current { total += open.end - open.start }
        return total
    }

    public var activeSeconds: Double { activeSecondsByHost.reduce(0) { $0 + $1.seconds } }
    /// From the first claim to the last result.
    public var wallSeconds: Double? {
        guard let firstClaim, let lastResult else { return nil }
        return max(0, lastResult - firstClaim)
    }

    /// Active hours × the hourly price.
    public var cost: Double? { hourlyPrice.map { activeSeconds / 3600 * $0 } }
    /// Cost per million tokens (prompt + completion) and per million completion tokens.
    public var costPerMillionTokens: Double? {
        guard let cost, promptTokens.adding(saturating: completionTokens) > 0 else { return nil }
        return cost / (Double(promptTokens) + Double(completionTokens)) * 1_000_000
    }
    public var costPerMillionCompletionTokens: Double? {
        guard let cost, completionTokens > 0 else { return nil }
        return cost / Double(completionTokens) * 1_000_000
    }

    /// The latency below which `fraction` of the results lie (nearest rank).
    public func latencyPercentile(_ fraction: Double) -> Double? {
        guard !latencies.isEmpty else { return nil }
        let rank = Int((fraction * Double(latencies.count)).rounded(.up))
        return latencies[min(latencies.count - 1, max(0, rank - 1))]
    }

    // MARK: Charts

    /// Completion tokens per minute over time: results binned by their finish time from the first
    /// claim, `binSeconds` wide (a round width giving at most `maxBins` bins), each bin's tokens
    /// scaled to a per-minute rate.
    public func throughput(maxBins: Int = 60) -> (binSeconds: Double, start: Double, tokensPerMinute: [Double]) {
        guard let start = firstClaim ?? data.results.first?.finishedAt, let end = lastResult else {
            return (60, generatedAt, [])
        }
        let span = max(1, end - start)
        let widths: [Double] = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
        let width = widths.first { span / $0 <= Double(maxBins) } ?? (span / Double(maxBins)).rounded(.up)
        let count = max(1, Int((span / width).rounded(.down)) + 1)
        var bins = [Double](repeating: 0, count: count)
        for result in data.results where result.completionTokens > 0 {
            let position = ((result.finishedAt - start) / width).rounded(.down)
            let index = position.isFinite ? Int(min(Double(count - 1), max(0, position))) : count - 1
            bins[index] += Double(max(0, result.completionTokens))
        }
        return (width, start, bins.map { $0 * 60 / width })
    }

    /// Latency histogram: equal-width bins from 0 up to a round bound near the 99th percentile
    /// (or the maximum, if not far above it); slower results go in a last "more" bin.
    public func latencyBins(maxBins: Int = 30) -> (width: Double, counts: [Int], overflow: Int) {
        guard let maxLatency = latencies.last, let p99 = latencyPercentile(0.99) else { return (1, [], 0) }
        let top = maxLatency <= 2 * p99 ? maxLatency : p99
        let width = Self.niceStep(max(top, 0.001) / Double(maxBins))
        let count = max(1, min(maxBins, Int((top / width).rounded(.up))))
        var counts = [Int](repeating: 0, count: count)
        var overflow = 0
        for latency in latencies {
            let index = Int((latency / width).rounded(.down))
            if index < count { counts[index] += 1 } else if latency <= Double(count) * width { counts[count - 1] += 1 } else { overflow += 1 }
        }
        return (width, counts, overflow)
    }

    /// The smallest 1, 2 or 5 × 10^k at least `raw`.
    public static func niceStep(_ raw: Double) -> Double {
        guard raw > 0, raw.isFinite else { return 1 }
        let magnitude = pow(10, (log10(raw)).rounded(.down))
        for factor in [1.0, 2, 5, 10] where factor * magnitude >= raw * (1 - 1e-9) { return factor * magnitude }
        return 10 * magnitude
    }
}
