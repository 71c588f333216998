/// The pre-tokenizer of a byte-level BPE ("gpt2") model: splits text into
/// words before merging, as the regular expressions named by
/// `tokenizer.ggml.pre` do in llama.cpp.
///
/// Each expression is a hand-written scanner over code points with Unicode
/// categories from the standard library (Foundation's regex is slow and its
/// `\p{…}` semantics differ). The scanners follow llama.cpp's `unicode.cpp`,
/// including where it deviates from the regex in corner cases (a whitespace
/// run at the very end is kept whole, `(?!\S)` looks at the next code point
/// only).
struct PreTokenizer: Sendable {
    enum Stage: Sendable {
        /// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
        case gpt2
        /// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,k}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
        /// with k = 3 for Llama 3 and k = 1 for Qwen 2.
        case llama3(digitGroup: Int)
        /// [\p{P}\$\+<=>\^~\|]+
        case punctuationRuns
        /// \p{N}+
        case numberRuns
        /// [0-9][0-9][0-9]
        case asciiDigitTriples
        /// \p{N}
        case singleNumbers
    }

    let name: String
    let stages: [Stage]
    /// llama.cpp's `clean_spaces`: detokenization removes spaces before punctuation.
    let cleansSpaces: Bool
    /// llama.cpp's `ignore_merges`: a word that is a whole token is not merged.
    let ignoresMerges: Bool
    /// llama.cpp's default for add_bos before the file's own flag.
    let addsBOSByDefault: Bool

    /// The pre-tokenizer for `tokenizer.ggml.pre`, or an error naming an unsupported one.
    static func named(_ pre: String?) throws(TokenizerError) -> PreTokenizer {
        let name = pre ?? ""
        switch name {
        case "", "default":
            return PreTokenizer(name: "default",
                                stages: [.punctuationRuns, .gpt2, .numberRuns, .asciiDigitTriples],
                                cleansSpaces: true, ignoresMerges: false, addsBOSByDefault: false)
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano":
            return PreTokenizer(name: name, stages: [.llama3(digitGroup: 3)],
                                cleansSpaces: true, ignoresMerges: true, addsBOSByDefault: true)
        case "dbrx", "smaug-bpe":
            return PreTokenizer(name: name, stages: [.llama3(digitGroup: 3)],
                                cleansSpaces: true, ignoresMerges: false, addsBOSByDefault: false)
        case "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan":
            return PreTokenizer(name: name, stages: [.llama3(digitGroup: 1)],
                                cleansSpaces: false, ignoresMerges: false, addsBOSByDefault: false)
        case "stablelm2", "megrez":
            return PreTokenizer(name: name, stages: [.llama3(digitGroup: 1)],
                                cleansSpaces: true, ignoresMerges: false, addsBOSByDefault: false)
        case "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
             "mellum", "modern-bert", "mpt", "olmo", "jais", "exaone4":
            return PreTokenizer(name: name, stages: [.gpt2],
                                cleansSpaces: true, ignoresMerges: false, addsBOSByDefault: false)
        case "trillion", "granite-docling":
            return PreTokenizer(name: name, stages: [.gpt2],
                                cleansSpaces: false, ignoresMerges: false, addsBOSByDefault: false)
        case "starcoder", "refact", "codeshell", "exaone", "minerva-7b":
            return PreTokenizer(name: name, stages: [.singleNumbers, .gpt2],
                                cleansSpaces: true, ignoresMerges: false, addsBOSByDefault: false)
        case "smollm", "command-r":
            return PreTokenizer(name: name, stages: [.singleNumbers, .gpt2],
                                cleansSpaces: false, ignoresMerges: false, addsBOSByDefault: false)
        default:
            throw TokenizerError("unsupported pre-tokenizer '\(name)' (tokenizer.ggml.pre)")
        }
    }

    /// Splits `codePoints` into words; returns each word's length in code points.
    func split(_ codePoints: UnsafeBufferPointer<UInt32>, flags: UnsafeBufferPointer<CodepointFlags>) -> [Int] {
        var pieces = [codePoints.count]
        for stage in stages {
            var next: [Int] = []
            next.reserveCapacity(pieces.count * 2)
            var start = 0
            for length in pieces {
                let scanner = WordScanner(codePoints: codePoints, flags: flags, start: start, end: start + length)
                switch stage {
                case .gpt2: scanner.gpt2(into: &next)
                case .llama3(let group): scanner.llama3(digitGroup: group, into: &next)
                case .punctuationRuns: scanner.runs(into: &next, matching: Self.isPunctuationForDefault)
                case .numberRuns: scanner.runs(into: &next, matching: Self.isNumberCollapsed)
                case .asciiDigitTriples: scanner.asciiDigitTriples(into: &next)
                case .singleNumbers: scanner.singles(into: &next, matching: Self.isNumberCollapsed)
                }
                start += length
            }
            pieces = next
        }
        return pieces
    }

