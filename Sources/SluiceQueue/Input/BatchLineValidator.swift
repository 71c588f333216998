import Foundation
import SluiceCore

/// A validated input line: where its parts are in the line's bytes.
struct ValidLine {
    var customID: UnsafeBufferPointer<UInt8>
    /// The custom_id decoded, when it had escapes (otherwise `customID` is its text as is).
    var decodedCustomID: String?
    var endpoint: Endpoint
    /// The body's JSON text exactly as it appears in the line.
    var body: UnsafeBufferPointer<UInt8>

    var customIDString: String { decodedCustomID ?? String(decoding: customID, as: UTF8.self) }
}

/// A rejected input line, before it gets its line number.
struct LineProblem: Error {
    var reason: BadLineReason
    var message: String
    var customID: String?
}

/// Checks one OpenAI Batch input line without building a JSON tree: one pass over the
/// bytes that validates the JSON grammar exactly as `SluiceCore.JSON` does (same UTF-8,
/// escape, number and nesting rules) and notes where the four fields are. When the line is
/// not JSON, `JSON.parse` runs on it to give the parser's own reason.
enum BatchLineValidator {
    static let allowedFields = ["custom_id", "method", "url", "body"]

    static func validate(_ line: UnsafeBufferPointer<UInt8>) -> Result<ValidLine, LineProblem> {
        var scanner = Scanner(bytes: line)
        guard let fields = scanner.scanTopLevel() else { return .failure(syntaxProblem(line)) }
        guard fields.isObject else {
            return .failure(LineProblem(reason: .notObject, message: "not a JSON object (the line is \(fields.kindName))"))
        }
        // The common case, checked on the bytes without allocating.
        if fields.duplicateField == nil, fields.unknownField == nil,
           let idRange = fields.customID, idRange.count > 0,
           let method = fields.method, !method.hasEscape, bytesEqual(line, method, "POST"),
           let url = fields.url, !url.hasEscape, let endpoint = endpoint(line, url),
           fields.bodyValue == .object, let bodyRange = fields.body {
            return .success(ValidLine(
                customID: UnsafeBufferPointer(rebasing: line[idRange.lowerBound..<idRange.upperBound]),
                decodedCustomID: idRange.hasEscape ? decodeString(line, idRange) : nil,
                endpoint: endpoint, body: UnsafeBufferPointer(rebasing: line[bodyRange])))
        }
        return validateSlowly(line, fields)
    }

    static let supportedURLs = Endpoint.allCases.map(\.rawValue).joined(separator: ", ")

    static func bytesEqual(_ line: UnsafeBufferPointer<UInt8>, _ range: StringRange, _ literal: StaticString) -> Bool {
        range.count == literal.utf8CodeUnitCount
            && memcmp(line.baseAddress! + range.lowerBound, literal.utf8Start, range.count) == 0
    }

    private static func endpoint(_ line: UnsafeBufferPointer<UInt8>, _ range: StringRange) -> Endpoint? {
        if bytesEqual(line, range, "/v1/chat/completions") { return .chatCompletions }
        if bytesEqual(line, range, "/v1/completions") { return .completions }
        if bytesEqual(line, range, "/v1/embeddings") { return .embeddings }
        if bytesEqual(line, range, "/v1/responses") { return .responses }
        return nil
    }

