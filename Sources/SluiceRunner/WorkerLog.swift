import Foundation

/// Where a worker's log lines go: one plain line per event, on stderr by default.
public struct WorkerLog: Sendable {
    private let write: @Sendable (String) -> Void

    public init(_ write: @escaping @Sendable (String) -> Void) { self.write = write }

    /// Lines on standard error, prefixed with the date and time (UTC, ISO 8601 with milliseconds),
    /// so lines from runs on different days, or collected from several machines, sort and compare.
    public static let standardError = WorkerLog { line in
        FileHandle.standardError.write(Data((timestamp() + " " + line + "\n").utf8))
    }

    /// Discards everything (`--quiet`).
    public static let silent = WorkerLog { _ in }

    public func callAsFunction(_ line: String) { write(line) }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = time_t(now.tv_sec)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      parts.tm_hour, parts.tm_min, parts.tm_sec, Int(now.tv_nsec / 1_000_000))
    }
}