    // llama.cpp runs these expressions with std::regex over a "collapsed" text in
    // which a non-ASCII code point stands for its category (whitespace first),
    // and `\p{P}` / `\p{N}` cover ASCII by explicit ranges.

    private static func isPunctuationForDefault(_ codePoint: UInt32, _ flags: CodepointFlags) -> Bool {
        if codePoint < 128 {
            // ASCII \p{P} plus $ + < = > ^ ~ |: every printable non-alphanumeric but '`'.
            switch UInt8(codePoint) {
            case 0x21...0x2F, 0x3A...0x40, 0x5B...0x5F, 0x7B...0x7E: return true
            default: return false
            }
        }
        return !flags.isWhitespace && flags.category == .punctuation
    }

    private static func isNumberCollapsed(_ codePoint: UInt32, _ flags: CodepointFlags) -> Bool {
        if codePoint < 128 { return codePoint >= 0x30 && codePoint <= 0x39 }
        return !flags.isWhitespace && flags.category == .number
    }
}

/// Scans one piece [start, end) of the code points and appends word lengths.
private struct WordScanner {
    let codePoints: UnsafeBufferPointer<UInt32>
    let flags: UnsafeBufferPointer<CodepointFlags>
    let start: Int
    let end: Int

    static let outside: UInt32 = 0xFFFF_FFFF

    @inline(__always) func cp(_ position: Int) -> UInt32 {
        position >= start && position < end ? codePoints[position] : Self.outside
    }

    @inline(__always) func fl(_ position: Int) -> CodepointFlags {
        position >= start && position < end ? flags[position] : .outside
    }

    @inline(__always) static func asciiLower(_ c: UInt32) -> UInt32 {
        c >= 0x41 && c <= 0x5A ? c + 0x20 : c
    }

    /// Length of a contraction ('s 't 'm 'd 're 've 'll) at `position`, or 0.
    @inline(__always) func contraction(at position: Int, caseInsensitive: Bool) -> Int {
        guard cp(position) == 0x27, position + 1 < end else { return 0 }
        let next = caseInsensitive ? Self.asciiLower(cp(position + 1)) : cp(position + 1)
        switch next {
        case 0x73, 0x74, 0x6D, 0x64: return 2  // s t m d
        default: break
        }
        guard position + 2 < end else { return 0 }
        let after = caseInsensitive ? Self.asciiLower(cp(position + 2)) : cp(position + 2)
        if (next == 0x72 && after == 0x65) || (next == 0x76 && after == 0x65) || (next == 0x6C && after == 0x6C) {
            return 3  // re ve ll
        }
        return 0
    }

    private static let letterNumberSpace: CodepointFlags = [.whitespace, .letter, .number]

    func gpt2(into out: inout [Int]) {
        var position = start
        func emit(_ to: Int) {
            if to > position { out.append(to - position) }
            position = to
        }
        while position < end {
            let c = cp(position)
            let f = fl(position)
            let contractionLength = contraction(at: position, caseInsensitive: false)
            if contractionLength > 0 { emit(position + contractionLength); continue }

            let space = c == 0x20
            var f2 = space ? fl(position + 1) : f
            var cursor = position
            if f2.isLetter {
                if space { cursor += 1 }
                while f2.isLetter { cursor += 1; f2 = fl(cursor) }
                emit(cursor); continue
            }
            if f2.isNumber {
                if space { cursor += 1 }
                while f2.isNumber { cursor += 1; f2 = fl(cursor) }
                emit(cursor); continue
            }
            if f2.isDisjoint(with: Self.letterNumberSpace) && f2.rawValue != 0 {
                if space { cursor += 1 }
                while f2.isDisjoint(with: Self.letterNumberSpace) && f2.rawValue != 0 { cursor += 1; f2 = fl(cursor) }
                emit(cursor); continue
            }
            var whitespaceCount = 0
            while fl(position + whitespaceCount).isWhitespace { whitespaceCount += 1 }
            if whitespaceCount > 1 && cp(position + whitespaceCount) != Self.outside {
                emit(position + whitespaceCount - 1); continue
            }
            if whitespaceCount > 0 { emit(position + whitespaceCount); continue }
            emit(position + 1)
        }
    }

