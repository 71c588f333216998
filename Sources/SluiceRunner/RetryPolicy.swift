/// Exponential backoff with jitter between attempts of one request.
public struct RetryPolicy: Sendable {
    public var baseDelay: Double
    public var maxDelay: Double
    public var maxRetryAfter: Double

    public init(baseDelay: Double, maxDelay: Double, maxRetryAfter: Double) {
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.maxRetryAfter = maxRetryAfter
    }

    /// Seconds to wait after the `failedAttempts`-th failure (1 for the first).
    ///
    /// The exponential delay is jittered between half and all of itself so that
    /// requests that failed together (a 429 storm) do not come back together;
    /// a server's Retry-After is a floor.
    public func delay<R: RandomNumberGenerator>(afterFailedAttempts failedAttempts: Int, retryAfter: Double?,
                                                using random: inout R) -> Double {
        let exponent = Double(max(0, min(failedAttempts - 1, 30)))
        let exponential = min(maxDelay, baseDelay * Double.pow2(exponent))
        let jittered = exponential * Double.random(in: 0.5...1, using: &random)
        guard let retryAfter, retryAfter.isFinite, retryAfter > 0 else { return jittered }
        return max(jittered, min(retryAfter, maxRetryAfter))
    }

    public func delay(afterFailedAttempts failedAttempts: Int, retryAfter: Double?) -> Double {
        var random = SystemRandomNumberGenerator()
        return delay(afterFailedAttempts: failedAttempts, retryAfter: retryAfter, using: &random)
    }
}

private extension Double {
    static func pow2(_ exponent: Double) -> Double {
        var value = 1.0
        for _ in 0..<Int(exponent) { value *= 2 }
        return value
    }
}
