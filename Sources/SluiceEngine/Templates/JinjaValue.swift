/// A value while a template renders, with Python's semantics (as Jinja has them):
/// truthiness, equality, `str()` and `repr()` text, and JSON as transformers' `tojson` writes it.
enum JinjaValue {
    /// A name or member that does not exist: false, empty, printed as nothing;
    /// using its members is an error naming `description`.
    case undefined(String)
    case none
    case bool(Bool)
    case integer(Int)
    case float(Double)
    case string(String)
    case list([JinjaValue])
    case dictionary(JinjaDictionary)
    /// `namespace(...)`: the one mutable object, shared by reference.
    case namespace(JinjaNamespace)
    case function(JinjaFunction)

    init(_ literal: JinjaLiteral) {
        switch literal {
        case .none: self = .none
        case let .bool(value): self = .bool(value)
        case let .integer(value): self = .integer(value)
        case let .float(value): self = .float(value)
        case let .string(value): self = .string(value)
        }
    }

    var isDefined: Bool {
        if case .undefined = self { return false }
        return true
    }

    /// Python's truth value.
    var isTruthy: Bool {
        switch self {
        case .undefined, .none: false
        case let .bool(value): value
        case let .integer(value): value != 0
        case let .float(value): value != 0
        case let .string(value): !value.isEmpty
        case let .list(items): !items.isEmpty
        case let .dictionary(dictionary): !dictionary.keys.isEmpty
        case .namespace, .function: true
        }
    }

    /// The name of the value's type as Jinja's errors say it.
    var typeName: String {
        switch self {
        case .undefined: "undefined"
        case .none: "none"
        case .bool: "boolean"
        case .integer: "integer"
        case .float: "float"
        case .string: "string"
        case .list: "list"
        case .dictionary: "dict"
        case .namespace: "namespace"
        case .function: "function"
        }
    }

    /// Python's `str()`: what `{{ value }}` prints (undefined prints nothing).
    var text: String {
        switch self {
        case .undefined: ""
        case let .string(value): value
        default: representation
        }
    }

    /// Python's `repr()`, used inside printed lists and dictionaries.
    var representation: String {
        switch self {
        case .undefined: ""
        case .none: "None"
        case let .bool(value): value ? "True" : "False"
        case let .integer(value): String(value)
        case let .float(value): Self.pythonFloat(value)
        case let .string(value): Self.pythonQuoted(value)
        case let .list(items): "[" + items.map(\.representation).joined(separator: ", ") + "]"
        case let .dictionary(dictionary):
            "{" + dictionary.keys.map { Self.pythonQuoted($0) + ": " + dictionary.values[$0]!.representation }
                .joined(separator: ", ") + "}"
        case let .namespace(namespace): "<Namespace " + JinjaValue.dictionary(namespace.fields).representation + ">"
        case let .function(function): "<function \(function.name)>"
        }
    }

    /// Python's float text: `1.0`, `0.1`, `1e-05`, `inf`, `nan`.
    static func pythonFloat(_ value: Double) -> String {
        if value.isNaN { return "nan" }
        if value.isInfinite { return value < 0 ? "-inf" : "inf" }
        return "\(value)"
    }

    static func pythonQuoted(_ value: String) -> String {
        let quote: Character = value.contains("'") && !value.contains("\"") ? "\"" : "'"
        var out = String(quote)
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if Character(scalar) == quote {
                    out += "\\" + String(quote)
                } else if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += "\\x" + hex(scalar.value, width: 2)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out.append(quote)
        return out
    }

    private static func hex(_ value: UInt32, width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }

    /// JSON as transformers' `tojson` filter writes it (Python's `json.dumps` with
    /// `ensure_ascii=False`): `", "` and `": "` separators, or one item per line with `indent`.
    func json(indent: Int?, level: Int = 0) throws(JinjaError) -> String {
        let newline = indent.map { "\n" + String(repeating: " ", count: $0 * (level + 1)) }
        let closing = indent.map { "\n" + String(repeating: " ", count: $0 * level) } ?? ""
        let separator = indent == nil ? ", " : ","
        switch self {
        case .none: return "null"
        case let .bool(value): return value ? "true" : "false"
        case let .integer(value): return String(value)
        case let .float(value):
            if value.isNaN { return "NaN" }
            if value.isInfinite { return value < 0 ? "-Infinity" : "Infinity" }
            return Self.pythonFloat(value)
        case let .string(value): return Self.jsonQuoted(value)
        case let .list(items):
            if items.isEmpty { return "[]" }
            var parts: [String] = []
            for item in items { parts.append((newline ?? "") + (try item.json(indent: indent, level: level + 1))) }
            return "[" + parts.joined(separator: separator) + closing + "]"
        case let .dictionary(dictionary):
            return try Self.jsonObject(dictionary, indent: indent, level: level)
        case let .namespace(namespace):
            return try Self.jsonObject(namespace.fields, indent: indent, level: level)
        case .undefined(let name):
            throw JinjaError("tojson of an undefined value (\(name))")
        case let .function(function):
            throw JinjaError("tojson of a function (\(function.name))")
        }
    }

