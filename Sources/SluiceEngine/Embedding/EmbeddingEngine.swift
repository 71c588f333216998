import Foundation
import SluiceCore
import Synchronization

/// Settings of the embedding engine.
public struct EmbeddingEngineOptions: Sendable {
    /// Compute threads (the engine's own thread included).
    public var threads = ComputePool.availableCores
    /// Tokens per forward pass at most (inputs of several requests are packed up to this).
    public var tokenBudget = 2048
    /// Requests the runner keeps in flight.
    public var capacity = 64
    /// How often finished vectors of requests in progress are published as checkpoints.
    public var checkpointInterval: Duration = .milliseconds(250)

    public init() {}
}

/// Sluice's encoder engine: `/v1/embeddings` requests on a sentence-embedding model (a BERT
/// sentence-transformers folder, or a GGUF decoder model pooled as `--pooling` says).
///
/// No decode loop: each step takes the next inputs of the requests in flight (oldest request
/// first) up to a token budget and hands them to the encoder as one packed batch
/// (`SentenceEncoder.embed`). A vector does not depend on what shared its batch, so a request's
/// answer is the same whichever requests it ran beside, however many threads ran it and however
/// often it was stopped: its finished vectors are its checkpoint, and a resumed request computes
/// only the inputs after them.
public final class EmbeddingEngine: InferenceEngine, @unchecked Sendable {
    public let description: String
    public let capacity: Int
    public let checkpointsPartialOutput = true
    public let events: AsyncStream<EngineEvent>
    public let model: EmbeddingModel

    private let options: EmbeddingEngineOptions
    private let pool: ComputePool
    private let continuation: AsyncStream<EngineEvent>.Continuation
    private let mailbox = Mutex(Mailbox())
    private let wakeup = NSCondition()
    private let finishedRunning = DispatchSemaphore(value: 0)

    struct Mailbox {
        var submitted: [EngineRequest] = []
        var cancelled: Set<Int64> = []
        var checkpoints: [Int64: Checkpoint] = [:]
        var stopping = false
    }

    /// One request in flight on the engine thread.
    final class Job {
        let request: EngineRequest
        let parsed: EmbeddingRequest
        var vectors: [[Float]]
        var published: Int

        init(request: EngineRequest, parsed: EmbeddingRequest, vectors: [[Float]]) {
            self.request = request
            self.parsed = parsed
            self.vectors = vectors
            published = vectors.count
        }
    }

    /// Runs `model`; on `options.threads` threads unless the encoder is bound to a pool of its own
    /// (a GGUF decoder), which it then runs on.
    public init(model: EmbeddingModel, options: EmbeddingEngineOptions = EmbeddingEngineOptions()) {
        self.model = model
        self.options = options
        pool = model.encoder.computePool ?? ComputePool(threads: options.threads)
        capacity = options.capacity
        let kind = model.encoder.architecture == "bert" ? "bert" : model.encoder.architecture + " decoder"
        description = "embedding engine: \(model.name) (\(kind), \(model.dimensions) dimensions, \(model.encoder.pooling.rawValue) pooling, \(pool.threadCount) threads)"
        (events, continuation) = AsyncStream.makeStream(of: EngineEvent.self)
        let thread = Thread { [self] in
            run()
            finishedRunning.signal()
        }
        thread.name = "sluice-embedding"
        thread.stackSize = 16 << 20
        thread.start()
    }

    public convenience init(directory: String, options: EmbeddingEngineOptions = EmbeddingEngineOptions()) throws {
        self.init(model: try EmbeddingModel(directory: directory), options: options)
    }

    /// Loads the model at `path` (a sentence-transformers folder or a GGUF decoder file; see
    /// `EmbeddingModel`), a GGUF one onto `options.threads` threads.
    public convenience init(path: String, settings: EmbeddingModelSettings = EmbeddingModelSettings(),
                            options: EmbeddingEngineOptions = EmbeddingEngineOptions()) throws {
        self.init(model: try EmbeddingModel(path: path, settings: settings, threads: options.threads), options: options)
    }

    public func submit(_ request: EngineRequest) {
        mailbox.withLock { $0.submitted.append(request) }
        signal()
    }

    public func cancel(requestID: Int64) {
        mailbox.withLock { _ = $0.cancelled.insert(requestID) }
        signal()
    }

    public func collectCheckpoints() -> [(requestID: Int64, checkpoint: Checkpoint)] {
        mailbox.withLock { box in
            defer { box.checkpoints.removeAll() }
            return box.checkpoints.map { ($0.key, $0.value) }
        }
    }

