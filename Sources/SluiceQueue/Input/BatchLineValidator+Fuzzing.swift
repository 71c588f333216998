import SluiceCore

/// The batch line validator's verdict for the fuzz targets (Fuzz/Targets), which check it
/// against `JSON.parse`. Not API: `@_spi(Fuzzing)`.
@_spi(Fuzzing) public enum BatchLineCheck {
    public struct Verdict {
        /// nil when the line is accepted.
        public var reason: BadLineReason?
        public var message: String?
        public var customID: String?
        public var url: String?
        /// The accepted body's text.
        public var body: [UInt8]?
    }

    public static func check(_ line: UnsafeBufferPointer<UInt8>) -> Verdict {
        switch BatchLineValidator.validate(line) {
        case .success(let valid):
            return Verdict(customID: valid.customIDString, url: valid.endpoint.rawValue, body: Array(valid.body))
        case .failure(let problem):
            return Verdict(reason: problem.reason, message: problem.message, customID: problem.customID)
        }
    }
}
