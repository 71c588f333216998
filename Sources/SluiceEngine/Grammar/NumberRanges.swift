/// Grammars for numbers within bounds (JSON Schema `minimum`, `maximum`, `exclusiveMinimum`,
/// `exclusiveMaximum`): each is a digit automaton that accepts exactly the numbers in range,
/// built so that every prefix it lets through can still be completed.
///
/// The building block is `digitStrings`: digit strings of a range of lengths between two
/// bounds, compared digit by digit. A state is (position, still equal to the lower bound's
/// digits so far, still equal to the upper bound's); a digit strictly between the bounds' digits
/// frees the rest. States that can reach no accepted end (say, still equal to an exclusive
/// bound when the length runs out) are pruned before any rule is made, so every rule derives
/// at least one string and no generated prefix is a dead end.

/// An exact decimal, read from a JSON number's text (`-12.5e3`): no rounding through a double.
struct ExactDecimal: Equatable, Sendable {
    /// True only for values below zero (`-0` is zero).
    var negative: Bool
    /// The integer part's magnitude, saturated at `saturation` (beyond every bound a grammar can write).
    var integer: Int
    /// The fraction's digits (each 0...9), without trailing zeros. Only the first
    /// `keptFractionDigits` are kept exactly; a single 1 after them stands for any nonzero rest.
    var fraction: [UInt8]

    static let saturation = 100_000_000_000_000_000
    static let keptFractionDigits = 16

    init(negative: Bool, integer: Int, fraction: [UInt8]) {
        self.integer = min(integer, Self.saturation)
        var fraction = fraction
        while fraction.last == 0 { fraction.removeLast() }
        self.fraction = fraction
        self.negative = negative && !(integer == 0 && fraction.isEmpty)
    }

    /// Parses JSON number text; nil when it is not one.
    init?(_ text: String) {
        var bytes = Array(text.utf8)[...]
        var negative = false
        if bytes.first == UInt8(ascii: "-") { negative = true; bytes = bytes.dropFirst() }
        var digits: [UInt8] = []
        var integerDigits = 0
        while let b = bytes.first, (48...57).contains(b) { digits.append(b - 48); integerDigits += 1; bytes = bytes.dropFirst() }
        guard integerDigits > 0 else { return nil }
        if bytes.first == UInt8(ascii: ".") {
            bytes = bytes.dropFirst()
            var count = 0
            while let b = bytes.first, (48...57).contains(b) { digits.append(b - 48); count += 1; bytes = bytes.dropFirst() }
            guard count > 0 else { return nil }
        }
        var exponent = 0
        if let e = bytes.first, e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            bytes = bytes.dropFirst()
            var sign = 1
            if let s = bytes.first, s == UInt8(ascii: "+") || s == UInt8(ascii: "-") {
                sign = s == UInt8(ascii: "-") ? -1 : 1
                bytes = bytes.dropFirst()
            }
            var count = 0
            while let b = bytes.first, (48...57).contains(b) {
                exponent = min(exponent * 10 + Int(b - 48), 1_000_000)
                count += 1
                bytes = bytes.dropFirst()
            }
            guard count > 0 else { return nil }
            exponent *= sign
        }
        guard bytes.isEmpty else { return nil }
        // Leading zeros change nothing; dropping them keeps the work below bounded.
        while digits.count > 1 && digits.first == 0 && integerDigits > 0 { digits.removeFirst(); integerDigits -= 1 }
        if digits.allSatisfy({ $0 == 0 }) {
            self.init(negative: false, integer: 0, fraction: [])
            return
        }
        // The decimal point sits after `point` of `digits` (before them when negative, past them when beyond).
        let point = integerDigits + exponent
        var integer = 0
        if point > 0 {
            for i in 0..<min(point, 40) {
                integer = min(integer * 10 + Int(i < digits.count ? digits[i] : 0), Self.saturation)
            }
            if point > 40 { integer = Self.saturation }
        }
        var fraction: [UInt8] = []
        var restNonzero = false
        // Fraction digit j is digits[point + j] (zero where that index is outside `digits`).
        let firstIndex = point
        for j in 0..<Self.keptFractionDigits {
            let index = firstIndex + j
            fraction.append(index >= 0 && index < digits.count ? digits[index] : 0)
        }
        let restStart = max(firstIndex + Self.keptFractionDigits, 0)
        if restStart < digits.count { restNonzero = digits[restStart...].contains { $0 != 0 } }
        if restNonzero { fraction.append(1) }
        self.init(negative: negative, integer: integer, fraction: fraction)
    }

    var isZero: Bool { integer == 0 && fraction.isEmpty }

    /// The magnitude compared: -1, 0 or 1.
    static func compareMagnitudes(_ a: ExactDecimal, _ b: ExactDecimal) -> Int {
        if a.integer != b.integer { return a.integer < b.integer ? -1 : 1 }
        for i in 0..<max(a.fraction.count, b.fraction.count) {
            let x = i < a.fraction.count ? a.fraction[i] : 0, y = i < b.fraction.count ? b.fraction[i] : 0
            if x != y { return x < y ? -1 : 1 }
        }
        return 0
    }

    /// -1, 0 or 1 as `a` is below, equal to or above `b`.
    static func compare(_ a: ExactDecimal, _ b: ExactDecimal) -> Int {
        if a.negative != b.negative { return a.negative ? -1 : 1 }
        let magnitudes = compareMagnitudes(a, b)
        return a.negative ? -magnitudes : magnitudes
    }

    /// The greatest integer at or below this value (saturated).
    var floor: Int {
        let base = min(integer, Self.saturation)
        return negative ? -(base + (fraction.isEmpty ? 0 : 1)) : base
    }
}

