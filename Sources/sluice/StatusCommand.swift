import ArgumentParser
import Foundation
import SluiceCore
import SluiceQueue

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show progress of one job, or of every job: counts by state, tokens, throughput, ETA, workers."
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("A job id or name; default: every job.", valueName: "job"))
    var job: String?

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @Flag(help: "Show it again every --interval seconds until the jobs are finished (or SIGINT/SIGTERM).")
    var watch = false

    @Option(name: .customLong("interval"), help: ArgumentHelp("Time between updates with --watch (default 2s).", valueName: "duration"),
            transform: DurationOption.parse)
    var intervalOption: DurationOption = 2
    var interval: Double { intervalOption.seconds }

    func run() async throws {
        let store = try global.openExistingStore()
        let jobID = try job.map { try store.job(named: $0) }
        if watch { return try await watchStatus(store: store, job: jobID) }
        let statuses = try store.status(job: jobID)
        let now = Date().timeIntervalSince1970
        if json {
            print(JSON.array(try statuses.map { status in
                StatusFormat.addingCacheHits(StatusFormat.json(status, now: now), try store.cacheHitCounts(job: status.job.id))
            }).serialized)
            return
        }
        if statuses.isEmpty {
            print("no jobs in \(global.databaseLabel)")
            return
        }
        for (index, status) in statuses.enumerated() {
            if index > 0 { print("") }
            print(StatusFormat.text(status, now: now))
            let hits = try store.cacheHitCounts(job: status.job.id)
            if hits.hits > 0 { print(StatusFormat.cacheLine(hits)) }
        }
    }
}

/// How `status` and `jobs` show things.
enum StatusFormat {
    /// A job's state as every listing names it: an active job with nothing left to do is finished.
    static func stateName(_ job: JobInfo, isFinished: Bool) -> String {
        job.state == .active && isFinished ? "finished" : job.state.rawValue
    }

    static func text(_ status: JobStatus, now: Double) -> String {
        let job = status.job
        let counts = status.counts
        let name = job.name.map { " \"\($0)\"" } ?? ""
        let state = stateName(job, isFinished: status.isFinished)
        var lines = [
            "job \(job.id)\(name) [\(state), priority \(job.priority)] from \(job.inputPath)",
            "  requests: \(counts.total) total; \(counts.done) done, \(counts.failed) failed, \(counts.queued) queued, \(counts.leased) leased, \(counts.cancelled) cancelled"
                + (job.badLineCount > 0 ? " (\(job.badLineCount) bad input lines among the failed)" : ""),
            "  tokens: \(status.promptTokens) prompt, \(status.completionTokens) completion",
        ]
        var timing = "  elapsed \(duration(status.elapsedSeconds))"
        if status.startedAt != nil {
            timing += String(format: ", %.1f requests/s, %.1f completion tokens/s", status.requestsPerSecond, status.completionTokensPerSecond)
        } else {
            timing += " (not started)"
        }
        if let eta = status.etaSeconds, !status.isFinished { timing += ", ETA \(duration(eta))" }
        lines.append(timing)
        for worker in status.workers {
            let stopped = worker.stoppedAt != nil ? ", stopped" : ""
            lines.append("  worker \(worker.id) on \(worker.host) pid \(worker.pid): heartbeat \(duration(max(0, now - worker.lastHeartbeat))) ago, \(worker.leasesHeld) leases\(stopped) (\(worker.description))")
        }
        return lines.joined(separator: "\n")
    }

    static func json(_ status: JobStatus, now: Double) -> JSON {
        let job = status.job
        let counts = status.counts
        return .object([
            "id": .int(job.id),
            "name": job.name.map(JSON.string) ?? .null,
            "state": .string(stateName(job, isFinished: status.isFinished)),
            "finished": .bool(status.isFinished),
            "priority": .int(job.priority),
            "input_path": .string(job.inputPath),
            "input_sha256": .string(job.inputSHA256),
            "created_at": .double(job.createdAt),
            "bad_lines": .int(job.badLineCount),
            "counts": .object([
                "total": .int(counts.total), "queued": .int(counts.queued), "leased": .int(counts.leased),
                "done": .int(counts.done), "failed": .int(counts.failed), "cancelled": .int(counts.cancelled),
            ]),
            "prompt_tokens": .int(status.promptTokens),
            "completion_tokens": .int(status.completionTokens),
            "started_at": status.startedAt.map(JSON.double) ?? .null,
            "finished_at": status.finishedAt.map(JSON.double) ?? .null,
            "elapsed_seconds": .double(status.elapsedSeconds),
            "requests_per_second": .double(status.requestsPerSecond),
            "completion_tokens_per_second": .double(status.completionTokensPerSecond),
            "eta_seconds": status.etaSeconds.map(JSON.double) ?? .null,
            "workers": .array(status.workers.map { worker in
                .object([
                    "id": .string(worker.id), "host": .string(worker.host), "pid": .int(worker.pid),
                    "description": .string(worker.description),
                    "started_at": .double(worker.startedAt), "last_heartbeat": .double(worker.lastHeartbeat),
                    "heartbeat_age_seconds": .double(max(0, now - worker.lastHeartbeat)),
                    "stopped_at": worker.stoppedAt.map(JSON.double) ?? .null,
                    "leases_held": .int(worker.leasesHeld),
                ])
            }),
        ])
    }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, abs(seconds) < 1e12 else { return "?" } // Int() of more would trap
        if seconds < 10 { return String(format: "%.1fs", seconds) }
        let total = Int(seconds.rounded())
        if total < 60 { return "\(total)s" }
        if total < 3600 { return "\(total / 60)m\(String(format: "%02d", total % 60))s" }
        return "\(total / 3600)h\(String(format: "%02d", (total % 3600) / 60))m"
    }

    static func date(_ seconds: Double) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss'Z'"
        return formatter.string(from: Date(timeIntervalSince1970: seconds))
    }
}
