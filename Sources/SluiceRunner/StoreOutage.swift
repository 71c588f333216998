/// How long one kind of store call (commit, claim, the poll for unfinished work) has failed in a
/// row. A database that is away (a restart, a dropped connection) is waited for up to
/// `--db-timeout`, then the worker stops. Each kind keeps its own clock: the others may succeed
/// meanwhile (empty claims do while commits fail), and must not reset it.
struct StoreOutage {
    private var failingSince: ContinuousClock.Instant?
    private var lastLogged: (at: ContinuousClock.Instant, message: String)?
    /// A failure that goes on is logged again after this long (retries come every 0.5–8 s, and a
    /// full disk is no place for two lines a second).
    static let repeatLogInterval: Duration = .seconds(10)

    /// Notes that `action` failed at `now`. Throws at once for an error waiting cannot heal, and
    /// `WorkerError.storeUnavailable` ("cannot `consequence`") once failures have lasted longer
    /// than `timeout` seconds; otherwise the caller tries again later, and logs "will retry" when
    /// this returns true: at the first failure, when the error changes, and every 10 s meanwhile.
    mutating func failed(_ error: any Error, during action: String, consequence: String,
                         now: ContinuousClock.Instant, timeout: Double) throws -> Bool {
        try WorkerError.stopIfUnhealable(error, during: action)
        let since = failingSince ?? now
        failingSince = since
        if now - since > .seconds(timeout) {
            throw WorkerError.storeUnavailable("the database kept failing for \(format(timeout)) (--db-timeout): cannot \(consequence): \(error)")
        }
        let message = "\(error)"
        if let lastLogged, lastLogged.message == message, now - lastLogged.at < Self.repeatLogInterval { return false }
        lastLogged = (now, message)
        return true
    }

    /// The call succeeded: the next failure starts a new clock.
    mutating func succeeded() {
        failingSince = nil
        lastLogged = nil
    }
}