/// One side of a range: the bound and whether it is itself inside.
struct NumberBound: Sendable {
    var value: ExactDecimal
    var inclusive: Bool
}

extension GrammarBuilder {
    /// The most digits the integer part of a bounded `number` has, and the most significant
    /// digits in all: every such decimal is exactly the double nearest it, so it compares with
    /// a bound of at most 15 significant digits as that double does (Python's jsonschema, for one,
    /// validates doubles).
    static let boundedNumberDigits = 15

    static func powerOfTen(_ n: Int) -> Int {
        var value = 1
        for _ in 0..<n { value *= 10 }
        return value
    }

    static func digitCount(_ n: Int) -> Int {
        var count = 1, rest = n
        while rest >= 10 { rest /= 10; count += 1 }
        return count
    }

    static func decimalDigits(_ n: Int) -> [UInt8] { Array(String(n).utf8).map { $0 - 48 } }

    /// Digits `minLength...maxLength` long that lie between `lower` and `upper`, each compared
    /// as a digit string padded with zeros on the right (for digit strings of one length: as
    /// integers; for a fraction's digits: as fractions). A missing side is unbounded. Nil when
    /// no string qualifies.
    mutating func digitStrings(lower: (digits: [UInt8], inclusive: Bool)?, upper: (digits: [UInt8], inclusive: Bool)?,
                               minLength: Int, maxLength: Int) -> [GrammarSymbol]? {
        var memo: [Int: [GrammarSymbol]?] = [:]
        return digitState(0, tightLower: lower != nil, tightUpper: upper != nil, lower: lower, upper: upper,
                          minLength: minLength, maxLength: maxLength, memo: &memo)
    }

