import Foundation
import SluiceCore

/// A compiled chat template: the subset of Jinja that Hugging Face chat templates use,
/// rendered as transformers renders them (`trim_blocks`, `lstrip_blocks`, the loop
/// controls, `raise_exception` and `strftime_now`). Anything outside the subset — a
/// statement, filter, test or method Sluice does not implement — is refused by name
/// when the template is compiled or rendered, never skipped.
public struct JinjaTemplate: Sendable {
    let nodes: [JinjaNode]

    /// Compiles `source`; throws naming the first construct it cannot parse.
    public init(_ source: String) throws(JinjaError) {
        nodes = try JinjaParser.parse(source)
    }

    /// The template's text for `variables` (JSON values: strings, numbers, lists, objects).
    /// `now` is the time `strftime_now` formats (local time, as Python's `datetime.now()`).
    public func render(_ variables: [String: JSON], now: Date = Date()) throws(JinjaError) -> String {
        var renderer = JinjaRenderer(now: now)
        for (name, value) in variables { renderer.scopes[0][name] = JinjaValue(json: value) }
        var output = ""
        _ = try renderer.render(nodes, into: &output)
        return output
    }
}

extension JinjaValue {
    init(json: JSON) {
        switch json {
        case .null: self = .none
        case let .bool(value): self = .bool(value)
        case let .number(text):
            if let integer = Int(text) { self = .integer(integer) } else { self = .float(Double(text) ?? .nan) }
        case let .string(value): self = .string(value)
        case let .array(items): self = .list(items.map(JinjaValue.init(json:)))
        case let .object(pairs): self = .dictionary(JinjaDictionary(pairs.map { ($0.key, JinjaValue(json: $0.value)) }))
        }
    }
}

/// Walks the syntax tree. Loop bodies and macros get their own scope (a `set` inside
/// them is not seen after them, as in Jinja); `if` bodies share the enclosing one.
struct JinjaRenderer {
    var scopes: [[String: JinjaValue]] = [[:]]
    let now: Date

    init(now: Date) { self.now = now }

    enum Flow { case normal, breakLoop, continueLoop }

