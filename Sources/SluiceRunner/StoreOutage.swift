/// How long one kind of store call (commit, claim, the poll for unfinished work) has failed in a
/// row. A database that is away (a restart, a dropped connection) is waited for up to
/// `--db-timeout`, then the worker stops. Each kind keeps its own clock: the others may succeed
/// meanwhile (empty claims do while commits fail), and must not reset it.
struct StoreOutage {
    private var failingSince: ContinuousClock.Instant?

    /// Notes that `action` failed at `now`. Throws at once for an error waiting cannot heal, and
    /// `WorkerError.storeUnavailable` ("cannot `consequence`") once failures have lasted longer
    /// than `timeout` seconds; otherwise the caller logs "will retry" and tries again later.
    mutating func failed(_ error: any Error, during action: String, consequence: String,
                         now: ContinuousClock.Instant, timeout: Double) throws {
        try WorkerError.stopIfUnhealable(error, during: action)
        let since = failingSince ?? now
        failingSince = since
        if now - since > .seconds(timeout) {
            throw WorkerError.storeUnavailable("the database was unreachable for \(format(timeout)) (--db-timeout): cannot \(consequence): \(error)")
        }
    }

    /// The call succeeded: the next failure starts a new clock.
    mutating func succeeded() { failingSince = nil }
}
