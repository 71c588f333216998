import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SluiceCore
import Synchronization

/// Sends requests to an OpenAI-compatible server over HTTP, `capacity` at a time.
///
/// The engine holds no partial output: a cancelled request is simply abandoned
/// and will be sent again from the start by whichever worker leases it next.
///
/// HTTP is AsyncHTTPClient's (SwiftNIO): it waits on epoll without spinning while answers are
/// slow, notices a kept-alive connection the server closed instead of sending into it, takes IPv6
/// literals, and follows no redirect (a 3xx is the answer, classified as a failure: following it
/// could send the `Authorization` header to another origin, or turn the POST into a GET).
public final class OpenAIEngine: InferenceEngine {
    public let configuration: OpenAIEngineConfiguration
    public let events: AsyncStream<EngineEvent>
    public var description: String { "openai-compatible server at \(configuration.displayedBaseURL)" }
    public var capacity: Int { configuration.capacity }
    public var checkpointsPartialOutput: Bool { false }

    /// The largest answer kept: a bigger one fails the request (the same answer would come again).
    static let maximumAnswerBytes = 1 << 30

    private let continuation: AsyncStream<EngineEvent>.Continuation
    private let client: HTTPClient
    private let timers = DispatchQueue(label: "sluice.openai.timeouts")
    private let state = Mutex(State())

    private struct State {
        var flights: [Int64: Flight] = [:]
        var nextSerial: UInt64 = 0
        var isShutDown = false
    }

    /// One HTTP exchange. `serial` tells a stale timeout from the current one when an id is reused.
    private struct Flight {
        var serial: UInt64
        var task: Task<Void, Never>?
        var stopReason: StopReason?
    }

    private enum StopReason { case cancelled, timedOut }

    /// What one exchange came to, before it is classified.
    private enum Exchange {
        case answer(status: Int, body: [UInt8], retryAfter: String?, location: String?)
        case tooLarge
        case failed(any Error)
    }

