/// A parsed job-spec file: the subset of TOML that job specs need, with the line of every key.
///
/// Supported: `# comments`, `key = value` with bare (`A-Za-z0-9_-`) or quoted keys and dotted keys,
/// `[table]` and `[dotted.table]` headers, basic strings (`"…"` with `\" \\ \n \t \r \b \f \uXXXX
/// \UXXXXXXXX` escapes), literal strings (`'…'`), integers (with `_` separators), floats, booleans,
/// arrays (over several lines, trailing comma allowed) and inline tables. Not supported (rejected with
/// an error naming the line): multi-line strings, dates and times, arrays of tables, hex/octal/binary
/// integers, `inf` and `nan`. Redefining a key or a table is an error, as in TOML.
public struct SpecDocument: Sendable {
    public let root: SpecTable

    /// Parses `text`; `fileName` only labels errors.
    public init(parsing text: String, fileName: String) throws(SpecError) {
        var parser = SpecParser(text: text, fileName: fileName)
        root = try parser.parseDocument()
    }
}

/// A value with the line it was written on.
public struct SpecValue: Sendable {
    public enum Kind: Sendable {
        case string(String)
        case integer(Int)
        /// The number and its text as written.
        case float(Double, String)
        case bool(Bool)
        case array([SpecValue])
        case table(SpecTable)
    }

    public var kind: Kind
    /// 1-based line in the spec file.
    public var line: Int

    /// "a string", "an integer", … for error messages.
    public var kindName: String {
        switch kind {
        case .string: return "a string"
        case .integer: return "an integer"
        case .float: return "a number"
        case .bool: return "a boolean"
        case .array: return "an array"
        case .table: return "a table"
        }
    }
}

/// Keys and values in the order written.
public struct SpecTable: Sendable {
    public var entries: [(key: String, value: SpecValue)] = []
    /// Where the table was opened (its header, or the line of its first key).
    public var line: Int
    /// Tables opened by a `[header]` (may not be opened again).
    var explicitlyDefined = false

    public subscript(key: String) -> SpecValue? {
        entries.first(where: { $0.key == key })?.value
    }

    var keys: [String] { entries.map(\.key) }
}

/// A spec that cannot be used: the file, the line (when known), the field, and what is wrong.
public struct SpecError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    /// The dotted field name, e.g. `output.folder`, when one is at fault.
    public var field: String?
    public var message: String

    public init(file: String, line: Int?, field: String?, message: String) {
        self.file = file
        self.line = line
        self.field = field
        self.message = message
    }

    public var description: String {
        var text = file
        if let line { text += ":\(line)" }
        text += ": "
        if let field { text += "\(field): " }
        return text + message
    }
}

struct SpecParser {
    let fileName: String
    let bytes: [UInt8]
    var position = 0
    var line = 1

    init(text: String, fileName: String) {
        self.fileName = fileName
        bytes = Array(text.utf8)
    }

    func error(_ message: String, field: String? = nil, line: Int? = nil) -> SpecError {
        SpecError(file: fileName, line: line ?? self.line, field: field, message: message)
    }

    var atEnd: Bool { position >= bytes.count }
    var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    mutating func parseDocument() throws(SpecError) -> SpecTable {
        var root = SpecTable(line: 1)
        var currentPath: [String] = []
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { position = 3 }
        while true {
            skipSpaces()
            guard let c = current else { break }
            if c == UInt8(ascii: "\n") || c == UInt8(ascii: "\r") || c == UInt8(ascii: "#") {
                try endOfLine()
                continue
            }
            if c == UInt8(ascii: "[") {
                let headerLine = line
                position += 1
                if current == UInt8(ascii: "[") {
                    throw error("arrays of tables ([[…]]) are not supported in job specs")
                }
                skipSpaces()
                let path = try parseKeyPath()
                skipSpaces()
                guard current == UInt8(ascii: "]") else { throw error("expected ] to close the table header") }
                position += 1
                try endOfLine()
                try root.defineTable(path, line: headerLine, parser: self)
                currentPath = path
                continue
            }
            let keyLine = line
            let path = try parseKeyPath()
            skipSpaces()
            guard current == UInt8(ascii: "=") else {
                throw error("expected = after the key \(path.joined(separator: "."))")
            }
            position += 1
            skipSpaces()
            let value = try parseValue(field: (currentPath + path).joined(separator: "."))
            try endOfLine()
            try root.insert(currentPath + path, value: value, line: keyLine, parser: self)
        }
        return root
    }

    mutating func skipSpaces() {
        while let c = current, c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") { position += 1 }
    }

    /// Expects optional spaces, an optional comment, then a newline or the end.
    mutating func endOfLine() throws(SpecError) {
        skipSpaces()
        if current == UInt8(ascii: "#") {
            while let c = current, c != UInt8(ascii: "\n") { position += 1 }
        }
        if current == UInt8(ascii: "\r") { position += 1 }
        if atEnd { return }
        guard current == UInt8(ascii: "\n") else {
            throw error("unexpected \(describe(current)) after the value (one key = value per line)")
        }
        position += 1
        line += 1
    }

