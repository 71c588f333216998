import Foundation
import SluiceCore
import SluiceQueue
import Synchronization

/// What the Files and Batches API do, independent of HTTP: the routes only translate requests to
/// these calls and their results to responses. Every call is scoped to one project.
public final class BatchService: Sendable {
    public let store: any BatchStore
    let storage: FileStorage
    public let limits: ServeLimits
    /// Live request counts, reused for a second: many clients polling many large batches would
    /// otherwise each count every batch's requests.
    let countsCache = CountsCache(lifetime: 1)
    /// Endpoints a batch may name (the queue's).
    static let endpoints = Endpoint.allCases.map(\.rawValue)

    public init(store: any BatchStore, dataDirectory: String, limits: ServeLimits) throws {
        self.store = store
        self.storage = try FileStorage(directory: dataDirectory)
        self.limits = limits
    }

    // MARK: Files

    /// A temporary file for an upload's bytes.
    func makeUploadSink() throws -> FileSink { try FileSink(path: storage.temporaryPath()) }

    /// Takes an upload written to `sink`: checks its lines against the caps, moves it into the
    /// store under a fresh id and records it. Lines that are not valid batch lines are accepted
    /// here; a batch made from the file reports them (`errors.data`, with line numbers).
    func storeUpload(_ sink: FileSink, project: String, filename: String, purpose: String) async throws -> JSON {
        guard purpose == "batch" else {
            sink.discard()
            throw APIError.invalid("purpose must be \"batch\" (got \"\(purpose)\")", param: "purpose")
        }
        let limits = self.limits
        let storage = self.storage
        let store = self.store
        return try await offload {
            do {
                try sink.finish()
                let check = try BatchInputValidation.check(
                    path: sink.path, endpoint: nil, maxLineBytes: limits.maxLineBytes, maxLines: limits.maxFileLines, maxReported: 0)
                if check.lines > limits.maxFileLines {
                    throw APIError.invalid("the file has more than \(limits.maxFileLines) lines (the server's limit)", param: "file")
                }
                if check.lines == 0 { throw APIError.invalid("the file has no lines", param: "file") }
                let id = randomID("file-")
                let file = StoredFile(id: id, project: project, purpose: purpose, filename: Self.cleanFilename(filename),
                                      bytes: sink.bytesWritten, lines: check.lines, createdAt: now(), expiresAt: nil,
                                      storageName: id)
                guard rename(sink.path, storage.path(of: id)) == 0 else {
                    throw APIError(status: 500, message: "cannot store the upload: \(String(cString: strerror(errno)))", type: "server_error")
                }
                do {
                    try store.insertFile(file)
                } catch {
                    storage.remove(id)
                    throw error
                }
                return OpenAIObjects.file(file)
            } catch {
                sink.discard()
                throw error
            }
        }
    }

    /// A name fit to show back: control characters and path separators replaced, at most 255 bytes.
    static func cleanFilename(_ name: String) -> String {
        var cleaned = String(name.unicodeScalars.map { $0.value < 0x20 || $0 == "/" || $0 == "\\" ? "_" : Character($0) })
        while cleaned.utf8.count > 255 { cleaned.removeLast() }
        return cleaned.isEmpty ? "upload.jsonl" : cleaned
    }

    func file(project: String, id: String) async throws -> JSON {
        guard let file = try await lookUpFile(project: project, id: id) else { throw APIError.notFound("file", id) }
        return OpenAIObjects.file(file)
    }

    func lookUpFile(project: String, id: String) async throws -> StoredFile? {
        guard isWellFormedID(Substring(id)) else { return nil }
        let store = self.store
        return try await offload { try store.file(id: id, project: project) }
    }

    /// The file's path on disk (for streaming its content), if the project owns it.
    func contentPath(project: String, id: String) async throws -> (path: String, bytes: Int) {
        guard let file = try await lookUpFile(project: project, id: id) else { throw APIError.notFound("file", id) }
        return (storage.path(of: file.storageName), file.bytes)
    }

    func listFiles(project: String, purpose: String?, after: String?, limit: Int?, order: String?) async throws -> JSON {
        let limit = try checkLimit(limit, default: 10_000)
        let ascending: Bool
        switch order {
        case nil, "desc": ascending = false
        case "asc": ascending = true
        case let other?: throw APIError.invalid("order must be \"asc\" or \"desc\" (got \"\(other)\")", param: "order")
        }
        let store = self.store
        let found = try await offload {
            try store.files(project: project, purpose: purpose, after: after, limit: limit + 1, ascending: ascending)
        }
        guard let files = found else { throw Self.unknownCursor("file", after) }
        let page = Array(files.prefix(limit))
        return OpenAIObjects.list(page.map(OpenAIObjects.file), ids: page.map(\.id), hasMore: files.count > limit)
    }

