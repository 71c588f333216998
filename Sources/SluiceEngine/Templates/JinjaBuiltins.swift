import Foundation

/// The functions, filters, tests, operators and Python methods of the subset.
/// Each refuses what it does not implement by name.
enum JinjaBuiltins {
    // MARK: Globals

    static func global(_ name: String, now: Date) -> JinjaValue? {
        switch name {
        case "raise_exception":
            return .function(JinjaFunction(name) { arguments throws(JinjaError) in
                throw JinjaError(arguments.positional.first?.text ?? "the template raised an exception",
                                 line: arguments.line, raisedByTemplate: true)
            })
        case "strftime_now":
            return .function(JinjaFunction(name) { arguments throws(JinjaError) in
                try arguments.check(at: 1, names: [])
                guard let format = try arguments.string(0, "format") else {
                    throw JinjaError("strftime_now needs a format", line: arguments.line)
                }
                return .string(strftime(format, now))
            })
        case "range":
            return .function(JinjaFunction(name) { arguments throws(JinjaError) in
                try arguments.check(at: 3, names: [])
                var bounds: [Int] = []
                for index in arguments.positional.indices {
                    guard let bound = try arguments.integer(index, "bound") else {
                        throw JinjaError("range needs integers", line: arguments.line)
                    }
                    bounds.append(bound)
                }
                let (start, stop, step) = switch bounds.count {
                case 1: (0, bounds[0], 1)
                case 2: (bounds[0], bounds[1], 1)
                case 3: (bounds[0], bounds[1], bounds[2])
                default: throw JinjaError("range needs 1 to 3 arguments", line: arguments.line)
                }
                guard step != 0 else { throw JinjaError("range step must not be zero", line: arguments.line) }
                let count = step > 0 ? max(0, (stop - start + step - 1) / step) : max(0, (start - stop - step - 1) / -step)
                guard count <= 1_000_000 else { throw JinjaError("range of \(count) numbers is too long", line: arguments.line) }
                return .list((0..<count).map { .integer(start + $0 * step) })
            })
        case "namespace", "dict":
            return .function(JinjaFunction(name) { arguments throws(JinjaError) in
                var fields = JinjaDictionary()
                if let initial = arguments.positional.first {
                    guard arguments.positional.count == 1, case let .dictionary(dictionary) = initial else {
                        throw JinjaError("\(name) takes keyword arguments or one dictionary", line: arguments.line)
                    }
                    fields = dictionary
                }
                for (key, value) in arguments.keyword { fields[key] = value }
                return name == "dict" ? .dictionary(fields) : .namespace(JinjaNamespace(fields))
            })
        default:
            return nil
        }
    }

    private static func strftime(_ format: String, _ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        localtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 512)
        let count = Foundation.strftime(&buffer, buffer.count, format, &parts)
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: Members and items

    /// `value.name`: a dictionary's item (its Python methods first, as Jinja's getattr
    /// does), a namespace's field, a string's method; undefined otherwise.
    static func member(of value: JinjaValue, named name: String, line: Int) throws(JinjaError) -> JinjaValue {
        switch value {
        case let .undefined(description):
            throw JinjaError("\(description) is undefined, so it has no attribute '\(name)'", line: line)
        case let .dictionary(dictionary):
            if let method = dictionaryMethod(dictionary, name) { return .function(method) }
            return dictionary[name] ?? .undefined("attribute '\(name)'")
        case let .namespace(namespace):
            return namespace.fields[name] ?? .undefined("attribute '\(name)'")
        case let .string(text):
            return stringMethod(text, name).map(JinjaValue.function) ?? .undefined("attribute '\(name)'")
        case .none:
            throw JinjaError("none has no attribute '\(name)'", line: line)
        default:
            return .undefined("attribute '\(name)' of a \(value.typeName)")
        }
    }

