import SluiceCore

/// Translates a regular expression (the subset JSON Schema `pattern`s and vLLM's
/// `guided_regex` use) into grammar rules that match exactly the strings it fully matches.
///
/// Supported: literals, `.`, classes (`[a-z]`, `[^...]`, `\d \w \s` and their negations),
/// groups (`(...)`, `(?:...)`), alternation, `* + ? {n} {n,} {n,m}` (lazy forms as greedy),
/// and `^`/`$` at the ends. Anything else (backreferences, lookaround, word boundaries)
/// is an error naming it. In a JSON string (`insideJSONString`) characters are produced as
/// JSON writes them: `"` and `\` escaped, classes never produce control characters.
struct RegexGrammar {
    struct Failure: Error { var message: String }

    private var scalars: [Unicode.Scalar]
    private var index = 0
    private let insideJSONString: Bool

    /// A rule matching `pattern`, added to `builder`.
    static func compile(_ pattern: String, insideJSONString: Bool, into builder: inout GrammarBuilder) throws(Failure) -> GrammarSymbol {
        var parser = RegexGrammar(scalars: Array(pattern.unicodeScalars), insideJSONString: insideJSONString)
        if parser.peek == "^" { parser.index += 1 }
        let symbols = try parser.alternation(&builder)
        guard parser.index == parser.scalars.count else {
            throw Failure(message: "unbalanced ')' at offset \(parser.index)")
        }
        return symbols
    }

    private init(scalars: [Unicode.Scalar], insideJSONString: Bool) {
        self.scalars = scalars
        self.insideJSONString = insideJSONString
    }

    private var peek: Unicode.Scalar? { index < scalars.count ? scalars[index] : nil }

    private mutating func alternation(_ builder: inout GrammarBuilder) throws(Failure) -> GrammarSymbol {
        var alternatives: [[GrammarSymbol]] = [try concatenation(&builder)]
        while peek == "|" {
            index += 1
            alternatives.append(try concatenation(&builder))
        }
        return .rule(builder.rule(alternatives))
    }

    private mutating func concatenation(_ builder: inout GrammarBuilder) throws(Failure) -> [GrammarSymbol] {
        var sequence: [GrammarSymbol] = []
        while let c = peek, c != "|", c != ")" {
            if c == "$" && index == scalars.count - 1 { index += 1; break }
            var atom = try self.atom(&builder)
            if let (minimum, maximum) = try quantifier() {
                atom = builder.repeated(atom, minimum: minimum, maximum: maximum)
            }
            sequence += atom
        }
        return sequence
    }

    private mutating func quantifier() throws(Failure) -> (Int, Int?)? {
        guard let c = peek else { return nil }
        var result: (Int, Int?)
        switch c {
        case "*": result = (0, nil); index += 1
        case "+": result = (1, nil); index += 1
        case "?": result = (0, 1); index += 1
        case "{":
            let start = index
            index += 1
            let low = number()
            var high: Int? = low
            if peek == "," {
                index += 1
                high = number()
            }
            guard peek == "}", let low else {
                index = start
                throw Failure(message: "malformed repetition at offset \(start)")
            }
            index += 1
            if let h = high, h < low { throw Failure(message: "repetition {\(low),\(h)} has its maximum below its minimum") }
            guard max(low, high ?? low) <= 1000 else { throw Failure(message: "repetition counts above 1000 are not supported") }
            result = (low, high)
        default: return nil
        }
        if peek == "?" { index += 1 }  // lazy: the same language
        if peek == "+" { throw Failure(message: "possessive quantifiers are not supported") }
        return result
    }

    private mutating func number() -> Int? {
        var value: Int?
        while let c = peek, let digit = Int(String(c)), c.isASCII {
            value = min((value ?? 0) * 10 + digit, 100_000)
            index += 1
        }
        return value
    }

    private mutating func atom(_ builder: inout GrammarBuilder) throws(Failure) -> [GrammarSymbol] {
        guard let c = peek else { throw Failure(message: "unexpected end of pattern") }
        index += 1
        switch c {
        case "(":
            if peek == "?" {
                guard index + 1 < scalars.count, scalars[index + 1] == ":" else {
                    throw Failure(message: "group syntax '(?' (lookaround, named groups) is not supported")
                }
                index += 2
            }
            let inner = try alternation(&builder)
            guard peek == ")" else { throw Failure(message: "unclosed '(' in pattern") }
            index += 1
            return [inner]
        case "[": return try characterClass(&builder)
        case ".":
            var set = CharacterSet()
            set.ascii = ByteSet(ranges: [0...127]).subtracting(ByteSet([10]))
            set.nonASCII = true
            return set.symbols(&builder, insideJSONString: insideJSONString)
        case "\\": return try escape(&builder, inClass: false).symbols(&builder, insideJSONString: insideJSONString)
        case "^": throw Failure(message: "'^' is supported only at the start of a pattern")
        case "$": throw Failure(message: "'$' is supported only at the end of a pattern")
        case "*", "+", "?", "{": throw Failure(message: "nothing to repeat at offset \(index - 1)")
        default: return [literal(c)]
        }
    }