    func deleteFile(project: String, id: String) async throws -> JSON {
        guard isWellFormedID(Substring(id)) else { throw APIError.notFound("file", id) }
        let store = self.store
        let storage = self.storage
        return try await offload {
            guard let file = try store.deleteFile(id: id, project: project) else { throw APIError.notFound("file", id) }
            storage.remove(file.storageName)
            return OpenAIObjects.deletedFile(id)
        }
    }

    /// A list's `after` that names nothing this project has (or had: deleted files are remembered).
    static func unknownCursor(_ what: String, _ after: String?) -> APIError {
        APIError.invalid("after: no \(what) '\(after ?? "")' to list after", param: "after")
    }

    private func checkLimit(_ limit: Int?, default value: Int) throws -> Int {
        guard let limit else { return min(value, limits.maxListLimit) }
        guard limit >= 1, limit <= limits.maxListLimit else {
            throw APIError.invalid("limit must be between 1 and \(limits.maxListLimit) (got \(limit))", param: "limit")
        }
        return limit
    }

    // MARK: Batches

    /// POST /v1/batches: records the batch as `validating`; the reconciler validates its input
    /// and creates its job.
    func createBatch(project: String, body: JSON) async throws -> JSON {
        guard case let .object(fields) = body else { throw APIError.invalid("the request body must be a JSON object") }
        let known: Set = ["input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"]
        if let unknown = fields.first(where: { !known.contains($0.key) }) {
            throw APIError.invalid("unknown parameter \"\(unknown.key)\"", param: unknown.key)
        }
        guard let inputFileID = body["input_file_id"]?.stringValue else {
            throw APIError.invalid("input_file_id is required (a string)", param: "input_file_id")
        }
        guard let endpoint = body["endpoint"]?.stringValue else {
            throw APIError.invalid("endpoint is required (a string)", param: "endpoint")
        }
        guard Self.endpoints.contains(endpoint) else {
            throw APIError.invalid("endpoint \"\(endpoint)\" is not supported (supported: \(Self.endpoints.joined(separator: ", ")))",
                                   param: "endpoint")
        }
        guard let window = body["completion_window"]?.stringValue else {
            throw APIError.invalid("completion_window is required (e.g. \"24h\")", param: "completion_window")
        }
        let windowSeconds = try Self.parseWindow(window)
        let metadata = try Self.checkMetadata(body["metadata"])
        let outputExpiresAfter = try Self.checkOutputExpiry(body["output_expires_after"])
        guard let input = try await lookUpFile(project: project, id: inputFileID) else {
            throw APIError(status: 404, message: "No such file: '\(inputFileID)'", param: "input_file_id", code: "not_found")
        }
        guard input.purpose == "batch" else {
            throw APIError.invalid("file \(inputFileID) has purpose \"\(input.purpose)\", not \"batch\"", param: "input_file_id")
        }
        let created = now()
        let batch = StoredBatch(
            id: randomID("batch_"), project: project, status: .validating, endpoint: endpoint, inputFileID: inputFileID,
            completionWindow: window, deadline: created + windowSeconds, metadata: metadata?.serialized,
            outputExpiresAfter: outputExpiresAfter, outputFileID: randomID("file-"), errorFileID: randomID("file-"),
            createdAt: created)
        let store = self.store
        try await offload { try store.insertBatch(batch) }
        return OpenAIObjects.batch(batch, liveCounts: nil)
    }

    /// "24h" (OpenAI's only value), or any duration: a positive number and s, m, h or d; at most a year.
    static func parseWindow(_ text: String) throws -> Double {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        guard let unit = text.last, let scale = units[unit], let value = Double(text.dropLast()),
              value.isFinite, value > 0, text.dropLast().allSatisfy({ $0.isNumber || $0 == "." }) else {
            throw APIError.invalid("completion_window must be a duration such as \"24h\", \"90m\" or \"30s\" (got \"\(text)\")",
                                   param: "completion_window")
        }
        let seconds = value * scale
        guard seconds <= 366 * 86400 else {
            throw APIError.invalid("completion_window may be at most 366 days (got \"\(text)\")", param: "completion_window")
        }
        return seconds
    }

