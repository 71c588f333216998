import Foundation
import SluiceCore
import SluiceQueue
import Synchronization

/// One `sluice run SPEC`: enqueue new input files once, work the spec's jobs until done or the
/// deadline, export each finished job once, apply retention.
///
/// The worker itself is supplied by the caller (`work`), so this module needs no engine.
public final class SpecRun: Sendable {
    public let spec: JobSpec
    public let store: any JobStore
    public let state: RunState
    let log: @Sendable (String) -> Void
    private let stopped = Mutex(false)

    /// How a run ended; `exitCode` is what `sluice run` exits with.
    public enum Outcome: Sendable, Equatable {
        /// Every job of the spec is finished and exported, without failed requests among this run's exports.
        case done
        /// Finished and exported, but some requests in jobs exported by this run failed (see the errors files).
        case doneWithFailures(Int)
        /// The deadline (or a stop signal) came with work remaining; the next run continues it.
        case workRemains
        /// Another run of this spec holds its lock and `on_overlap = "exit"`.
        case skippedOverlap
        /// Something could not be done (an unreadable input file, an export that failed, …); the rest was done.
        case errors([String])

        public var exitCode: Int32 {
            switch self {
            case .done: return 0
            case .errors: return 1
            case .workRemains: return 4
            case .doneWithFailures: return 5
            case .skippedOverlap: return 6
            }
        }
    }

    /// What happened, for the summary line and tests.
    public struct Report: Sendable, Equatable {
        public var outcome: Outcome = .done
        public var enqueued: [String] = []
        public var skippedKnown = 0
        public var settling = 0
        public var exported: [String] = []
        public var deleted: [Int64] = []
    }

    public init(spec: JobSpec, store: any JobStore, log: @escaping @Sendable (String) -> Void) throws {
        self.spec = spec
        self.store = store
        self.state = try RunState(databasePath: store.location, specName: spec.name)
        self.log = log
    }

    /// Stop soon: the current worker is drained by the caller; no further job is started or exported.
    public func requestStop() { stopped.withLock { $0 = true } }
    var isStopped: Bool { stopped.withLock { $0 } }

    /// The name prefix of every job this spec creates.
    public var jobPrefix: String { spec.name + "/" }

    /// Runs once. `work(job, seconds)` works on one job for at most `seconds` (nil: no limit) and
    /// returns whether work remains in it.
    public func run(now: Date = Date(),
                    work: (_ job: JobID, _ seconds: Double?) async throws -> Bool) async throws -> Report {
        var report = Report()
        var problems: [String] = []
        var runLock: FileLock?
        if spec.onOverlap == .exit {
            runLock = try state.lock("run.lock", wait: false)
            if runLock == nil {
                log("sluice run \(spec.name): another run of this spec is working (on_overlap = \"exit\"); exiting")
                report.outcome = .skippedOverlap
                return report
            }
        }
        defer { withExtendedLifetime(runLock) {} }
        let started = Date()
        let deadline = spec.deadline.map { started.addingTimeInterval($0.seconds(from: started, in: .current)) }

        // 1. Enqueue new input files.
        do {
            let enqueueLock = try state.lock("enqueue.lock", wait: true)
            defer { withExtendedLifetime(enqueueLock) {} }
            try enqueueNewFiles(now: now, into: &report, problems: &problems)
        }

        // 2. Work the spec's unfinished jobs, highest priority and oldest first.
        var workRemains = false
        for job in try specJobs() where !isStopped {
            guard try store.hasUnfinishedWork(job: job.id) else { continue }
            var seconds: Double?
            if let deadline {
                seconds = deadline.timeIntervalSinceNow
                if seconds! <= 0 {
                    workRemains = true
                    break
                }
            }
            if try await work(job.id, seconds) { workRemains = true }
        }
        if isStopped { workRemains = true }

        // 3. Export finished jobs once; 4. retention.
        var failures = 0
        if !isStopped {
            let exportLock = try state.lock("export.lock", wait: true)
            defer { withExtendedLifetime(exportLock) {} }
            failures = try exportFinishedJobs(into: &report, problems: &problems)
            try applyRetention(now: now, into: &report, problems: &problems)
        }
        if !workRemains {
            // Another joined run may still be working on a job: then this one has not finished it.
            workRemains = try specJobs().contains { try store.hasUnfinishedWork(job: $0.id) }
        }

        if !problems.isEmpty {
            report.outcome = .errors(problems)
        } else if workRemains {
            report.outcome = .workRemains
        } else if failures > 0 {
            report.outcome = .doneWithFailures(failures)
        }
        log("sluice run \(spec.name): \(report.enqueued.count) new input file(s) enqueued, \(report.skippedKnown) known, \(report.settling) still being written; \(report.exported.count) export(s) written; \(report.deleted.count) old job(s) deleted; " + summary(report.outcome))
        return report
    }

    private func summary(_ outcome: Outcome) -> String {
        switch outcome {
        case .done: return "all done"
        case let .doneWithFailures(n): return "done, \(n) failed request(s) in this run's exports"
        case .workRemains: return "work remains for the next run"
        case .skippedOverlap: return "skipped"
        case let .errors(list): return "\(list.count) error(s)"
        }
    }