    private mutating func digitState(_ position: Int, tightLower: Bool, tightUpper: Bool,
                                     lower: (digits: [UInt8], inclusive: Bool)?, upper: (digits: [UInt8], inclusive: Bool)?,
                                     minLength: Int, maxLength: Int, memo: inout [Int: [GrammarSymbol]?]) -> [GrammarSymbol]? {
        if !tightLower && !tightUpper {
            // Free: any digits up to the length limits.
            let least = max(0, minLength - position), most = maxLength - position
            guard most >= least else { return nil }
            if most == 0 { return [] }
            return [.rule(shared("digits-\(least)-\(most)") { builder in
                [builder.repeated([.bytes(ByteSet(ranges: [48...57]))], minimum: least, maximum: most)]
            })]
        }
        let key = position * 4 + (tightLower ? 2 : 0) + (tightUpper ? 1 : 0)
        if let known = memo[key] { return known }
        func digit(_ digits: [UInt8], _ i: Int) -> UInt8 { i < digits.count ? digits[i] : 0 }
        func restIsZero(_ digits: [UInt8], from i: Int) -> Bool { i >= digits.count || digits[i...].allSatisfy { $0 == 0 } }
        var alternatives: [[GrammarSymbol]] = []
        if position >= minLength {
            // Ending here: the string equals the bound's digits so far, padded with zeros.
            var ends = true
            if tightLower, let lower { ends = ends && restIsZero(lower.digits, from: position) && lower.inclusive }
            if tightUpper, let upper { ends = ends && (!restIsZero(upper.digits, from: position) || upper.inclusive) }
            if ends { alternatives.append([]) }
        }
        if position < maxLength {
            let low = tightLower ? digit(lower!.digits, position) : 0
            let high = tightUpper ? digit(upper!.digits, position) : 9
            if low <= high {
                // Digits grouped by the state they lead to (at most three groups).
                var groups: [(tight: (Bool, Bool), digits: [UInt8])] = []
                for d in low...high {
                    let next = (tightLower && d == low, tightUpper && d == high)
                    if let i = groups.firstIndex(where: { $0.tight == next }) {
                        groups[i].digits.append(d)
                    } else {
                        groups.append((next, [d]))
                    }
                }
                for group in groups {
                    guard let rest = digitState(position + 1, tightLower: group.tight.0, tightUpper: group.tight.1, lower: lower,
                                                upper: upper, minLength: minLength, maxLength: maxLength, memo: &memo) else { continue }
                    alternatives.append([.bytes(ByteSet(group.digits.map { $0 + 48 }))] + rest)
                }
            }
        }
        let result: [GrammarSymbol]?
        switch alternatives.count {
        case 0: result = nil
        case 1 where alternatives[0].isEmpty: result = []
        default: result = [.rule(rule(alternatives))]
        }
        memo[key] = result
        return result
    }

    /// The positive integers `a...b` (1 ≤ a ≤ b) written without leading zeros, one entry per length.
    mutating func positiveIntegers(_ a: Int, _ b: Int) -> [(length: Int, symbols: [GrammarSymbol])] {
        guard a >= 1, a <= b else { return [] }
        var result: [(length: Int, symbols: [GrammarSymbol])] = []
        for length in Self.digitCount(a)...Self.digitCount(b) {
            let first = Self.powerOfTen(length - 1), last = Self.powerOfTen(length) - 1
            let x = max(a, first), y = min(b, last)
            if x == first && y == last {
                let rest = digitStrings(lower: nil, upper: nil, minLength: length - 1, maxLength: length - 1) ?? []
                result.append((length, [.bytes(ByteSet(ranges: [49...57]))] + rest))
            } else if let symbols = digitStrings(lower: (Self.decimalDigits(x), true), upper: (Self.decimalDigits(y), true),
                                                 minLength: length, maxLength: length) {
                result.append((length, symbols))
            }
        }
        return result
    }

    /// JSON integers from `lower` to `upper` (inclusive), `-0` excluded; nil when none.
    mutating func integerRange(_ lower: Int, _ upper: Int) -> GrammarSymbol? {
        guard lower <= upper else { return nil }
        var alternatives: [[GrammarSymbol]] = []
        if lower < 0 {
            for item in positiveIntegers(upper < 0 ? -upper : 1, -lower) { alternatives.append([.byte(45)] + item.symbols) }
        }
        if lower <= 0 && 0 <= upper { alternatives.append([.byte(48)]) }
        if upper >= 1 {
            for item in positiveIntegers(max(1, lower), upper) { alternatives.append(item.symbols) }
        }
        guard !alternatives.isEmpty else { return nil }
        return .rule(rule(alternatives))
    }

