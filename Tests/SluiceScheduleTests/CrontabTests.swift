import Foundation
import Testing
@testable import SluiceSchedule

@Test func installingTwiceGivesOneBlockAndKeepsTheRest() {
    let mine = "/srv/jobs"
    let existing = "MAILTO=ops@example.com\n0 3 * * * /usr/bin/backup\n"
    let once = Crontab.replacingBlock(in: existing, owner: mine, lines: ["* * * * * run a"])
    #expect(once == """
        MAILTO=ops@example.com
        0 3 * * * /usr/bin/backup
        \(Crontab.beginMarker(mine))
        * * * * * run a
        \(Crontab.endMarker(mine))

        """)
    let twice = Crontab.replacingBlock(in: once, owner: mine, lines: ["* * * * * run a"])
    #expect(twice == once)
    let changed = Crontab.replacingBlock(in: once, owner: mine, lines: ["5 * * * * run b"])
    #expect(changed.contains("run b") && !changed.contains("run a"))
    // Another jobs folder's block is left alone.
    let other = Crontab.replacingBlock(in: changed, owner: "/other/jobs", lines: ["@daily run c"])
    #expect(other.contains("run b") && other.contains("run c"))
    let removed = Crontab.replacingBlock(in: other, owner: mine, lines: [])
    #expect(!removed.contains("run b") && removed.contains("run c") && removed.hasPrefix(existing))
    #expect(Crontab.replacingBlock(in: "", owner: mine, lines: []) == "")
}

@Test func shellQuotingAndPercentSigns() {
    #expect(Crontab.quote("/usr/bin/sluice") == "/usr/bin/sluice")
    #expect(Crontab.quote("/data/my jobs/n.toml") == "'/data/my jobs/n.toml'")
    #expect(Crontab.quote("/d/it's") == "'/d/it'\\''s'")
    #expect(Crontab.quote("/d/50%") == "'/d/50\\%'")
}

@Test func crontabLineForASpec() throws {
    let spec = try JobSpec.parse("name = \"n\"\nschedule = \"@hourly\"\n[input]\npath = \"in/\"\n[output]\nfolder = \"o\"",
                                 path: "/srv/jobs/n.toml")
    #expect(try Crontab.line(for: spec, binary: "/opt/sluice", databasePath: "/srv/q.db", logPath: "/srv/q.db-runs/n/cron.log",
                         lockPath: "/srv/q.db-runs/n/cron.lock")
            == "@hourly /usr/bin/flock -n -E 6 /srv/q.db-runs/n/cron.lock /opt/sluice run /srv/jobs/n.toml --db /srv/q.db >> /srv/q.db-runs/n/cron.log 2>&1")
}