    /// `value[key]`: negative indices count from the end; a missing key or index is undefined.
    static func item(of value: JinjaValue, key: JinjaValue, line: Int) throws(JinjaError) -> JinjaValue {
        switch (value, key) {
        case let (.undefined(description), _):
            throw JinjaError("\(description) is undefined, so it has no item \(key.representation)", line: line)
        case let (.list(items), .integer(index)):
            let position = index < 0 ? items.count + index : index
            return items.indices.contains(position) ? items[position] : .undefined("index \(index)")
        case let (.string(text), .integer(index)):
            let scalars = Array(text.unicodeScalars)
            let position = index < 0 ? scalars.count + index : index
            return scalars.indices.contains(position) ? .string(String(scalars[position])) : .undefined("index \(index)")
        case let (.dictionary(dictionary), .string(name)):
            return dictionary[name] ?? .undefined("key '\(name)'")
        case let (.namespace(namespace), .string(name)):
            return namespace.fields[name] ?? .undefined("key '\(name)'")
        case (.none, _):
            throw JinjaError("none has no item \(key.representation)", line: line)
        case let (.dictionary, other):
            throw JinjaError("dictionary keys are strings, not \(other.typeName)", line: line)
        default:
            if case .string = key { return member(ofNonDictionary: value, key: key) }
            throw JinjaError("cannot index a \(value.typeName) with a \(key.typeName)", line: line)
        }
    }

    private static func member(ofNonDictionary value: JinjaValue, key: JinjaValue) -> JinjaValue {
        .undefined("item \(key.representation) of a \(value.typeName)")
    }

    /// Python's `value[start:stop:step]` on lists and strings.
    static func slice(_ value: JinjaValue, start: JinjaValue?, stop: JinjaValue?, step: JinjaValue?, line: Int) throws(JinjaError) -> JinjaValue {
        func bound(_ value: JinjaValue?) throws(JinjaError) -> Int? {
            switch value {
            case nil, .none?: return nil
            case let .integer(number)?: return number
            default: throw JinjaError("slice bounds must be integers", line: line)
            }
        }
        let stride = try bound(step) ?? 1
        guard stride != 0 else { throw JinjaError("slice step must not be zero", line: line) }
        func indices(count: Int) throws(JinjaError) -> [Int] {
            func clamp(_ index: Int?, _ defaultValue: Int) -> Int {
                guard let index else { return defaultValue }
                let position = index < 0 ? index + count : index
                return stride > 0 ? min(max(position, 0), count) : min(max(position, -1), count - 1)
            }
            let from = clamp(try bound(start), stride > 0 ? 0 : count - 1)
            let to = clamp(try bound(stop), stride > 0 ? count : -1)
            return Array(Swift.stride(from: from, to: to, by: stride))
        }
        switch value {
        case let .list(items):
            return .list(try indices(count: items.count).map { items[$0] })
        case let .string(text):
            let scalars = Array(text.unicodeScalars)
            var out = String.UnicodeScalarView()
            for index in try indices(count: scalars.count) { out.append(scalars[index]) }
            return .string(String(out))
        case let .undefined(description):
            throw JinjaError("\(description) is undefined, so it cannot be sliced", line: line)
        default:
            throw JinjaError("cannot slice a \(value.typeName)", line: line)
        }
    }

    // MARK: Python methods

    private static func dictionaryMethod(_ dictionary: JinjaDictionary, _ name: String) -> JinjaFunction? {
        switch name {
        case "items":
            return JinjaFunction(name) { arguments throws(JinjaError) in
                try arguments.check(at: 0, names: [])
                return .list(dictionary.keys.map { .list([.string($0), dictionary[$0]!]) })
            }
        case "keys":
            return JinjaFunction(name) { arguments throws(JinjaError) in
                try arguments.check(at: 0, names: [])
                return .list(dictionary.keys.map { .string($0) })
            }
        case "values":
            return JinjaFunction(name) { arguments throws(JinjaError) in
                try arguments.check(at: 0, names: [])
                return .list(dictionary.keys.map { dictionary[$0]! })
            }
        case "get":
            return JinjaFunction(name) { arguments throws(JinjaError) in
                try arguments.check(at: 2, names: [])
                guard let key = try arguments.string(0, "key") else { throw JinjaError("get needs a key", line: arguments.line) }
                return dictionary[key] ?? arguments.value(1, "default") ?? .none
            }
        default:
            return nil
        }
    }

