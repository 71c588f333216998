import Foundation
import SluiceQueue

/// The figures a progress line shows: counts from the store, rates from this process.
public struct ProgressFigures: Sendable, Equatable {
    public var total: Int
    public var done: Int
    public var failed: Int
    public var cancelled: Int
    public var queued: Int
    public var leased: Int
    /// Results answered from the result cache (from the store).
    public var cacheHits: Int
    /// Completion tokens per second this process committed over its sliding window.
    public var completionTokensPerSecond: Double
    /// Requests finished per second by every worker (nil until two reads of the store exist).
    public var finishedPerSecond: Double?
    /// This worker's retries and requests in flight.
    public var retries: Int
    public var inFlight: Int
    /// Why the store could not be read, when the figures are stale.
    public var storeError: String?

    public init(total: Int = 0, done: Int = 0, failed: Int = 0, cancelled: Int = 0, queued: Int = 0, leased: Int = 0,
                cacheHits: Int = 0, completionTokensPerSecond: Double = 0, finishedPerSecond: Double? = nil,
                retries: Int = 0, inFlight: Int = 0, storeError: String? = nil) {
        self.total = total
        self.done = done
        self.failed = failed
        self.cancelled = cancelled
        self.queued = queued
        self.leased = leased
        self.cacheHits = cacheHits
        self.completionTokensPerSecond = completionTokensPerSecond
        self.finishedPerSecond = finishedPerSecond
        self.retries = retries
        self.inFlight = inFlight
        self.storeError = storeError
    }

    /// The jobs' counts summed, with this process's rates.
    public init(sample: ProgressSample, telemetry: TelemetrySnapshot) {
        self.init()
        for job in sample.jobs {
            total += job.counts.total
            done += job.counts.done
            failed += job.counts.failed
            cancelled += job.counts.cancelled
            queued += job.counts.queued
            leased += job.counts.leased
            cacheHits += job.cacheHits
        }
        completionTokensPerSecond = telemetry.completionTokensPerSecond
        finishedPerSecond = sample.finishedPerSecond
        retries = telemetry.retries
        inFlight = telemetry.inFlight
        storeError = sample.error
    }

    /// Requests with an outcome (or cancelled).
    public var finished: Int { done + failed + cancelled }
    public var unfinished: Int { queued + leased }
    public var fraction: Double { total > 0 ? min(1, Double(finished) / Double(total)) : 0 }

    /// Seconds until nothing is unfinished at the current rate; 0 when done, nil when unknown.
    public var etaSeconds: Double? {
        if unfinished == 0 { return 0 }
        guard let rate = finishedPerSecond, rate > 0 else { return nil }
        return Double(unfinished) / rate
    }
}

/// How progress is written: pure functions of the figures, so they can be tested.
public enum ProgressFormat {
    /// `[#######-----]` filling `width` characters in all.
    public static func bar(fraction: Double, width: Int) -> String {
        let inner = max(0, width - 2)
        let clamped = fraction.isFinite ? min(1, max(0, fraction)) : 0
        let filled = Int((clamped * Double(inner)).rounded(.down))
        return "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: inner - filled) + "]"
    }

    /// The redrawn terminal line, at most `width` characters (the bar shrinks first, then the tail is cut).
    public static func terminalLine(_ figures: ProgressFigures, width: Int) -> String {
        var parts = [
            String(format: "%5.1f%%", figures.fraction * 100),
            "\(figures.finished)/\(figures.total)",
            "\(figures.failed) failed",
            rate(figures.completionTokensPerSecond) + " tok/s",
            "ETA " + (figures.etaSeconds.map(duration) ?? "--"),
            "\(figures.cacheHits) cached",
        ]
        if figures.retries > 0 { parts.append("\(figures.retries) retries") }
        if figures.storeError != nil { parts.append("(store unreadable)") }
        let text = parts.joined(separator: "  ")
        let room = width - text.count - 1
        let barWidth = min(32, room)
        let line = barWidth >= 10 ? bar(fraction: figures.fraction, width: barWidth) + " " + text : text
        return String(line.prefix(max(0, width)))
    }

    /// One plain log line, for logs that are not a terminal.
    public static func logLine(_ figures: ProgressFigures, windowSeconds: Double) -> String {
        var line = "progress: \(figures.finished)/\(figures.total) requests finished"
            + String(format: " (%.1f%%)", figures.fraction * 100)
            + ": \(figures.done) done, \(figures.failed) failed"
        if figures.cancelled > 0 { line += ", \(figures.cancelled) cancelled" }
        line += "; \(figures.queued) queued, \(figures.leased) leased"
        line += "; " + rate(figures.completionTokensPerSecond) + " completion tokens/s (this worker, last \(Int(windowSeconds.rounded())) s)"
        line += "; ETA " + (figures.etaSeconds.map(duration) ?? "unknown")
        line += "; \(figures.cacheHits) cache hits; \(figures.inFlight) in flight, \(figures.retries) retries"
        if let error = figures.storeError { line += "; counts are stale, the store could not be read: \(error)" }
        return line
    }

    static func rate(_ value: Double) -> String {
        guard value.isFinite else { return "?" }
        return value >= 100 ? String(Int(value.rounded())) : String(format: "%.1f", value)
    }

    /// `4.2s`, `37s`, `12m05s`, `3h07m`.
    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "?" }
        if seconds < 10 { return String(format: "%.1fs", seconds) }
        let total = Int(seconds.rounded())
        if total < 60 { return "\(total)s" }
        if total < 3600 { return "\(total / 60)m" + String(format: "%02ds", total % 60) }
        if total < 360_000 { return "\(total / 3600)h" + String(format: "%02dm", (total % 3600) / 60) }
        return "\(total / 86400)d"
    }
}