    /// Skips spaces, newlines and comments (inside arrays).
    mutating func skipBlank() {
        while let c = current {
            if c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") || c == UInt8(ascii: "\r") {
                position += 1
            } else if c == UInt8(ascii: "\n") {
                position += 1
                line += 1
            } else if c == UInt8(ascii: "#") {
                while let d = current, d != UInt8(ascii: "\n") { position += 1 }
            } else {
                return
            }
        }
    }

    func describe(_ byte: UInt8?) -> String {
        guard let byte else { return "end of file" }
        if byte == UInt8(ascii: "\n") { return "end of line" }
        if byte >= 0x20 && byte < 0x7F { return "\"\(Character(Unicode.Scalar(byte)))\"" }
        return "byte 0x\(String(byte, radix: 16))"
    }

    mutating func parseKeyPath() throws(SpecError) -> [String] {
        var path: [String] = []
        while true {
            skipSpaces()
            path.append(try parseKey())
            skipSpaces()
            if current == UInt8(ascii: ".") {
                position += 1
                continue
            }
            return path
        }
    }

    mutating func parseKey() throws(SpecError) -> String {
        if current == UInt8(ascii: "\"") { return try parseBasicString() }
        if current == UInt8(ascii: "'") { return try parseLiteralString() }
        let start = position
        while let c = current, isBareKeyByte(c) { position += 1 }
        guard position > start else { throw error("expected a key, found \(describe(current))") }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    func isBareKeyByte(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
    }

    mutating func parseValue(field: String) throws(SpecError) -> SpecValue {
        let valueLine = line
        guard let c = current else { throw error("missing value", field: field) }
        switch c {
        case UInt8(ascii: "\""):
            if bytes[position...].starts(with: Array("\"\"\"".utf8)) {
                throw error("multi-line strings are not supported in job specs", field: field)
            }
            return SpecValue(kind: .string(try parseBasicString()), line: valueLine)
        case UInt8(ascii: "'"):
            if bytes[position...].starts(with: Array("'''".utf8)) {
                throw error("multi-line strings are not supported in job specs", field: field)
            }
            return SpecValue(kind: .string(try parseLiteralString()), line: valueLine)
        case UInt8(ascii: "["):
            position += 1
            var items: [SpecValue] = []
            while true {
                skipBlank()
                if current == UInt8(ascii: "]") {
                    position += 1
                    return SpecValue(kind: .array(items), line: valueLine)
                }
                items.append(try parseValue(field: "\(field)[\(items.count)]"))
                skipBlank()
                if current == UInt8(ascii: ",") {
                    position += 1
                } else if current != UInt8(ascii: "]") {
                    throw error("expected , or ] in the array, found \(describe(current))", field: field)
                }
            }
        case UInt8(ascii: "{"):
            position += 1
            var table = SpecTable(line: valueLine)
            table.explicitlyDefined = true
            skipSpaces()
            if current == UInt8(ascii: "}") {
                position += 1
                return SpecValue(kind: .table(table), line: valueLine)
            }
            while true {
                skipSpaces()
                let keyLine = line
                let path = try parseKeyPath()
                skipSpaces()
                guard current == UInt8(ascii: "=") else { throw error("expected = in the inline table", field: field) }
                position += 1
                skipSpaces()
                let value = try parseValue(field: "\(field).\(path.joined(separator: "."))")
                try table.insert(path, value: value, line: keyLine, parser: self, prefix: field)
                skipSpaces()
                if current == UInt8(ascii: ",") {
                    position += 1
                } else if current == UInt8(ascii: "}") {
                    position += 1
                    return SpecValue(kind: .table(table), line: valueLine)
                } else {
                    throw error("expected , or } in the inline table (which must fit on one line), found \(describe(current))",
                                field: field)
                }
            }
        default:
            let start = position
            while let d = current, d != UInt8(ascii: ",") && d != UInt8(ascii: "]") && d != UInt8(ascii: "}")
                && d != UInt8(ascii: "#") && d != UInt8(ascii: "\n") && d != UInt8(ascii: "\r") {
                position += 1
            }
            let word = String(decoding: bytes[start..<position], as: UTF8.self).trimmingSpaces()
            return SpecValue(kind: try scalar(word, field: field), line: valueLine)
        }
    }

    func scalar(_ word: String, field: String) throws(SpecError) -> SpecValue.Kind {
        if word == "true" { return .bool(true) }
        if word == "false" { return .bool(false) }
        if word.isEmpty { throw error("missing value", field: field) }
        let digits = word.replacingUnderscoresBetweenDigits()
        if let digits {
            if let integer = Int(digits), digits.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "-" || $0 == "+") }) {
                return .integer(integer)
            }
            let allowed = Set("0123456789+-.eE")
            if digits.allSatisfy({ allowed.contains($0) }), digits.contains(where: \.isNumber), let number = Double(digits) {
                guard number.isFinite else { throw error("\(word.prefix(40)) is too large a number", field: field) }
                return .float(number, word)
            }
        }
        if word.count >= 10, word.prefix(4).allSatisfy(\.isNumber), word.dropFirst(4).first == "-" {
            throw error("dates and times are not supported in job specs; write them as a quoted string", field: field)
        }
        if word.hasPrefix("0x") || word.hasPrefix("0o") || word.hasPrefix("0b") {
            throw error("only decimal integers are supported in job specs (found \(word))", field: field)
        }
        throw error("\(word) is not a value (strings need quotes: \"\(word)\")", field: field)
    }

    mutating func parseBasicString() throws(SpecError) -> String {
        position += 1
        var out: [UInt8] = []
        while true {
            guard let c = current, c != UInt8(ascii: "\n") else { throw error("unterminated string") }
            position += 1
            if c == UInt8(ascii: "\"") { break }
            if c != UInt8(ascii: "\\") {
                out.append(c)
                continue
            }
            guard let e = current else { throw error("unterminated string") }
            position += 1
            switch e {
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\""))
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "u"), UInt8(ascii: "U"):
                let count = e == UInt8(ascii: "u") ? 4 : 8
                guard position + count <= bytes.count,
                      let code = UInt32(String(decoding: bytes[position..<position + count], as: UTF8.self), radix: 16),
                      let scalar = Unicode.Scalar(code) else {
                    throw error("invalid \\\(Character(Unicode.Scalar(e))) escape in a string")
                }
                position += count
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
            default:
                throw error("unknown escape \\\(Character(Unicode.Scalar(e))) in a string")
            }
        }
        return try decodeUTF8(out)
    }

    mutating func parseLiteralString() throws(SpecError) -> String {
        position += 1
        let start = position
        while let c = current, c != UInt8(ascii: "'") {
            if c == UInt8(ascii: "\n") { throw error("unterminated string") }
            position += 1
        }
        guard current == UInt8(ascii: "'") else { throw error("unterminated string") }
        let text = Array(bytes[start..<position])
        position += 1
        return try decodeUTF8(text)
    }

    func decodeUTF8(_ bytes: [UInt8]) throws(SpecError) -> String {
        guard let text = String(validating: bytes, as: UTF8.self) else { throw error("a string is not valid UTF-8") }
        return text
    }
}