    private static func stringMethod(_ text: String, _ name: String) -> JinjaFunction? {
        func method(_ body: @escaping (JinjaCallArguments) throws(JinjaError) -> JinjaValue) -> JinjaFunction {
            JinjaFunction(name, body)
        }
        switch name {
        case "strip", "lstrip", "rstrip":
            return method { arguments throws(JinjaError) in
                try arguments.check(at: 1, names: [])
                let characters = try arguments.string(0, "chars")
                return .string(strip(text, characters: characters, leading: name != "rstrip", trailing: name != "lstrip"))
            }
        case "upper": return method { _ in .string(text.uppercased()) }
        case "lower": return method { _ in .string(text.lowercased()) }
        case "title": return method { _ in .string(title(text)) }
        case "capitalize": return method { _ in .string(capitalize(text)) }
        case "startswith", "endswith":
            return method { arguments throws(JinjaError) in
                try arguments.check(at: 1, names: [])
                var candidates: [String] = []
                switch arguments.value(0, "prefix") {
                case let .string(one)?: candidates = [one]
                case let .list(many)?:
                    for item in many {
                        guard case let .string(one) = item else { throw JinjaError("\(name) needs strings", line: arguments.line) }
                        candidates.append(one)
                    }
                default: throw JinjaError("\(name) needs a string", line: arguments.line)
                }
                let scalars = Array(text.unicodeScalars)
                return .bool(candidates.contains { candidate in
                    let affix = Array(candidate.unicodeScalars)
                    return name == "startswith" ? scalars.starts(with: affix) : scalars.reversed().starts(with: affix.reversed())
                })
            }
        case "split", "rsplit":
            return method { arguments throws(JinjaError) in
                try arguments.check(at: 2, names: ["sep", "maxsplit"])
                let separator = try arguments.string(0, "sep")
                let limit = try arguments.integer(1, "maxsplit") ?? -1
                if separator == "" { throw JinjaError("\(name): empty separator", line: arguments.line) }
                if name == "rsplit", limit >= 0 { throw JinjaError("unsupported method 'rsplit' with maxsplit", line: arguments.line) }
                return .list(split(text, separator: separator, limit: limit).map(JinjaValue.string))
            }
        case "replace":
            return method { arguments throws(JinjaError) in
                try arguments.check(at: 3, names: [])
                guard let old = try arguments.string(0, "old"), let new = try arguments.string(1, "new") else {
                    throw JinjaError("replace needs two strings", line: arguments.line)
                }
                return .string(replace(text, old, new, count: try arguments.integer(2, "count") ?? -1))
            }
        case "find":
            return method { arguments throws(JinjaError) in
                try arguments.check(at: 1, names: [])
                guard let needle = try arguments.string(0, "sub") else { throw JinjaError("find needs a string", line: arguments.line) }
                let scalars = Array(text.unicodeScalars), target = Array(needle.unicodeScalars)
                if target.isEmpty { return .integer(0) }
                guard scalars.count >= target.count else { return .integer(-1) }
                for start in 0...(scalars.count - target.count) where Array(scalars[start..<start + target.count]) == target {
                    return .integer(start)
                }
                return .integer(-1)
            }
        case "join":
            return method { arguments throws(JinjaError) in
                try arguments.check(at: 1, names: [])
                var parts: [String] = []
                for item in try (arguments.value(0, "iterable") ?? .list([])).iterated(line: arguments.line) {
                    guard case let .string(part) = item else { throw JinjaError("join needs strings, found \(item.typeName)", line: arguments.line) }
                    parts.append(part)
                }
                return .string(parts.joined(separator: text))
            }
        case "isspace":
            return method { _ in .bool(!text.isEmpty && text.unicodeScalars.allSatisfy(\.properties.isWhitespace)) }
        case "isdigit":
            return method { _ in .bool(!text.isEmpty && text.unicodeScalars.allSatisfy { ("0"..."9").contains($0) }) }
        default:
            return nil
        }
    }

