/// Why a chat template could not be compiled or rendered: the construct, and the line it is on.
public struct JinjaError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong, naming the construct (a filter, test, statement, method or variable).
    public var message: String
    /// The template line (1-based) the problem was found on; 0 when unknown.
    public var line: Int
    /// True for `raise_exception(...)` called by the template itself: the messages are at fault, not the template.
    public var raisedByTemplate: Bool

    public init(_ message: String, line: Int = 0, raisedByTemplate: Bool = false) {
        self.message = message
        self.line = line
        self.raisedByTemplate = raisedByTemplate
    }

    public var description: String { line > 0 ? "\(message) (template line \(line))" : message }
}