    mutating func render(_ nodes: [JinjaNode], into output: inout String) throws(JinjaError) -> Flow {
        for node in nodes {
            switch node {
            case let .text(text):
                output += text
            case let .output(expression):
                output += try evaluate(expression).text
            case let .conditional(branches, otherwise):
                var chosen = otherwise
                for branch in branches where try evaluate(branch.condition).isTruthy {
                    chosen = branch.body
                    break
                }
                let flow = try render(chosen, into: &output)
                if flow != .normal { return flow }
            case let .loop(targets, iterable, filter, body, otherwise, line):
                try loop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise,
                         line: line, into: &output)
            case let .assign(target, expression, line):
                let value = try evaluate(expression)
                try assign(value, to: target, line: line)
            case let .assignBlock(name, body):
                var captured = ""
                _ = try render(body, into: &captured)
                scopes[scopes.count - 1][name] = .string(captured)
            case let .macro(name, parameters, body):
                scopes[scopes.count - 1][name] = .function(makeMacro(name: name, parameters: parameters, body: body))
            case let .breakLoop(line), let .continueLoop(line):
                guard scopes.count > 1 else {
                    throw JinjaError("'\(node.isBreak ? "break" : "continue")' outside a loop", line: line)
                }
                return node.isBreak ? .breakLoop : .continueLoop
            }
        }
        return .normal
    }

    private mutating func loop(targets: [String], iterable: JinjaExpression, filter: JinjaExpression?, body: [JinjaNode],
                               otherwise: [JinjaNode], line: Int, into output: inout String) throws(JinjaError) {
        var items = try evaluate(iterable).iterated(line: line)
        if let filter {
            var kept: [JinjaValue] = []
            for item in items {
                scopes.append([:])
                try bind(item, to: targets, line: line)
                let keep = try evaluate(filter).isTruthy
                scopes.removeLast()
                if keep { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty {
            _ = try render(otherwise, into: &output)
            return
        }
        for (position, item) in items.enumerated() {
            var loop = JinjaDictionary()
            loop["index"] = .integer(position + 1)
            loop["index0"] = .integer(position)
            loop["revindex"] = .integer(items.count - position)
            loop["revindex0"] = .integer(items.count - position - 1)
            loop["first"] = .bool(position == 0)
            loop["last"] = .bool(position == items.count - 1)
            loop["length"] = .integer(items.count)
            loop["previtem"] = position > 0 ? items[position - 1] : .undefined("loop.previtem")
            loop["nextitem"] = position + 1 < items.count ? items[position + 1] : .undefined("loop.nextitem")
            scopes.append(["loop": .dictionary(loop)])
            try bind(item, to: targets, line: line)
            let flow = try render(body, into: &output)
            scopes.removeLast()
            if flow == .breakLoop { break }
        }
    }

    private mutating func bind(_ item: JinjaValue, to targets: [String], line: Int) throws(JinjaError) {
        if targets.count == 1 {
            scopes[scopes.count - 1][targets[0]] = item
            return
        }
        let parts = try item.iterated(line: line)
        guard parts.count == targets.count else {
            throw JinjaError("cannot unpack \(parts.count) values into \(targets.count) names", line: line)
        }
        for (name, part) in zip(targets, parts) { scopes[scopes.count - 1][name] = part }
    }

    private mutating func assign(_ value: JinjaValue, to target: JinjaAssignTarget, line: Int) throws(JinjaError) {
        switch target {
        case let .name(name):
            scopes[scopes.count - 1][name] = value
        case let .names(names):
            try bind(value, to: names, line: line)
        case let .attribute(object, field):
            guard case let .namespace(namespace) = lookup(object) else {
                throw JinjaError("cannot set '\(object).\(field)': '\(object)' is not a namespace", line: line)
            }
            namespace.fields[field] = value
        }
    }

    func lookup(_ name: String) -> JinjaValue {
        for scope in scopes.reversed() {
            if let value = scope[name] { return value }
        }
        return JinjaBuiltins.global(name, now: now) ?? .undefined("'\(name)'")
    }

    private func makeMacro(name: String, parameters: [(name: String, defaultValue: JinjaExpression?)],
                           body: [JinjaNode]) -> JinjaFunction {
        let outer = scopes[0]
        let now = self.now
        let depth = MacroDepth()
        // A local function, so that the macro's body can call the macro itself (recursion).
        func call(_ arguments: JinjaCallArguments) throws(JinjaError) -> JinjaValue {
            guard depth.value < 64 else { throw JinjaError("macro '\(name)' recurses too deeply", line: arguments.line) }
            depth.value += 1
            defer { depth.value -= 1 }
            var renderer = JinjaRenderer(now: now)
            renderer.scopes = [outer, [:]]
            renderer.scopes[0][name] = .function(JinjaFunction(name, call))
            if arguments.positional.count > parameters.count {
                throw JinjaError("macro '\(name)' takes \(parameters.count) arguments, got \(arguments.positional.count)",
                                 line: arguments.line)
            }
            for (index, parameter) in parameters.enumerated() {
                var value = arguments.value(index, parameter.name)
                if value == nil, let defaultValue = parameter.defaultValue { value = try renderer.evaluate(defaultValue) }
                renderer.scopes[1][parameter.name] = value ?? .undefined("'\(parameter.name)'")
            }
            if let unknown = arguments.keyword.first(where: { keyword in !parameters.contains { $0.name == keyword.name } }) {
                throw JinjaError("macro '\(name)' has no argument '\(unknown.name)'", line: arguments.line)
            }
            var output = ""
            _ = try renderer.render(body, into: &output)
            return .string(output)
        }
        return JinjaFunction(name, call)
    }

    // MARK: Expressions

    mutating func evaluate(_ expression: JinjaExpression) throws(JinjaError) -> JinjaValue {
        switch expression {
        case let .literal(literal):
            return JinjaValue(literal)
        case let .variable(name, _):
            return lookup(name)
        case let .list(items):
            var values: [JinjaValue] = []
            for item in items { values.append(try evaluate(item)) }
            return .list(values)
        case let .dictionary(pairs):
            var dictionary = JinjaDictionary()
            for pair in pairs {
                guard case let .string(key) = try evaluate(pair.key) else {
                    throw JinjaError("dictionary keys must be strings", line: 0)
                }
                dictionary[key] = try evaluate(pair.value)
            }
            return .dictionary(dictionary)
        case let .attribute(base, name, line):
            return try JinjaBuiltins.member(of: try evaluate(base), named: name, line: line)
        case let .subscript(base, key, line):
            return try JinjaBuiltins.item(of: try evaluate(base), key: try evaluate(key), line: line)
        case let .slice(base, start, stop, step, line):
            let value = try evaluate(base)
            return try JinjaBuiltins.slice(value, start: try start.map { e throws(JinjaError) in try evaluate(e) },
                                           stop: try stop.map { e throws(JinjaError) in try evaluate(e) },
                                           step: try step.map { e throws(JinjaError) in try evaluate(e) }, line: line)
        case let .call(callee, arguments, line):
            let function = try evaluate(callee)
            guard case let .function(body) = function else {
                let name = if case let .variable(name, _) = callee { name } else if case let .attribute(_, name, _) = callee { name } else { "value" }
                if case .undefined = function { throw JinjaError("unsupported function or method '\(name)'", line: line) }
                throw JinjaError("'\(name)' (\(function.typeName)) is not callable", line: line)
            }
            return try body.body(try evaluate(arguments, function: body.name, line: line))
        case let .filter(base, name, arguments, line):
            let value = try evaluate(base)
            return try JinjaBuiltins.filter(name, value, try evaluate(arguments, function: "filter '\(name)'", line: line),
                                            renderer: &self)
        case let .test(base, name, negated, arguments, line):
            let value = try evaluate(base)
            let result = try JinjaBuiltins.test(name, value, try evaluate(arguments, function: "test '\(name)'", line: line))
            return .bool(result != negated)
        case let .unary(op, operand, line):
            let value = try evaluate(operand)
            switch (op, value) {
            case ("not", _): return .bool(!value.isTruthy)
            case ("-", .integer(let number)):
                guard number != .min else { throw JinjaError("integer overflow", line: line) }
                return .integer(-number)
            case ("-", .float(let number)): return .float(-number)
            case ("+", .integer), ("+", .float): return value
            default: throw JinjaError("unary '\(op)' cannot apply to \(value.typeName)", line: line)
            }
        case let .binary(op, left, right, line):
            let a = try evaluate(left)
            switch op {
            case "and": return a.isTruthy ? try evaluate(right) : a
            case "or": return a.isTruthy ? a : try evaluate(right)
            default: return try JinjaBuiltins.binary(op, a, try evaluate(right), line: line)
            }
        case let .conditional(then, condition, otherwise):
            if try evaluate(condition).isTruthy { return try evaluate(then) }
            return try otherwise.map { e throws(JinjaError) in try evaluate(e) } ?? .undefined("the missing else branch")
        }
    }

    private mutating func evaluate(_ arguments: JinjaArguments, function: String, line: Int) throws(JinjaError) -> JinjaCallArguments {
        var positional: [JinjaValue] = []
        for argument in arguments.positional { positional.append(try evaluate(argument)) }
        var keyword: [(name: String, value: JinjaValue)] = []
        for argument in arguments.keyword { keyword.append((argument.name, try evaluate(argument.value))) }
        return JinjaCallArguments(positional: positional, keyword: keyword, function: function, line: line)
    }
}

/// How deeply a macro is calling itself, to refuse runaway recursion with an error instead of a crash.
private final class MacroDepth {
    var value = 0
}

private extension JinjaNode {
    var isBreak: Bool {
        if case .breakLoop = self { return true }
        return false
    }
}
