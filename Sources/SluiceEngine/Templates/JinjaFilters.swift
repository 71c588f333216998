/// Jinja's filters and tests as chat templates use them.
extension JinjaBuiltins {
    static func filter(_ name: String, _ value: JinjaValue, _ arguments: JinjaCallArguments,
                       renderer: inout JinjaRenderer) throws(JinjaError) -> JinjaValue {
        let line = arguments.line
        func items() throws(JinjaError) -> [JinjaValue] { try value.iterated(line: line) }
        switch name {
        case "trim":
            try arguments.check(at: 1, names: ["chars"])
            return .string(strip(value.text, characters: try arguments.string(0, "chars")))
        case "upper": return .string(value.text.uppercased())
        case "lower": return .string(value.text.lowercased())
        case "title": return .string(title(value.text))
        case "capitalize": return .string(capitalize(value.text))
        case "string": return .string(value.text)
        case "safe": return value
        case "length", "count":
            switch value {
            case let .string(text): return .integer(text.unicodeScalars.count)
            case let .list(items): return .integer(items.count)
            case let .dictionary(dictionary): return .integer(dictionary.keys.count)
            case .undefined: return .integer(0)
            default: throw JinjaError("filter '\(name)' needs a string, list or dictionary, not \(value.typeName)", line: line)
            }
        case "default", "d":
            try arguments.check(at: 2, names: ["default_value", "boolean"])
            let useFalsy = arguments.value(1, "boolean")?.isTruthy ?? false
            let replace = useFalsy ? !value.isTruthy : !value.isDefined
            return replace ? (arguments.value(0, "default_value") ?? .string("")) : value
        case "tojson":
            try arguments.check(at: 1, names: ["indent", "separators", "sort_keys", "ensure_ascii"])
            if arguments.value(2, "separators") != nil || arguments.value(3, "sort_keys")?.isTruthy == true
                || arguments.keyword.contains(where: { $0.name == "ensure_ascii" }) {
                throw JinjaError("unsupported tojson options (separators, sort_keys, ensure_ascii)", line: line)
            }
            return .string(try value.json(indent: try arguments.integer(0, "indent")))
        case "items":
            guard case let .dictionary(dictionary) = value else {
                if case .undefined = value { return .list([]) }
                throw JinjaError("filter 'items' needs a dictionary, not \(value.typeName)", line: line)
            }
            return .list(dictionary.keys.map { .list([.string($0), dictionary[$0]!]) })
        case "list": return .list(try items())
        case "first":
            return try items().first ?? .undefined("the first item of an empty sequence")
        case "last":
            return try items().last ?? .undefined("the last item of an empty sequence")
        case "reverse":
            if case let .string(text) = value { return .string(String(String.UnicodeScalarView(text.unicodeScalars.reversed()))) }
            return .list(try items().reversed())
        case "join":
            try arguments.check(at: 2, names: ["d", "attribute"])
            let separator = try arguments.string(0, "d") ?? ""
            var parts: [String] = []
            for item in try items() {
                if let attribute = try arguments.string(1, "attribute") {
                    parts.append(try member(of: item, named: attribute, line: line).text)
                } else {
                    parts.append(item.text)
                }
            }
            return .string(parts.joined(separator: separator))
        case "replace":
            try arguments.check(at: 3, names: ["old", "new", "count"])
            guard let old = try arguments.string(0, "old"), let new = try arguments.string(1, "new") else {
                throw JinjaError("filter 'replace' needs two strings", line: line)
            }
            guard case let .function(method) = try member(of: .string(value.text), named: "replace", line: line) else {
                throw JinjaError("filter 'replace' failed", line: line)
            }
            var positional: [JinjaValue] = [.string(old), .string(new)]
            if let count = try arguments.integer(2, "count") { positional.append(.integer(count)) }
            return try method.body(JinjaCallArguments(positional: positional, keyword: [], function: "replace", line: line))
        case "selectattr", "rejectattr", "select", "reject":
            let byAttribute = name.hasSuffix("attr")
            var remaining = arguments.positional
            var attribute: String?
            if byAttribute {
                guard case let .string(field)? = remaining.first else {
                    throw JinjaError("filter '\(name)' needs an attribute name", line: line)
                }
                attribute = field
                remaining.removeFirst()
            }
            var testName: String?
            if let first = remaining.first {
                guard case let .string(test) = first else { throw JinjaError("filter '\(name)' needs a test name", line: line) }
                testName = test
                remaining.removeFirst()
            }
            let keep = name.hasPrefix("select")
            var kept: [JinjaValue] = []
            for item in try items() {
                let subject = try attribute.map { field throws(JinjaError) in try member(of: item, named: field, line: line) } ?? item
                let passes = try testName.map { test throws(JinjaError) in
                    try self.test(test, subject, JinjaCallArguments(positional: remaining, keyword: [], function: "test '\(test)'", line: line))
                } ?? subject.isTruthy
                if passes == keep { kept.append(item) }
            }
            return .list(kept)
        case "map":
            if let attribute = try arguments.string(99, "attribute") {
                let fallback = arguments.value(99, "default")
                var mapped: [JinjaValue] = []
                for item in try items() {
                    let field = try member(of: item, named: attribute, line: line)
                    mapped.append(field.isDefined ? field : fallback ?? field)
                }
                return .list(mapped)
            }
            guard case let .string(filterName)? = arguments.positional.first else {
                throw JinjaError("filter 'map' needs a filter name or attribute=", line: line)
            }
            let rest = JinjaCallArguments(positional: Array(arguments.positional.dropFirst()), keyword: [],
                                          function: "filter '\(filterName)'", line: line)
            var mapped: [JinjaValue] = []
            for item in try items() { mapped.append(try filter(filterName, item, rest, renderer: &renderer)) }
            return .list(mapped)
        case "unique":
            var seen: [JinjaValue] = []
            for item in try items() where !seen.contains(where: { $0.equals(item) }) { seen.append(item) }
            return .list(seen)
        case "int":
            switch value {
            case let .integer(number): return .integer(number)
            case let .bool(flag): return .integer(flag ? 1 : 0)
            case let .float(number) where number.isFinite && abs(number) < 9e18: return .integer(Int(number))
            case let .string(text): return Int(strip(text, characters: nil)).map(JinjaValue.integer) ?? arguments.value(0, "default") ?? .integer(0)
            default: return arguments.value(0, "default") ?? .integer(0)
            }
        case "float":
            switch value {
            case let .string(text): return Double(strip(text, characters: nil)).map(JinjaValue.float) ?? .float(0)
            default: return value.numeric.map(JinjaValue.float) ?? .float(0)
            }
        case "abs":
            switch value {
            case let .integer(number) where number != .min: return .integer(abs(number))
            case let .float(number): return .float(abs(number))
            default: throw JinjaError("filter 'abs' needs a number, not \(value.typeName)", line: line)
            }
        case "indent":
            try arguments.check(at: 3, names: ["width", "first", "blank"])
            let width = try arguments.integer(0, "width") ?? 4
            guard (0...1000).contains(width) else { throw JinjaError("filter 'indent': width \(width) is out of range", line: line) }
            let first = arguments.value(1, "first")?.isTruthy ?? false
            let blank = arguments.value(2, "blank")?.isTruthy ?? false
            let padding = String(repeating: " ", count: width)
            let lines = value.text.split(separator: "\n", omittingEmptySubsequences: false)
            var out: [String] = []
            for (index, text) in lines.enumerated() {
                let indent = (index > 0 || first) && (blank || !text.allSatisfy(\.isWhitespace))
                out.append(indent ? padding + text : String(text))
            }
            return .string(out.joined(separator: "\n"))
        default:
            throw JinjaError("unsupported filter '\(name)'", line: line)
        }
    }

