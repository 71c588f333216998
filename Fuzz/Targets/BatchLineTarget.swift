@_spi(Fuzzing) import SluiceQueue
import SluiceCore

extension FuzzTargets {
    /// The JSONL batch line validator, checked against the JSON parser it promises to agree with.
    static let batchLine = FuzzTarget(
        name: "batch-line",
        summary: "BatchLineValidator on one arbitrary line; agrees with JSON.parse on what is JSON, and an accepted line has the four fields"
    ) { bytes throws(FuzzFinding) in
        let verdict = BatchLineCheck.check(bytes)
        let parsed = try? JSON.parse(bytes)
        switch verdict.reason {
        case .notJSON?, .invalidUTF8?:
            if parsed != nil { throw FuzzFinding("the validator says \(verdict.reason!.rawValue) (\(verdict.message ?? "")) but JSON.parse accepts the line") }
        case nil:
            guard let object = parsed, case .object = object else {
                throw FuzzFinding("the validator accepts a line JSON.parse rejects or that is not an object")
            }
            guard object["custom_id"]?.stringValue == verdict.customID, verdict.customID?.isEmpty == false else {
                throw FuzzFinding("accepted custom_id \(verdict.customID ?? "nil") differs from the parsed one")
            }
            guard object["method"]?.stringValue == "POST", let url = object["url"]?.stringValue, url == verdict.url else {
                throw FuzzFinding("accepted a line whose method/url the parser reads differently")
            }
            guard case .object? = object["body"], verdict.body.map({ try? JSON.parse($0) }) == object["body"] else {
                throw FuzzFinding("the accepted body's text is not the parsed body")
            }
        default:
            if parsed == nil { throw FuzzFinding("the validator says \(verdict.reason!.rawValue) about a line JSON.parse rejects") }
        }
    }
}
