import Foundation

/// Text made safe for HTML element content and quoted attribute values.
public enum HTMLText {
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            // Control characters other than tab and line feed have no business on the page.
            case "\u{0}"..."\u{8}", "\u{B}"..."\u{1F}", "\u{7F}": out += "\u{FFFD}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

/// Charts as inline SVG elements (no namespace attribute is needed inside HTML, and none is
/// written: the page names no URL at all).
public enum ReportSVG {
    /// A vertical bar chart with a y axis of round ticks and up to `maxXLabels` x labels.
    /// - Parameters:
    ///   - xLabel: the label under bar `i`, for the bars chosen to carry one.
    ///   - barTitle: the tooltip of bar `i`.
    public static func barChart(values: [Double], width: Int = 760, height: Int = 260, yTitle: String, xTitle: String,
                                ariaLabel: String, color: String = "#3b6fd4", maxXLabels: Int = 8,
                                xLabel: (Int) -> String, barTitle: (Int) -> String) -> String {
        let left = 64.0, right = 16.0, top = 14.0, bottom = 46.0
        let plotWidth = Double(width) - left - right, plotHeight = Double(height) - top - bottom
        let maxValue = values.max() ?? 0
        let step = niceTickStep(maxValue)
        let yMax = max(step, (maxValue / step).rounded(.up) * step)
        var svg = "<svg class=\"chart\" viewBox=\"0 0 \(width) \(height)\" width=\"\(width)\" height=\"\(height)\" role=\"img\" aria-label=\"\(HTMLText.escape(ariaLabel))\">\n"
        svg += "<title>\(HTMLText.escape(ariaLabel))</title>\n"
        // Grid and y ticks.
        var tick = 0.0
        while tick <= yMax * (1 + 1e-9) {
            let y = top + plotHeight - tick / yMax * plotHeight
            svg += "<line class=\"grid\" x1=\"\(f(left))\" y1=\"\(f(y))\" x2=\"\(f(left + plotWidth))\" y2=\"\(f(y))\"/>"
            svg += "<text class=\"tick\" x=\"\(f(left - 6))\" y=\"\(f(y + 4))\" text-anchor=\"end\">\(HTMLText.escape(compact(tick)))</text>\n"
            tick += step
        }
        // Bars.
        if !values.isEmpty {
            let slot = plotWidth / Double(values.count)
            let gap = slot > 6 ? max(1, slot * 0.12) : 0
            for (index, value) in values.enumerated() {
                let barHeight = max(0, value / yMax * plotHeight)
                let x = left + Double(index) * slot + gap / 2
                svg += "<rect class=\"bar\" fill=\"\(color)\" x=\"\(f(x))\" y=\"\(f(top + plotHeight - barHeight))\" width=\"\(f(max(0.5, slot - gap)))\" height=\"\(f(barHeight))\"><title>\(HTMLText.escape(barTitle(index)))</title></rect>\n"
            }
            let every = max(1, Int((Double(values.count) / Double(maxXLabels)).rounded(.up)))
            for index in stride(from: 0, to: values.count, by: every) {
                let x = left + (Double(index) + 0.5) * slot
                svg += "<text class=\"tick\" x=\"\(f(x))\" y=\"\(f(top + plotHeight + 16))\" text-anchor=\"middle\">\(HTMLText.escape(xLabel(index)))</text>\n"
            }
        } else {
            svg += "<text class=\"empty\" x=\"\(f(left + plotWidth / 2))\" y=\"\(f(top + plotHeight / 2))\" text-anchor=\"middle\">no data</text>\n"
        }
        svg += "<line class=\"axis\" x1=\"\(f(left))\" y1=\"\(f(top + plotHeight))\" x2=\"\(f(left + plotWidth))\" y2=\"\(f(top + plotHeight))\"/>\n"
        svg += "<text class=\"axis-title\" x=\"\(f(left + plotWidth / 2))\" y=\"\(f(Double(height) - 6))\" text-anchor=\"middle\">\(HTMLText.escape(xTitle))</text>\n"
        svg += "<text class=\"axis-title\" transform=\"translate(14 \(f(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(HTMLText.escape(yTitle))</text>\n"
        svg += "</svg>"
        return svg
    }

    /// Horizontal bars with a label and a value each, scaled to the largest.
    public static func horizontalBars(_ rows: [(label: String, value: Double, text: String, color: String)], width: Int = 760,
                                      ariaLabel: String) -> String {
        let labelWidth = 150.0, valueWidth = 150.0, rowHeight = 30.0
        let height = Int(rowHeight * Double(max(1, rows.count)) + 8)
        let plotWidth = Double(width) - labelWidth - valueWidth
        let maxValue = max(rows.map(\.value).max() ?? 0, 1e-12)
        var svg = "<svg class=\"chart\" viewBox=\"0 0 \(width) \(height)\" width=\"\(width)\" height=\"\(height)\" role=\"img\" aria-label=\"\(HTMLText.escape(ariaLabel))\">\n"
        svg += "<title>\(HTMLText.escape(ariaLabel))</title>\n"
        for (index, row) in rows.enumerated() {
            let y = 4 + Double(index) * rowHeight
            let length = max(row.value > 0 ? 1 : 0, row.value / maxValue * plotWidth)
            svg += "<text class=\"label\" x=\"\(f(labelWidth - 8))\" y=\"\(f(y + 19))\" text-anchor=\"end\">\(HTMLText.escape(row.label))</text>"
            svg += "<rect fill=\"\(row.color)\" x=\"\(f(labelWidth))\" y=\"\(f(y + 5))\" width=\"\(f(length))\" height=\"20\" rx=\"2\"/>"
            svg += "<text class=\"value\" x=\"\(f(labelWidth + length + 8))\" y=\"\(f(y + 19))\">\(HTMLText.escape(row.text))</text>\n"
        }
        svg += "</svg>"
        return svg
    }

    /// About five round ticks up to `maxValue`.
    static func niceTickStep(_ maxValue: Double) -> Double {
        guard maxValue > 0, maxValue.isFinite else { return 1 }
        return ReportSummary.niceStep(maxValue / 5)
    }

    /// `950`, `1.2k`, `3.4M`, `0.25`.
    public static func compact(_ value: Double) -> String {
        let magnitude = abs(value)
        if magnitude >= 1e9 { return trimmed(value / 1e9) + "G" }
        if magnitude >= 1e6 { return trimmed(value / 1e6) + "M" }
        if magnitude >= 1e4 { return trimmed(value / 1e3) + "k" }
        if magnitude == magnitude.rounded() { return String(Int(value)) }
        return trimmed(value)
    }

    private static func trimmed(_ value: Double) -> String {
        var text = String(format: abs(value) < 1 ? "%.3f" : "%.1f", value)
        while text.contains("."), text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }

    /// Coordinates with one decimal.
    static func f(_ value: Double) -> String { String(format: "%.1f", value) }
}
