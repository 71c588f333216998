import Foundation
import Testing
@testable import SluiceSchedule

private let utc = TimeZone(identifier: "UTC")!

private func nextTimes(_ expression: String, after start: WallTime, count: Int) throws -> [String] {
    let cron = try CronExpression(expression)
    var times: [String] = []
    var t = start
    for _ in 0..<count {
        guard let next = cron.next(after: t) else { break }
        times.append(next.description)
        t = next
    }
    return times
}

@Test func macrosExpand() throws {
    let start = WallTime(year: 2026, month: 11, day: 27, hour: 2, minute: 30)
    #expect(try nextTimes("@hourly", after: start, count: 2) == ["2026-11-27 03:00", "2026-11-27 04:00"])
    #expect(try nextTimes("@daily", after: start, count: 1) == ["2026-11-28 00:00"])
    #expect(try nextTimes("@midnight", after: start, count: 1) == ["2026-11-28 00:00"])
    #expect(try nextTimes("@weekly", after: start, count: 1) == ["2026-11-29 00:00"]) // a Sunday
    #expect(try nextTimes("@monthly", after: start, count: 1) == ["2026-12-01 00:00"])
    #expect(try nextTimes("@yearly", after: start, count: 1) == ["2027-01-01 00:00"])
    #expect(try nextTimes("@ANNUALLY", after: start, count: 1) == ["2027-01-01 00:00"])
}

@Test func namesSevenForSundayAndSteps() throws {
    let start = WallTime(year: 2026, month: 11, day: 27, hour: 0, minute: 0) // a Friday
    #expect(try CronExpression("0 9 * * 7").hasSameSchedule(as: CronExpression("0 9 * * sun")))
    #expect(try CronExpression("0 9 * * 0").hasSameSchedule(as: CronExpression("0 9 * * SUN")))
    #expect(try !CronExpression("0 9 * * 1").hasSameSchedule(as: CronExpression("0 9 * * SUN")))
    // "sun" ending a range is 7 (as croniter reads it): mon-sun is every day.
    #expect(try CronExpression("0 9 * * mon-sun").hasSameSchedule(as: CronExpression("0 9 * * 1-7")))
    #expect(try CronExpression("0 9 * * sat-sun").hasSameSchedule(as: CronExpression("0 9 * * 0,6")))
    #expect(try nextTimes("0 9 * * mon-fri", after: start, count: 3)
            == ["2026-11-27 09:00", "2026-11-30 09:00", "2026-12-01 09:00"])
    #expect(try nextTimes("*/20 1-2/1 * * *", after: start, count: 4)
            == ["2026-11-27 01:00", "2026-11-27 01:20", "2026-11-27 01:40", "2026-11-27 02:00"])
    #expect(try nextTimes("50/5 0 * * *", after: start, count: 3)
            == ["2026-11-27 00:50", "2026-11-27 00:55", "2026-11-28 00:50"])
    #expect(try nextTimes("0 0 1 jan,jul *", after: start, count: 2) == ["2027-01-01 00:00", "2027-07-01 00:00"])
    #expect(try nextTimes("0 0 29 feb *", after: start, count: 2) == ["2028-02-29 00:00", "2032-02-29 00:00"])
}

@Test func dayOfMonthAndDayOfWeekFollowVixie() throws {
    let start = WallTime(year: 2026, month: 11, day: 27) // Friday
    // Both restricted: OR. The 1st, or any Monday.
    #expect(try nextTimes("0 0 1 * mon", after: start, count: 3)
            == ["2026-11-30 00:00", "2026-12-01 00:00", "2026-12-07 00:00"])
    // Day-of-week is '*': only the day of month counts.
    #expect(try nextTimes("0 0 1 * *", after: start, count: 1) == ["2026-12-01 00:00"])
    // A field starting with '*' counts as unrestricted even with a step (Vixie; croniter differs):
    // '*/2' days of month AND Mondays.
    #expect(try nextTimes("0 0 */2 * mon", after: start, count: 2) == ["2026-12-07 00:00", "2026-12-21 00:00"])
    // '0-7' does not start with '*': restricted, so OR with the 15th (every day matches).
    #expect(try nextTimes("0 0 15 * 0-7", after: start, count: 2) == ["2026-11-28 00:00", "2026-11-29 00:00"])
}

