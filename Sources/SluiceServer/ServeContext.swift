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
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer "),
              let project = keys.project(for: header.dropFirst("Bearer ".count).drop(while: { $0 == " " })) else {
            throw APIError.unauthorized
        }
        context.project = project
        return try await next(request, context)
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