    /// The spec's jobs (by name prefix), highest priority first, then oldest.
    func specJobs() throws -> [JobInfo] {
        try store.jobs()
            .filter { $0.state != .loading && ($0.name ?? "").hasPrefix(jobPrefix) }
            .sorted { ($0.priority, -$0.id) > ($1.priority, -$1.id) }
    }

    private func enqueueNewFiles(now: Date, into report: inout Report, problems: inout [String]) throws {
        let scan = try InputScanner.scan(spec.input, now: now)
        report.settling = scan.settling
        if scan.ready.isEmpty { return }
        var known = Set(try store.jobs().filter { ($0.name ?? "").hasPrefix(jobPrefix) }.map(\.inputSHA256))
        for entry in try state.readLedger() {
            if case let .deleted(_, sha) = entry { known.insert(sha) }
        }
        for candidate in scan.ready where !isStopped {
            let sha: String
            do {
                sha = try Self.sha256(ofFile: candidate.path)
            } catch {
                problems.append("\(error)")
                log("sluice run \(spec.name): \(error)")
                continue
            }
            if known.contains(sha) {
                report.skippedKnown += 1
                continue
            }
            let file = (candidate.path as NSString).lastPathComponent
            let name = "\(jobPrefix)\(file)/\(sha.prefix(12))"
            do {
                let result = try store.enqueue(file: candidate.path, name: name, priority: spec.priority,
                                               allowDuplicate: true, bodyDefaults: spec.bodyDefaults)
                known.insert(result.sha256)
                report.enqueued.append(candidate.path)
                let bad = result.badLineCount > 0 ? " (\(result.badLineCount) bad line(s), recorded as failed requests)" : ""
                log("sluice run \(spec.name): enqueued \(candidate.path) as job \(result.jobID.map(String.init) ?? "?") \"\(name)\": \(result.accepted) request(s)\(bad)")
            } catch QueueError.duplicateJobName {
                report.skippedKnown += 1 // enqueued by a joined run a moment ago
            } catch let error as QueueError {
                if case .emptyInput = error {
                    log("sluice run \(spec.name): \(error)")
                    report.skippedKnown += 1
                    continue
                }
                problems.append(error.description)
                log("sluice run \(spec.name): \(error)")
            }
        }
    }

    /// Exports every finished job not yet exported at its current finish time. Returns the failed
    /// requests in the jobs exported now.
    private func exportFinishedJobs(into report: inout Report, problems: inout [String]) throws -> Int {
        var exported = Set<String>()
        for entry in try state.readLedger() {
            if case let .exported(job, at, _) = entry { exported.insert("\(job)@\(at)") }
        }
        var failures = 0
        try FileManager.default.createDirectory(atPath: spec.output.folder, withIntermediateDirectories: true)
        for job in try specJobs() {
            guard let status = try store.status(job: job.id).first, status.isFinished,
                  let finishedAt = status.finishedAt else { continue }
            if exported.contains("\(job.id)@\(finishedAt)") { continue }
            let created = Date(timeIntervalSince1970: job.createdAt)
            func path(_ pattern: String) -> String {
                spec.output.folder + "/" + OutputNaming.fileName(pattern, spec: spec.name, inputFile: job.inputPath,
                                                                  job: job.id, sha256: job.inputSHA256, created: created)
            }
            let output = path(spec.output.namePattern)
            let errors = spec.output.errorsPattern.map(path)
            do {
                let written = try store.export(job: job.id, to: output, errors: errors)
                // An errors file only when there are errors (an earlier export's stale one goes too).
                if let errors, written.errors == 0 { unlink(errors) }
                try state.append(.exported(job: job.id, finishedAt: finishedAt, sha256: job.inputSHA256))
                report.exported.append(output)
                failures += written.errors
                log("sluice run \(spec.name): exported job \(job.id) to \(output): \(written.succeeded) succeeded, \(written.errors) failed, \(written.cancelled) cancelled")
            } catch {
                problems.append("export of job \(job.id) to \(output) failed: \(error)")
                log("sluice run \(spec.name): export of job \(job.id) to \(output) failed: \(error)")
            }
        }
        return failures
    }

    private func applyRetention(now: Date, into report: inout Report, problems: inout [String]) throws {
        guard let retention = spec.retentionSeconds else { return }
        var exportedJobs = Set<Int64>()
        for entry in try state.readLedger() {
            if case let .exported(job, _, _) = entry { exportedJobs.insert(job) }
        }
        for job in try specJobs() where exportedJobs.contains(job.id) {
            guard let status = try store.status(job: job.id).first, status.isFinished, let finishedAt = status.finishedAt,
                  now.timeIntervalSince1970 - finishedAt >= retention else { continue }
            // The tombstone first: if the deletion then fails, the input is still never enqueued twice.
            try state.append(.deleted(job: job.id, sha256: job.inputSHA256))
            if try store.deleteFinishedJob(job.id) {
                report.deleted.append(job.id)
                log("sluice run \(spec.name): deleted job \(job.id) (finished more than \(Int(retention)) s ago; its export stays)")
            }
        }
    }

    /// Lower-case hex SHA-256 of a file's bytes, read in 1 MiB pieces.
    static func sha256(ofFile path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw RunError.input("cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        while true {
            let chunk = try handle.read(upToCount: 1 << 20) ?? Data()
            if chunk.isEmpty { break }
            chunk.withUnsafeBytes { hasher.update($0) }
        }
        return hasher.hexDigest()
    }
}