@Test func impossibleDatesNeverFire() throws {
    let cron = try CronExpression("0 0 30 2 *")
    #expect(cron.next(after: WallTime(year: 2026, month: 1, day: 1)) == nil)
    #expect(cron.nextDate(after: Date(timeIntervalSince1970: 0), in: utc) == nil)
}

@Test func errorsNameTheField() {
    func message(_ text: String) -> String {
        do {
            _ = try CronExpression(text)
            return "accepted"
        } catch let error as CronError {
            return error.description
        } catch {
            return "\(error)"
        }
    }
    #expect(message("60 * * * *").contains("minute: 60 is out of range 0-59"))
    #expect(message("* 24 * * *").contains("hour: 24 is out of range 0-23"))
    #expect(message("* * 0 * *").contains("day-of-month: 0 is out of range 1-31"))
    #expect(message("* * * 13 *").contains("month: 13 is out of range 1-12"))
    #expect(message("* * * foo *").contains("month: \"foo\" is not a number or one of jan"))
    #expect(message("* * * * 8").contains("day-of-week: 8 is out of range 0-7"))
    #expect(message("* * * * fri-mon").contains("day-of-week: range fri-mon runs backwards (5 > 1)"))
    #expect(message("*/0 * * * *").contains("minute: step \"0\" must be a whole number of at least 1"))
    #expect(message("1,,2 * * * *").contains("minute: empty list element"))
    #expect(message("+5 * * * *").contains("minute: \"+5\" is not a number"))
    #expect(message("* * * *").contains("expected 5 fields"))
    #expect(message("0 * * * * *").contains("a seconds field is not supported"))
    #expect(message("@reboot").contains("@reboot is not a time schedule"))
    #expect(message("@often").contains("unknown macro @often"))
    #expect(message("1-2-3 * * * *").contains("minute:"))
    #expect(message("5 4 * * L").contains("day-of-week:"))
}

/// Daylight saving time in the process's zone: a skipped minute does not fire, a repeated one fires once.
@Test func daylightSavingTime() throws {
    let berlin = try #require(TimeZone(identifier: "Europe/Berlin"))
    // 2026-03-29: clocks jump from 02:00 to 03:00 (01:00 UTC).
    let springStart = Date(timeIntervalSince1970: 1_774_738_800) // 2026-03-28 23:00 UTC = 2026-03-29 00:00 CET
    let halfPastTwo = try CronExpression("30 2 * * *")
    let spring = try #require(halfPastTwo.nextDate(after: springStart, in: berlin))
    // 02:30 does not exist on the 29th: the next 02:30 is on the 30th (00:30 UTC, CEST).
    #expect(Int(spring.timeIntervalSince1970) == 1_774_830_600)

    // 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET (01:00 UTC); 02:30 happens twice.
    let autumnStart = Date(timeIntervalSince1970: 1_792_879_200) // 2026-10-24 22:00 UTC = 2026-10-25 00:00 CEST
    let first = try #require(halfPastTwo.nextDate(after: autumnStart, in: berlin))
    #expect(Int(first.timeIntervalSince1970) == 1_792_888_200) // 00:30 UTC = 02:30 CEST
    let second = try #require(halfPastTwo.nextDate(after: first, in: berlin))
    #expect(Int(second.timeIntervalSince1970) == 1_792_888_200 + 86_400 + 3600) // next day 02:30 CET
    // Every 15 minutes across the repeated hour: each wall-clock minute once.
    let quarter = try CronExpression("*/15 * * * *")
    var t = Date(timeIntervalSince1970: 1_792_886_400) // 00:00 UTC = 02:00 CEST
    var fired: [Int] = []
    for _ in 0..<8 {
        t = try #require(quarter.nextDate(after: t, in: berlin))
        fired.append(Int(t.timeIntervalSince1970) - 1_792_886_400)
    }
    // 02:15, 02:30, 02:45 CEST, then 02:00…02:45 CET are skipped as repeats, then 03:00 CET.
    #expect(fired == [900, 1800, 2700, 3600 + 3600, 3600 + 4500, 3600 + 5400, 3600 + 6300, 3600 + 7200])
}