    public func shutdown() async {
        mailbox.withLock { $0.stopping = true }
        signal()
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                self.finishedRunning.wait()
                self.finishedRunning.signal()
                done.resume()
            }
        }
    }

    private func signal() {
        wakeup.lock()
        wakeup.signal()
        wakeup.unlock()
    }

    // MARK: The engine thread

    private func run() {
        var jobs: [Job] = []
        var lastPublish = ContinuousClock.now
        while true {
            let (submitted, cancelled, stopping) = mailbox.withLock { box in
                defer { box.submitted.removeAll(); box.cancelled.removeAll() }
                return (box.submitted, box.cancelled, box.stopping)
            }
            for request in submitted { accept(request, into: &jobs) }
            if !cancelled.isEmpty || stopping {
                jobs.removeAll { job in
                    guard stopping || cancelled.contains(job.request.id) else { return false }
                    continuation.yield(.stopped(requestID: job.request.id, checkpoint: checkpoint(job)))
                    return true
                }
            }
            if stopping {
                continuation.finish()
                return
            }
            if jobs.isEmpty {
                wakeup.lock()
                if mailbox.withLock({ $0.submitted.isEmpty && $0.cancelled.isEmpty && !$0.stopping }) { wakeup.wait() }
                wakeup.unlock()
                continue
            }
            step(&jobs)
            if ContinuousClock.now - lastPublish >= options.checkpointInterval {
                lastPublish = ContinuousClock.now
                publishCheckpoints(jobs)
            }
        }
    }

    private func accept(_ request: EngineRequest, into jobs: inout [Job]) {
        let parsed: EmbeddingRequest
        do {
            parsed = try EmbeddingRequest(body: request.body, model: model)
        } catch {
            continuation.yield(.finished(requestID: request.id, outcome: .response(statusCode: 400, body: error.body, usage: Usage(promptTokens: 0, completionTokens: 0))))
            return
        }
        var vectors: [[Float]] = []
        if let resumed = request.resumeFrom, let state = EmbeddingCheckpoint(decoding: resumed.payload),
           state.engine == model.outputIdentity, state.dimensions == model.dimensions, state.vectors.count <= parsed.inputs.count {
            vectors = state.vectors
        }
        let job = Job(request: request, parsed: parsed, vectors: vectors)
        if !finishIfDone(job) { jobs.append(job) }
    }

    /// One packed forward pass over the next inputs, oldest request first.
    private func step(_ jobs: inout [Job]) {
        var batch: [[Int32]] = []
        var owners: [Job] = []
        var tokens = 0
        outer: for job in jobs {
            var next = job.vectors.count
            while next < job.parsed.inputs.count {
                let input = job.parsed.inputs[next]
                if !batch.isEmpty && tokens + input.count > options.tokenBudget { break outer }
                batch.append(input)
                owners.append(job)
                tokens += input.count
                next += 1
            }
        }
        let vectors = model.encoder.embed(batch, pool: pool)
        for (job, vector) in zip(owners, vectors) { job.vectors.append(vector) }
        jobs.removeAll { finishIfDone($0) }
    }

    private func finishIfDone(_ job: Job) -> Bool {
        guard job.vectors.count == job.parsed.inputs.count else { return false }
        let body = job.parsed.responseBody(vectors: job.vectors, modelName: model.name)
        let promptTokens = job.parsed.inputs.reduce(0) { $0 + $1.count }
        mailbox.withLock { _ = $0.checkpoints.removeValue(forKey: job.request.id) }
        continuation.yield(.finished(requestID: job.request.id,
                                     outcome: .response(statusCode: 200, body: body, usage: Usage(promptTokens: promptTokens, completionTokens: 0))))
        return true
    }

    private func checkpoint(_ job: Job) -> Checkpoint? {
        guard !job.vectors.isEmpty else { return job.request.resumeFrom }
        return Checkpoint(generatedTokens: job.vectors.count,
                          payload: EmbeddingCheckpoint(engine: model.outputIdentity, dimensions: model.dimensions, vectors: job.vectors).encoded())
    }

    private func publishCheckpoints(_ jobs: [Job]) {
        let fresh = jobs.filter { $0.vectors.count > $0.published }
        guard !fresh.isEmpty else { return }
        var made: [(Int64, Checkpoint)] = []
        for job in fresh {
            job.published = job.vectors.count
            if let checkpoint = checkpoint(job) { made.append((job.request.id, checkpoint)) }
        }
        mailbox.withLock { box in for (id, checkpoint) in made { box.checkpoints[id] = checkpoint } }
    }
}

/// The finished vectors of a request, as its checkpoint payload: a magic, the engine identity,
/// the dimension, the count and the float32 bits, little-endian.
struct EmbeddingCheckpoint: Equatable {
    var engine: String
    var dimensions: Int
    var vectors: [[Float]]

    static let magic: [UInt8] = Array("SLEMB1\n".utf8)

    func encoded() -> [UInt8] {
        var bytes = Self.magic
        func append(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        let identity = Array(engine.utf8)
        append(UInt32(identity.count))
        bytes.append(contentsOf: identity)
        append(UInt32(dimensions))
        append(UInt32(vectors.count))
        for vector in vectors { for value in vector { append(value.bitPattern) } }
        return bytes
    }

    /// nil for anything that is not a complete, consistent checkpoint of this form.
    init?(decoding bytes: [UInt8]) {
        guard bytes.starts(with: Self.magic) else { return nil }
        var offset = Self.magic.count
        func read() -> UInt32? {
            guard bytes.count - offset >= 4 else { return nil }
            var value: UInt32 = 0
            for k in 0..<4 { value |= UInt32(bytes[offset + k]) << (8 * k) }
            offset += 4
            return value
        }
        guard let identityLength = read().map(Int.init), bytes.count - offset >= identityLength else { return nil }
        engine = String(decoding: bytes[offset..<(offset + identityLength)], as: UTF8.self)
        offset += identityLength
        guard let dimensions = read().map(Int.init), let count = read().map(Int.init), (1...65536).contains(dimensions),
              count <= EmbeddingRequest.maxInputs, bytes.count - offset == count * dimensions * 4 else { return nil }
        self.dimensions = dimensions
        vectors = []
        vectors.reserveCapacity(count)
        for _ in 0..<count {
            var vector: [Float] = []
            vector.reserveCapacity(dimensions)
            for _ in 0..<dimensions { vector.append(Float(bitPattern: read()!)) }
            vectors.append(vector)
        }
    }

    init(engine: String, dimensions: Int, vectors: [[Float]]) {
        self.engine = engine
        self.dimensions = dimensions
        self.vectors = vectors
    }
}
