import Dispatch
import Foundation
import SluiceCore
import Synchronization

/// An in-process engine whose behaviour per request a test scripts.
final class ScriptedEngine: InferenceEngine {
    enum Action: Sendable {
        /// Finish with `outcome` after `seconds`.
        case respond(after: Double, EngineOutcome)
        /// Never finish on its own (only a cancel ends it). With checkpoints, one token of progress per collect.
        case stall
    }

    let capacity: Int
    let checkpointsPartialOutput: Bool
    let events: AsyncStream<EngineEvent>
    var description: String { "scripted engine" }

    private let continuation: AsyncStream<EngineEvent>.Continuation
    private let script: @Sendable (EngineRequest) -> Action
    private let state = Mutex(State())

    struct State {
        var inFlight: [Int64: EngineRequest] = [:]
        var progress: [Int64: Int] = [:]
        var submissions: [Int64: Int] = [:]
        var submissionTimes: [Int64: [ContinuousClock.Instant]] = [:]
        var finishTimes: [Int64: [ContinuousClock.Instant]] = [:]
        var resumedFrom: [Int64: Checkpoint] = [:]
        var cancels = 0
        var maxInFlight = 0
        var duplicateSubmissions = 0
    }

    init(capacity: Int, checkpoints: Bool = false, script: @escaping @Sendable (EngineRequest) -> Action) {
        self.capacity = capacity
        self.checkpointsPartialOutput = checkpoints
        self.script = script
        (events, continuation) = AsyncStream.makeStream(of: EngineEvent.self)
    }

    var snapshot: State { state.withLock { $0 } }

    func submit(_ request: EngineRequest) {
        state.withLock { state in
            if state.inFlight[request.id] != nil { state.duplicateSubmissions += 1 }
            state.inFlight[request.id] = request
            state.progress[request.id] = request.resumeFrom?.generatedTokens ?? 0
            state.submissions[request.id, default: 0] += 1
            state.submissionTimes[request.id, default: []].append(.now)
            if let checkpoint = request.resumeFrom { state.resumedFrom[request.id] = checkpoint }
            state.maxInFlight = max(state.maxInFlight, state.inFlight.count)
        }
        switch script(request) {
        case let .respond(seconds, outcome):
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { [self] in
                let stillHere = state.withLock { state in
                    state.finishTimes[request.id, default: []].append(.now)
                    return state.inFlight.removeValue(forKey: request.id) != nil
                }
                if stillHere { continuation.yield(.finished(requestID: request.id, outcome: outcome)) }
            }
        case .stall:
            break
        }
    }

    func cancel(requestID: Int64) {
        let checkpoint: Checkpoint?? = state.withLock { state in
            guard state.inFlight.removeValue(forKey: requestID) != nil else { return .none }
            state.cancels += 1
            let tokens = state.progress[requestID] ?? 0
            return .some(checkpointsPartialOutput ? Checkpoint(generatedTokens: tokens, payload: [UInt8(tokens & 0xFF)]) : nil)
        }
        if case let .some(value) = checkpoint { continuation.yield(.stopped(requestID: requestID, checkpoint: value)) }
    }

    func collectCheckpoints() -> [(requestID: Int64, checkpoint: Checkpoint)] {
        guard checkpointsPartialOutput else { return [] }
        return state.withLock { state in
            state.inFlight.keys.sorted().map { id in
                let tokens = (state.progress[id] ?? 0) + 1
                state.progress[id] = tokens
                return (requestID: id, checkpoint: Checkpoint(generatedTokens: tokens, payload: [UInt8(tokens & 0xFF)]))
            }
        }
    }

    func shutdown() async {
        continuation.finish()
    }
}

func okOutcome(_ id: Int64) -> EngineOutcome {
    .response(statusCode: 200, body: .object(["id": .string("x\(id)")]), usage: Usage(promptTokens: 3, completionTokens: 5))
}
