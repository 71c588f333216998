/// Builds the syntax tree of a template from its tokens. Statements and operators
/// outside the subset chat templates use are refused by name.
struct JinjaParser {
    private let tokens: [JinjaLexer.Token]
    private var index = 0

    static func parse(_ source: String) throws(JinjaError) -> [JinjaNode] {
        var parser = JinjaParser(tokens: try JinjaLexer.tokenize(source))
        let (nodes, end) = try parser.nodes(until: [])
        if let end { throw JinjaError("unexpected '{% \(end) %}'", line: parser.current.line) }
        return nodes
    }

    private init(tokens: [JinjaLexer.Token]) { self.tokens = tokens }

    private var current: JinjaLexer.Token { tokens[index] }
    private var line: Int { current.line }

    private mutating func next() -> JinjaLexer.Token {
        defer { if index < tokens.count - 1 { index += 1 } }
        return tokens[index]
    }

    private func isSymbol(_ symbol: String) -> Bool { current.kind == .symbol(symbol) }
    private func isName(_ name: String) -> Bool { current.kind == .name(name) }

    private mutating func skip(symbol: String) -> Bool {
        guard isSymbol(symbol) else { return false }
        index += 1
        return true
    }

    private mutating func skip(name: String) -> Bool {
        guard isName(name) else { return false }
        index += 1
        return true
    }

    private mutating func expect(symbol: String) throws(JinjaError) {
        guard skip(symbol: symbol) else { throw JinjaError("expected '\(symbol)' but found \(describe(current.kind))", line: line) }
    }

    private mutating func expectName() throws(JinjaError) -> String {
        guard case let .name(name) = current.kind else {
            throw JinjaError("expected a name but found \(describe(current.kind))", line: line)
        }
        index += 1
        return name
    }

    private mutating func expectEndOfStatement() throws(JinjaError) {
        guard current.kind == .endStatement else {
            throw JinjaError("expected the end of the statement but found \(describe(current.kind))", line: line)
        }
        index += 1
    }

    private func describe(_ kind: JinjaLexer.Kind) -> String {
        switch kind {
        case let .text(text): "text \(text.prefix(20).debugDescription)"
        case .beginOutput: "'{{'"
        case .endOutput: "'}}'"
        case .beginStatement: "'{%'"
        case .endStatement: "'%}'"
        case let .name(name): "'\(name)'"
        case let .string(string): "string \(string.prefix(20).debugDescription)"
        case let .integer(value): "\(value)"
        case let .float(value): "\(value)"
        case let .symbol(symbol): "'\(symbol)'"
        case .end: "the end of the template"
        }
    }

    // MARK: Statements

    /// Nodes up to a statement named in `ends` (consumed up to its name; returned), or the template's end.
    private mutating func nodes(until ends: Set<String>) throws(JinjaError) -> ([JinjaNode], String?) {
        var nodes: [JinjaNode] = []
        while true {
            let token = next()
            switch token.kind {
            case let .text(text):
                nodes.append(.text(text))
            case .beginOutput:
                nodes.append(.output(try expression()))
                guard current.kind == .endOutput else {
                    throw JinjaError("expected '}}' but found \(describe(current.kind))", line: line)
                }
                index += 1
            case .beginStatement:
                let keywordLine = line
                let keyword = try expectName()
                if ends.contains(keyword) { return (nodes, keyword) }
                if let node = try statement(keyword, line: keywordLine) { nodes.append(contentsOf: node) }
            case .end:
                if !ends.isEmpty {
                    throw JinjaError("missing '{% \(ends.sorted().last!) %}' before the end of the template", line: token.line)
                }
                return (nodes, nil)
            default:
                throw JinjaError("unexpected \(describe(token.kind))", line: token.line)
            }
        }
    }

