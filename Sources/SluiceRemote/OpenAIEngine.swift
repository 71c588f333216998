import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import SluiceCore
import Synchronization

/// Sends requests to an OpenAI-compatible server over HTTP, `capacity` at a time.
///
/// The engine holds no partial output: a cancelled request is simply abandoned
/// and will be sent again from the start by whichever worker leases it next.
public final class OpenAIEngine: InferenceEngine {
    public let configuration: OpenAIEngineConfiguration
    public let events: AsyncStream<EngineEvent>
    public var description: String { "openai-compatible server at \(configuration.baseURL.absoluteString)" }
    public var capacity: Int { configuration.capacity }
    public var checkpointsPartialOutput: Bool { false }

    private let continuation: AsyncStream<EngineEvent>.Continuation
    private let session: URLSession
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
        var task: URLSessionDataTask
        var stopReason: StopReason?
    }

    private enum StopReason { case cancelled, timedOut }

    public init(configuration: OpenAIEngineConfiguration) {
        self.configuration = configuration
        (events, continuation) = AsyncStream.makeStream(of: EngineEvent.self)
        let sessionConfiguration = URLSessionConfiguration.default
        sessionConfiguration.httpMaximumConnectionsPerHost = configuration.capacity
        // Our own timer enforces the whole-request limit; the session's idle limit only backs it up.
        sessionConfiguration.timeoutIntervalForRequest = configuration.requestTimeout + 30
        sessionConfiguration.timeoutIntervalForResource = configuration.requestTimeout + 60
        sessionConfiguration.requestCachePolicy = .reloadIgnoringLocalCacheData
        sessionConfiguration.urlCache = nil
        sessionConfiguration.httpCookieStorage = nil
        sessionConfiguration.httpShouldSetCookies = false
        let delegateQueue = OperationQueue()
        delegateQueue.maxConcurrentOperationCount = 1
        session = URLSession(configuration: sessionConfiguration, delegate: RedirectRefusal(), delegateQueue: delegateQueue)
    }

    public func submit(_ request: EngineRequest) {
        let urlRequest: URLRequest
        do {
            urlRequest = try makeURLRequest(for: request)
        } catch {
            continuation.yield(.finished(requestID: request.id, outcome: .failure(
                code: "invalid_request", message: "\(error)", retryable: false)))
            return
        }
        let id = request.id
        // The task is created and registered before it starts so its completion always finds it.
        let started: UInt64? = state.withLock { state in
            guard !state.isShutDown else { return nil }
            state.nextSerial += 1
            let serial = state.nextSerial
            let task = session.dataTask(with: urlRequest) { [weak self] data, response, error in
                self?.complete(id: id, serial: serial, data: data, response: response, error: error)
            }
            state.flights[id] = Flight(serial: serial, task: task)
            return serial
        }
        guard let serial = started else {
            continuation.yield(.stopped(requestID: id, checkpoint: nil))
            return
        }
        timers.asyncAfter(deadline: .now() + configuration.requestTimeout) { [weak self] in
            self?.stop(id: id, serial: serial, reason: .timedOut)
        }
        state.withLock { $0.flights[id]?.task }?.resume()
    }

    public func cancel(requestID: Int64) {
        let serial = state.withLock { $0.flights[requestID]?.serial }
        if let serial { stop(id: requestID, serial: serial, reason: .cancelled) }
    }

    public func collectCheckpoints() -> [(requestID: Int64, checkpoint: Checkpoint)] { [] }

    public func shutdown() async {
        let tasks = state.withLock { state -> [URLSessionDataTask] in
            state.isShutDown = true
            for id in state.flights.keys where state.flights[id]?.stopReason == nil {
                state.flights[id]?.stopReason = .cancelled
            }
            return state.flights.values.map(\.task)
        }
        for task in tasks { task.cancel() }
        session.invalidateAndCancel()
        continuation.finish()
    }

    private func stop(id: Int64, serial: UInt64, reason: StopReason) {
        let task = state.withLock { state -> URLSessionDataTask? in
            guard let flight = state.flights[id], flight.serial == serial, flight.stopReason == nil else { return nil }
            state.flights[id]?.stopReason = reason
            return flight.task
        }
        task?.cancel()
    }

    private func complete(id: Int64, serial: UInt64, data: Data?, response: URLResponse?, error: Error?) {
        let stopReason: StopReason?? = state.withLock { state in
            guard let flight = state.flights[id], flight.serial == serial else { return .none }
            state.flights[id] = nil
            return .some(flight.stopReason)
        }
        guard case let .some(reason) = stopReason else { return }
        let event: EngineEvent
        if let http = response as? HTTPURLResponse, error == nil {
            // A request that finished before its cancel took effect still reports its answer.
            event = .finished(requestID: id, outcome: ResponseClassifier.outcome(
                statusCode: http.statusCode, body: data.map { [UInt8]($0) } ?? [],
                retryAfterHeader: http.value(forHTTPHeaderField: "Retry-After"),
                location: http.value(forHTTPHeaderField: "Location")))
        } else if reason == .cancelled {
            event = .stopped(requestID: id, checkpoint: nil)
        } else if reason == .timedOut || (error as? URLError)?.code == .timedOut {
            event = .finished(requestID: id, outcome: .failure(
                code: "timeout",
                message: "no complete answer from \(configuration.baseURL.absoluteString) within \(formatSeconds(configuration.requestTimeout))",
                retryable: true))
        } else {
            let detail = error.map { describe($0) } ?? "no HTTP response"
            event = .finished(requestID: id, outcome: .failure(
                code: "connection_error",
                message: "request to \(configuration.baseURL.absoluteString) failed: \(detail)",
                retryable: true))
        }
        continuation.yield(event)
    }

    private func makeURLRequest(for request: EngineRequest) throws -> URLRequest {
        guard case .object = request.body else {
            throw OpenAIEngineError.bodyNotAnObject(customID: request.customID)
        }
        var body = request.body
        if let model = configuration.model { body = body.setting("model", to: .string(model)) }
        // Streaming answers are not batch results; ask for the whole answer at once.
        if body["stream"] != nil { body = body.setting("stream", to: .bool(false)) }
        var bytes = [UInt8]()
        body.write(into: &bytes)
        var urlRequest = URLRequest(url: configuration.url(for: request.endpoint.rawValue))
        urlRequest.httpMethod = "POST"
        urlRequest.httpBody = Data(bytes)
        urlRequest.timeoutInterval = configuration.requestTimeout + 30
        urlRequest.setValue("application/json", forHTTPHeaderField: "Content-Type")
        urlRequest.setValue("application/json", forHTTPHeaderField: "Accept")
        urlRequest.setValue(request.customID, forHTTPHeaderField: "X-Sluice-Custom-Id")
        if let key = configuration.apiKey, !key.isEmpty {
            urlRequest.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
        }
        return urlRequest
    }

    private func describe(_ error: Error) -> String {
        if let urlError = error as? URLError {
            return "\(urlError.localizedDescription) (URLError \(urlError.code.rawValue))"
        }
        return "\(error)"
    }
}

/// Refuses every HTTP redirect, so the 3xx itself completes the task (and is classified as a
/// failure): following one could send the `Authorization` header to another origin, or turn the
/// POST into a GET whose answer has nothing to do with the request.
final class RedirectRefusal: NSObject, URLSessionTaskDelegate, Sendable {
    func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                    newRequest request: URLRequest, completionHandler: @escaping @Sendable (URLRequest?) -> Void) {
        completionHandler(nil)
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
