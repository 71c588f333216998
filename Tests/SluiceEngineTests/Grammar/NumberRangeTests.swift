import SluiceCore
import SluiceTestSupport
import Testing

@testable import SluiceEngine

/// Integer and number bounds (`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`),
/// exhaustively around every bound of many random ranges: the grammar accepts a number exactly
/// when it is in range, and no prefix it lets through is a dead end.
@Suite(.ownThread)
struct NumberRangeTests {
    func machine(_ schema: String) throws -> GrammarMachine {
        GrammarMachine(grammar: try JSONGrammar.schema(try JSON.parse(schema)))
    }

    func accepts(_ machine: GrammarMachine, _ text: String) -> Bool {
        let state = machine.advance(machine.initialState, bytes: Array(text.utf8))
        return state != GrammarMachine.dead && machine.isAccepting(state)
    }

    /// Every state reachable from the start over `alphabet` (the only bytes a number grammar
    /// uses) can still reach a complete match: whatever prefix the mask lets a model write,
    /// some continuation completes it. Returns how many states were checked.
    @discardableResult
    func expectNoDeadEnds(_ machine: GrammarMachine, alphabet: [UInt8] = Array("-0123456789.".utf8), _ name: String) -> Int {
        var edges: [GrammarMachine.State: [GrammarMachine.State]] = [:]
        var stack = [machine.initialState]
        var seen: Set<GrammarMachine.State> = [machine.initialState]
        while let state = stack.popLast() {
            var next: [GrammarMachine.State] = []
            for byte in alphabet {
                let target = machine.advance(state, byte: byte)
                guard target != GrammarMachine.dead else { continue }
                next.append(target)
                if seen.insert(target).inserted { stack.append(target) }
            }
            edges[state] = next
        }
        // States that reach an accepting one, by fixed point.
        var live = Set(seen.filter { machine.isAccepting($0) })
        var changed = true
        while changed {
            changed = false
            for state in seen where !live.contains(state) && edges[state]!.contains(where: { live.contains($0) }) {
                live.insert(state)
                changed = true
            }
        }
        let deadEnds = seen.subtracting(live)
        #expect(deadEnds.isEmpty, "\(name): \(deadEnds.count) of \(seen.count) reachable states cannot complete")
        return seen.count
    }

    struct Side {
        var text: String
        var exclusive: Bool
        /// The bound times `scale` (exact for the bounds the test makes).
        var scaled: Int
    }

    /// A random bound: an integer of a random magnitude (up to `digits` digits), or with `fractions`, a decimal.
    static func randomSide(_ random: inout SplitMix64, digits: Int = 16, fractions: Int, scale: Int) -> Side {
        let magnitudeDigits = Int(random.next() % UInt64(digits + 1))
        var integer = magnitudeDigits == 0 ? 0 : Int(random.next() % UInt64(GrammarBuilder.powerOfTen(magnitudeDigits)))
        if random.next() % 3 == 0 { integer = Int(random.next() % 60) }
        let negative = random.next() % 2 == 0
        var fraction = 0
        if fractions > 0 && random.next() % 2 == 0 { fraction = Int(random.next() % UInt64(GrammarBuilder.powerOfTen(fractions))) }
        var text = (negative ? "-" : "") + String(integer)
        if fraction > 0 {
            let digits = String(fraction)
            text += "." + String(repeating: "0", count: fractions - digits.count) + digits
        }
        let scaled = (integer * scale + fraction * (scale / GrammarBuilder.powerOfTen(fractions))) * (negative ? -1 : 1)
        return Side(text: text, exclusive: random.next() % 2 == 0, scaled: scaled)
    }

