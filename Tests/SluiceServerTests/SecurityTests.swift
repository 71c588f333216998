import Foundation
import NIOCore
@testable import SluiceServer
import Testing

@Suite struct SecurityTests {
    @Test func apiKeysMapToProjectsAndReload() throws {
        let path = NSTemporaryDirectory() + "keys-\(UUID().uuidString)"
        defer { unlink(path) }
        try "# comment\nsk-aaaaaaaaaaaaaaaa alpha\n\n  sk-bbbbbbbbbbbbbbbb   beta # trailing\n".write(toFile: path, atomically: true, encoding: .utf8)
        let keys = try APIKeys(path: path)
        #expect(keys.project(for: "sk-aaaaaaaaaaaaaaaa") == "alpha")
        #expect(keys.project(for: "sk-bbbbbbbbbbbbbbbb") == "beta")
        #expect(keys.project(for: "sk-aaaaaaaaaaaaaaa") == nil)
        #expect(keys.project(for: "sk-aaaaaaaaaaaaaaaaa") == nil)
        #expect(keys.project(for: "") == nil)
        try "sk-cccccccccccccccc gamma\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try keys.reload() == 1)
        #expect(keys.project(for: "sk-aaaaaaaaaaaaaaaa") == nil)
        #expect(keys.project(for: "sk-cccccccccccccccc") == "gamma")
        try "short gamma\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: ServeError.self) { try keys.reload() }
        #expect(keys.project(for: "sk-cccccccccccccccc") == "gamma", "a bad file keeps the old keys")
        try "sk-dddddddddddddddd a b\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: ServeError.self) { try APIKeys(path: path) }
    }

    @Test func bearerSchemeIsCaseInsensitive() {
        for header in ["Bearer sk-1", "bearer sk-1", "BEARER  sk-1"] { #expect(AuthMiddleware.bearerKey(header) == "sk-1") }
        for header in ["Basic sk-1", "Bearer", "Bearer ", "Bearersk-1", "sk-1", "Bearer\u{0}sk-1"] {
            #expect(AuthMiddleware.bearerKey(header) == nil, "\(header)")
        }
    }

    @Test func constantTimeComparisonIsExact() {
        #expect(APIKeys.constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        #expect(!APIKeys.constantTimeEqual(Array("abc".utf8), Array("abd".utf8)))
        #expect(!APIKeys.constantTimeEqual(Array("abc".utf8), Array("abc\0".utf8)))
        #expect(!APIKeys.constantTimeEqual([], Array("a".utf8)))
    }

    @Test func onlyLoopbackHostsWithoutKeys() throws {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "localhost"] { #expect(SluiceServer.isLoopback(host)) }
        for host in ["0.0.0.0", "10.0.0.1", "::", "example.com", "127.0.0.1.example.com", "1270.0.0.1"] {
            #expect(!SluiceServer.isLoopback(host))
        }
    }

    @Test func wellFormedIDsOnly() {
        #expect(isWellFormedID("file-0123abcd"))
        for bad in ["", "../etc/passwd", "a/b", "a b", ".", "x\0", String(repeating: "a", count: 65)] {
            #expect(!isWellFormedID(Substring(bad)))
        }
        let id = randomID("file-")
        #expect(id.hasPrefix("file-") && id.count == 29 && isWellFormedID(Substring(id)))
        #expect(randomID("file-") != id)
    }
}

@Suite struct MultipartUploadTests {
    func body(boundary: String, purpose: String?, file: String?) -> [UInt8] {
        var text = ""
        if let purpose { text += "--\(boundary)\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n\(purpose)\r\n" }
        if let file {
            text += "--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
            text += "Content-Type: application/octet-stream\r\n\r\n\(file)\r\n"
        }
        text += "--\(boundary)--\r\n"
        return Array(text.utf8)
    }

