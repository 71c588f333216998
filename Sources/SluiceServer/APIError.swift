import SluiceCore

/// An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
public struct APIError: Error, Sendable, CustomStringConvertible {
    public var status: Int
    public var message: String
    public var type = "invalid_request_error"
    public var param: String?
    public var code: String?

    public init(status: Int, message: String, type: String = "invalid_request_error", param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    public var description: String { "\(status): \(message)" }

    public var json: JSON {
        .object([
            "error": .object([
                "message": .string(message),
                "type": .string(type),
                "param": param.map(JSON.string) ?? .null,
                "code": code.map(JSON.string) ?? .null,
            ]),
        ])
    }

    static func invalid(_ message: String, param: String? = nil) -> APIError {
        APIError(status: 400, message: message, param: param)
    }

    static func notFound(_ what: String, _ id: String) -> APIError {
        APIError(status: 404, message: "No such \(what): '\(id)'", code: "not_found")
    }

    static let unauthorized = APIError(
        status: 401, message: "Missing or incorrect API key. Provide it as `Authorization: Bearer KEY`.",
        code: "invalid_api_key")
}
