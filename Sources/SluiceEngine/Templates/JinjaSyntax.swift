/// A constant written in a template.
enum JinjaLiteral: Sendable {
    case none
    case bool(Bool)
    case integer(Int)
    case float(Double)
    case string(String)
}

/// An expression of the chat-template Jinja subset.
indirect enum JinjaExpression: Sendable {
    case literal(JinjaLiteral)
    case variable(String, line: Int)
    case list([JinjaExpression])
    case dictionary([(key: JinjaExpression, value: JinjaExpression)])
    case attribute(JinjaExpression, String, line: Int)
    case `subscript`(JinjaExpression, JinjaExpression, line: Int)
    case slice(JinjaExpression, start: JinjaExpression?, stop: JinjaExpression?, step: JinjaExpression?, line: Int)
    case call(JinjaExpression, JinjaArguments, line: Int)
    case filter(JinjaExpression, String, JinjaArguments, line: Int)
    case test(JinjaExpression, String, negated: Bool, JinjaArguments, line: Int)
    /// `not`, unary `-` and `+`.
    case unary(String, JinjaExpression, line: Int)
    /// Arithmetic, `~`, comparisons, `in`/`not in`, `and`/`or`.
    case binary(String, JinjaExpression, JinjaExpression, line: Int)
    /// `then if condition else otherwise` (no `else`: undefined).
    case conditional(then: JinjaExpression, condition: JinjaExpression, otherwise: JinjaExpression?)
}

/// Arguments of a call, filter or test.
struct JinjaArguments: Sendable {
    var positional: [JinjaExpression] = []
    var keyword: [(name: String, value: JinjaExpression)] = []
}

/// What `{% set %}` assigns to.
enum JinjaAssignTarget: Sendable {
    case name(String)
    /// `set a, b = pair`.
    case names([String])
    /// `set ns.field = value` (a namespace's field).
    case attribute(String, String)
}

/// A statement or text of the template.
indirect enum JinjaNode: Sendable {
    case text(String)
    case output(JinjaExpression)
    case conditional(branches: [(condition: JinjaExpression, body: [JinjaNode])], otherwise: [JinjaNode])
    case loop(targets: [String], iterable: JinjaExpression, filter: JinjaExpression?, body: [JinjaNode],
              otherwise: [JinjaNode], line: Int)
    case assign(JinjaAssignTarget, JinjaExpression, line: Int)
    case assignBlock(String, body: [JinjaNode])
    case macro(name: String, parameters: [(name: String, defaultValue: JinjaExpression?)], body: [JinjaNode])
    case breakLoop(line: Int)
    case continueLoop(line: Int)
}
