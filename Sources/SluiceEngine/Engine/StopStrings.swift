/// Stop strings, matched on the decoded text so they are found across token boundaries.
enum StopStrings {
    /// Where the earliest occurrence of any stop string begins in `text`.
    static func firstMatch(in text: String, stops: [String]) -> String.Index? {
        var earliest: String.Index?
        for stop in stops where !stop.isEmpty {
            if let range = text.range(of: stop), earliest.map({ range.lowerBound < $0 }) ?? true {
                earliest = range.lowerBound
            }
        }
        return earliest
    }
}
