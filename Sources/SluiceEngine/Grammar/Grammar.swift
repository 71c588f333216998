/// A set of bytes (256 bits).
struct ByteSet: Hashable, Sendable {
    private var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    init() {}

    init(_ bytes: some Sequence<UInt8>) {
        for byte in bytes { insert(byte) }
    }

    init(ranges: [ClosedRange<UInt8>]) {
        for range in ranges { for byte in range { insert(byte) } }
    }

    static func == (a: ByteSet, b: ByteSet) -> Bool { a.words == b.words }

    func hash(into hasher: inout Hasher) {
        hasher.combine(words.0); hasher.combine(words.1); hasher.combine(words.2); hasher.combine(words.3)
    }

    @inline(__always)
    func contains(_ byte: UInt8) -> Bool {
        let bit = UInt64(1) << UInt64(byte & 63)
        switch byte >> 6 {
        case 0: return words.0 & bit != 0
        case 1: return words.1 & bit != 0
        case 2: return words.2 & bit != 0
        default: return words.3 & bit != 0
        }
    }

    mutating func insert(_ byte: UInt8) {
        let bit = UInt64(1) << UInt64(byte & 63)
        switch byte >> 6 {
        case 0: words.0 |= bit
        case 1: words.1 |= bit
        case 2: words.2 |= bit
        default: words.3 |= bit
        }
    }

    func union(_ other: ByteSet) -> ByteSet {
        var result = self
        result.words = (words.0 | other.words.0, words.1 | other.words.1, words.2 | other.words.2, words.3 | other.words.3)
        return result
    }

    func subtracting(_ other: ByteSet) -> ByteSet {
        var result = self
        result.words = (words.0 & ~other.words.0, words.1 & ~other.words.1, words.2 & ~other.words.2, words.3 & ~other.words.3)
        return result
    }

    var isEmpty: Bool { words == (0, 0, 0, 0) }
}

/// A context-free grammar over bytes, in the shape llama.cpp's GBNF grammars have: rules
/// of alternatives, each a sequence of byte classes and references to rules. Built by
/// `GrammarBuilder`; recognized by `GrammarMachine`. No rule may be left-recursive
/// (the builders never make one: every recursion passes a byte first).
struct Grammar: Sendable {
    enum Element: Sendable {
        /// One byte from the set.
        case bytes(ByteSet)
        /// A whole match of the rule.
        case rule(Int)
        /// The end of an alternative.
        case end
    }

    /// Every alternative of every rule, each followed by `.end`.
    var elements: [Element] = []
    /// For each rule, where its alternatives start in `elements`.
    var alternatives: [[Int]] = []
    var root = 0
}

/// A symbol of a rule being built.
enum GrammarSymbol {
    case bytes(ByteSet)
    case literal([UInt8])
    case rule(Int)

    static func byte(_ byte: UInt8) -> GrammarSymbol { .bytes(ByteSet([byte])) }
    static func text(_ text: String) -> GrammarSymbol { .literal(Array(text.utf8)) }
}

/// Builds a `Grammar` rule by rule, with helpers for repetition.
struct GrammarBuilder {
    private var definitions: [[[GrammarSymbol]]?] = []
    /// Rules already made for a repeated symbol set, to share them.
    private var memo: [String: Int] = [:]

    /// A new rule, to be defined later (so rules can refer to each other).
    mutating func declare() -> Int {
        definitions.append(nil)
        return definitions.count - 1
    }

    mutating func define(_ rule: Int, _ alternatives: [[GrammarSymbol]]) {
        definitions[rule] = alternatives
    }

    /// A new rule with these alternatives.
    mutating func rule(_ alternatives: [[GrammarSymbol]]) -> Int {
        let id = declare()
        define(id, alternatives)
        return id
    }

    /// A shared rule, made once per `key`.
    mutating func shared(_ key: String, _ make: (inout GrammarBuilder) -> [[GrammarSymbol]]) -> Int {
        if let id = memo[key] { return id }
        let id = declare()
        memo[key] = id
        define(id, make(&self))
        return id
    }

    /// `symbols` zero or one time.
    mutating func optional(_ symbols: [GrammarSymbol]) -> GrammarSymbol {
        .rule(rule([[], symbols]))
    }

    /// `symbols` zero or more times.
    mutating func star(_ symbols: [GrammarSymbol]) -> GrammarSymbol {
        let id = declare()
        define(id, [[], symbols + [.rule(id)]])
        return .rule(id)
    }

    /// `symbols` from `minimum` to `maximum` times (nil: unbounded).
    mutating func repeated(_ symbols: [GrammarSymbol], minimum: Int, maximum: Int?) -> [GrammarSymbol] {
        var sequence: [GrammarSymbol] = []
        for _ in 0..<minimum { sequence += symbols }
        guard let maximum else { return sequence + [star(symbols)] }
        guard maximum > minimum else { return sequence }
        // Nested optionals: (x (x (x)?)?)? for up to `maximum - minimum` more.
        var tail = rule([[], symbols])
        for _ in 1..<(maximum - minimum) { tail = rule([[], symbols + [.rule(tail)]]) }
        return sequence + [.rule(tail)]
    }

    /// The grammar, rooted at `root`.
    func build(root: Int) -> Grammar {
        var grammar = Grammar()
        grammar.root = root
        for definition in definitions {
            var starts: [Int] = []
            for alternative in definition ?? [] {
                starts.append(grammar.elements.count)
                for symbol in alternative {
                    switch symbol {
                    case let .bytes(set): grammar.elements.append(.bytes(set))
                    case let .literal(bytes): grammar.elements += bytes.map { .bytes(ByteSet([$0])) }
                    case let .rule(id): grammar.elements.append(.rule(id))
                    }
                }
                grammar.elements.append(.end)
            }
            grammar.alternatives.append(starts)
        }
        return grammar
    }
}