    func llama3(digitGroup: Int, into out: inout [Int]) {
        var position = start
        func emit(_ to: Int) {
            if to > position { out.append(to - position) }
            position = to
        }
        while position < end {
            let c = cp(position)
            let f = fl(position)
            let contractionLength = contraction(at: position, caseInsensitive: true)
            if contractionLength > 0 { emit(position + contractionLength); continue }

            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(c == 0x0D || c == 0x0A || f.isNumber) {
                if f.isLetter || fl(position + 1).isLetter {
                    var cursor = position + 1
                    while fl(cursor).isLetter { cursor += 1 }
                    emit(cursor); continue
                }
            }
            // \p{N}{1,k}
            if f.isNumber {
                var cursor = position
                var groupStart = cursor
                while fl(cursor).isNumber {
                    cursor += 1
                    if cursor - groupStart >= digitGroup {
                        emit(cursor)
                        groupStart = cursor
                    }
                }
                emit(cursor); continue
            }
            // <space>?[^\s\p{L}\p{N}]+[\r\n]*
            var f2 = c == 0x20 ? fl(position + 1) : f
            if f2.isDisjoint(with: Self.letterNumberSpace) && f.rawValue != 0 {
                var cursor = position + (c == 0x20 ? 1 : 0)
                while f2.isDisjoint(with: Self.letterNumberSpace) && f2.rawValue != 0 { cursor += 1; f2 = fl(cursor) }
                var c2 = cp(cursor)
                while c2 == 0x0D || c2 == 0x0A { cursor += 1; c2 = cp(cursor) }
                emit(cursor); continue
            }
            var whitespaceCount = 0
            var lastLineBreakEnd = 0
            while fl(position + whitespaceCount).isWhitespace {
                let c2 = cp(position + whitespaceCount)
                if c2 == 0x0D || c2 == 0x0A { lastLineBreakEnd = position + whitespaceCount + 1 }
                whitespaceCount += 1
            }
            // \s*[\r\n]+
            if lastLineBreakEnd > 0 { emit(lastLineBreakEnd); continue }
            // \s+(?!\S)
            if whitespaceCount > 1 && cp(position + whitespaceCount) != Self.outside {
                emit(position + whitespaceCount - 1); continue
            }
            // \s+
            if whitespaceCount > 0 { emit(position + whitespaceCount); continue }
            emit(position + 1)
        }
    }

    /// `X+`: maximal runs of matching code points, with the gaps between them as pieces too.
    func runs(into out: inout [Int], matching: (UInt32, CodepointFlags) -> Bool) {
        var gapStart = start
        var position = start
        while position < end {
            guard matching(codePoints[position], flags[position]) else { position += 1; continue }
            if position > gapStart { out.append(position - gapStart) }
            let runStart = position
            while position < end && matching(codePoints[position], flags[position]) { position += 1 }
            out.append(position - runStart)
            gapStart = position
        }
        if end > gapStart { out.append(end - gapStart) }
    }

    /// `X`: each matching code point alone, with the gaps between them as pieces.
    func singles(into out: inout [Int], matching: (UInt32, CodepointFlags) -> Bool) {
        var gapStart = start
        for position in start..<end where matching(codePoints[position], flags[position]) {
            if position > gapStart { out.append(position - gapStart) }
            out.append(1)
            gapStart = position + 1
        }
        if end > gapStart { out.append(end - gapStart) }
    }

    /// `[0-9][0-9][0-9]`: successive leftmost triples of ASCII digits.
    func asciiDigitTriples(into out: inout [Int]) {
        @inline(__always) func isDigit(_ p: Int) -> Bool { codePoints[p] >= 0x30 && codePoints[p] <= 0x39 }
        var gapStart = start
        var position = start
        while position + 2 < end {
            if isDigit(position) && isDigit(position + 1) && isDigit(position + 2) {
                if position > gapStart { out.append(position - gapStart) }
                out.append(3)
                position += 3
                gapStart = position
            } else {
                position += 1
            }
        }
        if end > gapStart { out.append(end - gapStart) }
    }
}
