import Foundation
import SluiceCore
import SluiceQueue
import Synchronization

/// A `QueueStore` in memory with the protocol's semantics (leases with generations,
/// guarded writes, notBefore), plus hooks to play another worker stealing a lease.
final class MemoryStore: QueueStore {
    struct Row {
        var id: Int64
        var customID: String
        var endpoint: Endpoint
        var body: JSON
        var state: RequestState = .queued
        var owner: WorkerID?
        var leaseExpiresAt = 0.0
        var generation = 0
        var failedAttempts = 0
        var notBefore = 0.0
        var checkpoint: Checkpoint?
        var outcome: EngineOutcome?
        var resultWrites = 0
    }

    struct Recorded {
        var commits = 0
        var committedResults: [Int] = []
        var claims = 0
        var releases: [(requestID: Int64, countsAsFailure: Bool, notBefore: Double?, checkpoint: Checkpoint?, at: Double)] = []
        var checkpointWrites = 0
        var heartbeats = 0
    }

    private let state: Mutex<(rows: [Row], workers: [WorkerID: Bool], recorded: Recorded, nextWorker: Int)>

    init(requests: Int, endpoint: Endpoint = .chatCompletions) {
        var rows: [Row] = []
        for index in 0..<requests {
            rows.append(Row(id: Int64(index + 1), customID: "r\(index + 1)", endpoint: endpoint,
                            body: .object(["model": .string("m"), "prompt": .string("p\(index + 1)")])))
        }
        state = Mutex((rows: rows, workers: [:], recorded: Recorded(), nextWorker: 0))
    }

    var rows: [Row] { state.withLock { $0.rows } }
    var recorded: Recorded { state.withLock { $0.recorded } }
    private func now() -> Double { Date().timeIntervalSince1970 }

    /// Plays another worker taking the request over (as after an expired lease).
    func steal(_ requestID: Int64) {
        state.withLock { state in
            guard let index = state.rows.firstIndex(where: { $0.id == requestID }) else { return }
            state.rows[index].owner = "thief"
            state.rows[index].generation += 1
            state.rows[index].state = .leased
            state.rows[index].leaseExpiresAt = now() + 3600
        }
    }

    func registerWorker(host: String, pid: Int32, description: String) throws -> WorkerID {
        state.withLock { state in
            state.nextWorker += 1
            let id = "w\(state.nextWorker)"
            state.workers[id] = true
            return id
        }
    }

    func heartbeat(worker: WorkerID, leases: [LeaseRef], leaseSeconds: Double) throws {
        let deadline = now() + leaseSeconds
        let held = Set(leases)
        state.withLock { state in
            state.recorded.heartbeats += 1
            for index in state.rows.indices where state.rows[index].owner == worker && state.rows[index].state == .leased
                && held.contains(LeaseRef(requestID: state.rows[index].id, leaseGeneration: state.rows[index].generation)) {
                state.rows[index].leaseExpiresAt = deadline
            }
        }
    }

    /// Claims that lease their requests and then fail as a connection that broke before the answer
    /// arrived would: the requests are leased to the worker, which never hears of them.
    let lostClaimAnswers = Mutex(0)

    func claim(worker: WorkerID, job: JobID?, limit: Int, leaseSeconds: Double, maxLostLeases: Int) throws -> [ClaimedRequest] {
        let claimed = leaseFree(worker: worker, limit: limit, leaseSeconds: leaseSeconds)
        let lose = lostClaimAnswers.withLock { count in
            guard count > 0, !claimed.isEmpty else { return false }  // an empty claim has no answer to lose
            count -= 1
            return true
        }
        if lose { throw QueueError.databaseBusy(path: "memory", operation: "claim requests (answer lost)", waitedSeconds: 0) }
        return claimed
    }

    private func leaseFree(worker: WorkerID, limit: Int, leaseSeconds: Double) -> [ClaimedRequest] {
        let time = now()
        return state.withLock { state in
            state.recorded.claims += 1
            var claimed: [ClaimedRequest] = []
            for index in state.rows.indices where claimed.count < limit {
                let row = state.rows[index]
                let free = (row.state == .queued && row.notBefore <= time) || (row.state == .leased && row.leaseExpiresAt < time)
                guard free else { continue }
                state.rows[index].state = .leased
                state.rows[index].owner = worker
                state.rows[index].generation += 1
                state.rows[index].leaseExpiresAt = time + leaseSeconds
                let updated = state.rows[index]
                claimed.append(ClaimedRequest(id: updated.id, jobID: 1, lineNumber: Int(updated.id), customID: updated.customID,
                                              endpoint: updated.endpoint, body: updated.body, leaseGeneration: updated.generation,
                                              failedAttempts: updated.failedAttempts, checkpoint: updated.checkpoint))
            }
            return claimed
        }
    }

    @discardableResult
    func commit(_ batch: CommitBatch, worker: WorkerID) throws -> CommitReport {
        let time = now()
        return state.withLock { state in
            var lost: [LeaseRef] = []
            func index(_ lease: LeaseRef) -> Int? {
                guard let index = state.rows.firstIndex(where: { $0.id == lease.requestID }),
                      state.rows[index].owner == worker, state.rows[index].generation == lease.leaseGeneration,
                      state.rows[index].state == .leased else {
                    lost.append(lease)
                    return nil
                }
                return index
            }
            for (lease, outcome) in batch.results {
                guard let i = index(lease) else { continue }
                state.rows[i].outcome = outcome
                state.rows[i].resultWrites += 1
                state.rows[i].owner = nil
                if case .response = outcome { state.rows[i].state = .done } else { state.rows[i].state = .failed }
            }
            for (lease, checkpoint) in batch.checkpoints {
                guard let i = index(lease) else { continue }
                state.rows[i].checkpoint = checkpoint
                state.recorded.checkpointWrites += 1
            }
            for release in batch.releases {
                guard let i = index(release.lease) else { continue }
                state.rows[i].state = .queued
                state.rows[i].owner = nil
                if release.countsAsFailure { state.rows[i].failedAttempts += 1 }
                state.rows[i].notBefore = release.notBefore ?? 0
                if let checkpoint = release.checkpoint { state.rows[i].checkpoint = checkpoint }
                state.recorded.releases.append((release.lease.requestID, release.countsAsFailure, release.notBefore, release.checkpoint, time))
            }
            state.recorded.commits += 1
            state.recorded.committedResults.append(batch.results.count)
            return CommitReport(lostLeases: lost)
        }
    }

    func unregisterWorker(_ worker: WorkerID) throws {
        state.withLock { state in
            state.workers[worker] = false
            for index in state.rows.indices where state.rows[index].owner == worker && state.rows[index].state == .leased {
                state.rows[index].state = .queued
                state.rows[index].owner = nil
            }
        }
    }

    /// `hasUnfinishedWork` answers the first `skip` calls, then fails the next `fail` as a
    /// database that went away would.
    let unfinishedWorkFailures = Mutex((skip: 0, fail: 0))

    func hasUnfinishedWork(job: JobID?) throws -> Bool {
        let fail = unfinishedWorkFailures.withLock { plan in
            if plan.skip > 0 { plan.skip -= 1; return false }
            defer { plan.fail = max(0, plan.fail - 1) }
            return plan.fail > 0
        }
        if fail { throw QueueError.databaseBusy(path: "memory", operation: "look for unfinished work", waitedSeconds: 0) }
        return state.withLock { state in state.rows.contains { $0.state == .queued || $0.state == .leased } }
    }
}
