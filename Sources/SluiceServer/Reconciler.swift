import Foundation
import Synchronization
import SluiceCore
import SluiceQueue

/// Moves batches through their statuses. Each pass looks at every batch that is not finished:
/// - `validating`: checks the input file line by line (bad lines or a wrong endpoint: `failed`, with
///   `errors.data` naming the lines), else creates the job as `sluice enqueue --strict` would: `in_progress`;
/// - `in_progress`: when no request is left, `finalizing`; past the deadline, the job is cancelled and the
///   batch `expired`, unfinished requests going to the error file;
/// - `finalizing` / `cancelling`: writes the output and error files and ends the batch.
///
/// Every step can be repeated after a crash: the job is found again by the batch's name, the
/// files are written atomically under their reserved ids, and the final status and the file rows
/// are recorded in one transaction.
public final class Reconciler: Sendable {
    let service: BatchService
    let store: any BatchStore
    let metrics: ServeMetrics
    let log: @Sendable (String) -> Void
    /// The last error of each batch whose step failed, so that a repeating one is logged once.
    private let lastFailures = Mutex<[String: String]>([:])

    public init(service: BatchService, store: (any BatchStore)? = nil, metrics: ServeMetrics = ServeMetrics(),
                log: @escaping @Sendable (String) -> Void) {
        self.service = service
        self.store = store ?? service.store
        self.metrics = metrics
        self.log = log
    }

    /// One pass (blocking): every active batch, then expired files.
    public func reconcileOnce(now time: Double = Date().timeIntervalSince1970) throws {
        let batches = try store.activeBatches()
        for batch in batches {
            do {
                try advance(batch, now: time)
                lastFailures.withLock { _ = $0.removeValue(forKey: batch.id) }
            } catch {
                // A step that keeps failing (its file unreadable, the disk full) is retried every pass
                // until the batch's deadline: say so once per distinct error, not twice a second.
                let message = "\(error)"
                let isNew = lastFailures.withLock { failures in
                    defer { failures[batch.id] = message }
                    return failures[batch.id] != message
                }
                if isNew { log("batch \(batch.id): \(message) (retrying every pass)") }
            }
        }
        let active = Set(batches.map(\.id))
        lastFailures.withLock { failures in failures = failures.filter { active.contains($0.key) } }
        for file in try store.expiredFiles(now: time, limit: 100) {
            if try store.deleteFile(id: file.id, project: file.project) != nil { service.storage.remove(file.storageName) }
        }
    }

    /// Runs passes every `interval` seconds until the task is cancelled.
    public func run(interval: Double) async {
        while !Task.isCancelled {
            do {
                try await offload { try self.reconcileOnce() }
            } catch {
                log("reconciler: \(error)")
            }
            try? await Task.sleep(for: .milliseconds(Int(interval * 1000)))
        }
    }

    func advance(_ batch: StoredBatch, now time: Double) throws {
        switch batch.status {
        case .validating:
            if time >= batch.deadline {
                // Still not validated when its window closed (validation kept failing, or the server
                // was down): no request ran.
                try finish(batch, as: .expired, now: time)
            } else {
                try validate(batch, now: time)
            }
        case .inProgress:
            guard let job = batch.jobID else { return }
            let (_, unfinished) = try store.batchCounts(job: job)
            if unfinished == 0 {
                if try store.transitionBatch(id: batch.id, from: [.inProgress], to: .finalizing, at: time, jobID: nil) {
                    try finish(batch, as: .completed, now: time)
                }
            } else if time >= batch.deadline {
                try store.cancelBatchJob(job)
                try finish(batch, as: .expired, now: time)
            }
        case .finalizing:
            try finish(batch, as: .completed, now: time)
        case .cancelling:
            if let job = batch.jobID { try store.cancelBatchJob(job) }
            try finish(batch, as: .cancelled, now: time)
        case .failed, .completed, .expired, .cancelled:
            return
        }
    }

