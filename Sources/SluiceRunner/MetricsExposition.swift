/// Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE` lines, then the
/// samples of each family together. Written here rather than taken from a library: it is small
/// and fully specified.
public struct MetricsExposition: Sendable {
    public enum MetricType: String, Sendable {
        case counter, gauge, histogram
    }

    /// The `Content-Type` of the format.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public private(set) var text = ""
    private var families = Set<String>()

    public init() {}

    /// A family of plain samples (a counter or a gauge). Each family name may be added once.
    public mutating func add(_ name: String, _ type: MetricType, help: String,
                             _ samples: [(labels: [(String, String)], value: Double)]) {
        precondition(type != .histogram, "use addHistogram for histograms")
        header(name, type, help: help)
        for sample in samples { line(name, sample.labels, sample.value) }
    }

    /// A family with one unlabelled sample.
    public mutating func add(_ name: String, _ type: MetricType, help: String, value: Double) {
        add(name, type, help: help, [(labels: [], value: value)])
    }

    /// A histogram family: `_bucket` lines (cumulative, ending with `le="+Inf"`), `_sum` and `_count`.
    public mutating func addHistogram(_ name: String, help: String,
                                      _ series: [(labels: [(String, String)], histogram: MetricsHistogram)]) {
        header(name, .histogram, help: help)
        for (labels, histogram) in series {
            let cumulative = histogram.cumulativeCounts
            for (index, bound) in histogram.bounds.enumerated() {
                line(name + "_bucket", labels + [("le", Self.format(bound))], Double(cumulative[index]))
            }
            line(name + "_bucket", labels + [("le", "+Inf")], Double(histogram.count))
            line(name + "_sum", labels, histogram.sum)
            line(name + "_count", labels, Double(histogram.count))
        }
    }

    private mutating func header(_ name: String, _ type: MetricType, help: String) {
        precondition(Self.isValidName(name), "invalid metric name \(name)")
        precondition(families.insert(name).inserted, "metric family \(name) added twice")
        text += "# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(type.rawValue)\n"
    }

    private mutating func line(_ name: String, _ labels: [(String, String)], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{"
            text += labels.map { label in
                precondition(Self.isValidName(label.0) && !label.0.contains(":"), "invalid label name \(label.0)")
                return "\(label.0)=\"\(Self.escapeLabelValue(label.1))\""
            }.joined(separator: ",")
            text += "}"
        }
        text += " " + Self.format(value) + "\n"
    }

    /// Label values escape backslash, double quote and line feed.
    public static func escapeLabelValue(_ value: String) -> String {
        var out = ""
        out.reserveCapacity(value.utf8.count)
        for character in value.unicodeScalars {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    /// HELP text escapes backslash and line feed.
    public static func escapeHelp(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// Integers without a fraction, other values in Swift's shortest round-tripping form, and
    /// `+Inf`, `-Inf`, `NaN` as the format spells them.
    public static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first else { return false }
        func letter(_ c: Unicode.Scalar) -> Bool { (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || c == "_" || c == ":" }
        return letter(first) && name.unicodeScalars.allSatisfy { letter($0) || ($0 >= "0" && $0 <= "9") }
    }
}
