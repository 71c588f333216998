/// Splits a Jinja template into text and tag tokens, applying the whitespace rules
/// transformers renders chat templates with (`trim_blocks` and `lstrip_blocks` on,
/// `{%-`/`-%}` strip markers), then the tags' contents into expression tokens.
struct JinjaLexer {
    enum Kind: Equatable {
        case text(String)
        /// `{{`: an expression to print, until `.endOutput`.
        case beginOutput
        case endOutput
        /// `{%`: a statement, until `.endStatement`.
        case beginStatement
        case endStatement
        case name(String)
        case string(String)
        case integer(Int)
        case float(Double)
        /// Punctuation and operators: `( ) [ ] { } . , : | ~ + - * / // % ** = == != < <= > >=`.
        case symbol(String)
        case end
    }

    struct Token {
        var kind: Kind
        var line: Int
    }

    /// Tokens of `source`; throws naming the line of an unterminated tag or string.
    static func tokenize(_ source: String) throws(JinjaError) -> [Token] {
        var lexer = JinjaLexer(source: Array(source.unicodeScalars))
        try lexer.run()
        return lexer.tokens
    }

    private let source: [Unicode.Scalar]
    private var position = 0
    private var line = 1
    private var tokens: [Token] = []
    /// The text since the last tag, not yet emitted (a following tag may strip its end).
    private var pendingText: [Unicode.Scalar] = []
    private var pendingLine = 1

    private init(source: [Unicode.Scalar]) { self.source = source }

    private func peek(_ offset: Int = 0) -> Unicode.Scalar? {
        position + offset < source.count ? source[position + offset] : nil
    }

    private func starts(with text: String, at index: Int) -> Bool {
        var i = index
        for scalar in text.unicodeScalars {
            guard i < source.count, source[i] == scalar else { return false }
            i += 1
        }
        return true
    }

    private mutating func advance() {
        if source[position] == "\n" { line += 1 }
        position += 1
    }

    private mutating func run() throws(JinjaError) {
        /// Set after a tag that removes the whitespace (`-%}`) or first newline (trim_blocks) after it.
        var stripNextAll = false
        var trimNextNewline = false
        while position < source.count {
            let c = source[position]
            if c == "{", let next = peek(1), next == "{" || next == "%" || next == "#" {
                let tagLine = line
                var modifier: Unicode.Scalar? = peek(2)
                if modifier != "-" && modifier != "+" { modifier = nil }
                let isBlock = next != "{"
                // Leading whitespace control: `{%-` strips all, lstrip_blocks strips the line's indentation.
                if modifier == "-" {
                    while let last = pendingText.last, last.properties.isWhitespace { pendingText.removeLast() }
                } else if isBlock && modifier != "+" {
                    stripIndentation()
                }
                flushText()
                position += modifier == nil ? 2 : 3
                if next == "#" {
                    let (stripAfter, closed) = skipComment()
                    guard closed else { throw JinjaError("unterminated comment", line: tagLine) }
                    stripNextAll = stripAfter
                    trimNextNewline = !stripAfter
                } else {
                    tokens.append(Token(kind: next == "{" ? .beginOutput : .beginStatement, line: tagLine))
                    let stripAfter = try tagContents(closing: next == "{" ? "}" : "%", openedAt: tagLine)
                    tokens.append(Token(kind: next == "{" ? .endOutput : .endStatement, line: line))
                    stripNextAll = stripAfter
                    trimNextNewline = isBlock && !stripAfter
                }
                continue
            }
            if stripNextAll {
                if c.properties.isWhitespace { advance(); continue }
                stripNextAll = false
            }
            if trimNextNewline {
                trimNextNewline = false
                if c == "\n" { advance(); continue }
                if c == "\r", peek(1) == "\n" { advance(); advance(); continue }
            }
            if pendingText.isEmpty { pendingLine = line }
            pendingText.append(c)
            advance()
        }
        flushText()
        tokens.append(Token(kind: .end, line: line))
    }

    /// lstrip_blocks: spaces and tabs between the start of the line and a block tag are removed.
    private mutating func stripIndentation() {
        var i = pendingText.count
        while i > 0, pendingText[i - 1] == " " || pendingText[i - 1] == "\t" { i -= 1 }
        let atLineStart = i == 0 ? lineStartsAtPendingText : pendingText[i - 1] == "\n"
        if atLineStart { pendingText.removeSubrange(i...) }
    }