    private static func jsonObject(_ dictionary: JinjaDictionary, indent: Int?, level: Int) throws(JinjaError) -> String {
        if dictionary.keys.isEmpty { return "{}" }
        let newline = indent.map { "\n" + String(repeating: " ", count: $0 * (level + 1)) } ?? ""
        let closing = indent.map { "\n" + String(repeating: " ", count: $0 * level) } ?? ""
        var parts: [String] = []
        for key in dictionary.keys {
            parts.append(newline + jsonQuoted(key) + ": " + (try dictionary.values[key]!.json(indent: indent, level: level + 1)))
        }
        return "{" + parts.joined(separator: indent == nil ? ", " : ",") + closing + "}"
    }

    static func jsonQuoted(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{8}": out += "\\b"
            case "\u{C}": out += "\\f"
            default:
                if scalar.value < 0x20 {
                    out += "\\u" + hex(scalar.value, width: 4)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// Python's `==` (numbers compare by value across int, float and bool; containers deeply).
    func equals(_ other: JinjaValue) -> Bool {
        switch (self, other) {
        case (.undefined, .undefined), (.none, .none): return true
        case let (.string(a), .string(b)): return a == b
        case let (.list(a), .list(b)): return a.count == b.count && zip(a, b).allSatisfy { $0.equals($1) }
        case let (.dictionary(a), .dictionary(b)):
            return a.keys.count == b.keys.count && a.keys.allSatisfy { key in
                guard let other = b.values[key] else { return false }
                return a.values[key]!.equals(other)
            }
        case let (.namespace(a), .namespace(b)): return a === b
        default:
            if let a = numeric, let b = other.numeric { return a == b }
            return false
        }
    }

    /// The value as a number, for comparisons across int, float and bool.
    var numeric: Double? {
        switch self {
        case let .bool(value): value ? 1 : 0
        case let .integer(value): Double(value)
        case let .float(value): value
        default: nil
        }
    }

    /// The elements a `for` loop visits: a list's items, a string's characters, a dictionary's keys.
    func iterated(line: Int) throws(JinjaError) -> [JinjaValue] {
        switch self {
        case .undefined: return []
        case let .list(items): return items
        case let .string(value): return value.unicodeScalars.map { .string(String($0)) }
        case let .dictionary(dictionary): return dictionary.keys.map { .string($0) }
        default: throw JinjaError("\(typeName) value is not iterable", line: line)
        }
    }
}

/// A dictionary that keeps its keys in insertion order, as Python's does.
struct JinjaDictionary {
    private(set) var keys: [String] = []
    private(set) var values: [String: JinjaValue] = [:]

    init() {}

    init(_ pairs: [(String, JinjaValue)]) {
        for (key, value) in pairs { self[key] = value }
    }

    subscript(key: String) -> JinjaValue? {
        get { values[key] }
        set {
            if values[key] == nil, newValue != nil { keys.append(key) }
            if newValue == nil, values[key] != nil { keys.removeAll { $0 == key } }
            values[key] = newValue
        }
    }
}

/// The object `namespace()` returns: fields a loop body can change and the code after the loop sees.
final class JinjaNamespace {
    var fields: JinjaDictionary
    init(_ fields: JinjaDictionary) { self.fields = fields }
}

/// A callable value: a global function, a bound method or a macro.
final class JinjaFunction {
    let name: String
    let body: (JinjaCallArguments) throws(JinjaError) -> JinjaValue
    init(_ name: String, _ body: @escaping (JinjaCallArguments) throws(JinjaError) -> JinjaValue) {
        self.name = name
        self.body = body
    }
}

/// Evaluated arguments of a call, with helpers that name the function in their errors.
struct JinjaCallArguments {
    var positional: [JinjaValue]
    var keyword: [(name: String, value: JinjaValue)]
    var function: String
    var line: Int

    /// The argument at `position` or named `name`; `nil` when absent.
    func value(_ position: Int, _ name: String) -> JinjaValue? {
        if position < positional.count { return positional[position] }
        return keyword.first { $0.name == name }?.value
    }

    /// Refuses more positional arguments than `count` and keywords not in `names`.
    func check(at most: Int, names: Set<String>) throws(JinjaError) {
        if positional.count > most {
            throw JinjaError("\(function) takes at most \(most) positional arguments, got \(positional.count)", line: line)
        }
        if let unknown = keyword.first(where: { !names.contains($0.name) }) {
            throw JinjaError("\(function) has no argument '\(unknown.name)'", line: line)
        }
    }

    func string(_ position: Int, _ name: String) throws(JinjaError) -> String? {
        guard let value = value(position, name) else { return nil }
        if case .none = value { return nil }
        guard case let .string(text) = value else {
            throw JinjaError("\(function): '\(name)' must be a string, not \(value.typeName)", line: line)
        }
        return text
    }

    func integer(_ position: Int, _ name: String) throws(JinjaError) -> Int? {
        guard let value = value(position, name) else { return nil }
        switch value {
        case .none: return nil
        case let .integer(number): return number
        case let .bool(flag): return flag ? 1 : 0
        default: throw JinjaError("\(function): '\(name)' must be an integer, not \(value.typeName)", line: line)
        }
    }
}
