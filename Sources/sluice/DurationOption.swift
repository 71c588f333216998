import ArgumentParser
import SluiceCore

/// A command-line duration: `90` or `0.5` (seconds), `90s`, `1m30s`, `2h`, `7d`, `250ms`
/// (SluiceCore's `DurationText`, the same syntax as the job specs). Options declare it with
/// `transform: DurationOption.parse`, so a bad value's error says what is wrong with it.
struct DurationOption: Sendable, Equatable, CustomStringConvertible, ExpressibleByFloatLiteral, ExpressibleByIntegerLiteral {
    let seconds: Double

    init(seconds: Double) { self.seconds = seconds }
    init(floatLiteral value: Double) { seconds = value }
    init(integerLiteral value: Int) { seconds = Double(value) }

    @Sendable static func parse(_ text: String) throws -> DurationOption {
        do {
            return DurationOption(seconds: try DurationText.seconds(text))
        } catch {
            throw ValidationError(error.description)
        }
    }

    /// `90s`, `1m30s`, `0.5s`: how help text shows defaults.
    var description: String {
        let whole = seconds.rounded()
        guard whole == seconds, whole >= 60 else { return "\(Self.trimmed(seconds))s" }
        let total = Int(whole)
        var text = ""
        if total >= 3600 { text += "\(total / 3600)h" }
        if total % 3600 >= 60 { text += "\(total % 3600 / 60)m" }
        if total % 60 > 0 { text += "\(total % 60)s" }
        return text
    }

    private static func trimmed(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}
