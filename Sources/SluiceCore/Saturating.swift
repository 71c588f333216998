/// Counter arithmetic that pins at the type's bounds instead of trapping: a counter fed by numbers
/// from outside (a server's token counts, a database's sums) must never crash the process.
extension FixedWidthInteger {
    /// `self + other`, or the nearest bound when that overflows.
    public func adding(saturating other: Self) -> Self {
        let (sum, overflow) = addingReportingOverflow(other)
        guard overflow else { return sum }
        return other > 0 ? .max : .min
    }

    /// Adds `other`, pinning at the nearest bound when that overflows.
    public mutating func add(saturating other: Self) {
        self = adding(saturating: other)
    }
}