    /// Whether the pending text starts at the beginning of a line (the template's start or after a newline).
    private var lineStartsAtPendingText: Bool {
        let start = position - pendingText.count
        return start == 0 || source[start - 1] == "\n"
    }

    private mutating func flushText() {
        if !pendingText.isEmpty {
            var text = String.UnicodeScalarView()
            text.append(contentsOf: pendingText)
            tokens.append(Token(kind: .text(String(text)), line: pendingLine))
            pendingText.removeAll()
        }
    }

    /// Skips to `#}`; returns whether it was `-#}` and whether the comment was closed.
    private mutating func skipComment() -> (Bool, Bool) {
        while position < source.count {
            if source[position] == "#", peek(1) == "}" {
                position += 2
                return (false, true)
            }
            if source[position] == "-", peek(1) == "#", peek(2) == "}" {
                position += 3
                return (true, true)
            }
            advance()
        }
        return (false, false)
    }

    /// Expression tokens up to the closing `}}` or `%}`; returns whether it had a `-` strip marker.
    private mutating func tagContents(closing: Unicode.Scalar, openedAt: Int) throws(JinjaError) -> Bool {
        while true {
            guard let c = peek() else { throw JinjaError("unterminated tag", line: openedAt) }
            if c.properties.isWhitespace { advance(); continue }
            if (c == "-" || c == "+"), peek(1) == closing, peek(2) == "}" {
                position += 3
                return c == "-"
            }
            if c == closing, peek(1) == "}" {
                position += 2
                return false
            }
            tokens.append(Token(kind: try expressionToken(), line: line))
        }
    }

    private mutating func expressionToken() throws(JinjaError) -> Kind {
        let c = source[position]
        if c == "_" || c.properties.isAlphabetic {
            var name = String.UnicodeScalarView()
            while let d = peek(), d == "_" || d.properties.isAlphabetic || ("0"..."9").contains(d) {
                name.append(d)
                position += 1
            }
            return .name(String(name))
        }
        if ("0"..."9").contains(c) { return try number() }
        if c == "'" || c == "\"" { return try string(quote: c) }
        for symbol in ["//", "**", "==", "!=", "<=", ">="] where starts(with: symbol, at: position) {
            position += 2
            return .symbol(symbol)
        }
        if "()[]{}.,:|~+-*/%=<>".unicodeScalars.contains(c) {
            position += 1
            return .symbol(String(c))
        }
        throw JinjaError("unexpected character '\(c)' in a tag", line: line)
    }

    private mutating func number() throws(JinjaError) -> Kind {
        var digits = ""
        var isFloat = false
        while let d = peek() {
            if ("0"..."9").contains(d) || d == "_" {
                if d != "_" { digits.unicodeScalars.append(d) }
            } else if d == ".", !isFloat, let after = peek(1), ("0"..."9").contains(after) {
                isFloat = true
                digits += "."
            } else {
                break
            }
            position += 1
        }
        if isFloat, let value = Double(digits) { return .float(value) }
        guard let value = Int(digits) else { throw JinjaError("number \(digits) is out of range", line: line) }
        return .integer(value)
    }

    /// A quoted string with Python's escapes (`\n`, `\t`, `\\`, `\'`, `\"`, `\uXXXX`, ...).
    private mutating func string(quote: Unicode.Scalar) throws(JinjaError) -> Kind {
        let startLine = line
        position += 1
        var value = String.UnicodeScalarView()
        while true {
            guard let c = peek() else { throw JinjaError("unterminated string", line: startLine) }
            advance()
            if c == quote { return .string(String(value)) }
            guard c == "\\" else { value.append(c); continue }
            guard let e = peek() else { throw JinjaError("unterminated string", line: startLine) }
            advance()
            switch e {
            case "n": value.append("\n")
            case "t": value.append("\t")
            case "r": value.append("\r")
            case "0": value.append("\0")
            case "b": value.append("\u{8}")
            case "f": value.append("\u{C}")
            case "\\", "'", "\"": value.append(e)
            case "\n": break
            case "x", "u", "U":
                let width = e == "x" ? 2 : e == "u" ? 4 : 8
                var hex = ""
                for _ in 0..<width {
                    guard let h = peek(), h.properties.isASCIIHexDigit else {
                        throw JinjaError("bad \\\(e) escape in a string", line: line)
                    }
                    hex.unicodeScalars.append(h)
                    position += 1
                }
                guard let code = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(code) else {
                    throw JinjaError("bad \\\(e) escape in a string", line: line)
                }
                value.append(scalar)
            default:
                value.append("\\")
                value.append(e)
            }
        }
    }
}