    /// Python's `str.strip`: whitespace, or the given characters, from either end.
    static func strip(_ text: String, characters: String?, leading: Bool = true, trailing: Bool = true) -> String {
        let set = characters.map { Set($0.unicodeScalars) }
        func strippable(_ scalar: Unicode.Scalar) -> Bool { set?.contains(scalar) ?? scalar.properties.isWhitespace }
        var scalars = Substring(text).unicodeScalars[...]
        if leading { while let first = scalars.first, strippable(first) { scalars.removeFirst() } }
        if trailing { while let last = scalars.last, strippable(last) { scalars.removeLast() } }
        return String(String.UnicodeScalarView(scalars))
    }

    private static func split(_ text: String, separator: String?, limit: Int) -> [String] {
        guard let separator else {
            // Runs of whitespace separate; leading and trailing whitespace make no empty parts.
            var parts: [String] = []
            var scalars = Substring(text).unicodeScalars[...]
            while true {
                while let first = scalars.first, first.properties.isWhitespace { scalars.removeFirst() }
                if scalars.isEmpty { break }
                if limit >= 0, parts.count == limit {
                    parts.append(String(String.UnicodeScalarView(scalars)))
                    break
                }
                var word = String.UnicodeScalarView()
                while let scalar = scalars.first, !scalar.properties.isWhitespace {
                    word.append(scalar)
                    scalars.removeFirst()
                }
                parts.append(String(word))
            }
            return parts
        }
        var parts: [String] = []
        var rest = text[...]
        while limit < 0 || parts.count < limit, let range = rest.range(of: separator, options: .literal) {
            parts.append(String(rest[..<range.lowerBound]))
            rest = rest[range.upperBound...]
        }
        parts.append(String(rest))
        return parts
    }

    private static func replace(_ text: String, _ old: String, _ new: String, count: Int) -> String {
        if old.isEmpty || count == 0 { return count == 0 ? text : text.replacingOccurrences(of: old, with: new) }
        var out = ""
        var rest = text[...]
        var done = 0
        while count < 0 || done < count, let range = rest.range(of: old, options: .literal) {
            out += rest[..<range.lowerBound] + new
            rest = rest[range.upperBound...]
            done += 1
        }
        return out + rest
    }

    /// Python's `str.title`: each run of letters starts upper case, the rest lower case.
    static func title(_ text: String) -> String {
        var out = ""
        var previousIsLetter = false
        for character in text {
            let isLetter = character.isLetter
            out += isLetter && !previousIsLetter ? character.uppercased() : character.lowercased()
            previousIsLetter = isLetter
        }
        return out
    }

    static func capitalize(_ text: String) -> String {
        guard let first = text.first else { return text }
        return first.uppercased() + text.dropFirst().lowercased()
    }

    // MARK: Operators

