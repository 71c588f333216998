import Foundation
import SluiceCore
import SluiceQueue
import SluiceRunner

extension StatusCommand {
    /// `status --watch`: the status again every `interval` seconds, read from the store each time
    /// (so it is right whichever process does the work, and right after a resume). On a terminal the
    /// screen is redrawn; otherwise each update is appended (text blocks, or one JSON array per line
    /// with --json). Ends with status 0 when every job shown is finished, or on SIGINT/SIGTERM.
    func watchStatus(store: any JobStore, job: JobID?) async throws {
        guard interval >= 0.1, interval <= 86_400 else {
            throw CLIError.usage("--interval must be from 0.1 seconds to a day (got \(interval))")
        }
        let stop = StopSignal()
        let watcher = SignalWatcher(signals: [SIGINT, SIGTERM]) { _ in stop.fire() }
        defer { watcher.cancel() }
        let terminal = isatty(STDOUT_FILENO) == 1 && !json
        while true {
            let statuses = try store.status(job: job)
            let now = Date().timeIntervalSince1970
            let finished = !statuses.isEmpty && statuses.allSatisfy(\.isFinished)
            var text: String
            if json {
                text = JSON.array(statuses.map { StatusFormat.json($0, now: now) }).serialized
            } else {
                let header = "\(StatusFormat.date(now)) — \(global.databaseLabel)"
                    + (finished ? " — all finished" : " — every \(interval) s; Ctrl-C to stop")
                let body = statuses.isEmpty ? "no jobs yet" : statuses.map { StatusFormat.text($0, now: now) }.joined(separator: "\n\n")
                text = header + "\n" + body + "\n"
                if terminal { text = "\u{1B}[H\u{1B}[2J" + text }
            }
            FileHandle.standardOutput.write(Data((text + "\n").utf8))
            if finished || stop.isFired { return }
            let deadline = ContinuousClock.now + .seconds(interval)
            while ContinuousClock.now < deadline && !stop.isFired {
                try? await Task.sleep(for: .milliseconds(min(100, Int(interval * 1000))))
            }
            if stop.isFired { return }
        }
    }
}
