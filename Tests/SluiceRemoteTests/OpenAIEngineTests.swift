import Foundation
import SluiceCore
@testable import SluiceRemote
import Synchronization
import Testing

/// Collects an engine's events as they arrive.
final class EventLog: Sendable {
    final class Storage: Sendable {
        let events = Mutex<[EngineEvent]>([])
    }
    private let storage = Storage()

    init(_ engine: OpenAIEngine) {
        let storage = self.storage
        Task { for await event in engine.events { storage.events.withLock { $0.append(event) } } }
    }

    var all: [EngineEvent] { storage.events.withLock { $0 } }

    /// The event for `id`, waiting up to `seconds` for it.
    func wait(for id: Int64, seconds: Double = 60) async throws -> EngineEvent {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if let event = all.first(where: { $0.requestID == id }) { return event }
            try await Task.sleep(for: .milliseconds(5))
        }
        Issue.record("no event for request \(id) within \(seconds) s")
        throw CancellationError()
    }
}

extension EngineEvent {
    var requestID: Int64 {
        switch self {
        case let .finished(id, _): return id
        case let .stopped(id, _): return id
        }
    }

    var outcome: EngineOutcome? {
        if case let .finished(_, outcome) = self { return outcome }
        return nil
    }
}

func chatRequest(_ id: Int64, extra: [(key: String, value: JSON)] = []) -> EngineRequest {
    let body: JSON = .object([
        (key: "model", value: .string("gemma-3-270m")),
        (key: "messages", value: .array([.object(["role": .string("user"), "content": .string("Hello number \(id)")])])),
        (key: "max_tokens", value: .int(8)),
    ] + extra)
    return EngineRequest(id: id, customID: "req-\(id)", endpoint: .chatCompletions, body: body)
}

@Suite(.serialized) struct OpenAIEngineTests {
    func makeEngine(_ server: FakeServer, capacity: Int = 4, timeout: Double = 30, apiKey: String? = nil,
                    model: String? = nil, baseSuffix: String = "") -> OpenAIEngine {
        OpenAIEngine(configuration: OpenAIEngineConfiguration(
            baseURL: URL(string: server.baseURL.absoluteString + baseSuffix)!, capacity: capacity,
            requestTimeout: timeout, apiKey: apiKey, model: model))
    }

    @Test func answersAreResponsesWithUsage() async throws {
        let server = try FakeServer()
        defer { server.stop() }
        let engine = makeEngine(server, apiKey: "secret-key")
        let events = EventLog(engine)
        engine.submit(chatRequest(1))
        engine.submit(EngineRequest(id: 2, customID: "req-2", endpoint: .completions,
                                    body: .object(["model": .string("m"), "prompt": .string("one two three")])))
        let chat = try await events.wait(for: 1)
        let completion = try await events.wait(for: 2)
        guard case let .response(status, body, usage) = chat.outcome else { Issue.record("chat: \(chat)"); return }
        #expect(status == 200)
        #expect(body["object"]?.stringValue == "chat.completion")
        #expect(body["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue?.isEmpty == false)
        #expect(usage.promptTokens == body["usage"]?["prompt_tokens"]?.intValue && usage.completionTokens > 0)
        guard case let .response(_, completionBody, completionUsage) = completion.outcome else { Issue.record("completion: \(completion)"); return }
        #expect(completionBody["object"]?.stringValue == "text_completion")
        #expect(completionUsage.promptTokens == 3)
        let logged = server.loggedRequests()
        #expect(logged.count == 2)
        #expect(logged.allSatisfy { $0["authorization"]?.stringValue == "Bearer secret-key" })
        #expect(Set(logged.compactMap { $0["path"]?.stringValue }) == ["/v1/chat/completions", "/v1/completions"])
        await engine.shutdown()
    }