    static func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue, line: Int) throws(JinjaError) -> JinjaValue {
        func overflow() -> JinjaError { JinjaError("integer overflow in '\(op)'", line: line) }
        switch op {
        case "==": return .bool(a.equals(b))
        case "!=": return .bool(!a.equals(b))
        case "<", "<=", ">", ">=":
            let order: Int
            switch (a, b) {
            case let (.string(x), .string(y)):
                order = x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars) ? -1 : x == y ? 0 : 1
            default:
                guard let x = a.numeric, let y = b.numeric else {
                    throw JinjaError("'\(op)' cannot compare \(a.typeName) and \(b.typeName)", line: line)
                }
                order = x < y ? -1 : x == y ? 0 : 1
            }
            switch op {
            case "<": return .bool(order < 0)
            case "<=": return .bool(order <= 0)
            case ">": return .bool(order > 0)
            default: return .bool(order >= 0)
            }
        case "in", "not in":
            let found: Bool
            switch b {
            case let .string(haystack):
                guard case let .string(needle) = a else {
                    throw JinjaError("'\(op)' a string needs a string on the left, not \(a.typeName)", line: line)
                }
                found = needle.isEmpty || haystack.range(of: needle, options: .literal) != nil
            case let .list(items): found = items.contains { $0.equals(a) }
            case let .dictionary(dictionary):
                if case let .string(key) = a { found = dictionary[key] != nil } else { found = false }
            case .undefined: found = false
            default: throw JinjaError("'\(op)' needs a string, list or dictionary on the right, not \(b.typeName)", line: line)
            }
            return .bool(found == (op == "in"))
        case "~":
            return .string(a.text + b.text)
        case "+":
            switch (a, b) {
            case let (.string(x), .string(y)): return .string(x + y)
            case let (.list(x), .list(y)): return .list(x + y)
            case let (.integer(x), .integer(y)):
                let (sum, overflowed) = x.addingReportingOverflow(y)
                if overflowed { throw overflow() }
                return .integer(sum)
            default: break
            }
        case "-":
            if case let (.integer(x), .integer(y)) = (a, b) {
                let (difference, overflowed) = x.subtractingReportingOverflow(y)
                if overflowed { throw overflow() }
                return .integer(difference)
            }
        case "*":
            switch (a, b) {
            case let (.integer(x), .integer(y)):
                let (product, overflowed) = x.multipliedReportingOverflow(by: y)
                if overflowed { throw overflow() }
                return .integer(product)
            case let (.string(x), .integer(n)), let (.integer(n), .string(x)):
                guard n <= 100_000 else { throw JinjaError("string repeated \(n) times is too long", line: line) }
                return .string(String(repeating: x, count: max(0, n)))
            default: break
            }
        case "/":
            if let x = number(a), let y = number(b) {
                guard y != 0 else { throw JinjaError("division by zero", line: line) }
                return .float(x / y)
            }
        case "//", "%":
            if case let (.integer(x), .integer(y)) = (a, b) {
                guard y != 0 else { throw JinjaError("division by zero", line: line) }
                guard !(x == .min && y == -1) else { throw overflow() }
                var quotient = x / y
                var remainder = x % y
                if remainder != 0, (remainder < 0) != (y < 0) {
                    quotient -= 1
                    remainder += y
                }
                return .integer(op == "//" ? quotient : remainder)
            }
            if op == "%", case .string = a { throw JinjaError("unsupported string formatting with '%'", line: line) }
            if let x = number(a), let y = number(b) {
                guard y != 0 else { throw JinjaError("division by zero", line: line) }
                let quotient = (x / y).rounded(.down)
                return .float(op == "//" ? quotient : x - quotient * y)
            }
        case "**":
            if case let (.integer(x), .integer(y)) = (a, b), y >= 0 {
                var result = 1
                for _ in 0..<min(y, 64) {
                    let (product, overflowed) = result.multipliedReportingOverflow(by: x)
                    if overflowed { throw overflow() }
                    result = product
                }
                return .integer(y > 64 && abs(x) > 1 ? 0 : result)
            }
            if let x = number(a), let y = number(b) { return .float(Foundation.pow(x, y)) }
        default:
            throw JinjaError("unsupported operator '\(op)'", line: line)
        }
        if let x = number(a), let y = number(b), op == "+" || op == "-" || op == "*" {
            return .float(op == "+" ? x + y : op == "-" ? x - y : x * y)
        }
        throw JinjaError("'\(op)' cannot combine \(a.typeName) and \(b.typeName)", line: line)
    }

    /// Ints and floats as a float (booleans count, as in Python).
    private static func number(_ value: JinjaValue) -> Double? {
        switch value {
        case .integer, .float, .bool: value.numeric
        default: nil
        }
    }
}
