import Foundation
import Testing
@testable import SluiceSchedule

/// Issue 13, defects 4 and 7: specs written to inject crontab lines or to overflow numbers are
/// refused at load with the file, line and key, never accepted and never a trap.

private func loadError(_ text: String, path: String = "/srv/jobs/n.toml") -> String {
    do {
        _ = try JobSpec.parse(text, path: path, displayName: (path as NSString).lastPathComponent)
        return "accepted"
    } catch {
        return error.description
    }
}

private let rest = "\n[input]\npath = \"in/\"\n[output]\nfolder = \"o\"\n"

// Defect 4: a newline (or any control character) in a value that reaches a crontab line.
@Test func controlCharactersInSpecValuesAreRefusedAtLoad() {
    let cases: [(String, String)] = [
        ("name = \"n\"\nschedule = \"@hourly\"\ndatabase = \"/tmp/q.db\\n* * * * * touch /tmp/pwned #\"" + rest,
         "n.toml:3: database: contains the control character U+000A"),
        ("name = \"n\"\nschedule = \"@hourly\\n* * * * * evil\"" + rest, "n.toml:2: schedule: contains the control character U+000A"),
        ("name = \"n\"\ndatabase = \"/tmp/q\\r.db\"" + rest, "n.toml:2: database: contains the control character U+000D"),
        ("name = \"n\"\n[input]\npath = \"in\\u0000/\"\n[output]\nfolder = \"o\"\n", "n.toml:3: input.path: contains the control character U+0000"),
        ("name = \"n\"\n[input]\npath = \"in/\"\n[output]\nfolder = \"o\\u2028x\"\n", "n.toml:5: output.folder: contains the control character U+2028"),
        ("name = \"n\"\n[input]\npath = \"in/\"\n[output]\nfolder = \"o\"\nname = \"{stem}\\t.jsonl\"\n",
         "n.toml:6: output.name: contains the control character U+0009"),
    ]
    for (text, expected) in cases {
        let message = loadError(text)
        #expect(message.hasPrefix(expected), "expected \(expected), got \(message)")
    }
    // Body defaults may hold newlines (a stop sequence): they never reach a crontab line.
    #expect(loadError("name = \"n\"" + rest + "[defaults]\nstop = \"\\n\"\n") == "accepted")
}

@Test func aSpecFileNameWithANewlineIsRefused() {
    let message = loadError("name = \"n\"\nschedule = \"@hourly\"" + rest, path: "/srv/jobs/n\n* * * * * evil.toml")
    #expect(message.contains("the spec's file name contains the control character U+000A"), "\(message)")
}

@Test func theCrontabWriterRefusesWhatItCannotQuote() throws {
    let spec = try JobSpec.parse("name = \"n\"\nschedule = \"@hourly\"" + rest, path: "/srv/jobs/n.toml")
    for bad in ["/srv/q.db\n* * * * * evil", "/srv/q\r.db", "/srv/q\u{85}.db"] {
        #expect(throws: RunError.self) {
            try Crontab.line(for: spec, binary: "/opt/sluice", databasePath: bad, logPath: "/srv/log", lockPath: "/srv/lock")
        }
    }
    #expect(throws: RunError.self) {
        try Crontab.line(for: spec, binary: "/opt/slu\nice", databasePath: "/q.db", logPath: "/srv/log", lockPath: "/srv/lock")
    }
    let fine = try Crontab.line(for: spec, binary: "/opt/sluice", databasePath: "/srv/my q;rm -rf.db", logPath: "/l", lockPath: "/k")
    #expect(!fine.contains("\n") && fine.contains("'/srv/my q;rm -rf.db'"))
}

// Defect 7: steps, durations and numbers out of range are errors, never traps.
@Test func absurdNumbersInSpecsAreErrors() {
    let digits400 = String(repeating: "9", count: 400)
    let cases: [(String, String)] = [
        ("name = \"n\"\nschedule = \"1/9223372036854775807 * * * *\"" + rest,
         "n.toml:2: schedule: cron expression \"1/9223372036854775807 * * * *\": minute: step 9223372036854775807 is larger than the field's span (0-59)"),
        ("name = \"n\"\nschedule = \"*/99999999999999999999999 * * * *\"" + rest, "n.toml:2: schedule: cron expression"),
        ("name = \"n\"\nschedule = \"* */+5 * * *\"" + rest, "n.toml:2: schedule: cron expression \"* */+5 * * *\": hour: step \"+5\" must be a whole number"),
        ("name = \"n\"\ndeadline = \"\(digits400)s\"" + rest, "n.toml:2: deadline: \""),
        ("name = \"n\"\ndeadline = \"200000000h\"" + rest, "n.toml:2: deadline: \"200000000h\" is longer than the longest duration accepted (100 years)"),
        ("name = \"n\"\ndeadline = \(digits400)" + rest, "n.toml:2: deadline: \(String(repeating: "9", count: 40)) is too large a number"),
        ("name = \"n\"\ndeadline = 9223372036854775807" + rest, "n.toml:2: deadline: 9223372036854775807 s is longer than"),
        ("name = \"n\"\nretention = \"\(digits400)d\"" + rest, "n.toml:2: retention: \""),
        ("name = \"n\"\ngrace = \"1e999s\"" + rest, "n.toml:2: grace: \"1e999s\" is not a duration"),
        ("name = \"n\"\npriority = \(digits400)" + rest, "n.toml:2: priority:"),
        ("name = \"n\"\n[input]\npath = \"in/\"\nsettle = \"\(digits400)m\"\n[output]\nfolder = \"o\"\n", "n.toml:4: input.settle: \""),
    ]
    for (text, expected) in cases {
        let message = loadError(text)
        #expect(message.hasPrefix(expected), "expected \(expected), got \(message)")
        #expect(message != "accepted")
    }
    // Every step up to the field's span is fine.
    #expect((try? CronExpression("*/60 */24 */31 */12 */7")) != nil)
    #expect(throws: CronError.self) { try CronExpression("*/61 * * * *") }
}