    private mutating func statement(_ keyword: String, line keywordLine: Int) throws(JinjaError) -> [JinjaNode]? {
        switch keyword {
        case "if":
            var branches: [(condition: JinjaExpression, body: [JinjaNode])] = []
            var condition = try expression()
            var otherwise: [JinjaNode] = []
            while true {
                try expectEndOfStatement()
                let (body, end) = try nodes(until: ["elif", "else", "endif"])
                branches.append((condition, body))
                if end == "elif" {
                    condition = try expression()
                    continue
                }
                if end == "else" {
                    try expectEndOfStatement()
                    (otherwise, _) = try nodes(until: ["endif"])
                }
                try expectEndOfStatement()
                return [.conditional(branches: branches, otherwise: otherwise)]
            }
        case "for":
            var targets = [try expectName()]
            while skip(symbol: ",") { targets.append(try expectName()) }
            guard skip(name: "in") else { throw JinjaError("expected 'in' in a for statement", line: line) }
            let iterable = try expression(allowConditional: false)
            let filter = skip(name: "if") ? try expression(allowConditional: false) : nil
            if skip(name: "recursive") { throw JinjaError("unsupported loop option 'recursive'", line: keywordLine) }
            try expectEndOfStatement()
            let (body, end) = try nodes(until: ["else", "endfor"])
            var otherwise: [JinjaNode] = []
            if end == "else" {
                try expectEndOfStatement()
                (otherwise, _) = try nodes(until: ["endfor"])
            }
            try expectEndOfStatement()
            return [.loop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise, line: keywordLine)]
        case "set":
            let first = try expectName()
            var target = JinjaAssignTarget.name(first)
            if skip(symbol: ".") {
                target = .attribute(first, try expectName())
            } else if isSymbol(",") {
                var names = [first]
                while skip(symbol: ",") { names.append(try expectName()) }
                target = .names(names)
            }
            if current.kind == .endStatement, case .name = target {
                try expectEndOfStatement()
                let (body, _) = try nodes(until: ["endset"])
                try expectEndOfStatement()
                return [.assignBlock(first, body: body)]
            }
            try expect(symbol: "=")
            let value = try expression()
            try expectEndOfStatement()
            return [.assign(target, value, line: keywordLine)]
        case "macro":
            let name = try expectName()
            try expect(symbol: "(")
            var parameters: [(name: String, defaultValue: JinjaExpression?)] = []
            while !skip(symbol: ")") {
                let parameter = try expectName()
                parameters.append((parameter, skip(symbol: "=") ? try expression() : nil))
                if !isSymbol(")") { try expect(symbol: ",") }
            }
            try expectEndOfStatement()
            let (body, _) = try nodes(until: ["endmacro"])
            try expectEndOfStatement()
            return [.macro(name: name, parameters: parameters, body: body)]
        case "break", "continue":
            try expectEndOfStatement()
            return [keyword == "break" ? .breakLoop(line: keywordLine) : .continueLoop(line: keywordLine)]
        case "generation":
            // transformers' marker of the assistant's own tokens: renders its body unchanged.
            try expectEndOfStatement()
            let (body, _) = try nodes(until: ["endgeneration"])
            try expectEndOfStatement()
            return body
        default:
            throw JinjaError("unsupported statement '\(keyword)'", line: keywordLine)
        }
    }

    // MARK: Expressions

    private static let comparisons: Set<String> = ["==", "!=", "<", "<=", ">", ">="]
    /// Names that end an argument of a test written without parentheses (`is divisibleby 3`).
    private static let keywords: Set<String> = ["and", "or", "not", "if", "else", "in", "is", "recursive"]

    mutating func expression(allowConditional: Bool = true) throws(JinjaError) -> JinjaExpression {
        let value = try or()
        guard allowConditional, skip(name: "if") else { return value }
        let condition = try or()
        let otherwise = skip(name: "else") ? try expression() : nil
        return .conditional(then: value, condition: condition, otherwise: otherwise)
    }

    private mutating func or() throws(JinjaError) -> JinjaExpression {
        var left = try and()
        while isName("or") {
            let at = line
            index += 1
            left = .binary("or", left, try and(), line: at)
        }
        return left
    }

    private mutating func and() throws(JinjaError) -> JinjaExpression {
        var left = try not()
        while isName("and") {
            let at = line
            index += 1
            left = .binary("and", left, try not(), line: at)
        }
        return left
    }

    private mutating func not() throws(JinjaError) -> JinjaExpression {
        if isName("not") {
            let at = line
            index += 1
            return .unary("not", try not(), line: at)
        }
        return try comparison()
    }

    private mutating func comparison() throws(JinjaError) -> JinjaExpression {
        let first = try additive()
        var result: JinjaExpression?
        var left = first
        while true {
            let at = line
            var op: String
            if case let .symbol(symbol) = current.kind, Self.comparisons.contains(symbol) {
                op = symbol
                index += 1
            } else if isName("in") {
                op = "in"
                index += 1
            } else if isName("not"), index + 1 < tokens.count, tokens[index + 1].kind == .name("in") {
                op = "not in"
                index += 2
            } else {
                break
            }
            let right = try additive()
            let link = JinjaExpression.binary(op, left, right, line: at)
            result = result.map { .binary("and", $0, link, line: at) } ?? link
            left = right
        }
        return result ?? first
    }

    private mutating func additive() throws(JinjaError) -> JinjaExpression {
        var left = try concatenation()
        while isSymbol("+") || isSymbol("-") {
            let at = line
            guard case let .symbol(op) = next().kind else { break }
            left = .binary(op, left, try concatenation(), line: at)
        }
        return left
    }

    private mutating func concatenation() throws(JinjaError) -> JinjaExpression {
        var left = try multiplicative()
        while isSymbol("~") {
            let at = line
            index += 1
            left = .binary("~", left, try multiplicative(), line: at)
        }
        return left
    }

    private mutating func multiplicative() throws(JinjaError) -> JinjaExpression {
        var left = try power()
        while isSymbol("*") || isSymbol("/") || isSymbol("//") || isSymbol("%") {
            let at = line
            guard case let .symbol(op) = next().kind else { break }
            left = .binary(op, left, try power(), line: at)
        }
        return left
    }

    private mutating func power() throws(JinjaError) -> JinjaExpression {
        var left = try unary()
        while isSymbol("**") {
            let at = line
            index += 1
            left = .binary("**", left, try unary(), line: at)
        }
        return left
    }

    /// Unary `-`/`+` bind tighter than filters: `-x|abs` is `(-x)|abs`, as in Jinja.
    private mutating func unary(withFilters: Bool = true) throws(JinjaError) -> JinjaExpression {
        var value: JinjaExpression
        if isSymbol("-") || isSymbol("+") {
            let at = line
            guard case let .symbol(op) = next().kind else { return try postfix(primary()) }
            value = .unary(op, try unary(withFilters: false), line: at)
        } else {
            value = try postfix(primary())
        }
        return withFilters ? try filtersAndTests(value) : value
    }

    private mutating func primary() throws(JinjaError) -> JinjaExpression {
        let token = next()
        switch token.kind {
        case let .name(name):
            switch name {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .variable(name, line: token.line)
            }
        case var .string(text):
            // Adjacent strings are joined, as in Python.
            while case let .string(more) = current.kind {
                text += more
                index += 1
            }
            return .literal(.string(text))
        case let .integer(value): return .literal(.integer(value))
        case let .float(value): return .literal(.float(value))
        case .symbol("("):
            let inner = try expression()
            if isSymbol(",") { throw JinjaError("unsupported tuple expression", line: token.line) }
            try expect(symbol: ")")
            return inner
        case .symbol("["):
            var items: [JinjaExpression] = []
            while !skip(symbol: "]") {
                items.append(try expression())
                if !isSymbol("]") { try expect(symbol: ",") }
            }
            return .list(items)
        case .symbol("{"):
            var pairs: [(key: JinjaExpression, value: JinjaExpression)] = []
            while !skip(symbol: "}") {
                let key = try expression()
                try expect(symbol: ":")
                pairs.append((key, try expression()))
                if !isSymbol("}") { try expect(symbol: ",") }
            }
            return .dictionary(pairs)
        default:
            throw JinjaError("expected a value but found \(describe(token.kind))", line: token.line)
        }
    }

    /// `.name`, `[index]`, `[a:b:c]` and calls after a value.
    private mutating func postfix(_ base: JinjaExpression) throws(JinjaError) -> JinjaExpression {
        var value = base
        while true {
            let at = line
            if skip(symbol: ".") {
                if case let .integer(number) = current.kind {
                    index += 1
                    value = .subscript(value, .literal(.integer(number)), line: at)
                } else {
                    value = .attribute(value, try expectName(), line: at)
                }
            } else if skip(symbol: "[") {
                var parts: [JinjaExpression?] = [nil]
                var isSlice = false
                while !skip(symbol: "]") {
                    if skip(symbol: ":") {
                        isSlice = true
                        parts.append(nil)
                        guard parts.count <= 3 else { throw JinjaError("a slice has at most three parts", line: at) }
                    } else {
                        guard parts[parts.count - 1] == nil else { throw JinjaError("expected ']'", line: line) }
                        parts[parts.count - 1] = try expression()
                    }
                }
                if isSlice {
                    value = .slice(value, start: parts[0], stop: parts.count > 1 ? parts[1] : nil,
                                   step: parts.count > 2 ? parts[2] : nil, line: at)
                } else {
                    guard let key = parts[0] else { throw JinjaError("empty subscript", line: at) }
                    value = .subscript(value, key, line: at)
                }
            } else if isSymbol("(") {
                value = .call(value, try arguments(), line: at)
            } else {
                return value
            }
        }
    }

    private mutating func arguments() throws(JinjaError) -> JinjaArguments {
        try expect(symbol: "(")
        var arguments = JinjaArguments()
        while !skip(symbol: ")") {
            if case let .name(name) = current.kind, index + 1 < tokens.count, tokens[index + 1].kind == .symbol("=") {
                index += 2
                arguments.keyword.append((name, try expression()))
            } else {
                guard arguments.keyword.isEmpty else { throw JinjaError("positional argument after a keyword argument", line: line) }
                arguments.positional.append(try expression())
            }
            if !isSymbol(")") { try expect(symbol: ",") }
        }
        return arguments
    }

    /// `| filter(args)` and `is [not] test args` after a value.
    private mutating func filtersAndTests(_ base: JinjaExpression) throws(JinjaError) -> JinjaExpression {
        var value = base
        while true {
            let at = line
            if skip(symbol: "|") {
                let name = try expectName()
                let arguments = isSymbol("(") ? try self.arguments() : JinjaArguments()
                value = try postfix(.filter(value, name, arguments, line: at))
            } else if skip(name: "is") {
                let negated = skip(name: "not")
                var name = try expectName()
                if name == "none" || name == "true" || name == "false" { name = name.lowercased() }
                var arguments = JinjaArguments()
                if isSymbol("(") {
                    arguments = try self.arguments()
                } else if startsTestArgument {
                    arguments.positional = [try postfix(primary())]
                }
                value = .test(value, name, negated: negated, arguments, line: at)
            } else {
                return value
            }
        }
    }

    /// Whether the token after a test's name is its one argument without parentheses.
    private var startsTestArgument: Bool {
        switch current.kind {
        case let .name(name): !Self.keywords.contains(name)
        case .string, .integer, .float: true
        case .symbol("["), .symbol("{"): true
        default: false
        }
    }
}