    /// Every check, in reporting order, with escapes decoded: says why a line is bad, or
    /// accepts the rare valid line the fast path leaves (escaped method or url).
    private static func validateSlowly(_ line: UnsafeBufferPointer<UInt8>, _ fields: TopLevelFields) -> Result<ValidLine, LineProblem> {
        let customID = fields.customID.map { decodeString(line, $0) }
        func problem(_ reason: BadLineReason, _ message: String) -> Result<ValidLine, LineProblem> {
            .failure(LineProblem(reason: reason, message: message, customID: customID))
        }
        if let duplicate = fields.duplicateField {
            return problem(.duplicateField, "field \"\(duplicate)\" appears more than once")
        }
        if let unknown = fields.unknownField {
            return problem(.unknownField, "unknown field \"\(unknown)\" (allowed: custom_id, method, url, body)")
        }
        guard let idValue = fields.customIDValue else { return problem(.missingCustomID, "missing \"custom_id\"") }
        guard let idRange = fields.customID else {
            return problem(.customIDNotString, "\"custom_id\" must be a string, not \(idValue.kindName)")
        }
        if idRange.count == 0 { return problem(.emptyCustomID, "\"custom_id\" is empty") }
        guard let methodValue = fields.methodValue else {
            return problem(.missingMethod, "missing \"method\" (must be \"POST\")")
        }
        let method = fields.method.map { decodeString(line, $0) }
        guard method == "POST" else {
            let shown = method.map { "\"\($0)\"" } ?? methodValue.kindName
            return problem(.unsupportedMethod, "unsupported method \(shown) (must be \"POST\")")
        }
        let supported = supportedURLs
        guard let urlValue = fields.urlValue else {
            return problem(.missingURL, "missing \"url\" (supported: \(supported))")
        }
        let url = fields.url.map { decodeString(line, $0) }
        guard let url, let endpoint = Endpoint(rawValue: url) else {
            let shown = url.map { "\"\($0)\"" } ?? urlValue.kindName
            return problem(.unsupportedURL, "unsupported url \(shown) (supported: \(supported))")
        }
        guard let bodyValue = fields.bodyValue, let bodyRange = fields.body else {
            return problem(.missingBody, "missing \"body\"")
        }
        guard bodyValue == .object else {
            return problem(.bodyNotObject, "\"body\" must be an object, not \(bodyValue.kindName)")
        }
        return .success(ValidLine(
            customID: UnsafeBufferPointer(rebasing: line[idRange.lowerBound..<idRange.upperBound]),
            decodedCustomID: idRange.hasEscape ? customID : nil,
            endpoint: endpoint, body: UnsafeBufferPointer(rebasing: line[bodyRange])))
    }

    /// Why the line is not JSON: invalid UTF-8 anywhere, or the parser's own reason.
    static func syntaxProblem(_ line: UnsafeBufferPointer<UInt8>) -> LineProblem {
        if let offset = firstInvalidUTF8(line) {
            return LineProblem(reason: .invalidUTF8, message: "invalid UTF-8 at byte \(offset + 1)")
        }
        do {
            _ = try JSON.parse(line)
            // The scanner and the parser disagree: trust neither, and say so.
            return LineProblem(reason: .notJSON, message: "not JSON: rejected by the line scanner")
        } catch {
            return LineProblem(reason: .notJSON, message: "not JSON: \(error)")
        }
    }

    /// Offset of the first byte that is not part of valid UTF-8, or nil.
    static func firstInvalidUTF8(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        var i = 0
        while i < bytes.count {
            let b0 = bytes[i]
            if b0 < 0x80 { i += 1; continue }
            guard let length = Scanner.utf8Length(bytes, at: i) else { return i }
            i += length
        }
        return nil
    }

    private static func decodeString(_ line: UnsafeBufferPointer<UInt8>, _ range: StringRange) -> String {
        let content = UnsafeBufferPointer(rebasing: line[range.lowerBound..<range.upperBound])
        if !range.hasEscape { return String(decoding: content, as: UTF8.self) }
        // Rare: let the real parser decode the escapes (quotes included).
        let literal = UnsafeBufferPointer(rebasing: line[(range.lowerBound - 1)...range.upperBound])
        if case let .string(s)? = try? JSON.parse(literal) { return s }
        return String(decoding: content, as: UTF8.self)
    }
}

/// The contents of a string literal (between its quotes).
struct StringRange {
    var lowerBound: Int
    var upperBound: Int
    var hasEscape: Bool
    var count: Int { upperBound - lowerBound }
}

enum ValueKind: Equatable {
    case object, array, string, number, bool, null

    var kindName: String {
        switch self {
        case .object: return "an object"
        case .array: return "an array"
        case .string: return "a string"
        case .number: return "a number"
        case .bool: return "a boolean"
        case .null: return "null"
        }
    }
}

