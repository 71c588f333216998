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
            // The parser hands a header that is not UTF-8 over as empty: say so rather than later
            // finding no `file` part.
            if name.isEmpty || (name.lowercased() == "content-disposition" && value.isEmpty) {
                fail(APIError.invalid("a part's \(name.isEmpty ? "header name" : "Content-Disposition header") is empty or not valid UTF-8",
                                      param: "file"))
            }
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

    /// A parameter of a header value such as `form-data; name="file"; filename="a; b.jsonl"`: a token
    /// or a quoted string (RFC 9110: `\` escapes the next character, and `;` inside quotes is part of
    /// the value). `filename` prefers an RFC 8187 `filename*=UTF-8''…` where the client sent one, and
    /// decodes the `%22`, `%0D` and `%0A` that browsers and HTTP libraries write for `"`, CR and LF
    /// (WHATWG HTML's multipart encoding).
    static func parameter(_ name: String, in header: String) -> String? {
        let parameters = parameters(of: header)
        if name == "filename" {
            if let extended = parameters.first(where: { $0.name == "filename*" }), let value = decodeExtended(extended.value) {
                return value
            }
            return parameters.first { $0.name == "filename" }.map { decodeFormDataEscapes($0.value) }
        }
        return parameters.first { $0.name == name }?.value
    }

    /// The `name=value` parameters after a header value's first `;`, names lower-cased, in order.
    static func parameters(of header: String) -> [(name: String, value: String)] {
        let characters = Array(header.unicodeScalars)
        var index = 0
        func skipSpaces() { while index < characters.count, characters[index] == " " || characters[index] == "\t" { index += 1 } }
        // The disposition type (`form-data`): everything up to the first `;`.
        while index < characters.count, characters[index] != ";" { index += 1 }
        var result: [(name: String, value: String)] = []
        while index < characters.count {
            index += 1 // the `;`
            skipSpaces()
            var name = String.UnicodeScalarView()
            while index < characters.count, !["=", ";"].contains(characters[index]) { name.append(characters[index]); index += 1 }
            let key = String(name).trimmingCharacters(in: .whitespaces).lowercased()
            guard index < characters.count, characters[index] == "=" else { continue }
            index += 1
            skipSpaces()
            var value = String.UnicodeScalarView()
            if index < characters.count, characters[index] == "\"" {
                index += 1
                while index < characters.count, characters[index] != "\"" {
                    if characters[index] == "\\", index + 1 < characters.count { index += 1 }
                    value.append(characters[index])
                    index += 1
                }
                index += 1 // the closing quote
                while index < characters.count, characters[index] != ";" { index += 1 }
                result.append((key, String(value)))
            } else {
                while index < characters.count, characters[index] != ";" { value.append(characters[index]); index += 1 }
                result.append((key, String(value).trimmingCharacters(in: .whitespaces)))
            }
        }
        return result
    }

    /// An RFC 8187 value `charset'language'percent-encoded`, for UTF-8 (and its ASCII subset).
    static func decodeExtended(_ value: String) -> String? {
        let parts = value.split(separator: "'", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, ["utf-8", "us-ascii"].contains(parts[0].lowercased()) else { return nil }
        var bytes: [UInt8] = []
        var utf8 = Array(parts[2].utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "%") {
                guard utf8.count >= 2, let high = hexValue(utf8[utf8.startIndex]), let low = hexValue(utf8[utf8.startIndex + 1]) else {
                    return nil
                }
                bytes.append(high << 4 | low)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    /// `%22`, `%0D` and `%0A` back to `"`, CR and LF (what a form-data filename cannot hold as is).
    static func decodeFormDataEscapes(_ value: String) -> String {
        guard value.contains("%") else { return value }
        return value.replacingOccurrences(of: "%22", with: "\"").replacingOccurrences(of: "%0D", with: "\r")
            .replacingOccurrences(of: "%0A", with: "\n").replacingOccurrences(of: "%0d", with: "\r")
            .replacingOccurrences(of: "%0a", with: "\n")
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
