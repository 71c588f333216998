import Foundation
import SluiceCore

/// The response classifier for the fuzz targets (Fuzz/Targets). Not API: `@_spi(Fuzzing)`.
@_spi(Fuzzing) public enum ResponseClassification {
    public static func outcome(statusCode: Int, body: [UInt8], retryAfterHeader: String?, now: Date) -> EngineOutcome {
        ResponseClassifier.outcome(statusCode: statusCode, body: body, retryAfterHeader: retryAfterHeader, now: now)
    }
}