    private func validate(_ batch: StoredBatch, now time: Double) throws {
        let limits = service.limits
        guard let input = try store.file(id: batch.inputFileID, project: batch.project) else {
            let errors = OpenAIObjects.error(code: "invalid_file", message: "the input file \(batch.inputFileID) was deleted")
            if try store.endBatch(id: batch.id, BatchEnding(status: .failed, at: time, counts: .init(), errors: errors.serialized)) {
                metrics.countEnded("failed")
                log("batch \(batch.id): failed: its input file \(batch.inputFileID) was deleted")
            }
            return
        }
        let path = service.storage.path(of: input.storageName)
        let check = try BatchInputValidation.check(path: path, endpoint: batch.endpoint, maxLineBytes: limits.maxLineBytes,
                                                   maxLines: limits.maxFileLines)
        if check.badLineCount > 0 {
            try failValidation(batch, lines: check.lines, badLineCount: check.badLineCount, badLines: check.badLines, now: time)
            return
        }
        let job: JobID
        switch try store.enqueueBatchInput(path: path, batchID: batch.id, maxLineBytes: limits.maxLineBytes) {
        case let .enqueued(created):
            job = created
        case let .rejected(lines, badLineCount, badLines):
            // The file changed since the check, or the store found what the check could not: fail
            // the batch with the store's reasons rather than trying again forever.
            try failValidation(batch, lines: lines, badLineCount: badLineCount, badLines: badLines, now: time)
            return
        }
        if try store.transitionBatch(id: batch.id, from: [.validating], to: .inProgress, at: now(), jobID: job) {
            log("batch \(batch.id): in progress as job \(job) (\(check.lines) requests)")
        } else {
            // Cancelled while validating: keep the job with the batch so the cancel reaches it.
            _ = try store.transitionBatch(id: batch.id, from: [.cancelling], to: .cancelling, at: time, jobID: job)
        }
    }

    /// Ends a batch whose input has bad lines as `failed`, naming them in `errors.data`.
    private func failValidation(_ batch: StoredBatch, lines: Int, badLineCount: Int, badLines: [BadLine],
                                now time: Double) throws {
        let errors = OpenAIObjects.lineErrors(badLines)
        if try store.endBatch(id: batch.id, BatchEnding(
            status: .failed, at: time, counts: BatchRequestCounts(total: lines, completed: 0, failed: 0),
            errors: errors.serialized)) {
            metrics.countEnded("failed")
            log("batch \(batch.id): failed validation (\(badLineCount) bad lines)")
        }
    }

    /// Writes the output and error files (atomically, under the ids reserved for them) and ends the batch.
    private func finish(_ batch: StoredBatch, as status: BatchStatus, now time: Double) throws {
        let storage = service.storage
        var counts = BatchRequestCounts()
        var outputFile: StoredFile?
        var errorFile: StoredFile?
        if let job = batch.jobID {
            let (code, message) = Self.unfinishedError(status)
            let report = try store.exportBatch(
                job: job, outputPath: storage.path(of: batch.outputFileID), errorPath: storage.path(of: batch.errorFileID),
                unfinishedCode: code, unfinishedMessage: message)
            counts = report.counts
            let expires = batch.outputExpiresAfter.map { time + $0 }
            func file(_ id: String, _ suffix: String, _ bytes: Int, _ lines: Int) -> StoredFile? {
                guard lines > 0 else { storage.remove(id); return nil }
                return StoredFile(id: id, project: batch.project, purpose: "batch_output", filename: "\(batch.id)_\(suffix).jsonl",
                                  bytes: bytes, lines: lines, createdAt: time, expiresAt: expires, storageName: id)
            }
            outputFile = file(batch.outputFileID, "output", report.outputBytes, report.outputLines)
            errorFile = file(batch.errorFileID, "error", report.errorBytes, report.errorLines)
        }
        if try store.endBatch(id: batch.id, BatchEnding(status: status, at: time, counts: counts,
                                                        outputFile: outputFile, errorFile: errorFile)) {
            metrics.countEnded(status.rawValue)
            log("batch \(batch.id): \(status.rawValue) (\(counts.completed) completed, \(counts.failed) failed of \(counts.total))")
        }
    }

    static func unfinishedError(_ status: BatchStatus) -> (code: String, message: String) {
        switch status {
        case .expired:
            return ("batch_expired", "This request could not be executed before the completion window expired.")
        case .cancelled:
            return ("batch_cancelled", "This request was not executed because the batch was cancelled.")
        default:
            return ("batch_failed", "This request was not executed.")
        }
    }
}