    /// Feeds the body in pieces of `piece` bytes (a boundary split anywhere must still be found).
    func parse(_ bytes: [UInt8], piece: Int, maxFileBytes: Int = 1 << 20) throws -> (MultipartUpload, String) {
        let path = NSTemporaryDirectory() + "upload-\(UUID().uuidString)"
        let sink = try FileSink(path: path)
        defer { sink.discard() }
        let upload = try MultipartUpload(contentType: "multipart/form-data; boundary=XyZ", sink: sink, maxFileBytes: maxFileBytes)
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + piece)
            try upload.feed(ByteBuffer(bytes: bytes[offset..<end]))
            offset = end
        }
        try upload.finish()
        try sink.finish()
        return (upload, try String(contentsOfFile: path, encoding: .utf8))
    }

    @Test func streamsTheFilePartToDisk() throws {
        let file = String(repeating: "{\"line\": 1}\n", count: 500)
        for piece in [1, 7, 4096, 1 << 20] {
            let (upload, stored) = try parse(body(boundary: "XyZ", purpose: "batch", file: file), piece: piece)
            #expect(stored == file)
            #expect(upload.fields["purpose"] == "batch")
            #expect(upload.filename == "in.jsonl")
        }
    }

    @Test func refusesTruncatedOversizedOrFileLessBodies() throws {
        let full = body(boundary: "XyZ", purpose: "batch", file: "abc\n")
        #expect(throws: APIError.self) { try parse(Array(full.dropLast(12)), piece: 100) }
        #expect(throws: APIError.self) { try parse(body(boundary: "XyZ", purpose: "batch", file: nil), piece: 100) }
        #expect(throws: APIError.self) {
            try parse(body(boundary: "XyZ", purpose: "batch", file: String(repeating: "x", count: 5000)), piece: 100, maxFileBytes: 4096)
        }
        #expect(throws: APIError.self) {
            try parse(body(boundary: "XyZ", purpose: String(repeating: "p", count: 10000), file: "a\n"), piece: 100)
        }
        // A Content-Disposition that is not UTF-8 reaches the parser's callback empty: named as such.
        var bad = Array("--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"".utf8) + [0xFF, 0xFE]
        bad += Array(".jsonl\"\r\n\r\nabc\n\r\n--XyZ--\r\n".utf8)
        #expect {
            try parse(bad, piece: 100)
        } throws: { error in
            (error as? APIError)?.message.contains("not valid UTF-8") == true
        }
        #expect(MultipartUpload.boundary(of: "application/json") == nil)
        #expect(MultipartUpload.boundary(of: "multipart/form-data; boundary=\"a b\"") == "a b")
    }

    @Test func filenamesAreReadAsClientsWriteThem() {
        func filename(_ disposition: String) -> String? { MultipartUpload.parameter("filename", in: disposition) }
        #expect(filename(#"form-data; name="file"; filename="report; final.jsonl""#) == "report; final.jsonl")
        #expect(filename(#"form-data; name="file"; filename="x=y; z.jsonl""#) == "x=y; z.jsonl")
        #expect(filename(#"form-data; name="file"; filename="a\"b.jsonl""#) == #"a"b.jsonl"#)   // curl's escape
        #expect(filename(#"form-data; name="file"; filename="a%22b.jsonl""#) == #"a"b.jsonl"#)   // browsers', httpx's
        #expect(filename(#"form-data; name="file"; filename=plain.jsonl"#) == "plain.jsonl")
        #expect(filename(#"form-data; name="file"; filename="fallback.jsonl"; filename*=UTF-8''%C3%BCber%20a.jsonl"#)
            == "über a.jsonl")
        #expect(filename(#"form-data; name="file"; filename="ok.jsonl"; filename*=UTF-8''%FF"#) == "ok.jsonl")
        #expect(filename(#"form-data; name="file""#) == nil)
        #expect(MultipartUpload.parameter("name", in: #"form-data; filename="name=\"x\";"; name="file""#) == "file")
    }
}