    /// JSON numbers between the bounds (a missing side: unbounded), written without an exponent,
    /// with at most `boundedNumberDigits` significant digits, `-0` in any form excluded; nil when none.
    mutating func numberRange(lower: NumberBound?, upper: NumberBound?) -> GrammarSymbol? {
        let zero = ExactDecimal(negative: false, integer: 0, fraction: [])
        var alternatives: [[GrammarSymbol]] = []
        // Below zero: "-" and a magnitude m with -upper <= m <= -lower (and m > 0).
        if lower.map({ $0.value.negative }) ?? true {
            let mLower = upper.map { $0.value.negative } == true ? upper! : NumberBound(value: zero, inclusive: false)
            let mUpper = lower
            for item in nonNegativeNumbers(lower: mLower, upper: mUpper) { alternatives.append([.byte(45)] + item) }
        }
        // Zero and above.
        if upper.map({ !$0.value.negative }) ?? true {
            let vLower = (lower.map { $0.value.negative } ?? true) ? NumberBound(value: zero, inclusive: true) : lower!
            alternatives += nonNegativeNumbers(lower: vLower, upper: upper)
        }
        guard !alternatives.isEmpty else { return nil }
        return .rule(rule(alternatives))
    }

    /// Non-negative decimals (bounds compared by magnitude) as sequences, one per integer-part case.
    private mutating func nonNegativeNumbers(lower: NumberBound, upper: NumberBound?) -> [[GrammarSymbol]] {
        let limit = Self.boundedNumberDigits
        let largest = Self.powerOfTen(limit) - 1
        guard lower.value.integer <= largest else { return [] }
        let upper = upper.flatMap { $0.value.integer > largest ? nil : $0 }
        let low = lower.value.integer, high = upper?.value.integer ?? largest
        guard low <= high else { return [] }
        var result: [[GrammarSymbol]] = []
        let lowerFraction = (digits: lower.value.fraction, inclusive: lower.inclusive)
        let upperFraction = upper.map { (digits: $0.value.fraction, inclusive: $0.inclusive) }
        func literal(_ n: Int) -> [GrammarSymbol] { [.literal(Array(String(n).utf8))] }
        if low == high {
            if let item = withFraction(literal(low), integerDigits: low == 0 ? 0 : Self.digitCount(low),
                                       lower: lowerFraction, upper: upperFraction) { result.append(item) }
            return result
        }
        if let item = withFraction(literal(low), integerDigits: low == 0 ? 0 : Self.digitCount(low), lower: lowerFraction, upper: nil) {
            result.append(item)
        }
        for middle in positiveIntegers(low + 1, high - 1) {
            if let item = withFraction(middle.symbols, integerDigits: middle.length, lower: nil, upper: nil) { result.append(item) }
        }
        if let item = withFraction(literal(high), integerDigits: Self.digitCount(high), lower: nil, upper: upperFraction) {
            result.append(item)
        }
        return result
    }

    /// An integer part followed by the fractions allowed after it (none, or "." and 1 to the
    /// digits left of the significant-digit limit) within the bounds on the fraction; nil when none.
    private mutating func withFraction(_ integerPart: [GrammarSymbol], integerDigits: Int,
                                       lower: (digits: [UInt8], inclusive: Bool)?, upper: (digits: [UInt8], inclusive: Bool)?) -> [GrammarSymbol]? {
        var options: [[GrammarSymbol]] = []
        // Without a fraction the value is the integer part itself.
        let lowerAllows = lower.map { $0.digits.isEmpty && $0.inclusive } ?? true
        let upperAllows = upper.map { !$0.digits.isEmpty || $0.inclusive } ?? true
        if lowerAllows && upperAllows { options.append([]) }
        let most = Self.boundedNumberDigits - integerDigits
        if most >= 1, let digits = digitStrings(lower: lower, upper: upper, minLength: 1, maxLength: most) {
            options.append([.byte(46)] + digits)
        }
        switch options.count {
        case 0: return nil
        case 1: return integerPart + options[0]
        default: return integerPart + [.rule(rule(options))]
        }
    }
}
