import Foundation
import SluiceCore

/// Turns one HTTP exchange into the outcome the runner acts on.
///
/// Success and the server's final refusals (4xx other than 408/429) are answers;
/// overload (429), server errors (5xx), timeouts, broken connections and
/// unreadable success bodies (a body that is not a JSON object, or token counts that are not
/// plausible) are retryable failures. A redirect (3xx) is never followed (it could carry the API key
/// to another server, or turn the POST into a GET without its body) and is a final failure.
enum ResponseClassifier {
    static func outcome(statusCode: Int, body: [UInt8], retryAfterHeader: String?, location: String? = nil,
                        now: Date = Date()) -> EngineOutcome {
        let retryAfter = retryAfterHeader.flatMap { parseRetryAfter($0, now: now) }
        switch statusCode {
        case 200..<300:
            let json: JSON
            do {
                json = try JSON.parse(body)
            } catch {
                return .failure(code: "malformed_response",
                                message: "HTTP \(statusCode) with a body that is not JSON (\(error)): \(preview(body))",
                                retryable: true)
            }
            guard case .object = json else {
                return .failure(code: "malformed_response",
                                message: "HTTP \(statusCode) with a body that is not a JSON object: \(preview(body))",
                                retryable: true)
            }
            if let problem = missingAnswer(in: json) {
                return .failure(code: "malformed_response", message: "HTTP \(statusCode) \(problem)", retryable: true)
            }
            switch usage(in: json) {
            case let .success(usage):
                return .response(statusCode: statusCode, body: json, usage: usage)
            case let .failure(problem):
                return .failure(code: "malformed_response", message: "HTTP \(statusCode) with \(problem.message)",
                                retryable: true)
            }
        case 300..<400:
            return .failure(code: "redirect_not_followed",
                            message: "HTTP \(statusCode) redirecting to \(location ?? "(no Location)"): Sluice does not follow redirects (they could send the API key to another server, or turn the POST into a GET without its body); give the final address as the base URL",
                            retryable: false)
        case 408, 429, 500..<600:
            return .failure(code: statusCode == 429 ? "rate_limited" : "http_\(statusCode)",
                            message: "HTTP \(statusCode): \(errorMessage(in: body))",
                            retryable: true, retryAfterSeconds: retryAfter)
        default:
            return .response(statusCode: statusCode, body: errorBody(body, statusCode: statusCode),
                             usage: Usage(promptTokens: 0, completionTokens: 0))
        }
    }

    /// Why a success body holds no answer, if it holds none: an answer has `choices` (chat and
    /// completions), `output` (responses) or `data` (embeddings) as a non-empty array of objects.
    /// Some servers put an error (`{"error": …}`) or nothing in a 200.
    static func missingAnswer(in body: JSON) -> String? {
        for field in ["choices", "output", "data"] {
            guard let value = body[field], !value.isNull else { continue }
            guard let items = value.arrayValue, !items.isEmpty, items.allSatisfy({ $0.objectValue != nil }) else {
                return "with `\(field)` that is not a non-empty array of objects: \(preview(Array(value.serialized.utf8)))"
            }
            return nil
        }
        if body["error"].map({ !$0.isNull }) == true {
            return "carrying an error instead of an answer: \(errorMessage(in: Array(body.serialized.utf8)))"
        }
        return "without an answer (no `choices`, `output` or `data`): \(preview(Array(body.serialized.utf8)))"
    }

    /// Why a success body's token counts cannot be used.
    struct ImplausibleUsage: Error {
        var message: String
    }

    /// `usage` as servers report it (the Responses API names the counts `input_tokens` and
    /// `output_tokens`); absent (or null) counts read as zero; a count that is not a whole
    /// number from 0 to `Usage.plausibleTokenLimit` is refused.
    static func usage(in body: JSON) -> Result<Usage, ImplausibleUsage> {
        let usage = body["usage"]
        if let usage, !usage.isNull, usage.objectValue == nil {
            return .failure(ImplausibleUsage(message: "usage that is \(usage.kindName), not an object of token counts"))
        }
        var counts: [Int] = []
        for (field, responsesField) in [("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens")] {
            let named = usage?[field].map { !$0.isNull } == true ? field : responsesField
            guard let value = usage?[named], !value.isNull else {
                counts.append(0)
                continue
            }
            guard let count = Usage.plausibleCount(value.intValue) else {
                let shown = String(decoding: value.serialized.utf8.prefix(40), as: UTF8.self)
                return .failure(ImplausibleUsage(message: "usage.\(named) \(shown), which is not a token count (a whole number from 0 to \(Usage.plausibleTokenLimit))"))
            }
            counts.append(count)
        }
        return .success(Usage(promptTokens: counts[0], completionTokens: counts[1]))
    }

    /// The server's error body as JSON; text that is not a JSON object is wrapped so the export stays valid JSON.
    static func errorBody(_ body: [UInt8], statusCode: Int) -> JSON {
        if let json = try? JSON.parse(body), case .object = json { return json }
        return .object([
            "error": .object([
                "message": .string(body.isEmpty ? "HTTP \(statusCode) with an empty body" : preview(body, limit: 4096)),
                "type": .string("http_error"),
                "code": .int(statusCode),
            ]),
        ])
    }

    /// The most useful line of an error body: `error.message` if the server sent OpenAI-style JSON.
    static func errorMessage(in body: [UInt8]) -> String {
        if let json = try? JSON.parse(body),
           let message = json["error"]?["message"]?.stringValue ?? json["error"]?.stringValue ?? json["message"]?.stringValue {
            return message
        }
        return body.isEmpty ? "(empty body)" : preview(body)
    }

    /// `Retry-After` is either delay seconds or an HTTP date.
    static func parseRetryAfter(_ value: String, now: Date) -> Double? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        // delay-seconds is decimal digits (RFC 9110); Double would also read "0x10" and "1e12".
        if !trimmed.isEmpty, trimmed.utf8.allSatisfy({ (0x30...0x39).contains($0) || $0 == UInt8(ascii: ".") }),
           let seconds = Double(trimmed), seconds.isFinite {
            return seconds
        }
        // An HTTP date is printable ASCII (RFC 9110). Anything else never reaches DateFormatter,
        // which traps on some Unicode (found by scripts/fuzz response: "s\u{59A}\u{314}r{").
        guard !trimmed.isEmpty, trimmed.utf8.allSatisfy({ (0x20..<0x7F).contains($0) }) else { return nil }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: trimmed) else { return nil }
        return max(0, date.timeIntervalSince(now))
    }

    static func preview(_ body: [UInt8], limit: Int = 200) -> String {
        let text = String(decoding: body.prefix(limit), as: UTF8.self)
        return body.count > limit ? text + "…" : text
    }
}
