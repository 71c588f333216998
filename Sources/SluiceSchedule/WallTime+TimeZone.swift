import Foundation

extension WallTime {
    /// The earliest instant (Unix seconds) at which clocks in `timeZone` show this wall time, or nil
    /// if they never do (the hour skipped when daylight saving time starts).
    func firstInstant(in timeZone: TimeZone) -> Int64? {
        let local = unixSeconds
        // The offsets in force a day either side cover any single transition near this time.
        var offsets = Set<Int>()
        for probe in [local - 86_400, local, local + 86_400] {
            offsets.insert(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(probe))))
        }
        var best: Int64?
        for offset in offsets {
            let instant = local - Int64(offset)
            if timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(instant))) == offset {
                best = min(best ?? instant, instant)
            }
        }
        return best
    }
}
