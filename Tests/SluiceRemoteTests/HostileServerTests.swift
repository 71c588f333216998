import Foundation
import SluiceCore
@testable import SluiceRemote
import Testing

/// Issue 13, defects 5 and 6: what a hostile or broken server answers must neither leak the API key
/// nor become a stored result, nor crash the worker.
@Suite(.serialized) struct HostileServerTests {
    func makeEngine(_ server: FakeServer, apiKey: String? = "secret-key") -> OpenAIEngine {
        OpenAIEngine(configuration: OpenAIEngineConfiguration(baseURL: server.baseURL, capacity: 4,
                                                              requestTimeout: 30, apiKey: apiKey))
    }

    // Defect 5: a redirect, to another origin or the same one, is never followed: the key stays
    // home, no GET is made in place of the POST, and the outcome is a failure naming the redirect.
    @Test func redirectsAreNeverFollowedAndAreFailures() async throws {
        let server = try FakeServer()
        let other = try FakeServer()
        defer { server.stop(); other.stop() }
        let engine = makeEngine(server)
        let events = EventLog(engine)
        let targets: [(Int, String)] = [
            (307, other.baseURL.absoluteString + "/v1/chat/completions"),
            (308, other.baseURL.absoluteString + "/v1/chat/completions"),
            (302, other.baseURL.absoluteString + "/stolen"),
            (303, other.baseURL.absoluteString + "/stolen"),
            (301, server.baseURL.absoluteString + "/v1/chat/completions"),
            (307, "/v1/chat/completions"),
        ]
        for (index, target) in targets.enumerated() {
            engine.submit(chatRequest(Int64(index + 1), extra: [
                (key: "x_fake_redirect", value: .object(["status": .int(target.0), "location": .string(target.1)])),
            ]))
        }
        for (index, target) in targets.enumerated() {
            let event = try await events.wait(for: Int64(index + 1))
            guard case let .failure(code, message, retryable, _) = event.outcome else {
                Issue.record("redirect \(target) gave \(event)")
                continue
            }
            #expect(code == "redirect_not_followed" && !retryable)
            #expect(message.contains("HTTP \(target.0)") && message.contains(target.1))
        }
        #expect(other.loggedRequests().isEmpty)
        #expect(try other.stats()["received"]?.intValue == 0)
        let home = server.loggedRequests()
        #expect(home.count == targets.count && home.allSatisfy { $0["outcome"]?.stringValue == "redirect" })
        await engine.shutdown()
    }

    // Defect 6: absurd token counts are a clear, retryable failure, never a trap or a stored negative.
    @Test func absurdTokenCountsAreFailuresNotCrashes() async throws {
        let server = try FakeServer()
        defer { server.stop() }
        let engine = makeEngine(server)
        let events = EventLog(engine)
        let usages: [JSON] = [
            .object(["prompt_tokens": .number("9000000000000000000"), "completion_tokens": .int(3)]),
            .object(["prompt_tokens": .number("-9000000000000000000"), "completion_tokens": .int(3)]),
            .object(["prompt_tokens": .int(2), "completion_tokens": .int(-5)]),
            .object(["prompt_tokens": .number("9e18"), "completion_tokens": .int(1)]),
            .object(["prompt_tokens": .number("99999999999999999999999"), "completion_tokens": .int(1)]),
            .object(["prompt_tokens": .string("12"), "completion_tokens": .int(1)]),
            .object(["prompt_tokens": .number("2.5"), "completion_tokens": .int(1)]),
        ]
        for (index, usage) in usages.enumerated() {
            engine.submit(chatRequest(Int64(index + 1), extra: [(key: "x_fake_usage", value: usage)]))
        }
        for index in usages.indices {
            let event = try await events.wait(for: Int64(index + 1))
            guard case let .failure(code, message, retryable, _) = event.outcome else {
                Issue.record("usage \(usages[index].serialized) gave \(event)")
                continue
            }
            #expect(code == "malformed_response" && retryable)
            #expect(message.contains("not a token count"))
        }
        // Plausible counts, and counts left out or null, are taken as they are.
        engine.submit(chatRequest(100, extra: [(key: "x_fake_usage", value: .object([
            "prompt_tokens": .int(Usage.plausibleTokenLimit), "completion_tokens": .null]))]))
        let fine = try await events.wait(for: 100)
        guard case let .response(200, _, usage) = fine.outcome else { Issue.record("\(fine)"); return }
        #expect(usage == Usage(promptTokens: Usage.plausibleTokenLimit, completionTokens: 0))
        await engine.shutdown()
    }

    @Test func countersSaturateInsteadOfTrapping() {
        #expect(Int.max.adding(saturating: 1) == .max)
        #expect(Int.min.adding(saturating: -1) == .min)
        #expect(Usage(promptTokens: .max, completionTokens: .max).totalTokens == .max)
        var counter = Int.max - 1
        counter.add(saturating: 5)
        #expect(counter == .max)
    }
}
