import Foundation
import SluiceCore
import Testing

@testable import SluiceEngine

/// Submits requests and waits until each finishes or stops, for at most `limit`: an engine
/// that stops making progress fails the test instead of blocking the suite.
func completeWithin(_ engine: BuiltinEngine, _ requests: [EngineRequest], limit: Duration = .seconds(600),
                    sourceLocation: SourceLocation = #_sourceLocation) async -> [Int64: EngineEvent] {
    let outcome = await withTaskGroup(of: [Int64: EngineEvent]?.self) { group in
        group.addTask { await runToCompletion(engine, requests) }
        group.addTask {
            try? await Task.sleep(for: limit)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
    guard let outcome else {
        Issue.record("the engine did not finish \(requests.count) requests within \(limit)", sourceLocation: sourceLocation)
        return [:]
    }
    return outcome
}
