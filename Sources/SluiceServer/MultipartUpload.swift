import Foundation
import MultipartKit
import NIOCore

/// Reads a `multipart/form-data` upload as it arrives: the `file` part goes straight to a
/// `FileSink` (never whole in memory), the other fields (`purpose`) are kept up to a few KiB.
final class MultipartUpload {
    private let parser: MultipartParser
    private let sink: FileSink
    private let maxFileBytes: Int
    private static let maxFieldBytes = 4096
    private static let maxHeaderBytes = 16384

    private var headers: [(String, String)] = []
    private var headerBytes = 0
    private var currentName: String?
    private var currentIsFile = false
    private var field: [UInt8] = []
    private var problem: APIError?
    private(set) var filename: String?
    private(set) var fields: [String: String] = [:]
    private(set) var sawFile = false
    private var completedParts = 0
    private var bodyStarted = false

    init(contentType: String, sink: FileSink, maxFileBytes: Int) throws {
        guard let boundary = Self.boundary(of: contentType) else {
            throw APIError.invalid("the upload must be multipart/form-data with a boundary")
        }
        parser = MultipartParser(boundary: boundary)
        self.sink = sink
        self.maxFileBytes = maxFileBytes
        parser.onHeader = { [unowned self] name, value in
            headerBytes += name.utf8.count + value.utf8.count
            if headerBytes > Self.maxHeaderBytes { fail(APIError.invalid("a part's headers are too large")) }
            headers.append((name, value))
        }
        parser.onBody = { [unowned self] buffer in
            if !bodyStarted { startPart() }
            guard problem == nil else { buffer.moveReaderIndex(forwardBy: buffer.readableBytes); return }
            if currentIsFile {
                if sink.bytesWritten + buffer.readableBytes > maxFileBytes {
                    fail(APIError(status: 413, message: "the file is larger than \(maxFileBytes) bytes (the server's limit)",
                                  param: "file"))
                    return
                }
                do {
                    try buffer.withUnsafeReadableBytes { try sink.write($0) }
                } catch let error as APIError {
                    fail(error)
                } catch {
                    fail(APIError(status: 500, message: "cannot store the upload", type: "server_error"))
                }
                buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            } else {
                if field.count + buffer.readableBytes > Self.maxFieldBytes {
                    fail(APIError.invalid("the form field \"\(currentName ?? "")\" is too long"))
                    return
                }
                field.append(contentsOf: buffer.readableBytesView)
                buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            }
        }
        parser.onPartComplete = { [unowned self] in
            if !bodyStarted { startPart() }
            if !currentIsFile, let name = currentName {
                fields[name] = String(decoding: field, as: UTF8.self)
            }
            completedParts += 1
            headers.removeAll()
            headerBytes = 0
            field.removeAll()
            currentName = nil
            currentIsFile = false
            bodyStarted = false
        }
    }

    private func fail(_ error: APIError) { if problem == nil { problem = error } }

    /// Called at a part's first body bytes: reads its Content-Disposition.
    private func startPart() {
        bodyStarted = true
        let disposition = headers.last { $0.0.lowercased() == "content-disposition" }?.1 ?? ""
        currentName = Self.parameter("name", in: disposition)
        if currentName == "file" {
            if sawFile { fail(APIError.invalid("the upload has more than one file part", param: "file")) }
            sawFile = true
            currentIsFile = true
            filename = Self.parameter("filename", in: disposition)
        }
    }

    func feed(_ buffer: ByteBuffer) throws {
        do {
            try parser.execute(buffer)
        } catch {
            throw APIError.invalid("the multipart body is malformed")
        }
        if let problem { throw problem }
    }

    /// After the last byte: the upload must have had a complete file part.
    func finish() throws {
        if let problem { throw problem }
        guard sawFile, completedParts > 0, !bodyStarted else {
            throw APIError.invalid("the upload has no complete `file` part", param: "file")
        }
    }

    /// The `boundary` parameter of a multipart/form-data content type.
    static func boundary(of contentType: String) -> String? {
        let lower = contentType.lowercased()
        guard lower.hasPrefix("multipart/form-data") else { return nil }
        guard let value = parameter("boundary", in: contentType), !value.isEmpty, value.utf8.count <= 200 else { return nil }
        return value
    }

    /// A `name=value` or `name="value"` parameter of a header value.
    static func parameter(_ name: String, in header: String) -> String? {
        for piece in header.split(separator: ";").dropFirst() {
            let trimmed = piece.trimmingCharacters(in: .whitespaces)
            guard let equals = trimmed.firstIndex(of: "=") else { continue }
            guard trimmed[..<equals].lowercased() == name else { continue }
            var value = trimmed[trimmed.index(after: equals)...]
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = value.dropFirst().dropLast() }
            return String(value)
        }
        return nil
    }
}
