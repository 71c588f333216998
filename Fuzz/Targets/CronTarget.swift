import SluiceSchedule

extension FuzzTargets {
    /// The cron parser and its search for the next firing.
    static let cron = FuzzTarget(
        name: "cron",
        summary: "CronExpression on arbitrary text; a parsed schedule's next firing is later and matches"
    ) { bytes throws(FuzzFinding) in
        guard bytes.count <= 256, let expression = try? CronExpression(text(bytes)) else { return }
        let start = WallTime(year: 2026, month: 2, day: 28, hour: 23, minute: 59, second: 30)
        guard let next = expression.next(after: start) else { return }
        guard next > start else { throw FuzzFinding("next(after: \(start)) = \(next) is not later, for \(expression)") }
        guard expression.matches(next) else { throw FuzzFinding("\(expression) does not match its own next firing \(next)") }
        guard (try? CronExpression(expression.text))?.hasSameSchedule(as: expression) == true else {
            throw FuzzFinding("\(expression) does not parse back to the same schedule")
        }
    }
}
