/// The seam between the runner and the engines that compute responses.
///
/// The runner owns the queue and the requests' lifecycle; an engine only turns
/// request bodies into response bodies. Engines never see the store: the runner
/// gives them requests (with any checkpoint from an earlier attempt), pulls
/// checkpoints from them on its own cadence, and reacts to their events.

/// The OpenAI endpoints a batch line may target.
public enum Endpoint: String, Sendable, CaseIterable {
    case chatCompletions = "/v1/chat/completions"
    case completions = "/v1/completions"
    /// Vectors of texts or token ids, from an embedding model.
    case embeddings = "/v1/embeddings"
    /// OpenAI's Responses API (the Batch API takes its lines too).
    case responses = "/v1/responses"
}

/// Partial output of a request that an engine can continue from.
///
/// The payload is the engine's own encoding (the built-in engine stores the
/// generated token ids and sampler position); the runner stores it verbatim.
public struct Checkpoint: Sendable, Equatable {
    /// How many tokens had been generated when the checkpoint was taken.
    public var generatedTokens: Int
    /// Engine-defined bytes, opaque to everything else.
    public var payload: [UInt8]

    public init(generatedTokens: Int, payload: [UInt8]) {
        self.generatedTokens = generatedTokens
        self.payload = payload
    }
}

/// One request handed to an engine.
public struct EngineRequest: Sendable {
    /// Unique among the requests an engine has in flight.
    public var id: Int64
    public var customID: String
    public var endpoint: Endpoint
    public var body: JSON
    /// 1 for the first try; higher after retries or lease takeovers.
    public var attempt: Int
    /// Output an earlier attempt left behind, to continue rather than start over.
    public var resumeFrom: Checkpoint?

    public init(id: Int64, customID: String, endpoint: Endpoint, body: JSON, attempt: Int = 1, resumeFrom: Checkpoint? = nil) {
        self.id = id
        self.customID = customID
        self.endpoint = endpoint
        self.body = body
        self.attempt = attempt
        self.resumeFrom = resumeFrom
    }
}

/// Token counts of a finished request, as reported in `usage`.
public struct Usage: Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var totalTokens: Int { promptTokens.adding(saturating: completionTokens) }

    /// The largest token count taken from outside (a server's `usage`): ten times the longest
    /// context any model offers (10^7 tokens), so a wrapped or garbage count (2^32 − 1, 2^40) is
    /// refused rather than summed into a job's figures.
    public static let plausibleTokenLimit = 100_000_000

    /// `count` when it is a plausible token count (0 ... `plausibleTokenLimit`), else nil.
    public static func plausibleCount(_ count: Int?) -> Int? {
        guard let count, count >= 0, count <= plausibleTokenLimit else { return nil }
        return count
    }

    public init(promptTokens: Int, completionTokens: Int) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
    }
}

/// How a request ended.
public enum EngineOutcome: Sendable, Equatable {
    /// The endpoint answered. `statusCode` 200 is success; other codes are
    /// final answers from the server (for example 400 for a bad body) and go to the errors export.
    case response(statusCode: Int, body: JSON, usage: Usage)
    /// The request could not be answered. Retryable failures (timeouts,
    /// connection errors, HTTP 429/5xx) are tried again by the runner up to its attempt limit.
    case failure(code: String, message: String, retryable: Bool, retryAfterSeconds: Double? = nil)
}

/// What an engine reports about the requests it holds.
public enum EngineEvent: Sendable {
    case finished(requestID: Int64, outcome: EngineOutcome)
    /// The engine stopped working on the request without finishing it (after
    /// `cancel`), leaving `checkpoint` if it has partial output.
    case stopped(requestID: Int64, checkpoint: Checkpoint?)
}

/// An engine the runner can drive: the built-in CPU engine or a remote OpenAI-compatible server.
public protocol InferenceEngine: AnyObject, Sendable {
    /// A short description for logs and status (model file or base URL).
    var description: String { get }
    /// How many requests the runner should keep in flight to keep the engine busy.
    var capacity: Int { get }
    /// Whether partial output survives a stop: if so, the runner stops at once on
    /// a drain and stores checkpoints; if not, it lets requests finish within the grace period.
    var checkpointsPartialOutput: Bool { get }
    /// Events for submitted requests. There is one consumer: the runner.
    var events: AsyncStream<EngineEvent> { get }

    /// Starts work on a request. Exactly one `.finished` or `.stopped` event follows.
    func submit(_ request: EngineRequest)
    /// Stops work on a request; a `.stopped` event follows unless it already finished.
    func cancel(requestID: Int64)
    /// Partial output of requests that made progress since the last call.
    func collectCheckpoints() -> [(requestID: Int64, checkpoint: Checkpoint)]
    /// Stops everything, releases resources and ends `events`.
    func shutdown() async
}
