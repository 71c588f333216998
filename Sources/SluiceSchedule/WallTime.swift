/// A wall-clock minute (no time zone): what a cron expression's fields are compared with.
/// Calendar arithmetic is the proleptic Gregorian calendar, done in integers.
public struct WallTime: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var year: Int
    /// 1–12.
    public var month: Int
    /// 1–31.
    public var day: Int
    /// 0–23.
    public var hour: Int
    /// 0–59.
    public var minute: Int
    /// 0–59; cron works in whole minutes, so `next` drops it.
    public var second: Int

    public init(year: Int, month: Int, day: Int, hour: Int = 0, minute: Int = 0, second: Int = 0) {
        self.year = year
        self.month = month
        self.day = day
        self.hour = hour
        self.minute = minute
        self.second = second
    }

    /// The wall time `seconds` after 1970-01-01 00:00:00 (of the same wall clock).
    public init(unixSeconds seconds: Int64) {
        let days = Int(seconds.floorDivided(by: 86_400))
        let rest = Int(seconds - Int64(days) * 86_400)
        let (y, m, d) = WallTime.civil(fromDays: days)
        self.init(year: y, month: m, day: d, hour: rest / 3600, minute: rest % 3600 / 60, second: rest % 60)
    }

    /// Seconds since 1970-01-01 00:00:00 of the same wall clock (i.e. as if this were UTC).
    public var unixSeconds: Int64 {
        Int64(WallTime.days(year: year, month: month, day: day)) * 86_400
            + Int64(hour * 3600 + minute * 60 + second)
    }

    /// 0 = Sunday … 6 = Saturday.
    public var weekday: Int {
        // 1970-01-01 was a Thursday (4).
        let days = WallTime.days(year: year, month: month, day: day)
        return ((days % 7) + 7 + 4) % 7
    }

    public var description: String {
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(year)-\(two(month))-\(two(day)) \(two(hour)):\(two(minute))"
    }

    public static func < (a: WallTime, b: WallTime) -> Bool { a.unixSeconds < b.unixSeconds }

    var truncatedToMinute: WallTime { WallTime(year: year, month: month, day: day, hour: hour, minute: minute) }

    func addingMinutes(_ n: Int) -> WallTime { WallTime(unixSeconds: truncatedToMinute.unixSeconds + Int64(n) * 60) }

    var startOfNextHour: WallTime {
        WallTime(unixSeconds: WallTime(year: year, month: month, day: day, hour: hour).unixSeconds + 3600)
    }

    var startOfNextDay: WallTime {
        WallTime(unixSeconds: WallTime(year: year, month: month, day: day).unixSeconds + 86_400)
    }

    var startOfNextMonth: WallTime {
        month == 12 ? WallTime(year: year + 1, month: 1, day: 1) : WallTime(year: year, month: month + 1, day: 1)
    }

    /// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    static func days(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civil(fromDays days: Int) -> (year: Int, month: Int, day: Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }
}

extension Int64 {
    func floorDivided(by divisor: Int64) -> Int64 {
        let q = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? q - 1 : q
    }
}
