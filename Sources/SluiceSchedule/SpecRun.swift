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
        for note in scan.notes { log("sluice run \(spec.name): \(note)") }
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
    ///
    /// An export never replaces a file it did not write for the same job: when the pattern's name is
    /// taken (another job's export, e.g. a new file under an old input's name, or a file Sluice did not
    /// write), the job's export gets a distinguishing `.jobN` part; when that is taken too, the export
    /// is refused with an error naming both.
    private func exportFinishedJobs(into report: inout Report, problems: inout [String]) throws -> Int {
        var ledger = try state.readLedger()
        var exported = Set<String>()
        for entry in ledger {
            if case let .exported(job, at, _, _, _, _) = entry { exported.insert("\(job)@\(at)") }
        }
        var failures = 0
        try Self.makeOutputFolder(spec)
        for job in try specJobs() {
            guard let status = try store.status(job: job.id).first, status.isFinished,
                  let finishedAt = status.finishedAt else { continue }
            if exported.contains("\(job.id)@\(finishedAt)") { continue }
            let created = Date(timeIntervalSince1970: job.createdAt)
            func path(_ pattern: String, distinct: Bool) -> String {
                let name = OutputNaming.fileName(pattern, spec: spec.name, inputFile: job.inputPath,
                                                 job: job.id, sha256: job.inputSHA256, created: created)
                return spec.output.folder + "/" + (distinct ? OutputNaming.distinguished(name, job: job.id) : name)
            }
            // A path is this job's to write when nothing is there or this job's last export wrote it.
            func isFree(_ path: String) -> Bool {
                var info = stat()
                return lstat(path, &info) != 0 && errno == ENOENT || state.owner(of: path, in: ledger) == job.id
            }
            var output = path(spec.output.namePattern, distinct: false)
            var errors = spec.output.errorsPattern.map { path($0, distinct: false) }
            if !isFree(output) || !(errors.map(isFree) ?? true) {
                let taken = isFree(output) ? errors! : output
                output = path(spec.output.namePattern, distinct: true)
                errors = spec.output.errorsPattern.map { path($0, distinct: true) }
                guard isFree(output), errors.map(isFree) ?? true else {
                    let problem = "export of job \(job.id) refused: \(taken) holds another job's export or a file Sluice did not write, and so does \(isFree(output) ? errors! : output); move them away and run again"
                    problems.append(problem)
                    log("sluice run \(spec.name): \(problem)")
                    continue
                }
                log("sluice run \(spec.name): \(taken) holds another job's export or a file Sluice did not write; job \(job.id) is exported beside it, not over it")
            }
            do {
                let intent = RunState.Entry.exporting(job: job.id, output: output, errors: errors ?? "")
                try state.append(intent)
                ledger.append(intent)
                let written = try store.export(job: job.id, to: output, errors: errors)
                // An errors file only when there are errors (an earlier export's stale one goes too).
                if let errors, written.errors == 0 { unlink(errors) }
                let entry = RunState.Entry.exported(job: job.id, finishedAt: finishedAt, sha256: job.inputSHA256,
                                                    output: output, outputSHA256: try Self.sha256(ofFile: output),
                                                    errors: written.errors > 0 ? errors ?? "" : "")
                try state.append(entry)
                ledger.append(entry)
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

    /// Deletes exported jobs finished longer than the retention period ago, but only while the file
    /// their export wrote is still there unchanged (the same SHA-256): otherwise the database holds
    /// the only copy of their results, and the job is kept.
    private func applyRetention(now: Date, into report: inout Report, problems: inout [String]) throws {
        guard let retention = spec.retentionSeconds else { return }
        let ledger = try state.readLedger()
        for job in try specJobs() {
            guard let export = state.lastExport(of: job.id, in: ledger) else { continue }
            guard let status = try store.status(job: job.id).first, status.isFinished, let finishedAt = status.finishedAt,
                  now.timeIntervalSince1970 - finishedAt >= retention else { continue }
            guard let output = export.output, let recorded = export.outputSHA256 else {
                log("sluice run \(spec.name): kept job \(job.id) past its retention: it was exported before Sluice recorded what its exports hold, so it cannot tell whether the export is intact (delete it by hand once checked)")
                continue
            }
            let current = try? Self.sha256(ofFile: output)
            guard current == recorded else {
                log("sluice run \(spec.name): kept job \(job.id) past its retention: its export \(output) was \(current == nil ? "removed" : "changed") since Sluice wrote it, so the database holds the only copy of its results (write it again with sluice export --job \(job.id))")
                continue
            }
            // The tombstone first: if the deletion then fails, the input is still never enqueued twice.
            try state.append(.deleted(job: job.id, sha256: job.inputSHA256))
            if try store.deleteFinishedJob(job.id) {
                report.deleted.append(job.id)
                log("sluice run \(spec.name): deleted job \(job.id) (finished more than \(Int(retention)) s ago; its export \(output) stays)")
            }
        }
    }

    /// Creates the spec's output folder if need be; a path that cannot be a folder is an error naming
    /// the spec and `output.folder`.
    static func makeOutputFolder(_ spec: JobSpec) throws {
        let folder = spec.output.folder
        func problem(_ reason: String) -> RunError {
            RunError.input("\(spec.path): output.folder \(folder): \(reason)")
        }
        var info = stat()
        if stat(folder, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFDIR else { throw problem("exists and is not a folder") }
            return
        }
        guard errno == ENOENT else { throw problem(String(cString: strerror(errno))) }
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        } catch {
            throw problem("cannot be created: \((error as NSError).localizedDescription)")
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
