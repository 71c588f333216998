/// Durations as people write them: `90s`, `15m`, `2h`, `7d`, `1w`, `250ms`, combinations such as
/// `1h30m` or `1m30s`, and (where the caller allows it) a plain number of seconds such as `90` or `0.5`.
/// The one parser for the command line's options and the job specs' duration fields.
public enum DurationText {
    /// The longest duration accepted (100 years, the limit the worker's settings and the specs'
    /// fields also keep): anything longer is a typo, and every deadline, timer, `Duration` or date
    /// computed from one stays far from overflow.
    public static let maximumSeconds: Double = 100 * 365.25 * 86_400

    public static let examples = "90, 0.5, 90s, 1m30s, 15m, 2h, 7d, 250ms"

    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var text: String
        public var reason: String
        /// The text is a duration, but longer than `maximumSeconds`.
        public var isTooLong = false
        public var description: String { "\"\(text)\" is not a duration: \(reason)" }
    }

    /// The number of seconds `text` stands for.
    /// - Parameter plainNumbers: whether a number without a unit counts as seconds.
    public static func seconds(_ text: String, plainNumbers: Bool = true) throws(ParseError) -> Double {
        func fail(_ reason: String) -> ParseError { ParseError(text: text, reason: reason) }
        let units: [(name: String, seconds: Double)] = [
            ("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400), ("w", 604_800),
        ]
        let scalars = Array(text.unicodeScalars.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
        guard !scalars.isEmpty else { throw fail("it is empty (examples: \(examples))") }
        var total = 0.0
        var index = 0
        var parts = 0
        while index < scalars.count {
            let numberStart = index
            while index < scalars.count, ("0"..."9").contains(scalars[index]) || scalars[index] == "." { index += 1 }
            let digits = String(String.UnicodeScalarView(scalars[numberStart..<index]))
            guard !digits.isEmpty, digits.filter({ $0 == "." }).count <= 1, digits != ".", let number = Double(digits) else {
                throw fail("expected a number at character \(numberStart + 1) (examples: \(examples))")
            }
            let unitStart = index
            while index < scalars.count, ("a"..."z").contains(scalars[index]) { index += 1 }
            let unit = String(String.UnicodeScalarView(scalars[unitStart..<index]))
            let scale: Double
            if unit.isEmpty {
                guard plainNumbers, parts == 0, index == scalars.count else {
                    throw fail(index == scalars.count ? "a unit is missing after \(digits) (s, m, h, d, w or ms)"
                                                     : "unexpected character at \(index + 1) (examples: \(examples))")
                }
                scale = 1
            } else if let match = units.first(where: { $0.name == unit }) {
                scale = match.seconds
            } else {
                throw fail("unknown unit \"\(unit)\" (s, m, h, d, w or ms)")
            }
            total += number * scale
            guard total.isFinite, total <= maximumSeconds else {
                var error = fail("longer than the maximum of 100 years (\(Int(maximumSeconds)) s)")
                error.isTooLong = true
                throw error
            }
            parts += 1
        }
        return total
    }
}