    /// Responses lines, structured outputs, penalties, n and vLLM's spellings reach the server
    /// exactly as written: Sluice validates only the batch line, the server answers the body.
    @Test func bodiesAreForwardedUnchangedResponsesIncluded() async throws {
        let server = try FakeServer()
        defer { server.stop() }
        let engine = makeEngine(server)
        let events = EventLog(engine)
        let responses = try JSON.parse(#"{"model":"gpt-4o","input":[{"role":"user","content":[{"type":"input_text","text":"Hi"}]}],"instructions":"Be kind.","text":{"format":{"type":"json_schema","name":"x","schema":{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]},"strict":true}},"max_output_tokens":20,"metadata":{"a":"b"}}"#)
        let chat = try JSON.parse(#"{"model":"m","messages":[{"role":"developer","content":"x"},{"role":"user","name":"ann","content":"y"}],"n":3,"presence_penalty":0.5,"frequency_penalty":-0.25,"repetition_penalty":1.1,"logit_bias":{"17":-100},"guided_choice":["a","b"],"store":true,"tools":[{"type":"function","function":{"name":"f"}}],"response_format":{"type":"json_object"}}"#)
        engine.submit(EngineRequest(id: 1, customID: "r", endpoint: .responses, body: responses))
        engine.submit(EngineRequest(id: 2, customID: "c", endpoint: .chatCompletions, body: chat))
        let answer = try await events.wait(for: 1)
        _ = try await events.wait(for: 2)
        guard case let .response(status, body, usage) = answer.outcome else { Issue.record("\(answer)"); return }
        #expect(status == 200 && body["object"]?.stringValue == "response")
        #expect(usage.promptTokens > 0 && usage.completionTokens > 0, "Responses usage (input_tokens/output_tokens) is read")
        let logged = server.loggedRequests()
        #expect(logged.first { $0["path"]?.stringValue == "/v1/responses" }?["body"] == responses)
        #expect(logged.first { $0["path"]?.stringValue == "/v1/chat/completions" }?["body"] == chat)
        await engine.shutdown()
    }

    @Test func baseURLMayEndInV1AndModelIsOverridden() async throws {
        let server = try FakeServer()
        defer { server.stop() }
        let engine = makeEngine(server, model: "served-name", baseSuffix: "/v1/")
        let events = EventLog(engine)
        engine.submit(chatRequest(1))
        let event = try await events.wait(for: 1)
        guard case let .response(status, body, _) = event.outcome else { Issue.record("\(event)"); return }
        #expect(status == 200)
        #expect(body["model"]?.stringValue == "served-name")
        await engine.shutdown()
    }

    /// Credentials in --base-url are the server's business: the worker's description (its log line,
    /// the shared queue's worker list, `sluice status` on every host) and errors leave them out.
    @Test func baseURLCredentialsAreNeverShown() async throws {
        let withSecret = OpenAIEngineConfiguration(baseURL: URL(string: "http://bob:BaseSecret9@127.0.0.1:8080/v1")!)
        #expect(withSecret.displayedBaseURL == "http://127.0.0.1:8080/v1")
        let engine = OpenAIEngine(configuration: withSecret)
        #expect(engine.description == "openai-compatible server at http://127.0.0.1:8080/v1")
        await engine.shutdown()
        let plain = OpenAIEngineConfiguration(baseURL: URL(string: "https://api.example.com")!)
        #expect(plain.displayedBaseURL == "https://api.example.com")
    }

    @Test func rateLimitIsRetryableWithRetryAfter() async throws {
        let server = try FakeServer(["--retry-after", "7"])
        defer { server.stop() }
        let engine = makeEngine(server)
        let events = EventLog(engine)
        engine.submit(chatRequest(1, extra: [(key: "x_fake_status", value: .int(429))]))
        let event = try await events.wait(for: 1)
        guard case let .failure(code, message, retryable, retryAfter) = event.outcome else { Issue.record("\(event)"); return }
        #expect(code == "rate_limited")
        #expect(retryable)
        #expect(retryAfter == 7)
        #expect(message.contains("429") && message.contains("forced status 429"))
        await engine.shutdown()
    }

    @Test func serverErrorsAreRetryable() async throws {
        let server = try FakeServer(["--fail-first", "1", "--fail-status", "500"])
        defer { server.stop() }
        let engine = makeEngine(server)
        let events = EventLog(engine)
        engine.submit(chatRequest(1))
        let first = try await events.wait(for: 1)
        guard case let .failure(code, message, retryable, _) = first.outcome else { Issue.record("\(first)"); return }
        #expect(code == "http_500" && retryable && message.contains("injected failure 500"))
        // The same request again is the second attempt, which the server answers.
        engine.submit(chatRequest(2))
        engine.submit(chatRequest(1))
        try await waitFor { events.all.filter { $0.requestID == 1 }.count == 2 }
        let second = events.all.filter { $0.requestID == 1 }[1]
        guard case .response(200, _, _) = second.outcome else { Issue.record("\(second)"); return }
        await engine.shutdown()
    }

    @Test func clientErrorsAreFinalAnswersWithTheServersBody() async throws {
        let server = try FakeServer()
        defer { server.stop() }
        let engine = makeEngine(server)
        let events = EventLog(engine)
        engine.submit(chatRequest(1, extra: [(key: "x_fake_status", value: .int(400))]))
        let event = try await events.wait(for: 1)
        guard case let .response(status, body, _) = event.outcome else { Issue.record("\(event)"); return }
        #expect(status == 400)
        #expect(body["error"]?["message"]?.stringValue == "forced status 400")
        await engine.shutdown()
    }

    @Test func malformedSuccessBodyIsRetryable() async throws {
        let server = try FakeServer()
        defer { server.stop() }
        let engine = makeEngine(server)
        let events = EventLog(engine)
        engine.submit(chatRequest(1, extra: [(key: "x_fake_malformed", value: .bool(true))]))
        let event = try await events.wait(for: 1)
        guard case let .failure(code, message, retryable, _) = event.outcome else { Issue.record("\(event)"); return }
        #expect(code == "malformed_response" && retryable && message.contains("not JSON"))
        await engine.shutdown()
    }

    @Test func timeoutIsRetryable() async throws {
        let server = try FakeServer(["--stall"])
        defer { server.stop() }
        let engine = makeEngine(server, timeout: 0.5)
        let events = EventLog(engine)
        let started = ContinuousClock.now
        engine.submit(chatRequest(1))
        let event = try await events.wait(for: 1)
        let took = ContinuousClock.now - started
        guard case let .failure(code, _, retryable, _) = event.outcome else { Issue.record("\(event)"); return }
        #expect(code == "timeout" && retryable)
        #expect(took >= .seconds(0.45) && took < .seconds(10), "took \(took)")
        await engine.shutdown()
    }

    @Test func droppedConnectionsAndRefusedConnectionsAreRetryable() async throws {
        let server = try FakeServer(["--drop-first", "1"])
        defer { server.stop() }
        let engine = makeEngine(server)
        let events = EventLog(engine)
        engine.submit(chatRequest(1))
        let dropped = try await events.wait(for: 1)
        guard case let .failure(code, _, retryable, _) = dropped.outcome else { Issue.record("\(dropped)"); return }
        #expect(code == "connection_error" && retryable)
        await engine.shutdown()

        let closedPort = server.port
        server.stop()
        let refused = OpenAIEngine(configuration: OpenAIEngineConfiguration(
            baseURL: URL(string: "http://127.0.0.1:\(closedPort)")!, capacity: 1, requestTimeout: 10))
        let refusedEvents = EventLog(refused)
        refused.submit(chatRequest(2))
        let event = try await refusedEvents.wait(for: 2)
        guard case let .failure(refusedCode, message, refusedRetryable, _) = event.outcome else { Issue.record("\(event)"); return }
        #expect(refusedCode == "connection_error" && refusedRetryable)
        #expect(message.contains("127.0.0.1:\(closedPort)"))
        await refused.shutdown()
    }

    @Test func cancelStopsTheRequestAndTheServerSeesTheHangUp() async throws {
        let server = try FakeServer(["--stall"])
        defer { server.stop() }
        let engine = makeEngine(server)
        let events = EventLog(engine)
        engine.submit(chatRequest(1))
        try await waitFor { ((try? server.stats())?["in_flight"]?.intValue ?? 0) == 1 }
        engine.cancel(requestID: 1)
        let event = try await events.wait(for: 1, seconds: 30)
        guard case let .stopped(_, checkpoint) = event else { Issue.record("\(event)"); return }
        #expect(checkpoint == nil)
        try await waitFor { server.loggedRequests().first?["outcome"]?.stringValue == "abandoned" }
        // Cancelling again, or cancelling an unknown id, emits nothing more.
        engine.cancel(requestID: 1)
        engine.cancel(requestID: 99)
        try await Task.sleep(for: .milliseconds(100))
        #expect(events.all.count == 1)
        await engine.shutdown()
    }

    @Test func keepsCapacityRequestsInFlightAtOnce() async throws {
        let server = try FakeServer(["--stall"])
        defer { server.stop() }
        let engine = makeEngine(server, capacity: 24)
        let events = EventLog(engine)
        for id in 1...24 { engine.submit(chatRequest(Int64(id))) }
        try await waitFor { ((try? server.stats())?["in_flight"]?.intValue ?? 0) == 24 }
        try server.control(.object(["stall": .bool(false)]))
        try await waitFor { events.all.count == 24 }
        #expect(events.all.allSatisfy { if case .response(200, _, _)? = $0.outcome { true } else { false } })
        await engine.shutdown()
    }
}

@Suite struct ResponseClassifierTests {
    @Test func retryAfterAcceptsSecondsAndHTTPDates() {
        let now = Date(timeIntervalSince1970: 1_700_000_000)
        #expect(ResponseClassifier.parseRetryAfter("12", now: now) == 12)
        #expect(ResponseClassifier.parseRetryAfter(" 1.5 ", now: now) == 1.5)
        #expect(ResponseClassifier.parseRetryAfter("Tue, 14 Nov 2023 22:13:40 GMT", now: now) == 20)
        #expect(ResponseClassifier.parseRetryAfter("soon", now: now) == nil)
        #expect(ResponseClassifier.parseRetryAfter("-3", now: now) == nil)
    }

    /// Found by scripts/fuzz response (Fuzz/crashes/response/retry-after-unicode-dateformatter-trap):
    /// Foundation's DateFormatter trapped ("Incorrect range CFRange") on this Retry-After value, so a
    /// server could crash the worker with one header.
    @Test func retryAfterWithUnicodeIsIgnoredNotATrap() {
        let now = Date(timeIntervalSince1970: 1_700_000_000)
        for header in ["s\u{59A}\u{314}r{", "Tue, 14 Nov 2023 22:13:40 GMT\u{301}", "\u{FEFF}12", "Ｔue, 14 Nov 2023 22:13:40 GMT", ""] {
            #expect(ResponseClassifier.parseRetryAfter(header, now: now) == nil, "\(header.debugDescription)")
        }
        let outcome = ResponseClassifier.outcome(statusCode: 503, body: [], retryAfterHeader: "s\u{59A}\u{314}r{", now: now)
        guard case let .failure(_, _, retryable, retryAfter) = outcome else { Issue.record("\(outcome)"); return }
        #expect(retryable && retryAfter == nil)
    }

    @Test func statusCodesAreClassified() {
        let ok = ResponseClassifier.outcome(statusCode: 200, body: Array(#"{"choices":[{"text":"a"}],"usage":{"prompt_tokens":2,"completion_tokens":3}}"#.utf8), retryAfterHeader: nil)
        #expect(ok == .response(statusCode: 200, body: .object(["choices": .array([.object(["text": .string("a")])]),
                                                                "usage": .object(["prompt_tokens": .int(2), "completion_tokens": .int(3)])]),
                                usage: Usage(promptTokens: 2, completionTokens: 3)))
        // A 200 that holds no answer (an error some servers send with 200, nothing, a broken list) is
        // retried as malformed, never stored as a success.
        for body in [#"{"error":{"message":"model overloaded","code":503}}"#, "{}", #"{"choices":null,"id":"x"}"#,
                     #"{"choices":"x"}"#, #"{"choices":[null]}"#, #"{"choices":[]}"#, #"{"data":[1]}"#,
                     #"{"choices":[{}],"usage":"lots"}"#] {
            guard case let .failure(code, _, retryable, _) = ResponseClassifier.outcome(statusCode: 200, body: Array(body.utf8),
                                                                                       retryAfterHeader: nil) else {
                Issue.record("\(body) was taken as an answer"); continue
            }
            #expect(code == "malformed_response" && retryable, "\(body)")
        }
        for body in [#"{"output":[{"type":"message"}]}"#, #"{"object":"list","data":[{"embedding":[0.5]}]}"#] {
            guard case .response(200, _, _) = ResponseClassifier.outcome(statusCode: 200, body: Array(body.utf8), retryAfterHeader: nil) else {
                Issue.record("\(body) was refused"); continue
            }
        }
        // Retry-After's delay is decimal digits: hexadecimal and exponents are no delay.
        #expect(ResponseClassifier.parseRetryAfter("0x10", now: Date()) == nil && ResponseClassifier.parseRetryAfter("1e12", now: Date()) == nil)
        #expect(ResponseClassifier.parseRetryAfter(" 12 ", now: Date()) == 12)
        for code in [408, 429, 500, 502, 503, 504] {
            guard case let .failure(_, _, retryable, _) = ResponseClassifier.outcome(statusCode: code, body: [], retryAfterHeader: nil) else {
                Issue.record("\(code) not a failure"); continue
            }
            #expect(retryable)
        }
        guard case let .response(404, body, _) = ResponseClassifier.outcome(statusCode: 404, body: Array("Not Found".utf8), retryAfterHeader: nil) else {
            Issue.record("404 not a final response"); return
        }
        #expect(body["error"]?["message"]?.stringValue == "Not Found")
    }

    @Test func endpointURLsJoinCleanly() {
        for base in ["http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/"] {
            let configuration = OpenAIEngineConfiguration(baseURL: URL(string: base)!)
            #expect(configuration.url(for: "/v1/completions").absoluteString == "http://h:1/v1/completions")
        }
        let prefixed = OpenAIEngineConfiguration(baseURL: URL(string: "https://h/api")!)
        #expect(prefixed.url(for: "/v1/chat/completions").absoluteString == "https://h/api/v1/chat/completions")
    }
}

func waitFor(seconds: Double = 60, _ condition: () -> Bool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while !condition() {
        if ContinuousClock.now > deadline {
            Issue.record("condition not met within \(seconds) s", sourceLocation: sourceLocation)
            throw CancellationError()
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}
