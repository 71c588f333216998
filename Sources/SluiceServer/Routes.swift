import Foundation
import Hummingbird
import NIOCore
import SluiceCore

/// The HTTP surface. Each handler reads the request, calls `BatchService` (or the operator
/// view), and writes the answer; nothing else happens here.
struct Routes: Sendable {
    let service: BatchService
    let operatorView: OperatorView
    let limits: ServeLimits

    func register(on router: Router<ServeContext>) {
        let files = router.group("v1/files")
        files.post(use: uploadFile)
        files.get(use: listFiles)
        files.get(":id", use: getFile)
        files.delete(":id", use: deleteFile)
        files.get(":id/content", use: fileContent)

        let batches = router.group("v1/batches")
        batches.post(use: createBatch)
        batches.get(use: listBatches)
        batches.get(":id", use: getBatch)
        batches.post(":id/cancel", use: cancelBatch)

        router.get("/", use: statusPage)
        router.get("batches/:id/report", use: reportPage)
        router.get("metrics", use: metrics)
    }

    // MARK: Files

    @Sendable func uploadFile(_ request: Request, context: ServeContext) async throws -> Response {
        guard let contentType = request.headers[.contentType] else {
            throw APIError.invalid("the upload must be multipart/form-data")
        }
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limits.maxFileBytes + 65536 {
            throw APIError(status: 413, message: "the upload is larger than \(limits.maxFileBytes) bytes (the server's limit)")
        }
        let sink = try service.makeUploadSink()
        let upload: MultipartUpload
        do {
            upload = try MultipartUpload(contentType: contentType, sink: sink, maxFileBytes: limits.maxFileBytes)
            for try await chunk in request.body { try upload.feed(chunk) }
            try upload.finish()
        } catch {
            sink.discard()
            throw error
        }
        let bytes = sink.bytesWritten
        let json = try await service.storeUpload(sink, project: context.project, filename: upload.filename ?? "upload.jsonl",
                                                  purpose: upload.fields["purpose"] ?? "")
        operatorView.metrics.countUploaded(bytes: bytes)
        return jsonResponse(json)
    }

    @Sendable func listFiles(_ request: Request, context: ServeContext) async throws -> Response {
        let query = request.uri.queryParameters
        let json = try await service.listFiles(
            project: context.project, purpose: query["purpose"].map(String.init), after: query["after"].map(String.init),
            limit: try intParameter(query["limit"], "limit"), order: query["order"].map(String.init))
        return jsonResponse(json)
    }

    @Sendable func getFile(_ request: Request, context: ServeContext) async throws -> Response {
        jsonResponse(try await service.file(project: context.project, id: try context.parameters.require("id")))
    }

    @Sendable func deleteFile(_ request: Request, context: ServeContext) async throws -> Response {
        jsonResponse(try await service.deleteFile(project: context.project, id: try context.parameters.require("id")))
    }

    /// The bytes, read from disk in 64 KiB pieces as the client takes them.
    @Sendable func fileContent(_ request: Request, context: ServeContext) async throws -> Response {
        let (path, bytes) = try await service.contentPath(project: context.project, id: try context.parameters.require("id"))
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw APIError(status: 404, message: "the file's content is gone", code: "not_found") }
        let body = ResponseBody(contentLength: bytes) { writer in
            defer { close(fd) }
            var buffer = ByteBuffer()
            var sent = 0
            while sent < bytes {
                buffer.clear(minimumCapacity: 65536)
                let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 65536) { raw in
                    max(0, read(fd, raw.baseAddress!, min(raw.count, bytes - sent)))
                }
                if n == 0 { throw APIError(status: 500, message: "the file is shorter than recorded", type: "server_error") }
                sent += n
                try await writer.write(buffer)
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: body)
    }

    // MARK: Batches

    @Sendable func createBatch(_ request: Request, context: ServeContext) async throws -> Response {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limits.maxJSONBodyBytes)
        } catch {
            throw APIError(status: 413, message: "the request body is larger than \(limits.maxJSONBodyBytes) bytes")
        }
        let body: JSON
        do {
            body = try JSON.parse(Array(buffer.readableBytesView))
        } catch {
            throw APIError.invalid("the request body is not JSON: \(error)")
        }
        return jsonResponse(try await service.createBatch(project: context.project, body: body))
    }

    @Sendable func listBatches(_ request: Request, context: ServeContext) async throws -> Response {
        let query = request.uri.queryParameters
        let json = try await service.listBatches(project: context.project, after: query["after"].map(String.init),
                                                 limit: try intParameter(query["limit"], "limit"))
        return jsonResponse(json)
    }

    @Sendable func getBatch(_ request: Request, context: ServeContext) async throws -> Response {
        jsonResponse(try await service.batch(project: context.project, id: try context.parameters.require("id")))
    }

    @Sendable func cancelBatch(_ request: Request, context: ServeContext) async throws -> Response {
        jsonResponse(try await service.cancelBatch(project: context.project, id: try context.parameters.require("id")))
    }

    // MARK: Operator view

    @Sendable func statusPage(_ request: Request, context: ServeContext) async throws -> Response {
        let html = try await operatorView.statusPage(project: context.seesAllProjects ? nil : context.project)
        return htmlResponse(html)
    }

    @Sendable func reportPage(_ request: Request, context: ServeContext) async throws -> Response {
        let html = try await operatorView.reportPage(batchID: try context.parameters.require("id"),
                                                     project: context.seesAllProjects ? nil : context.project)
        return htmlResponse(html)
    }

    @Sendable func metrics(_ request: Request, context: ServeContext) async throws -> Response {
        let text = try await operatorView.metricsText()
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                        body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    private func htmlResponse(_ html: String) -> Response {
        Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
    }

    private func intParameter(_ value: Substring?, _ name: String) throws -> Int? {
        guard let value else { return nil }
        guard let number = Int(value) else { throw APIError.invalid("\(name) must be an integer", param: name) }
        return number
    }
}