    /// OpenAI's rules: at most 16 pairs, keys up to 64 characters, string values up to 512.
    static func checkMetadata(_ value: JSON?) throws -> JSON? {
        guard let value, !value.isNull else { return nil }
        guard case let .object(pairs) = value else { throw APIError.invalid("metadata must be an object", param: "metadata") }
        guard pairs.count <= 16 else { throw APIError.invalid("metadata may have at most 16 keys", param: "metadata") }
        for (key, item) in pairs {
            guard key.count <= 64 else { throw APIError.invalid("metadata keys may be at most 64 characters", param: "metadata") }
            guard let text = item.stringValue, text.count <= 512 else {
                throw APIError.invalid("metadata values must be strings of at most 512 characters", param: "metadata")
            }
        }
        return value
    }

    /// `{"anchor": "created_at", "seconds": 3600...2592000}`: seconds after the batch ends.
    static func checkOutputExpiry(_ value: JSON?) throws -> Double? {
        guard let value, !value.isNull else { return nil }
        guard value["anchor"]?.stringValue == "created_at" else {
            throw APIError.invalid("output_expires_after.anchor must be \"created_at\"", param: "output_expires_after")
        }
        guard let seconds = value["seconds"]?.intValue, (3600...2_592_000).contains(seconds) else {
            throw APIError.invalid("output_expires_after.seconds must be an integer from 3600 to 2592000",
                                   param: "output_expires_after")
        }
        return Double(seconds)
    }

    func batch(project: String, id: String) async throws -> JSON {
        let store = self.store
        guard isWellFormedID(Substring(id)) else { throw APIError.notFound("batch", id) }
        return try await offload {
            guard let batch = try store.batch(id: id, project: project) else { throw APIError.notFound("batch", id) }
            return try self.render(batch)
        }
    }

    func render(_ batch: StoredBatch) throws -> JSON {
        var live: BatchRequestCounts?
        if batch.finalCounts == nil, let job = batch.jobID {
            live = try countsCache.counts(job: job) { try store.batchCounts(job: job).counts }
        }
        return OpenAIObjects.batch(batch, liveCounts: live)
    }

    func listBatches(project: String, after: String?, limit: Int?) async throws -> JSON {
        let limit = try checkLimit(limit, default: 20)
        let store = self.store
        return try await offload {
            guard let batches = try store.batches(project: project, after: after, limit: limit + 1) else {
                throw Self.unknownCursor("batch", after)
            }
            let page = Array(batches.prefix(limit))
            return OpenAIObjects.list(try page.map { try self.render($0) }, ids: page.map(\.id),
                                      hasMore: batches.count > limit)
        }
    }

    /// POST /v1/batches/{id}/cancel: `cancelling` now; the reconciler cancels the job's remaining
    /// requests, writes the partial results and makes it `cancelled`.
    func cancelBatch(project: String, id: String) async throws -> JSON {
        let store = self.store
        guard isWellFormedID(Substring(id)) else { throw APIError.notFound("batch", id) }
        return try await offload {
            guard let batch = try store.batch(id: id, project: project) else { throw APIError.notFound("batch", id) }
            if batch.status != .cancelling {
                let moved = try store.transitionBatch(id: id, from: [.validating, .inProgress], to: .cancelling, at: now(), jobID: nil)
                if !moved {
                    let current = try store.batch(id: id, project: project)?.status ?? batch.status
                    throw APIError(status: 409, message: "Cannot cancel a batch with status '\(current.rawValue)'.")
                }
            }
            guard let updated = try store.batch(id: id, project: project) else { throw APIError.notFound("batch", id) }
            return try self.render(updated)
        }
    }
}

/// Request counts of running jobs, each reused for `lifetime` seconds.
final class CountsCache: Sendable {
    let lifetime: Double
    private let entries = Mutex<[JobID: (at: Double, counts: BatchRequestCounts)]>([:])

    init(lifetime: Double) { self.lifetime = lifetime }

    func counts(job: JobID, compute: () throws -> BatchRequestCounts) throws -> BatchRequestCounts {
        let time = now()
        if let entry = entries.withLock({ $0[job] }), time - entry.at < lifetime { return entry.counts }
        let counts = try compute()
        entries.withLock { entries in
            if entries.count > 10_000 { entries.removeAll() }
            entries[job] = (time, counts)
        }
        return counts
    }
}
