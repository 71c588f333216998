import Foundation
import Testing
@testable import SluiceSchedule

/// Replays every vector scripts/make-cron-vectors made with croniter (UTC).
@Test func cronMatchesCroniterVectors() throws {
    let url = try #require(Bundle.module.url(forResource: "cron-vectors", withExtension: "tsv", subdirectory: "Fixtures"))
    let text = try String(contentsOf: url, encoding: .utf8)
    let utc = try #require(TimeZone(identifier: "UTC"))
    var checked = 0
    var mismatches: [String] = []
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        let columns = line.split(separator: "\t", omittingEmptySubsequences: false)
        try #require(columns.count == 3, "bad fixture line: \(line)")
        let expression = try CronExpression(String(columns[0]))
        var time = Date(timeIntervalSince1970: try #require(Double(columns[1])))
        for expectedText in columns[2].split(separator: " ") {
            let expected = try #require(Double(expectedText))
            let next = expression.nextDate(after: time, in: utc)
            if next?.timeIntervalSince1970 != expected {
                mismatches.append("\(columns[0]) after \(Int(time.timeIntervalSince1970)): expected \(Int(expected)), got \(next.map { String(Int($0.timeIntervalSince1970)) } ?? "nil")")
                break
            }
            time = Date(timeIntervalSince1970: expected)
        }
        checked += 1
    }
    #expect(checked >= 3000)
    #expect(mismatches.isEmpty, "\(mismatches.count) mismatches, first: \(mismatches.prefix(5))")
}
