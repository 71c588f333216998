import Foundation
import SluiceCore
import Synchronization

/// The built-in engines behind one `InferenceEngine`: `/v1/embeddings` requests go to an
/// embedding engine, every other endpoint to the generation engine.
///
/// The embedding model loads at the first embeddings request (a generation-only job never
/// pays for it); if it cannot load, those requests fail with the reason, not retried.
public final class EndpointRouter: InferenceEngine, @unchecked Sendable {
    public let generation: any InferenceEngine
    public let events: AsyncStream<EngineEvent>
    public var description: String { generation.description }
    public var capacity: Int { generation.capacity }
    public var checkpointsPartialOutput: Bool { generation.checkpointsPartialOutput }

    private let makeEmbeddings: @Sendable () throws -> EmbeddingEngine
    private let state = Mutex(State())
    private let continuation: AsyncStream<EngineEvent>.Continuation
    private let forwarders = Mutex<[Task<Void, Never>]>([])

    struct State {
        var embeddings: EmbeddingEngine?
        var loadError: String?
    }

    /// - Parameter makeEmbeddings: loads the embedding engine, at the first embeddings request.
    public init(generation: any InferenceEngine, makeEmbeddings: @escaping @Sendable () throws -> EmbeddingEngine) {
        self.generation = generation
        self.makeEmbeddings = makeEmbeddings
        (events, continuation) = AsyncStream.makeStream(of: EngineEvent.self)
        forward(generation.events)
    }

    /// The embedding engine, once loaded.
    public var embeddings: EmbeddingEngine? { state.withLock { $0.embeddings } }

    private func forward(_ stream: AsyncStream<EngineEvent>) {
        let continuation = self.continuation
        let task = Task.detached {
            for await event in stream { continuation.yield(event) }
        }
        forwarders.withLock { $0.append(task) }
    }

    /// The embedding engine, loading it on first use; nil (with the reason) if it cannot load.
    private func embeddingEngine() -> Result<EmbeddingEngine, ModelLoadError> {
        state.withLock { state in
            if let engine = state.embeddings { return .success(engine) }
            if let error = state.loadError { return .failure(ModelLoadError(error)) }
            do {
                let engine = try makeEmbeddings()
                state.embeddings = engine
                forward(engine.events)
                return .success(engine)
            } catch {
                state.loadError = "cannot load the embedding model: \(error)"
                return .failure(ModelLoadError(state.loadError!))
            }
        }
    }

    public func submit(_ request: EngineRequest) {
        guard request.endpoint == .embeddings else { return generation.submit(request) }
        switch embeddingEngine() {
        case .success(let engine): engine.submit(request)
        case .failure(let error):
            continuation.yield(.finished(requestID: request.id, outcome: .failure(code: "embedding_model_unavailable", message: error.description, retryable: false)))
        }
    }

    public func cancel(requestID: Int64) {
        generation.cancel(requestID: requestID)
        embeddings?.cancel(requestID: requestID)
    }

    public func collectCheckpoints() -> [(requestID: Int64, checkpoint: Checkpoint)] {
        generation.collectCheckpoints() + (embeddings?.collectCheckpoints() ?? [])
    }

    public func shutdown() async {
        await generation.shutdown()
        await embeddings?.shutdown()
        for task in forwarders.withLock({ $0 }) { await task.value }
        continuation.finish()
    }
}
