/// A cumulative histogram with fixed upper bounds, as Prometheus exposes it.
public struct MetricsHistogram: Sendable, Equatable {
    /// Upper bounds of the buckets, increasing; the `+Inf` bucket is implied.
    public let bounds: [Double]
    /// Observations per bucket (not cumulative); the last entry is the `+Inf` bucket.
    public private(set) var bucketCounts: [UInt64]
    public private(set) var sum: Double = 0
    public private(set) var count: UInt64 = 0

    /// - Parameter bounds: increasing, finite upper bounds.
    public init(bounds: [Double]) {
        precondition(!bounds.isEmpty && zip(bounds, bounds.dropFirst()).allSatisfy { $0 < $1 } && bounds.allSatisfy(\.isFinite),
                     "histogram bounds must be finite and increasing")
        self.bounds = bounds
        bucketCounts = Array(repeating: 0, count: bounds.count + 1)
    }

    /// Records `value` `times` times (NaN is ignored: it has no bucket).
    public mutating func observe(_ value: Double, times: Int = 1) {
        guard !value.isNaN, times > 0 else { return }
        let index = bounds.firstIndex { value <= $0 } ?? bounds.count
        bucketCounts[index] += UInt64(times)
        sum += value * Double(times)
        count += UInt64(times)
    }

    /// Observations less than or equal to each bound, then the total (for `le="+Inf"`).
    public var cumulativeCounts: [UInt64] {
        var running: UInt64 = 0
        return bucketCounts.map { running += $0; return running }
    }

    /// Seconds from 5 ms to 10 minutes, for request latency.
    public static let requestLatencyBounds: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]
    /// Seconds from 1 ms to 5 s, for engine steps.
    public static let stepBounds: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
}
