import Foundation

/// A 5-field cron expression (minute, hour, day of month, month, day of week) with Vixie cron's
/// meaning: `*`, values, ranges `a-b`, steps `*/s`, `a-b/s` and `a/s` (from `a` to the field's
/// maximum), lists, month and weekday names (`jan`–`dec`, `sun`–`sat`, any case), 0 or 7 for
/// Sunday, and the macros `@yearly @annually @monthly @weekly @daily @midnight @hourly`.
///
/// Day of month and day of week: when both are restricted (neither field starts with `*`), a day
/// matches if either matches (the OR rule); otherwise both must match, as in Vixie cron.
public struct CronExpression: Sendable, Equatable, CustomStringConvertible {
    /// The text it was parsed from, trimmed.
    public let text: String
    let minutes: UInt64
    let hours: UInt64
    let daysOfMonth: UInt64
    let months: UInt64
    /// Bits 0–6, Sunday = 0 (a 7 in the text sets bit 0).
    let daysOfWeek: UInt64
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool

    public var description: String { text }

    /// Parses `text`.
    /// - Throws: `CronError`, naming the field and the offending part.
    public init(_ text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        self.text = trimmed
        var source = trimmed
        if trimmed.hasPrefix("@") {
            switch trimmed.lowercased() {
            case "@yearly", "@annually": source = "0 0 1 1 *"
            case "@monthly": source = "0 0 1 * *"
            case "@weekly": source = "0 0 * * 0"
            case "@daily", "@midnight": source = "0 0 * * *"
            case "@hourly": source = "0 * * * *"
            case "@reboot":
                throw CronError(expression: trimmed, field: nil, message: "@reboot is not a time schedule; Sluice supports @yearly, @annually, @monthly, @weekly, @daily, @midnight and @hourly")
            default:
                throw CronError(expression: trimmed, field: nil, message: "unknown macro \(trimmed); known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly")
            }
        }
        let fields = source.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            let hint = fields.count == 6 ? " (a seconds field is not supported)" : ""
            throw CronError(expression: trimmed, field: nil,
                            message: "expected 5 fields (minute hour day-of-month month day-of-week), found \(fields.count)\(hint)")
        }
        func parse(_ index: Int) throws -> UInt64 {
            try CronField.all[index].parse(fields[index], expression: trimmed)
        }
        minutes = try parse(0)
        hours = try parse(1)
        daysOfMonth = try parse(2)
        months = try parse(3)
        var weekdays = try parse(4)
        if weekdays & (1 << 7) != 0 { weekdays = (weekdays & ~(1 << 7)) | 1 }
        daysOfWeek = weekdays
        dayOfMonthRestricted = !fields[2].hasPrefix("*")
        dayOfWeekRestricted = !fields[4].hasPrefix("*")
    }

    /// Whether the schedule fires at this wall-clock minute.
    public func matches(_ time: WallTime) -> Bool {
        bit(minutes, time.minute) && bit(hours, time.hour) && bit(months, time.month) && dayMatches(time)
    }

    func dayMatches(_ time: WallTime) -> Bool {
        let domMatch = bit(daysOfMonth, time.day)
        let dowMatch = bit(daysOfWeek, time.weekday)
        if dayOfMonthRestricted && dayOfWeekRestricted { return domMatch || dowMatch }
        return domMatch && dowMatch
    }

    /// The first wall-clock minute strictly after `time` that matches, or nil if none comes within
    /// `CronExpression.searchYears` years (e.g. `0 0 30 2 *`).
    public func next(after time: WallTime) -> WallTime? {
        var t = time.truncatedToMinute.addingMinutes(1)
        let limitYear = time.year + Self.searchYears
        while t.year <= limitYear {
            if !bit(months, t.month) {
                t = t.startOfNextMonth
                continue
            }
            if !dayMatches(t) {
                t = t.startOfNextDay
                continue
            }
            if !bit(hours, t.hour) {
                t = t.startOfNextHour
                continue
            }
            if !bit(minutes, t.minute) {
                t = t.addingMinutes(1)
                continue
            }
            return t
        }
        return nil
    }

    /// The first instant strictly after `date` at which the schedule fires, reading the fields as
    /// wall-clock time in `timeZone`.
    ///
    /// Daylight saving time: a wall-clock minute that does not exist (the hour skipped in spring)
    /// does not fire; a minute that occurs twice (the hour repeated in autumn) fires once, at its
    /// first occurrence. Returns nil when nothing matches within `searchYears` years.
    public func nextDate(after date: Date, in timeZone: TimeZone) -> Date? {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        var wall = WallTime(unixSeconds: seconds + Int64(timeZone.secondsFromGMT(for: date)))
        // Each step moves the wall clock forward; the loop ends because `next` does.
        while let candidate = next(after: wall) {
            if let instant = candidate.firstInstant(in: timeZone), instant > seconds {
                return Date(timeIntervalSince1970: TimeInterval(instant))
            }
            wall = candidate
        }
        return nil
    }

    /// How far ahead `next` looks before deciding that an expression never fires.
    public static let searchYears = 30

    private func bit(_ set: UInt64, _ value: Int) -> Bool { set & (1 << UInt64(value)) != 0 }
}