    func schema(_ type: String, lower: Side?, upper: Side?) -> String {
        var fields = [#""type":"\#(type)""#]
        if let lower { fields.append(#""\#(lower.exclusive ? "exclusiveMinimum" : "minimum")":\#(lower.text)"#) }
        if let upper { fields.append(#""\#(upper.exclusive ? "exclusiveMaximum" : "maximum")":\#(upper.text)"#) }
        return "{" + fields.joined(separator: ",") + "}"
    }

    static func contains(_ value: Int, lower: Side?, upper: Side?) -> Bool {
        if let lower, lower.exclusive ? value <= lower.scaled : value < lower.scaled { return false }
        if let upper, upper.exclusive ? value >= upper.scaled : value > upper.scaled { return false }
        return true
    }

    @Test func integerBoundsAcceptExactlyTheIntegersInRange() throws {
        var random = SplitMix64(seed: 16)
        let limit = GrammarBuilder.powerOfTen(16) - 1
        var ranges = 0, checked = 0, states = 0
        for round in 0..<300 {
            // Integer bounds and, one time in three, decimal ones (an integer schema may have them).
            let fractions = round % 3 == 0 ? 2 : 0
            let scale = fractions == 0 ? 1 : 100
            let lower = random.next() % 5 == 0 ? nil : Self.randomSide(&random, fractions: fractions, scale: scale)
            let upper = random.next() % 5 == 0 ? nil : Self.randomSide(&random, fractions: fractions, scale: scale)
            let text = schema("integer", lower: lower, upper: upper)
            // The integers a bound lies between, and the representable ends.
            var candidates: [Int] = [0, 1, -1, limit, -limit, limit - 1, -limit + 1]
            for side in [lower, upper].compactMap({ $0 }) {
                let center = side.scaled >= 0 ? side.scaled / scale : -((-side.scaled + scale - 1) / scale)
                candidates += (center - 25)...(center + 25)
            }
            candidates += (0..<20).map { _ in Int(random.next() % UInt64(2 * limit + 1)) - limit }
            let anyInside = candidates.contains { $0.magnitude <= UInt(limit) && Self.contains($0 * scale, lower: lower, upper: upper) }
            guard anyInside else {
                // An empty range is refused by name.
                #expect(throws: JSONGrammar.Failure.self, "\(text)") { try JSONGrammar.schema(try JSON.parse(text)) }
                continue
            }
            let m = try machine(text)
            ranges += 1
            for n in Set(candidates) where n.magnitude <= UInt(limit) {
                let expected = Self.contains(n * scale, lower: lower, upper: upper)
                #expect(accepts(m, String(n)) == expected, "\(text): \(n)")
                checked += 1
            }
            // 17 digits never; no leading zeros, fraction or exponent; no -0 (where bounds apply: a plain integer allows it).
            #expect(!accepts(m, String(limit) + "0") && !accepts(m, "007") && !accepts(m, "1.0") && !accepts(m, "1e2"), "\(text)")
            if lower != nil || upper != nil { #expect(!accepts(m, "-0"), "\(text)") }
            states += expectNoDeadEnds(m, alphabet: Array("-0123456789".utf8), text)
        }
        print("integer bounds: \(ranges) ranges, \(checked) integers checked, \(states) states reached, none a dead end")
        #expect(ranges >= 150)
    }

    /// Small ranges in full: every integer from -120 to 120 against every pair of small bounds.
    @Test func smallIntegerRangesInFull() throws {
        for low in stride(from: -23, through: 23, by: 7) {
            for high in stride(from: -21, through: 110, by: 9) where high >= low {
                let m = try machine(#"{"type":"integer","minimum":\#(low),"maximum":\#(high)}"#)
                for n in -120...120 { #expect(accepts(m, String(n)) == (low...high).contains(n), "[\(low), \(high)]: \(n)") }
                expectNoDeadEnds(m, alphabet: Array("-0123456789".utf8), "[\(low), \(high)]")
            }
        }
        // Draft 4's boolean exclusiveMinimum, and the tighter of two lower bounds.
        let draft4 = try machine(#"{"type":"integer","minimum":5,"exclusiveMinimum":true,"maximum":9,"exclusiveMaximum":false}"#)
        #expect(!accepts(draft4, "5") && accepts(draft4, "6") && accepts(draft4, "9") && !accepts(draft4, "10"))
        let both = try machine(#"{"type":"integer","minimum":3,"exclusiveMinimum":3,"maximum":7,"exclusiveMaximum":9}"#)
        #expect(!accepts(both, "3") && accepts(both, "4") && accepts(both, "7") && !accepts(both, "8"))
        // With only a minimum of 5: "1" must go on to at least 10, and "0" is no prefix at all.
        let atLeast5 = try machine(#"{"type":"integer","minimum":5}"#)
        let one = atLeast5.advance(atLeast5.initialState, bytes: Array("1".utf8))
        #expect(one != GrammarMachine.dead && !atLeast5.isAccepting(one))
        #expect(atLeast5.advance(atLeast5.initialState, byte: UInt8(ascii: "0")) == GrammarMachine.dead)
        #expect(atLeast5.advance(atLeast5.initialState, byte: UInt8(ascii: "-")) == GrammarMachine.dead)
        // Bounds written as decimals or with exponents are read exactly.
        let exponents = try machine(#"{"type":"integer","minimum":-1.5e1,"exclusiveMaximum":2.00E+2}"#)
        #expect(!accepts(exponents, "-16") && accepts(exponents, "-15") && accepts(exponents, "199") && !accepts(exponents, "200"))
        let huge = try machine(#"{"type":"integer","minimum":-1e300}"#)
        #expect(accepts(huge, "-9999999999999999") && accepts(huge, "0"))
        #expect(throws: JSONGrammar.Failure.self) { try JSONGrammar.schema(try JSON.parse(#"{"type":"integer","minimum":1e300}"#)) }
        #expect(throws: JSONGrammar.Failure.self) { try JSONGrammar.schema(try JSON.parse(#"{"type":"integer","minimum":0.2,"maximum":0.8}"#)) }
    }

    @Test func numberBoundsAcceptExactlyTheDecimalsInRange() throws {
        var random = SplitMix64(seed: 17)
        // Candidates have up to 3 fraction digits; bounds up to 2 (so every candidate compares exactly).
        let scale = 1000
        var ranges = 0, checked = 0
        for _ in 0..<150 {
            // Integer parts of at most 10 digits: with 4 fraction digits, within the 15 significant digits written.
            let lower = random.next() % 5 == 0 ? nil : Self.randomSide(&random, digits: 10, fractions: 2, scale: scale)
            let upper = random.next() % 5 == 0 ? nil : Self.randomSide(&random, digits: 10, fractions: 2, scale: scale)
            let text = schema("number", lower: lower, upper: upper)
            var candidates: [Int] = [0, 1, -1, 500, -500]
            for side in [lower, upper].compactMap({ $0 }) { candidates += (side.scaled - 40)...(side.scaled + 40) }
            guard candidates.contains(where: { Self.contains($0, lower: lower, upper: upper) }) else { continue }
            let m = try machine(text)
            ranges += 1
            for n in Set(candidates) {
                let expected = Self.contains(n, lower: lower, upper: upper)
                // The shortest form and one with a trailing zero; zero only unsigned.
                let magnitude = n.magnitude, whole = magnitude / UInt(scale), fraction = magnitude % UInt(scale)
                var plain = (n < 0 ? "-" : "") + String(whole)
                if fraction > 0 {
                    var digits = String(fraction)
                    digits = String(repeating: "0", count: 3 - digits.count) + digits
                    while digits.hasSuffix("0") { digits.removeLast() }
                    plain += "." + digits
                }
                let padded = plain.contains(".") ? plain + "0" : plain + ".00"
                #expect(accepts(m, plain) == expected, "\(text): \(plain)")
                #expect(accepts(m, padded) == expected, "\(text): \(padded)")
                checked += 2
            }
            if lower != nil || upper != nil {
                #expect(!accepts(m, "-0") && !accepts(m, "-0.0"), "\(text)")
                expectNoDeadEnds(m, text)
            }
        }
        print("number bounds: \(ranges) ranges, \(checked) decimals checked")
        #expect(ranges >= 80)
    }

    @Test func boundedNumbersStayWithinFifteenSignificantDigits() throws {
        let m = try machine(#"{"type":"number","exclusiveMinimum":0,"maximum":1000}"#)
        #expect(accepts(m, "0.000000000000001") && !accepts(m, "0.0000000000000001"))
        #expect(accepts(m, "999.999999999999") && !accepts(m, "999.9999999999999"))
        #expect(accepts(m, "1000") && accepts(m, "1000.0") && !accepts(m, "1000.000000000001") && !accepts(m, "1e3"))
        #expect(!accepts(m, "0") && !accepts(m, "0.0") && accepts(m, "0.5"))
        // A bound with more fraction digits than the grammar writes: compared exactly all the same.
        let fine = try machine(#"{"type":"number","minimum":0.12345678901234567,"maximum":0.2}"#)
        #expect(!accepts(fine, "0.123456789012345") && accepts(fine, "0.123456789012346") && accepts(fine, "0.2") && !accepts(fine, "0.21"))
        expectNoDeadEnds(fine, "fine bounds")
        let point = try machine(#"{"type":"number","minimum":2.5,"maximum":2.5}"#)
        #expect(accepts(point, "2.5") && accepts(point, "2.50") && !accepts(point, "2.51") && !accepts(point, "2"))
        #expect(throws: JSONGrammar.Failure.self) { try JSONGrammar.schema(try JSON.parse(#"{"type":"number","minimum":1,"exclusiveMaximum":1}"#)) }
        // No type but a bound: a number.
        let untyped = try machine(#"{"maximum":-2}"#)
        #expect(accepts(untyped, "-2") && accepts(untyped, "-7.25") && !accepts(untyped, "-1.5"))
    }
}
