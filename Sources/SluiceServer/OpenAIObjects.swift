import SluiceCore
import SluiceQueue

/// The OpenAI API's JSON shapes for files, batches and lists.
enum OpenAIObjects {
    static func seconds(_ time: Double?) -> JSON {
        guard let time, time.isFinite else { return .null }
        return .int(Int64(time.rounded(.down)))
    }

    static func file(_ file: StoredFile) -> JSON {
        .object([
            "id": .string(file.id),
            "object": .string("file"),
            "bytes": .int(file.bytes),
            "created_at": seconds(file.createdAt),
            "expires_at": seconds(file.expiresAt),
            "filename": .string(file.filename),
            "purpose": .string(file.purpose),
            "status": .string("processed"),
            "status_details": .null,
        ])
    }

    static func deletedFile(_ id: String) -> JSON {
        .object(["id": .string(id), "object": .string("file"), "deleted": .bool(true)])
    }

    static func counts(_ counts: BatchRequestCounts) -> JSON {
        .object(["total": .int(counts.total), "completed": .int(counts.completed), "failed": .int(counts.failed)])
    }

    /// A batch; `liveCounts` while it runs (the stored counts once it ended).
    static func batch(_ batch: StoredBatch, liveCounts: BatchRequestCounts?) -> JSON {
        let counts = batch.finalCounts ?? liveCounts ?? BatchRequestCounts()
        let metadata = batch.metadata.flatMap { try? JSON.parse($0) } ?? .null
        let errors = batch.errors.flatMap { try? JSON.parse($0) } ?? .null
        return .object([
            "id": .string(batch.id),
            "object": .string("batch"),
            "endpoint": .string(batch.endpoint),
            "errors": errors,
            "input_file_id": .string(batch.inputFileID),
            "completion_window": .string(batch.completionWindow),
            "status": .string(batch.status.rawValue),
            "output_file_id": batch.hasOutputFile ? .string(batch.outputFileID) : .null,
            "error_file_id": batch.hasErrorFile ? .string(batch.errorFileID) : .null,
            "created_at": seconds(batch.createdAt),
            "in_progress_at": seconds(batch.inProgressAt),
            "expires_at": seconds(batch.deadline),
            "finalizing_at": seconds(batch.finalizingAt),
            "completed_at": seconds(batch.completedAt),
            "failed_at": seconds(batch.failedAt),
            "expired_at": seconds(batch.expiredAt),
            "cancelling_at": seconds(batch.cancellingAt),
            "cancelled_at": seconds(batch.cancelledAt),
            "request_counts": Self.counts(counts),
            "metadata": metadata,
        ])
    }

    /// A cursor page: `{"object": "list", "data", "first_id", "last_id", "has_more"}`.
    static func list(_ items: [JSON], ids: [String], hasMore: Bool) -> JSON {
        .object([
            "object": .string("list"),
            "data": .array(items),
            "first_id": ids.first.map(JSON.string) ?? .null,
            "last_id": ids.last.map(JSON.string) ?? .null,
            "has_more": .bool(hasMore),
        ])
    }

    /// OpenAI's `errors` object for bad input lines.
    static func lineErrors(_ lines: [BadLine]) -> JSON {
        .object([
            "object": .string("list"),
            "data": .array(lines.map { line in
                .object([
                    "code": .string(line.reason.rawValue),
                    "message": .string("Line \(line.lineNumber): \(line.message)"),
                    "param": .null,
                    "line": .int(line.lineNumber),
                ])
            }),
        ])
    }

    static func error(code: String, message: String) -> JSON {
        .object([
            "object": .string("list"),
            "data": .array([.object(["code": .string(code), "message": .string(message), "param": .null, "line": .null])]),
        ])
    }
}