/// A cron expression that could not be parsed.
public struct CronError: Error, Sendable, Equatable, CustomStringConvertible {
    public var expression: String
    /// The field at fault (`minute`, `hour`, `day-of-month`, `month`, `day-of-week`), if one is.
    public var field: String?
    public var message: String

    public var description: String {
        if let field { return "cron expression \"\(expression)\": \(field): \(message)" }
        return "cron expression \"\(expression)\": \(message)"
    }
}

/// One field's range and names.
struct CronField: Sendable {
    let name: String
    let low: Int
    let high: Int
    let names: [String]
    /// The value of `names[0]`.
    let firstNameValue: Int

    static let all: [CronField] = [
        CronField(name: "minute", low: 0, high: 59, names: [], firstNameValue: 0),
        CronField(name: "hour", low: 0, high: 23, names: [], firstNameValue: 0),
        CronField(name: "day-of-month", low: 1, high: 31, names: [], firstNameValue: 1),
        CronField(name: "month", low: 1, high: 12,
                  names: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
                  firstNameValue: 1),
        CronField(name: "day-of-week", low: 0, high: 7,
                  names: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"], firstNameValue: 0),
    ]

    func parse(_ text: String, expression: String) throws -> UInt64 {
        func fail(_ message: String) -> CronError { CronError(expression: expression, field: name, message: message) }
        var set: UInt64 = 0
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            if part.isEmpty { throw fail("empty list element in \"\(text)\"") }
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2 else { throw fail("more than one \"/\" in \"\(part)\"") }
            var step = 1
            if pieces.count == 2 {
                guard pieces[1].allSatisfy({ $0.isASCII && $0.isNumber }), let s = Int(pieces[1]), s >= 1 else {
                    throw fail("step \"\(pieces[1])\" must be a whole number of at least 1")
                }
                // A step past the field's span could only ever pick its first value, and must not overflow.
                guard s <= high - low + 1 else {
                    throw fail("step \(pieces[1]) is larger than the field's span (\(low)-\(high))")
                }
                step = s
            }
            let rangeText = pieces[0]
            var start: Int
            var end: Int
            if rangeText == "*" {
                start = low
                end = high
            } else if let dash = rangeText.firstIndex(of: "-") {
                start = try value(rangeText[..<dash], in: text, fail: fail)
                let endText = rangeText[rangeText.index(after: dash)...]
                end = try value(endText, in: text, fail: fail)
                // `mon-sun`: Sunday ending a range is 7, as croniter reads it (Vixie cron would refuse it).
                if name == "day-of-week" && end == 0 && start > 0 && endText.lowercased() == "sun" { end = 7 }
                guard start <= end else { throw fail("range \(rangeText) runs backwards (\(start) > \(end))") }
            } else {
                start = try value(rangeText, in: text, fail: fail)
                // `a/s` means every s-th value from a to the field's maximum, as croniter and cronie read it
                // (Saturday for day-of-week, as croniter reads it: `1/6` is Monday only, not Monday and Sunday).
                end = pieces.count == 2 ? (name == "day-of-week" ? 6 : high) : start
            }
            var v = start
            while v <= end {
                set |= 1 << UInt64(v)
                v += step
            }
        }
        return set
    }

    private func value(_ token: Substring, in text: String, fail: (String) -> CronError) throws -> Int {
        if token.isEmpty { throw fail("missing number in \"\(text)\"") }
        if token.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(token) {
            guard number >= low && number <= high else {
                throw fail("\(number) is out of range \(low)-\(high)")
            }
            return number
        }
        if let index = names.firstIndex(of: token.lowercased()) { return firstNameValue + index }
        if names.isEmpty { throw fail("\"\(token)\" is not a number") }
        throw fail("\"\(token)\" is not a number or one of \(names.joined(separator: ", "))")
    }
}

extension CronExpression {
    /// Whether both fire at the same times, however they are written.
    public func hasSameSchedule(as other: CronExpression) -> Bool {
        minutes == other.minutes && hours == other.hours && daysOfMonth == other.daysOfMonth && months == other.months
            && daysOfWeek == other.daysOfWeek && dayOfMonthRestricted == other.dayOfMonthRestricted
            && dayOfWeekRestricted == other.dayOfWeekRestricted
    }
}
