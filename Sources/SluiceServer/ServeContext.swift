import Hummingbird
import SluiceCore

/// The request context: which project the caller's API key belongs to.
public struct ServeContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by `AuthMiddleware`; "default" when the server runs without keys.
    public var project = "default"
    /// Whether the caller may see every project (no keys configured: a loopback-only server).
    public var seesAllProjects = false

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }
}

/// Checks `Authorization: Bearer KEY` on every request and records the key's project.
struct AuthMiddleware: RouterMiddleware {
    let keys: APIKeys?

    func handle(_ request: Request, context: ServeContext, next: (Request, ServeContext) async throws -> Response) async throws -> Response {
        var context = context
        guard let keys else {
            context.seesAllProjects = true
            return try await next(request, context)
        }
        guard let key = request.headers[.authorization].flatMap(Self.bearerKey), let project = keys.project(for: key) else {
            throw APIError.unauthorized
        }
        context.project = project
        return try await next(request, context)
    }

    /// The key of an `Authorization: Bearer KEY` header. The scheme's name is case-insensitive
    /// (RFC 9110 §11.1): `bearer KEY` is as good as `Bearer KEY`.
    static func bearerKey(_ header: String) -> Substring? {
        let bytes = Array(header.utf8.prefix(7))
        guard bytes.count == 7, bytes[6] == UInt8(ascii: " "), bytes.prefix(6).map({ $0 | 0x20 }) == Array("bearer".utf8) else {
            return nil
        }
        let key = header.dropFirst(7).drop(while: { $0 == " " })
        return key.isEmpty ? nil : key
    }
}

/// Turns every error into OpenAI's error JSON, and counts responses for /metrics.
struct ErrorMiddleware: RouterMiddleware {
    let metrics: ServeMetrics

    func handle(_ request: Request, context: ServeContext, next: (Request, ServeContext) async throws -> Response) async throws -> Response {
        do {
            let response = try await next(request, context)
            metrics.countResponse(status: response.status.code)
            return response
        } catch let error as APIError {
            metrics.countResponse(status: error.status)
            return jsonResponse(error.json, status: error.status)
        } catch let error as HTTPError {
            metrics.countResponse(status: error.status.code)
            let api = APIError(status: error.status.code, message: error.body ?? error.status.reasonPhrase)
            return jsonResponse(api.json, status: error.status.code)
        } catch {
            metrics.countResponse(status: 500)
            let api = APIError(status: 500, message: "The server had an error: \(error)", type: "server_error")
            return jsonResponse(api.json, status: 500)
        }
    }
}

func jsonResponse(_ json: JSON, status: Int = 200) -> Response {
    var bytes: [UInt8] = []
    json.write(into: &bytes)
    bytes.append(0x0A)
    return Response(status: HTTPResponse.Status(code: status), headers: [.contentType: "application/json"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
}