extension SpecTable {
    /// Opens `[path]`, creating intermediate tables.
    mutating func defineTable(_ path: [String], line: Int, parser: SpecParser) throws(SpecError) {
        try withTable(path, line: line, parser: parser, prefix: "") { table throws(SpecError) in
            if table.explicitlyDefined {
                throw parser.error("table [\(path.joined(separator: "."))] is defined twice (first on line \(table.line))",
                                   line: line)
            }
            table.explicitlyDefined = true
            table.line = line
        }
    }

    /// Sets `path` (dotted, relative to this table) to `value`.
    mutating func insert(_ path: [String], value: SpecValue, line: Int, parser: SpecParser,
                         prefix: String = "") throws(SpecError) {
        let key = path[path.count - 1]
        try withTable(Array(path.dropLast()), line: line, parser: parser, prefix: prefix) { table throws(SpecError) in
            if let existing = table[key] {
                let name = (prefix.isEmpty ? [] : [prefix]) + path
                throw parser.error("\(name.joined(separator: ".")) is set twice (first on line \(existing.line))", line: line)
            }
            table.entries.append((key: key, value: value))
        }
    }

    private mutating func withTable(_ path: [String], line: Int, parser: SpecParser, prefix: String,
                                    _ body: (inout SpecTable) throws(SpecError) -> Void) throws(SpecError) {
        guard let first = path.first else {
            try body(&self)
            return
        }
        let rest = Array(path.dropFirst())
        if let index = entries.firstIndex(where: { $0.key == first }) {
            guard case var .table(child) = entries[index].value.kind else {
                throw parser.error("\(first) is already \(entries[index].value.kindName) (line \(entries[index].value.line)), not a table",
                                   line: line)
            }
            try child.withTable(rest, line: line, parser: parser, prefix: prefix, body)
            entries[index].value.kind = .table(child)
        } else {
            var child = SpecTable(line: line)
            try child.withTable(rest, line: line, parser: parser, prefix: prefix, body)
            entries.append((key: first, value: SpecValue(kind: .table(child), line: line)))
        }
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" { s.removeLast() }
        return String(s)
    }

    /// The text without `_` separators, or nil when an `_` is not between two digits.
    func replacingUnderscoresBetweenDigits() -> String? {
        let chars = Array(self)
        var out = ""
        for (i, c) in chars.enumerated() {
            if c == "_" {
                guard i > 0, i + 1 < chars.count, chars[i - 1].isNumber, chars[i + 1].isNumber else { return nil }
                continue
            }
            out.append(c)
        }
        return out
    }
}
