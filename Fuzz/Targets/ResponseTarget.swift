import Foundation
import SluiceCore
@_spi(Fuzzing) import SluiceRemote

extension FuzzTargets {
    /// The remote engine's response classifier on an arbitrary HTTP status, Retry-After header and body.
    /// Input layout: 2 bytes status (mod 600), 1 byte header length, the header, then the body.
    static let response = FuzzTarget(
        name: "response",
        summary: "ResponseClassifier.outcome on a status, Retry-After header and body from the bytes; 2xx objects are responses, retry delays are finite and not negative"
    ) { bytes throws(FuzzFinding) in
        guard bytes.count >= 3 else { return }
        let statusCode = (Int(bytes[0]) << 8 | Int(bytes[1])) % 600
        let headerLength = min(Int(bytes[2]), bytes.count - 3)
        let header = headerLength == 0 ? nil : String(decoding: bytes[3..<(3 + headerLength)], as: UTF8.self)
        let body = Array(bytes[(3 + headerLength)...])
        let outcome = ResponseClassification.outcome(statusCode: statusCode, body: body, retryAfterHeader: header,
                                                     now: Date(timeIntervalSince1970: 1_800_000_000))
        switch outcome {
        case .response(let code, let json, _):
            guard code == statusCode else { throw FuzzFinding("response carries status \(code), not \(statusCode)") }
            guard case .object = json else { throw FuzzFinding("a response body that is not an object") }
            if (200..<300).contains(statusCode), (try? JSON.parse(body)) != json {
                throw FuzzFinding("a success response's body is not the server's body")
            }
        case .failure(let code, _, let retryable, let retryAfter):
            if let delay = retryAfter, !(delay.isFinite && delay >= 0) {
                throw FuzzFinding("retry delay \(delay) from header \(header ?? "nil")")
            }
            // A redirect is a final failure (never followed, so no credential leaves for another
            // origin); every other failure the classifier makes is worth retrying.
            let finalRedirect = code == "redirect_not_followed" && (300..<400).contains(statusCode)
            guard retryable || finalRedirect else { throw FuzzFinding("a classified failure \(code) that is not retryable") }
            guard !(retryable && code == "redirect_not_followed") else { throw FuzzFinding("a redirect classified as retryable") }
        }
    }
}