    private func literal(_ c: Unicode.Scalar) -> GrammarSymbol {
        insideJSONString ? .literal(Array(JSON.string(String(c)).serialized.utf8.dropFirst().dropLast()))
            : .literal(Array(String(c).utf8))
    }

    private mutating func characterClass(_ builder: inout GrammarBuilder) throws(Failure) -> [GrammarSymbol] {
        var negated = false
        if peek == "^" { negated = true; index += 1 }
        var set = CharacterSet()
        var first = true
        while let c = peek, c != "]" || first {
            first = false
            index += 1
            var low: Unicode.Scalar
            if c == "\\" {
                let escaped = try escape(&builder, inClass: true)
                guard let single = escaped.single else { set.formUnion(escaped); continue }
                low = single
            } else {
                low = c
            }
            if peek == "-", index + 1 < scalars.count, scalars[index + 1] != "]" {
                index += 1
                var high = scalars[index]
                index += 1
                if high == "\\" {
                    guard let single = try escape(&builder, inClass: true).single else {
                        throw Failure(message: "a class range cannot end in a class escape")
                    }
                    high = single
                }
                guard low.value <= high.value else { throw Failure(message: "class range out of order") }
                guard high.isASCII else { throw Failure(message: "character classes with non-ASCII ranges are not supported") }
                for v in low.value...high.value { set.ascii.insert(UInt8(v)) }
            } else if low.isASCII {
                set.ascii.insert(UInt8(low.value))
            } else {
                throw Failure(message: "character classes with non-ASCII characters are not supported")
            }
        }
        guard peek == "]" else { throw Failure(message: "unclosed '[' in pattern") }
        index += 1
        if negated {
            set.ascii = ByteSet(ranges: [0...127]).subtracting(set.ascii)
            set.nonASCII = !set.nonASCII
        }
        return set.symbols(&builder, insideJSONString: insideJSONString)
    }

    /// After a backslash.
    private mutating func escape(_ builder: inout GrammarBuilder, inClass: Bool) throws(Failure) -> CharacterSet {
        guard let c = peek else { throw Failure(message: "pattern ends with a backslash") }
        index += 1
        let digits = ByteSet(ranges: [48...57])
        let word = digits.union(ByteSet(ranges: [65...90, 97...122])).union(ByteSet([95]))
        let space = ByteSet([32, 9, 10, 11, 12, 13])
        var set = CharacterSet()
        switch c {
        case "d": set.ascii = digits
        case "w": set.ascii = word
        case "s": set.ascii = space
        case "D": set.ascii = ByteSet(ranges: [0...127]).subtracting(digits); set.nonASCII = true
        case "W": set.ascii = ByteSet(ranges: [0...127]).subtracting(word); set.nonASCII = true
        case "S": set.ascii = ByteSet(ranges: [0...127]).subtracting(space); set.nonASCII = true
        case "n": set.single = "\n"
        case "t": set.single = "\t"
        case "r": set.single = "\r"
        case "f": set.single = "\u{0C}"
        case "v": set.single = "\u{0B}"
        case "u":
            guard index + 4 <= scalars.count, let value = UInt32(String(String.UnicodeScalarView(scalars[index..<(index + 4)])), radix: 16),
                  let scalar = Unicode.Scalar(value) else { throw Failure(message: "malformed \\u escape") }
            index += 4
            set.single = scalar
        case "b" where inClass: set.single = "\u{08}"
        case "b", "B": throw Failure(message: "word boundaries (\\b, \\B) are not supported")
        case "1"..."9": throw Failure(message: "backreferences are not supported")
        default:
            guard !c.properties.isAlphabetic else { throw Failure(message: "unknown escape '\\\(c)'") }
            set.single = c
        }
        if let single = set.single, single.isASCII { set.ascii.insert(UInt8(single.value)) }
        return set
    }

    /// What a class or escape matches: ASCII bytes, and possibly every non-ASCII character.
    private struct CharacterSet {
        var ascii = ByteSet()
        var nonASCII = false
        /// Set when the escape stands for one character.
        var single: Unicode.Scalar?

        mutating func formUnion(_ other: CharacterSet) {
            ascii = ascii.union(other.ascii)
            nonASCII = nonASCII || other.nonASCII
        }

        func symbols(_ builder: inout GrammarBuilder, insideJSONString: Bool) -> [GrammarSymbol] {
            if let single {
                return [insideJSONString ? .literal(Array(JSON.string(String(single)).serialized.utf8.dropFirst().dropLast()))
                                         : .literal(Array(String(single).utf8))]
            }
            var bytes = ascii
            if insideJSONString {
                // Never produce what JSON must escape: control characters, '"' and '\' (a literal
                // quote or backslash is still produced, escaped).
                bytes = bytes.subtracting(ByteSet(ranges: [0...31])).subtracting(ByteSet([34, 92]))
            }
            var alternatives: [[GrammarSymbol]] = []
            if !bytes.isEmpty { alternatives.append([.bytes(bytes)]) }
            if nonASCII { alternatives.append([JSONGrammar.utf8Multibyte(&builder)]) }
            if alternatives.isEmpty { alternatives.append([.bytes(ByteSet())]) }  // matches nothing
            return alternatives.count == 1 && alternatives[0].count == 1 ? alternatives[0] : [.rule(builder.rule(alternatives))]
        }
    }
}