    /// - Parameter environment: where the proxy settings are read (`http_proxy`, `https_proxy`,
    ///   `no_proxy`…; see `OpenAIEngineConfiguration.proxy(for:environment:)`).
    public init(configuration: OpenAIEngineConfiguration,
                environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.configuration = configuration
        (events, continuation) = AsyncStream.makeStream(of: EngineEvent.self)
        var pool = HTTPClient.Configuration.ConnectionPool(
            idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: configuration.capacity)
        pool.retryConnectionEstablishment = false
        // Our own timer enforces the whole-request limit; the read limit only backs it up.
        let limit = TimeAmount.seconds(Int64(min(configuration.requestTimeout + 30, 1e9)))
        var proxy: HTTPClient.Configuration.Proxy?
        if let found = OpenAIEngineConfiguration.proxy(for: configuration.baseURL, environment: environment) {
            switch found.kind {
            case .http:
                let credentials = found.user.map { HTTPClient.Authorization.basic(username: $0, password: found.password ?? "") }
                proxy = .server(host: found.host, port: found.port, authorization: credentials)
            case .socks5:
                proxy = .socksServer(host: found.host, port: found.port)
            }
        }
        let clientConfiguration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(30), read: limit),
            connectionPool: pool,
            proxy: proxy,
            decompression: .enabled(limit: .none))
        client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: clientConfiguration)
    }

    public func submit(_ request: EngineRequest) {
        let httpRequest: HTTPClientRequest
        do {
            httpRequest = try makeRequest(for: request)
        } catch {
            continuation.yield(.finished(requestID: request.id, outcome: .failure(
                code: "invalid_request", message: "\(error)", retryable: false)))
            return
        }
        let id = request.id
        let started: UInt64? = state.withLock { state in
            guard !state.isShutDown else { return nil }
            state.nextSerial += 1
            state.flights[id] = Flight(serial: state.nextSerial)
            return state.nextSerial
        }
        guard let serial = started else {
            continuation.yield(.stopped(requestID: id, checkpoint: nil))
            return
        }
        let client = self.client
        let deadline = NIODeadline.now() + .seconds(Int64(min(configuration.requestTimeout + 30, 1e9)))
        let task = Task { [weak self] in
            let exchange: Exchange
            do {
                let response = try await client.execute(httpRequest, deadline: deadline)
                do {
                    let body = try await response.body.collect(upTo: Self.maximumAnswerBytes)
                    exchange = .answer(status: Int(response.status.code), body: Array(body.readableBytesView),
                                       retryAfter: response.headers.first(name: "Retry-After"),
                                       location: response.headers.first(name: "Location"))
                } catch is NIOTooManyBytesError {
                    exchange = .tooLarge
                }
            } catch {
                exchange = .failed(error)
            }
            self?.complete(id: id, serial: serial, exchange)
        }
        // Registered after it starts: `complete` finds the flight by serial either way.
        let stoppedMeanwhile = state.withLock { state -> Bool in
            guard state.flights[id]?.serial == serial else { return false }
            state.flights[id]?.task = task
            return state.flights[id]?.stopReason != nil
        }
        if stoppedMeanwhile { task.cancel() }
        timers.asyncAfter(deadline: .now() + configuration.requestTimeout) { [weak self] in
            self?.stop(id: id, serial: serial, reason: .timedOut)
        }
    }

    public func cancel(requestID: Int64) {
        let serial = state.withLock { $0.flights[requestID]?.serial }
        if let serial { stop(id: requestID, serial: serial, reason: .cancelled) }
    }

    public func collectCheckpoints() -> [(requestID: Int64, checkpoint: Checkpoint)] { [] }

    public func shutdown() async {
        let tasks = state.withLock { state -> [Task<Void, Never>] in
            state.isShutDown = true
            for id in state.flights.keys where state.flights[id]?.stopReason == nil {
                state.flights[id]?.stopReason = .cancelled
            }
            return state.flights.values.compactMap(\.task)
        }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
        try? await client.shutdown()
        continuation.finish()
    }

    private func stop(id: Int64, serial: UInt64, reason: StopReason) {
        let task = state.withLock { state -> Task<Void, Never>?? in
            guard let flight = state.flights[id], flight.serial == serial, flight.stopReason == nil else { return nil }
            state.flights[id]?.stopReason = reason
            return .some(flight.task)
        }
        if case let .some(task?) = task { task.cancel() }
    }

    private func complete(id: Int64, serial: UInt64, _ exchange: Exchange) {
        let stopReason: StopReason?? = state.withLock { state in
            guard let flight = state.flights[id], flight.serial == serial else { return .none }
            state.flights[id] = nil
            return .some(flight.stopReason)
        }
        guard case let .some(reason) = stopReason else { return }
        let event: EngineEvent
        switch exchange {
        case let .answer(status, body, retryAfter, location):
            // A request that finished before its cancel took effect still reports its answer.
            event = .finished(requestID: id, outcome: ResponseClassifier.outcome(
                statusCode: status, body: body, retryAfterHeader: retryAfter, location: location))
        case .tooLarge:
            event = .finished(requestID: id, outcome: .failure(
                code: "response_too_large",
                message: "the answer from \(configuration.displayedBaseURL) is larger than \(Self.maximumAnswerBytes >> 20) MiB",
                retryable: false))
        case let .failed(error):
            if reason == .cancelled {
                event = .stopped(requestID: id, checkpoint: nil)
            } else if reason == .timedOut || (error as? HTTPClientError) == .deadlineExceeded
                        || (error as? HTTPClientError) == .readTimeout {
                event = .finished(requestID: id, outcome: .failure(
                    code: "timeout",
                    message: "no complete answer from \(configuration.displayedBaseURL) within \(formatSeconds(configuration.requestTimeout))",
                    retryable: true))
            } else {
                event = .finished(requestID: id, outcome: .failure(
                    code: "connection_error",
                    message: "request to \(configuration.displayedBaseURL) failed: \(describe(error))",
                    retryable: true))
            }
        }
        continuation.yield(event)
    }

    private func makeRequest(for request: EngineRequest) throws -> HTTPClientRequest {
        guard case .object = request.body else {
            throw OpenAIEngineError.bodyNotAnObject(customID: request.customID)
        }
        var body = request.body
        if let model = configuration.model { body = body.setting("model", to: .string(model)) }
        // Streaming answers are not batch results; ask for the whole answer at once (and drop the
        // stream's options, which servers refuse without a stream).
        if body["stream"] != nil { body = body.setting("stream", to: .bool(false)) }
        if body["stream_options"] != nil { body = body.removing("stream_options") }
        var bytes = [UInt8]()
        body.write(into: &bytes)
        var httpRequest = HTTPClientRequest(url: configuration.url(for: request.endpoint.rawValue).absoluteString)
        httpRequest.method = .POST
        httpRequest.body = .bytes(ByteBuffer(bytes: bytes))
        httpRequest.headers.add(name: "Content-Type", value: "application/json")
        httpRequest.headers.add(name: "Accept", value: "application/json")
        httpRequest.headers.add(name: "X-Sluice-Custom-Id", value: request.customID)
        if let credentials = configuration.basicCredentials {
            httpRequest.headers.add(name: "Authorization", value: "Basic \(credentials)")
        }
        if let key = configuration.apiKey, !key.isEmpty {
            httpRequest.headers.replaceOrAdd(name: "Authorization", value: "Bearer \(key)")
        }
        return httpRequest
    }

    private func describe(_ error: any Error) -> String {
        if let client = error as? HTTPClientError { return "\(client)" }
        return "\(error)"
    }
}

/// Problems with a request found before anything is sent.
public enum OpenAIEngineError: Error, CustomStringConvertible {
    case bodyNotAnObject(customID: String)

    public var description: String {
        switch self {
        case let .bodyNotAnObject(customID): return "request \(customID): body is not a JSON object"
        }
    }
}

func formatSeconds(_ seconds: Double) -> String {
    seconds == seconds.rounded() ? "\(Int(seconds)) s" : String(format: "%.1f s", seconds)
}
