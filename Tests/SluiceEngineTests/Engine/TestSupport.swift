import Foundation
import SluiceCore
import Synchronization
import Testing

@testable import SluiceEngine

/// Fixture files shipped with the test target.
enum Fixtures {
    static func url(_ relativePath: String) -> URL {
        Bundle.module.resourceURL!.appendingPathComponent("Fixtures").appendingPathComponent(relativePath)
    }

    static func json(_ relativePath: String) throws -> JSON {
        try JSON.parse(Array(Data(contentsOf: url(relativePath))))
    }
}

/// The default model, loaded once for all tests (it is 250 MB and takes a moment).
final class DefaultModel: @unchecked Sendable {
    static let shared: DefaultModel? = try? DefaultModel(precision: .float32)
    /// The same model on the integer kernels; nil below the avx2 kernel variant.
    static let sharedInt16: DefaultModel? = MatmulPrecision.int8Available ? try? DefaultModel(precision: .int16) : nil
    static let sharedInt8: DefaultModel? = MatmulPrecision.int8Available ? try? DefaultModel(precision: .int8) : nil

    let path: String
    let file: GGUFFile
    let pool: ComputePool
    let model: any LanguageModel
    let tokenizer: Tokenizer

    private init(precision: MatmulPrecision) throws {
        path = try ModelCache().resolve(nil)
        file = try GGUFFile(path: path)
        pool = ComputePool(threads: ComputePool.availableCores)
        model = try loadLanguageModel(file, pool: pool, precision: precision)
        tokenizer = try Tokenizer(gguf: file)
    }

    /// The default model at `precision` (default: the engine's, so it matches engines built with default options).
    static func require(_ precision: MatmulPrecision = .engineDefault) throws -> DefaultModel {
        let model: DefaultModel? = switch precision {
        case .float32: shared
        case .int16: sharedInt16
        case .int8: sharedInt8
        }
        guard let model else {
            throw TestFailure("the default model is not installed: run scripts/fetch-model (the test command does)")
        }
        return model
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Greedy decoding straight on a model: the reference path the engine's batching must agree with.
func greedyTokens(_ model: any LanguageModel, prompt: [Int32], count: Int, slot: Int = 0,
                  cache: KVCache? = nil) -> (tokens: [Int32], firstLogits: [Float]) {
    let cache = cache ?? model.makeCache()
    let vocabulary = model.shape.vocabularySize
    var logits = [Float](repeating: 0, count: vocabulary)
    cache.reserve(slot: slot, positions: prompt.count + count)
    logits.withUnsafeMutableBufferPointer { out in
        model.forward(tokens: prompt, placements: prompt.indices.map { TokenPlacement(slot: slot, position: $0) },
                      logitRows: [prompt.count - 1], cache: cache, logits: out.baseAddress!)
    }
    let firstLogits = logits
    var tokens: [Int32] = []
    for step in 0..<count {
        let next = logits.withUnsafeBufferPointer { Sampler.argmax($0.baseAddress!, count: vocabulary) }
        tokens.append(next)
        if step == count - 1 { break }
        logits.withUnsafeMutableBufferPointer { out in
            model.forward(tokens: [next], placements: [TokenPlacement(slot: slot, position: prompt.count + step)],
                          logitRows: [0], cache: cache, logits: out.baseAddress!)
        }
    }
    cache.release(slot: slot)
    return (tokens, firstLogits)
}

/// Log-softmax of a row of logits, in Double.
func logSoftmax(_ logits: [Float]) -> [Double] {
    let maximum = Double(logits.max()!)
    let logSum = log(logits.reduce(0.0) { $0 + exp(Double($1) - maximum) }) + maximum
    return logits.map { Double($0) - logSum }
}

/// Submits requests to an engine and waits for every one to finish or stop.
func runToCompletion(_ engine: any InferenceEngine, _ requests: [EngineRequest]) async -> [Int64: EngineEvent] {
    for request in requests { engine.submit(request) }
    var results: [Int64: EngineEvent] = [:]
    for await event in engine.events {
        switch event {
        case let .finished(id, _), let .stopped(id, _): results[id] = event
        }
        if results.count == requests.count { break }
    }
    return results
}

extension EngineEvent {
    /// The response body and usage of a finished 200 response.
    var response: (body: JSON, usage: Usage)? {
        guard case let .finished(_, .response(200, body, usage)) = self else { return nil }
        return (body, usage)
    }
}

func completionRequest(_ id: Int64, prompt: String, maxTokens: Int, extra: [(String, JSON)] = []) -> EngineRequest {
    var fields: [(key: String, value: JSON)] = [(key: "prompt", value: .string(prompt)), (key: "max_tokens", value: .int(maxTokens)),
                                                 (key: "temperature", value: .int(0))]
    for (key, value) in extra { fields.append((key: key, value: value)) }
    return EngineRequest(id: id, customID: "req-\(id)", endpoint: .completions, body: .object(fields))
}

/// Collects an engine's published checkpoints from a thread of its own, every millisecond, until
/// `stop()`. (A task would share the cooperative pool with the other tests, and on a busy machine
/// could miss a whole short generation.)
final class CheckpointWatcher: @unchecked Sendable {
    private let watching = Atomic<Bool>(true)
    private let seen = Mutex<[CheckpointState]>([])
    private let done = DispatchSemaphore(value: 0)

    init(_ engine: BuiltinEngine) {
        let thread = Thread { [self] in
            while watching.load(ordering: .acquiring) {
                let states = engine.collectCheckpoints().compactMap { CheckpointState($0.checkpoint) }
                if !states.isEmpty { seen.withLock { $0 += states } }
                usleep(1000)
            }
            done.signal()
        }
        thread.start()
    }

    /// Stops watching; the checkpoints seen, in the order they were published.
    func stop() -> [CheckpointState] {
        watching.store(false, ordering: .releasing)
        done.wait()
        return seen.withLock { $0 }
    }
}
