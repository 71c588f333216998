import Synchronization

/// Counters for /metrics (since the server started).
public final class ServeMetrics: Sendable {
    private let responses = Mutex<[String: Int]>([:])
    private let ended = Mutex<[String: Int]>([:])
    private let uploaded = Atomic<Int>(0)

    public init() {}

    func countResponse(status: Int) {
        let key = "\(status / 100)xx"
        responses.withLock { $0[key, default: 0] &+= 1 }
    }

    func countEnded(_ status: String) { ended.withLock { $0[status, default: 0] &+= 1 } }
    func countUploaded(bytes: Int) { uploaded.wrappingAdd(bytes, ordering: .relaxed) }

    var responseCounts: [String: Int] { responses.withLock { $0 } }
    var endedCounts: [String: Int] { ended.withLock { $0 } }
    var uploadedBytes: Int { uploaded.load(ordering: .relaxed) }
}