struct TopLevelFields {
    var isObject = false
    var kindName = ""
    var customIDValue: ValueKind?
    var customID: StringRange?
    var methodValue: ValueKind?
    var method: StringRange?
    var urlValue: ValueKind?
    var url: StringRange?
    var bodyValue: ValueKind?
    var body: Range<Int>?
    var unknownField: String?
    var duplicateField: String?
}

/// A validating JSON scanner that allocates nothing on valid input.
struct Scanner {
    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    /// The top-level fields, or nil when the line is not valid JSON.
    mutating func scanTopLevel() -> TopLevelFields? {
        var fields = TopLevelFields()
        skipWhitespace()
        guard index < bytes.count else { return nil }
        if bytes[index] != UInt8(ascii: "{") {
            guard let kind = scanValue(depth: 0) else { return nil }
            skipWhitespace()
            guard index == bytes.count else { return nil }
            fields.kindName = kind.kindName
            return fields
        }
        fields.isObject = true
        index += 1
        skipWhitespace()
        guard index < bytes.count else { return nil }
        if bytes[index] == UInt8(ascii: "}") {
            index += 1
            skipWhitespace()
            return index == bytes.count ? fields : nil
        }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
            guard let key = scanString() else { return nil }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
            index += 1
            skipWhitespace()
            let valueStart = index
            guard index < bytes.count else { return nil }
            let kind: ValueKind
            var stringValue: StringRange?
            if bytes[index] == UInt8(ascii: "\"") {
                guard let range = scanString() else { return nil }
                stringValue = range
                kind = .string
            } else {
                guard let scanned = scanValue(depth: 1) else { return nil }
                kind = scanned
            }
            let valueRange = valueStart..<index
            record(key: key, kind: kind, string: stringValue, range: valueRange, into: &fields)
            skipWhitespace()
            guard index < bytes.count else { return nil }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            guard bytes[index] == UInt8(ascii: "}") else { return nil }
            index += 1
            skipWhitespace()
            return index == bytes.count ? fields : nil
        }
    }

    private func record(key: StringRange, kind: ValueKind, string: StringRange?, range: Range<Int>,
                        into fields: inout TopLevelFields) {
        let name = keyName(key)
        func duplicate(_ seen: Bool) -> Bool {
            if seen, fields.duplicateField == nil { fields.duplicateField = name.text }
            return seen
        }
        switch name.known {
        case 0:
            if duplicate(fields.customIDValue != nil) { return }
            fields.customIDValue = kind
            fields.customID = string
        case 1:
            if duplicate(fields.methodValue != nil) { return }
            fields.methodValue = kind
            fields.method = string
        case 2:
            if duplicate(fields.urlValue != nil) { return }
            fields.urlValue = kind
            fields.url = string
        case 3:
            if duplicate(fields.bodyValue != nil) { return }
            fields.bodyValue = kind
            fields.body = range
        default:
            if fields.unknownField == nil { fields.unknownField = name.text }
        }
    }

    /// Which of the four fields a key names (0...3, or -1), comparing bytes when it has no escapes.
    private func keyName(_ key: StringRange) -> (known: Int, text: String) {
        let raw = UnsafeBufferPointer(rebasing: bytes[key.lowerBound..<key.upperBound])
        if !key.hasEscape {
            if BatchLineValidator.bytesEqual(bytes, key, "custom_id") { return (0, "custom_id") }
            if BatchLineValidator.bytesEqual(bytes, key, "method") { return (1, "method") }
            if BatchLineValidator.bytesEqual(bytes, key, "url") { return (2, "url") }
            if BatchLineValidator.bytesEqual(bytes, key, "body") { return (3, "body") }
            return (-1, String(decoding: raw, as: UTF8.self))
        }
        let literal = UnsafeBufferPointer(rebasing: bytes[(key.lowerBound - 1)...key.upperBound])
        let text = (try? JSON.parse(literal))?.stringValue ?? String(decoding: raw, as: UTF8.self)
        return (BatchLineValidator.allowedFields.firstIndex(of: text) ?? -1, text)
    }

    mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    /// Scans any value; nil when invalid.
    mutating func scanValue(depth: Int) -> ValueKind? {
        guard index < bytes.count else { return nil }
        switch bytes[index] {
        case UInt8(ascii: "{"):
            guard depth + 1 <= JSON.maximumDepth else { return nil }
            return scanObject(depth: depth + 1) ? .object : nil
        case UInt8(ascii: "["):
            guard depth + 1 <= JSON.maximumDepth else { return nil }
            return scanArray(depth: depth + 1) ? .array : nil
        case UInt8(ascii: "\""): return scanString() != nil ? .string : nil
        case UInt8(ascii: "t"): return scanLiteral("true") ? .bool : nil
        case UInt8(ascii: "f"): return scanLiteral("false") ? .bool : nil
        case UInt8(ascii: "n"): return scanLiteral("null") ? .null : nil
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return scanNumber() ? .number : nil
        default: return nil
        }
    }

    private mutating func scanLiteral(_ literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard index + count <= bytes.count else { return false }
        let expected = literal.utf8Start
        for i in 0..<count where bytes[index + i] != expected[i] { return false }
        index += count
        return true
    }

    private mutating func scanObject(depth: Int) -> Bool {
        index += 1
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") { index += 1; return true }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\""), scanString() != nil else { return false }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return false }
            index += 1
            skipWhitespace()
            guard scanValue(depth: depth) != nil else { return false }
            skipWhitespace()
            guard index < bytes.count else { return false }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            if bytes[index] == UInt8(ascii: "}") { index += 1; return true }
            return false
        }
    }

    private mutating func scanArray(depth: Int) -> Bool {
        index += 1
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") { index += 1; return true }
        while true {
            skipWhitespace()
            guard scanValue(depth: depth) != nil else { return false }
            skipWhitespace()
            guard index < bytes.count else { return false }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            if bytes[index] == UInt8(ascii: "]") { index += 1; return true }
            return false
        }
    }

    private func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

    private mutating func scanNumber() -> Bool {
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count, isDigit(bytes[index]) else { return false }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
            if index < bytes.count, isDigit(bytes[index]) { return false }
        } else {
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard index < bytes.count, isDigit(bytes[index]) else { return false }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else { return false }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        return true
    }

    /// Scans a string literal at `index` (the opening quote); returns its contents' range.
    mutating func scanString() -> StringRange? {
        index += 1
        let start = index
        var hasEscape = false
        while index < bytes.count {
            let b = bytes[index]
            if b == UInt8(ascii: "\"") {
                let range = StringRange(lowerBound: start, upperBound: index, hasEscape: hasEscape)
                index += 1
                return range
            }
            if b < 0x20 { return nil }
            if b == UInt8(ascii: "\\") {
                hasEscape = true
                index += 1
                guard index < bytes.count else { return nil }
                let e = bytes[index]
                index += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                     UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    continue
                case UInt8(ascii: "u"):
                    guard let scalar = scanHex4() else { return nil }
                    if scalar >= 0xD800 && scalar < 0xDC00 {
                        guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"),
                              bytes[index + 1] == UInt8(ascii: "u") else { return nil }
                        index += 2
                        guard let low = scanHex4(), low >= 0xDC00 && low < 0xE000 else { return nil }
                    } else if scalar >= 0xDC00 && scalar < 0xE000 {
                        return nil
                    }
                    continue
                default:
                    return nil
                }
            }
            if b < 0x80 {
                index += 1
            } else {
                guard let length = Scanner.utf8Length(bytes, at: index) else { return nil }
                index += length
            }
        }
        return nil
    }

    private mutating func scanHex4() -> UInt32? {
        guard index + 4 <= bytes.count else { return nil }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[index]
            let digit: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(c - 48)
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(c - 87)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(c - 55)
            default: return nil
            }
            value = value << 4 | digit
            index += 1
        }
        return value
    }

    /// Length of the valid multi-byte UTF-8 sequence at `i` (overlongs, surrogates and
    /// truncation rejected), or nil.
    static func utf8Length(_ bytes: UnsafeBufferPointer<UInt8>, at i: Int) -> Int? {
        UTF8Validation.multiByteLength(bytes, at: i)
    }
}