    static func test(_ name: String, _ value: JinjaValue, _ arguments: JinjaCallArguments) throws(JinjaError) -> Bool {
        let line = arguments.line
        func argument() throws(JinjaError) -> JinjaValue {
            guard let other = arguments.positional.first else { throw JinjaError("test '\(name)' needs an argument", line: line) }
            return other
        }
        switch name {
        case "defined": return value.isDefined
        case "undefined": return !value.isDefined
        case "none": if case .none = value { return true } else { return false }
        case "string": if case .string = value { return true } else { return false }
        case "boolean": if case .bool = value { return true } else { return false }
        case "true": if case .bool(true) = value { return true } else { return false }
        case "false": if case .bool(false) = value { return true } else { return false }
        case "integer": if case .integer = value { return true } else { return false }
        case "float": if case .float = value { return true } else { return false }
        case "number":
            switch value {
            case .integer, .float, .bool: return true
            default: return false
            }
        case "mapping": if case .dictionary = value { return true } else { return false }
        case "iterable", "sequence":
            switch value {
            case .string, .list, .dictionary, .undefined: return true
            default: return false
            }
        case "callable": if case .function = value { return true } else { return false }
        case "equalto", "eq", "==": return value.equals(try argument())
        case "ne", "!=": return !value.equals(try argument())
        case "lt", "<", "le", "<=", "gt", ">", "ge", ">=":
            let op = ["lt": "<", "le": "<=", "gt": ">", "ge": ">="][name] ?? name
            return try binary(op, value, try argument(), line: line).isTruthy
        case "in": return try binary("in", value, try argument(), line: line).isTruthy
        case "sameas":
            let other = try argument()
            switch (value, other) {
            case (.none, .none), (.undefined, .undefined): return true
            case let (.bool(a), .bool(b)): return a == b
            case let (.namespace(a), .namespace(b)): return a === b
            default: return false
            }
        case "odd", "even", "divisibleby":
            guard case let .integer(number) = value else { throw JinjaError("test '\(name)' needs an integer", line: line) }
            if name == "divisibleby" {
                guard case let .integer(divisor) = try argument(), divisor != 0 else {
                    throw JinjaError("test 'divisibleby' needs a non-zero integer", line: line)
                }
                return number % divisor == 0
            }
            return (number % 2 != 0) == (name == "odd")
        case "lower": return value.text == value.text.lowercased()
        case "upper": return value.text == value.text.uppercased()
        default:
            throw JinjaError("unsupported test '\(name)'", line: line)
        }
    }
}
