import SluiceCore

/// Request ids encode their job and line: `(job << 32) | line`. Id order is then input
/// order, a job's requests form one id range, and ids are known before insertion.
enum RequestKey {
    static let maximumLine = Int(UInt32.max)
    static let maximumJob: JobID = JobID(Int32.max)

    static func id(job: JobID, line: Int) -> Int64 { (job << 32) | Int64(line) }
    static func job(of id: Int64) -> JobID { id >> 32 }
    static func line(of id: Int64) -> Int { Int(id & 0xFFFF_FFFF) }
    static func range(of job: JobID) -> ClosedRange<Int64> { (job << 32)...((job << 32) | 0xFFFF_FFFF) }
}

/// How endpoints are stored: small integers, not 20-byte strings repeated on every row.
enum StoredEndpoint {
    static func code(_ endpoint: Endpoint) -> Int {
        switch endpoint {
        case .chatCompletions: return 1
        case .completions: return 2
        case .responses: return 3
        case .embeddings: return 4
        }
    }

    static func endpoint(code: Int) -> Endpoint? {
        switch code {
        case 1: return .chatCompletions
        case 2: return .completions
        case 3: return .responses
        case 4: return .embeddings
        default: return nil
        }
    }
}
