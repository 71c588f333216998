import Foundation
import SluiceCore
import SluiceQueue

/// The worker's state machine. It runs on one task: every input and every store
/// call happens in order, so it needs no locks.
final class WorkerLoop {
    let worker: WorkerID
    let store: any QueueStore
    let engine: any InferenceEngine
    let configuration: WorkerConfiguration
    let log: WorkerLog
    let retryPolicy: RetryPolicy
    private(set) var statistics = WorkerStatistics()

    /// A request the engine is working on, keyed by request id (which is also the engine's request id).
    struct Flight {
        var claim: ClaimedRequest
        var lease: LeaseRef
        var attempt: Int
        var phase: Phase
        /// The result cache key, when the request is cacheable.
        var cacheKey: String?
    }

    enum Phase: Equatable {
        case running
        /// Cancelled in the engine to hand the lease back (drain).
        case stoppingForDrain
        /// Cancelled because the lease is no longer ours: whatever the engine says is dropped.
        case abandoned
    }

    struct Drain {
        var reason: DrainReason
        var startedAt: ContinuousClock.Instant
        /// When requests still running are cancelled (engines without checkpoints get until then to finish).
        var cancelAt: ContinuousClock.Instant
        /// When leases still out are handed back without waiting for the engine any longer.
        var giveUpAt: ContinuousClock.Instant
        var cancelled = false
    }

    private var flights: [Int64: Flight] = [:]
    /// Claimed requests whose id is still held by the engine from an abandoned lease; submitted once it lets go.
    private var deferred: [Int64: ClaimedRequest] = [:]
    /// Claimed requests identical to one in flight (same cache key): answered from its result when it finishes.
    private var parked: [String: [ClaimedRequest]] = [:]
    /// Cache keys of requests in the engine, and which request computes each.
    private var computingKey: [String: Int64] = [:]
    private var pendingCache = CacheWrites()
    /// The newest checkpoint per request pulled from the engine and not yet committed.
    private var freshCheckpoints: [Int64: Checkpoint] = [:]
    /// Generated tokens in each running request's latest stored checkpoint.
    private var storedCheckpointTokens: [Int64: Int] = [:]
    private var lastCheckpointCommit: ContinuousClock.Instant
    /// A drain began: store the latest checkpoints at once, without waiting for the engine to stop its step.
    private var drainCheckpointPending = false
    private var pending = CommitBatch()
    private var pendingSince: ContinuousClock.Instant?
    private var lastCheckpointPull: ContinuousClock.Instant
    private var nextClaimAt: ContinuousClock.Instant
    private var lastClaimCameBackShort = false
    private var emptyClaims = 0
    private var nextUnfinishedCheck: ContinuousClock.Instant
    private var waitingLogged = false
    private var commitOutage = StoreOutage()
    private var nextCommitAttempt: ContinuousClock.Instant
    private var drain: Drain?
    private var nextProgressLog: ContinuousClock.Instant
    private var loggedRetries = 0
    /// When each lease still held (or waiting to be committed) was claimed, for request latency.
    private var claimedAt: [LeaseRef: ContinuousClock.Instant] = [:]
    /// Generated tokens of each running request as last seen in a checkpoint, for step lengths.
    private var observedTokens: [Int64: Int] = [:]
    /// When a checkpoint pull last saw generation progress (nil while the engine is idle).
    private var lastProgressSeen: ContinuousClock.Instant?

    /// The leases this worker holds, which its heartbeat renews.
    let held: HeldLeases

    init(worker: WorkerID, store: any QueueStore, engine: any InferenceEngine, configuration: WorkerConfiguration, log: WorkerLog,
         held: HeldLeases) {
        self.worker = worker
        self.held = held
        self.store = store
        self.engine = engine
        self.configuration = configuration
        self.log = log
        retryPolicy = RetryPolicy(baseDelay: configuration.retryBaseDelay, maxDelay: configuration.retryMaxDelay,
                                  maxRetryAfter: configuration.maxRetryAfter)
        let now = ContinuousClock.now
        lastCheckpointPull = now
        lastCheckpointCommit = now
        nextClaimAt = now
        nextUnfinishedCheck = now
        nextCommitAttempt = now
        nextProgressLog = now + .seconds(configuration.progressInterval)
    }

    private var parkedCount: Int { parked.values.reduce(0) { $0 + $1.count } }
    private var occupiedSlots: Int { flights.count + deferred.count + parkedCount }
    private var checkpointsEnabled: Bool { engine.checkpointsPartialOutput && configuration.checkpointInterval > 0 }
    private var claimOutage = StoreOutage()
    /// Claims that failed in a row (for the back-off).
    private var claimFailures = 0
    private var unfinishedCheckOutage = StoreOutage()

    private var cacheStore: (any ResultCacheStore)? {
        configuration.resultCache == nil ? nil : store as? any ResultCacheStore
    }

    // MARK: Inputs

    func handle(_ input: WorkerInput, now: ContinuousClock.Instant) throws {
        switch input {
        case let .engine(.finished(id, outcome)):
            guard let flight = flights.removeValue(forKey: id) else { return }
            forgetCheckpoints(id)
            submitDeferred(id)
            if flight.phase == .abandoned {
                settleWaiters(of: flight, computed: nil, now: now)
                return
            }
            record(outcome, for: flight, now: now)
            if case let .response(_, _, usage) = outcome {
                configuration.tokenLedger?.record("F", request: id, lease: flight.lease.leaseGeneration, tokens: usage.completionTokens)
            }
            var computed: CachedResponse?
            if case let .response(200, body, usage) = outcome {
                computed = CachedResponse(statusCode: 200, body: body, usage: usage)
            }
            settleWaiters(of: flight, computed: computed, now: now)
        case let .engine(.stopped(id, checkpoint)):
            guard let flight = flights.removeValue(forKey: id) else { return }
            forgetCheckpoints(id)
            submitDeferred(id)
            settleWaiters(of: flight, computed: nil, now: now)
            if let checkpoint {
                configuration.tokenLedger?.record("X", request: id, lease: flight.lease.leaseGeneration, tokens: checkpoint.generatedTokens)
            }
            switch flight.phase {
            case .abandoned:
                return
            case .stoppingForDrain:
                release(flight.lease, countsAsFailure: false, checkpoint: checkpoint, now: now)
            case .running:
                // The engine gave up on its own; count it so a request that always stops cannot loop forever.
                retryOrFail(flight, code: "engine_stopped", message: "the engine stopped the request without an answer",
                            retryAfter: nil, checkpoint: checkpoint, now: now)
            }
        case let .databaseUnusable(message):
            throw WorkerError.databaseUnusable(message)
        case .engineEnded:
            try engineEnded(now: now)
        case .tick:
            break
        case let .drain(reason):
            beginDrain(reason, now: now)
        }
    }

    private func record(_ outcome: EngineOutcome, for flight: Flight, now: ContinuousClock.Instant) {
        let request = "request \(flight.claim.customID) (job \(flight.claim.jobID), line \(flight.claim.lineNumber))"
        switch outcome {
        case let .response(statusCode, body, usage):
            statistics.promptTokens.add(saturating: usage.promptTokens)
            statistics.completionTokens.add(saturating: usage.completionTokens)
            if Self.isFailure(outcome) {
                // A final refusal (a 401 for a bad key, a 400 for a bad line) goes to the errors export: say so.
                statistics.failed += 1
                let reason = body["error"]?["message"]?.stringValue ?? body["error"]?.stringValue
                    ?? String(decoding: body.serialized.utf8.prefix(200), as: UTF8.self)
                logRetry("\(request) answered HTTP \(statusCode): \(reason)")
            }
            addResult(flight.lease, outcome, now: now)
        case let .failure(code, message, retryable, retryAfter):
            if retryable {
                retryOrFail(flight, code: code, message: message, retryAfter: retryAfter, checkpoint: nil, now: now)
            } else {
                statistics.failed += 1
                logRetry("\(request) failed (\(code)): \(message)")
                addResult(flight.lease, outcome, now: now)
            }
        }
    }

    /// Whether an outcome goes to the errors export: a failure, or an answer other than 2xx.
    static func isFailure(_ outcome: EngineOutcome) -> Bool {
        switch outcome {
        case let .response(statusCode, _, _): return !(200..<300).contains(statusCode)
        case .failure: return true
        }
    }

    private func retryOrFail(_ flight: Flight, code: String, message: String, retryAfter: Double?,
                             checkpoint: Checkpoint?, now: ContinuousClock.Instant) {
        if flight.attempt >= configuration.maxAttempts {
            statistics.failed += 1
            let plural = flight.attempt == 1 ? "attempt" : "attempts"
            logRetry("request \(flight.claim.customID) (job \(flight.claim.jobID), line \(flight.claim.lineNumber)) failed after \(flight.attempt) \(plural): \(message)")
            addResult(flight.lease, .failure(code: code, message: "\(message) (gave up after \(flight.attempt) \(plural))", retryable: false), now: now)
            return
        }
        let delay = retryPolicy.delay(afterFailedAttempts: flight.attempt, retryAfter: retryAfter)
        statistics.retried += 1
        configuration.telemetry?.recordRetry()
        logRetry("request \(flight.claim.customID) attempt \(flight.attempt) failed (\(code)): \(message); retrying in \(String(format: "%.1f", delay)) s")
        pending.releases.append(.init(lease: flight.lease, countsAsFailure: true,
                                      notBefore: Date().timeIntervalSince1970 + delay, checkpoint: checkpoint))
        markPending(now)
    }

    /// Retries can come in storms (a server restarting): the first ones get a line each, later ones are summed up in progress lines.
    private func logRetry(_ line: String) {
        loggedRetries += 1
        if loggedRetries <= 20 {
            log(line)
        } else if loggedRetries == 21 {
            log("further retries and failures are counted in the progress lines")
        }
    }

    private func addResult(_ lease: LeaseRef, _ outcome: EngineOutcome, now: ContinuousClock.Instant) {
        pending.results.append((lease: lease, outcome: outcome))
        markPending(now)
    }

    private func release(_ lease: LeaseRef, countsAsFailure: Bool, checkpoint: Checkpoint?, now: ContinuousClock.Instant) {
        pending.releases.append(.init(lease: lease, countsAsFailure: countsAsFailure, checkpoint: checkpoint))
        markPending(now)
    }

    private func markPending(_ now: ContinuousClock.Instant) {
        if pendingSince == nil { pendingSince = now }
    }

    private func engineEnded(now: ContinuousClock.Instant) throws {
        let held = flights.values.filter { $0.phase != .abandoned }
        for flight in held { release(flight.lease, countsAsFailure: false, checkpoint: nil, now: now) }
        flights.removeAll()
        for claim in deferred.values {
            release(LeaseRef(requestID: claim.id, leaseGeneration: claim.leaseGeneration), countsAsFailure: false, checkpoint: nil, now: now)
        }
        deferred.removeAll()
        releaseParked(now: now)
        if drain == nil || !held.isEmpty {
            commitNow(now: now)
            throw WorkerError.engineStopped("its event stream ended with \(held.count) requests in flight")
        }
    }

    // MARK: Drain

    private func beginDrain(_ reason: DrainReason, now: ContinuousClock.Instant) {
        guard drain == nil else { return }
        let grace = configuration.graceSeconds
        let margin = configuration.drainMargin
        var state = Drain(reason: reason, startedAt: now,
                          cancelAt: now + .seconds(max(0, grace - margin)),
                          giveUpAt: now + .seconds(max(0, grace - margin / 2)))
        for claim in deferred.values {
            release(LeaseRef(requestID: claim.id, leaseGeneration: claim.leaseGeneration), countsAsFailure: false, checkpoint: nil, now: now)
            statistics.released += 1
        }
        deferred.removeAll()
        releaseParked(now: now)
        let running = flights.values.filter { $0.phase == .running }.count
        if checkpointsEnabled {
            pullCheckpoints(now: now)
            drainCheckpointPending = true
        }
        if engine.checkpointsPartialOutput {
            log("draining (\(reason)): stopping \(running) requests in flight and storing their partial output")
            cancelRunning(now: now)
            state.cancelled = true
        } else {
            log("draining (\(reason)): no new claims; \(running) requests in flight get \(format(max(0, grace - margin))) to finish, then their leases go back to the queue")
        }
        drain = state
    }

    private func cancelRunning(now: ContinuousClock.Instant) {
        for (id, flight) in flights where flight.phase == .running {
            flights[id]?.phase = .stoppingForDrain
            engine.cancel(requestID: id)
        }
    }

    // MARK: Periodic work

    /// Commits, claims and drain deadlines: everything that depends on time rather than on one input.
    func step(now: ContinuousClock.Instant) throws {
        if var state = drain {
            if !state.cancelled, now >= state.cancelAt {
                let running = flights.values.filter { $0.phase == .running }.count
                if running > 0 { log("drain: cancelling \(running) requests that did not finish in time; their leases go back to the queue") }
                cancelRunning(now: now)
                state.cancelled = true
                drain = state
            }
            if now >= state.giveUpAt, !flights.isEmpty {
                for flight in flights.values where flight.phase != .abandoned {
                    release(flight.lease, countsAsFailure: false, checkpoint: nil, now: now)
                }
                flights.removeAll()
            }
        }
        if commitIsDue(now: now) { try commit(now: now) }
        if drain == nil { try claimIfRoom(now: now) }
        configuration.telemetry?.setInFlight(flights.count)
        if configuration.progressInterval > 0, now >= nextProgressLog {
            nextProgressLog = now + .seconds(configuration.progressInterval)
            log("progress: \(statistics.completed) results (\(statistics.failed) failed), \(statistics.retried) retries, \(flights.count) in flight; \(statistics.claims) claims, \(statistics.commits) commits; \(statistics.completionTokens) tokens out")
        }
    }

    private func commitIsDue(now: ContinuousClock.Instant) -> Bool {
        guard now >= nextCommitAttempt else { return false }
        if drainCheckpointPending { return true }
        if let since = pendingSince {
            // Draining: releases come in a burst as cancels land; gather them briefly rather than commit each.
            if drain != nil, now - since >= .milliseconds(20) { return true }
            if pending.results.count + pending.releases.count >= configuration.commitBatchSize { return true }
            if now - since >= .seconds(configuration.commitInterval) { return true }
        }
        if checkpointsEnabled, !flights.isEmpty {
            // Pulling is cheap (a mutex and a dictionary); storing waits for the interval or the token threshold.
            if now - lastCheckpointPull >= .milliseconds(50) { pullCheckpoints(now: now) }
            if !freshCheckpoints.isEmpty {
                if now - lastCheckpointCommit >= .seconds(configuration.checkpointInterval) { return true }
                let threshold = configuration.checkpointTokens
                if freshCheckpoints.contains(where: { $0.value.generatedTokens - (storedCheckpointTokens[$0.key] ?? 0) >= threshold }) {
                    return true
                }
            }
        }
        return false
    }

    private func pullCheckpoints(now: ContinuousClock.Instant) {
        lastCheckpointPull = now
        var mostTokensGained = 0
        for (id, checkpoint) in engine.collectCheckpoints() {
            guard let flight = flights[id], flight.phase != .abandoned else { continue }
            freshCheckpoints[id] = checkpoint
            mostTokensGained = max(mostTokensGained, checkpoint.generatedTokens - (observedTokens[id] ?? checkpoint.generatedTokens))
            observedTokens[id] = checkpoint.generatedTokens
            configuration.tokenLedger?.record("P", request: id, lease: flight.lease.leaseGeneration, tokens: checkpoint.generatedTokens)
        }
        observeSteps(tokensGained: mostTokensGained, now: now)
    }

    /// The engine does not report its steps, but a running sequence gains one token per decode step:
    /// the most tokens any request gained since the last pull that saw progress is the number of
    /// steps in between, and the time in between divided by it is their mean length. Prefill steps
    /// and idle moments inside the interval are included, so this is an upper bound on decode steps.
    private func observeSteps(tokensGained: Int, now: ContinuousClock.Instant) {
        guard let telemetry = configuration.telemetry else { return }
        if flights.isEmpty {
            lastProgressSeen = nil
            return
        }
        guard tokensGained > 0 else {
            if lastProgressSeen == nil { lastProgressSeen = now }
            return
        }
        if let last = lastProgressSeen {
            telemetry.recordSteps(tokensGained, seconds: (now - last) / .seconds(1))
        }
        lastProgressSeen = now
    }

    private func forgetCheckpoints(_ id: Int64) {
        freshCheckpoints[id] = nil
        storedCheckpointTokens[id] = nil
        observedTokens[id] = nil
    }

    /// One transaction with everything waiting; a failed commit keeps the batch for the next try.
    private func commit(now: ContinuousClock.Instant) throws {
        var batch = pending
        if checkpointsEnabled {
            pullCheckpoints(now: now)
            lastCheckpointCommit = now
            for (id, checkpoint) in freshCheckpoints.sorted(by: { $0.key < $1.key }) {
                // Requests stopping for a drain are still ours until their release is committed.
                guard let flight = flights[id], flight.phase != .abandoned else { continue }
                batch.checkpoints.append((lease: flight.lease, checkpoint: checkpoint))
                storedCheckpointTokens[id] = checkpoint.generatedTokens
            }
            freshCheckpoints.removeAll()
        }
        let drainCheckpoints = drainCheckpointPending ? batch.checkpoints.count : nil
        drainCheckpointPending = false
        guard !batch.isEmpty else {
            if drainCheckpoints != nil { logDrainCheckpoints(0, now: now) }
            return
        }
        let report: CommitReport
        let cacheHitLeases = Set(pendingCache.hits.map(\.lease))
        do {
            if let cacheStore, !pendingCache.isEmpty {
                report = try cacheStore.commit(batch, worker: worker, cache: pendingCache)
            } else {
                report = try store.commit(batch, worker: worker)
            }
            pendingCache = CacheWrites()
        } catch {
            pending = batch
            // Leases may expire meanwhile: the lease generation then drops our late writes, and
            // another worker's results stand. Only a database gone for --db-timeout ends the worker.
            let logIt = try commitOutage.failed(error, during: "commit", consequence: "commit results", now: now,
                                                timeout: configuration.databaseTimeoutSeconds)
            nextCommitAttempt = now + .milliseconds(500)
            if logIt { log("commit of \(batch.results.count) results failed, will retry: \(error)") }
            return
        }
        commitOutage.succeeded()
        if let drainCheckpoints { logDrainCheckpoints(drainCheckpoints, now: now) }
        pending = CommitBatch()
        pendingSince = nil
        statistics.commits += 1
        statistics.checkpointsStored += batch.checkpoints.count
        if checkpointsEnabled { configuration.telemetry?.checkpointsCommitted(at: now) }
        let lost = Set(report.lostLeases)
        var droppedResults = 0
        for (lease, outcome) in batch.results {
            if lost.contains(lease) {
                droppedResults += 1
                if Self.isFailure(outcome) { statistics.failed -= 1 }
            } else {
                statistics.completed += 1
                recordCommitted(lease, outcome, cacheHits: cacheHitLeases, now: now)
            }
            claimedAt[lease] = nil
        }
        for item in batch.releases { claimedAt[item.lease] = nil }
        // Committed or handed back (or lost): no longer this worker's to renew.
        held.remove(batch.results.map(\.lease) + batch.releases.map(\.lease) + report.lostLeases)
        statistics.released += batch.releases.filter { !$0.countsAsFailure && !lost.contains($0.lease) }.count
        if !lost.isEmpty { abandon(lost, droppedResults: droppedResults) }
    }

    private func recordCommitted(_ lease: LeaseRef, _ outcome: EngineOutcome, cacheHits: Set<LeaseRef>,
                                 now: ContinuousClock.Instant) {
        guard let telemetry = configuration.telemetry else { return }
        let latency = claimedAt[lease].map { (now - $0) / .seconds(1) }
        switch outcome {
        case let .response(statusCode, _, usage):
            telemetry.recordResult(succeeded: statusCode == 200, promptTokens: usage.promptTokens,
                                   completionTokens: usage.completionTokens, fromCache: cacheHits.contains(lease),
                                   latencySeconds: latency, now: now)
        case .failure:
            telemetry.recordResult(succeeded: false, promptTokens: 0, completionTokens: 0, fromCache: false,
                                   latencySeconds: latency, now: now)
        }
    }

    private func logDrainCheckpoints(_ updated: Int, now: ContinuousClock.Instant) {
        guard let started = drain?.startedAt else { return }
        let milliseconds = Int(((ContinuousClock.now - started) / .milliseconds(1)).rounded())
        log("drain: checkpoints stored \(milliseconds) ms after the drain began (\(updated) updated since the last commit)")
    }

    /// Leases that are no longer ours: stop the engine's work on them and forget them.
    private func abandon(_ lost: Set<LeaseRef>, droppedResults: Int) {
        var cancelled = 0
        for (id, flight) in flights where lost.contains(flight.lease) && flight.phase != .abandoned {
            flights[id]?.phase = .abandoned
            engine.cancel(requestID: id)
            cancelled += 1
        }
        statistics.lostLeases += lost.count
        configuration.telemetry?.recordLostLeases(lost.count)
        for lease in lost { claimedAt[lease] = nil }
        log("lost \(lost.count) leases (taken over by another worker, or the job was cancelled): dropped \(droppedResults) results, cancelled \(cancelled) requests in the engine")
    }

    /// Commits what is waiting, ignoring failure (used on the way out after an error).
    private func commitNow(now: ContinuousClock.Instant) {
        nextCommitAttempt = now
        try? commit(now: now)
    }

    private func claimIfRoom(now: ContinuousClock.Instant) throws {
        let capacity = max(1, engine.capacity)
        let free = capacity - occupiedSlots
        guard free > 0, now >= nextClaimAt else { return }
        // Claiming one request per freed slot would cost a write transaction per result; wait for a few.
        let threshold = max(1, min(capacity / 4, configuration.claimBatchSize))
        guard free >= threshold || occupiedSlots == 0 || lastClaimCameBackShort else { return }
        let limit = min(free, configuration.claimBatchSize)
        let claimed: [ClaimedRequest]
        do {
            claimed = try store.claim(worker: worker, job: configuration.job, limit: limit, leaseSeconds: configuration.leaseSeconds,
                                      maxLostLeases: configuration.maxLostLeases)
        } catch {
            if try claimOutage.failed(error, during: "claim", consequence: "claim requests", now: now,
                                      timeout: configuration.databaseTimeoutSeconds) {
                log("claim failed, will retry: \(error)")
            }
            // Back off while the database is away: 0.5 s doubling to 8 s.
            claimFailures += 1
            nextClaimAt = now + .milliseconds(500 << min(claimFailures - 1, 4))
            return
        }
        claimOutage.succeeded()
        claimFailures = 0
        held.insert(claimed.map { LeaseRef(requestID: $0.id, leaseGeneration: $0.leaseGeneration) })
        statistics.claims += 1
        statistics.claimed += claimed.count
        lastClaimCameBackShort = claimed.count < limit
        // An empty queue is polled less and less often (each claim is a write transaction), up to a second.
        emptyClaims = claimed.isEmpty ? emptyClaims + 1 : 0
        if lastClaimCameBackShort {
            let backoff = configuration.idlePollInterval * Double(1 << min(emptyClaims, 6))
            nextClaimAt = now + .seconds(min(max(1, configuration.idlePollInterval), backoff))
        }
        if !claimed.isEmpty { waitingLogged = false }
        if configuration.telemetry != nil {
            for claim in claimed { claimedAt[LeaseRef(requestID: claim.id, leaseGeneration: claim.leaseGeneration)] = now }
        }
        var cached: [String: CachedResponse] = [:]
        if let cacheStore, let policy = configuration.resultCache {
            let keys = claimed.compactMap { policy.key(for: engineRequest(for: $0)) }
            do {
                cached = try cacheStore.cachedResponses(for: keys)
            } catch {
                log("result cache lookup failed, computing instead: \(error)")
            }
        }
        for claim in claimed { route(claim, cached: cached, now: now) }
    }

    private func engineRequest(for claim: ClaimedRequest) -> EngineRequest {
        EngineRequest(id: claim.id, customID: claim.customID, endpoint: claim.endpoint, body: claim.body,
                      attempt: claim.failedAttempts + 1, resumeFrom: claim.checkpoint)
    }

    /// Answers a claimed request from the cache, parks it behind an identical one in flight, or submits it.
    private func route(_ claim: ClaimedRequest, cached: [String: CachedResponse], now: ContinuousClock.Instant) {
        let request = engineRequest(for: claim)
        let key = configuration.resultCache?.key(for: request)
        if let key, let hit = cached[key], hit.statusCode == 200 {
            answerFromCache(claim, request: request, key: key, response: hit, now: now)
        } else if flights[claim.id] != nil {
            deferred[claim.id] = claim
        } else if let key, cacheStore != nil, computingKey[key] != nil {
            parked[key, default: []].append(claim)
        } else {
            submit(request, claim: claim, cacheKey: cacheStore == nil ? nil : key)
        }
    }

    private func submit(_ request: EngineRequest, claim: ClaimedRequest, cacheKey: String?) {
        // Nothing was at risk while nothing ran: the checkpoint lag starts counting now.
        if flights.isEmpty, checkpointsEnabled { configuration.telemetry?.checkpointsCommitted(at: ContinuousClock.now) }
        flights[claim.id] = Flight(claim: claim, lease: LeaseRef(requestID: claim.id, leaseGeneration: claim.leaseGeneration),
                                   attempt: request.attempt, phase: .running, cacheKey: cacheKey)
        storedCheckpointTokens[claim.id] = claim.checkpoint?.generatedTokens ?? 0
        if let cacheKey { computingKey[cacheKey] = claim.id }
        configuration.tokenLedger?.record("S", request: claim.id, lease: claim.leaseGeneration, tokens: claim.checkpoint?.generatedTokens ?? 0)
        engine.submit(request)
    }

    private func submitDeferred(_ id: Int64) {
        if let claim = deferred.removeValue(forKey: id) { route(claim, cached: [:], now: .now) }
    }

    private func answerFromCache(_ claim: ClaimedRequest, request: EngineRequest, key: String, response: CachedResponse,
                                 now: ContinuousClock.Instant) {
        let lease = LeaseRef(requestID: claim.id, leaseGeneration: claim.leaseGeneration)
        let body = configuration.resultCache?.keying.adapt(response.body, to: request) ?? response.body
        // Usage is what computing the response cost the first time; hits are counted apart.
        statistics.cacheHits += 1
        statistics.promptTokens.add(saturating: response.usage.promptTokens)
        statistics.completionTokens.add(saturating: response.usage.completionTokens)
        statistics.cachedCompletionTokens.add(saturating: response.usage.completionTokens)
        pendingCache.hits.append((lease: lease, key: key))
        configuration.tokenLedger?.record("H", request: claim.id, lease: claim.leaseGeneration, tokens: 0)
        addResult(lease, .response(statusCode: response.statusCode, body: body, usage: response.usage), now: now)
    }

    /// A computed request left the engine: store its response in the cache and answer the identical
    /// requests parked behind it, or (without a response) send them on their own way.
    private func settleWaiters(of flight: Flight, computed: CachedResponse?, now: ContinuousClock.Instant) {
        guard let key = flight.cacheKey else { return }
        if computingKey[key] == flight.claim.id { computingKey[key] = nil }
        let waiters = parked.removeValue(forKey: key) ?? []
        if let computed {
            pendingCache.stores.append((key: key, response: computed))
            statistics.cacheStores += 1
            for claim in waiters {
                answerFromCache(claim, request: engineRequest(for: claim), key: key, response: computed, now: now)
            }
        } else if drain != nil {
            for claim in waiters {
                release(LeaseRef(requestID: claim.id, leaseGeneration: claim.leaseGeneration), countsAsFailure: false,
                        checkpoint: claim.checkpoint, now: now)
            }
        } else {
            for claim in waiters { route(claim, cached: [:], now: now) }
        }
    }

    /// Hands parked requests back to the queue; returns how many.
    @discardableResult
    private func releaseParked(now: ContinuousClock.Instant) -> Int {
        var count = 0
        for claim in parked.values.joined() {
            release(LeaseRef(requestID: claim.id, leaseGeneration: claim.leaseGeneration), countsAsFailure: false,
                    checkpoint: claim.checkpoint, now: now)
            count += 1
        }
        parked.removeAll()
        return count
    }

    // MARK: The end

    /// The exit, once there is nothing left for this worker to do.
    func finish(now: ContinuousClock.Instant) throws -> WorkerExit? {
        if let state = drain {
            guard flights.isEmpty, deferred.isEmpty, parked.isEmpty else { return nil }
            try finalCommit(until: state.giveUpAt + .seconds(configuration.drainMargin / 2))
            return .drained(state.reason, workRemains: (try? store.hasUnfinishedWork(job: configuration.job)) ?? true)
        }
        guard flights.isEmpty, deferred.isEmpty, parked.isEmpty, pendingSince == nil, lastClaimCameBackShort, now >= nextUnfinishedCheck else {
            return nil
        }
        nextUnfinishedCheck = now + .seconds(configuration.idlePollInterval)
        let unfinished: Bool
        do {
            unfinished = try store.hasUnfinishedWork(job: configuration.job)
        } catch {
            // The same rule as for a claim (the fleet drill found this poll outside it).
            if try unfinishedCheckOutage.failed(error, during: "look for unfinished work", consequence: "look for unfinished work",
                                                now: now, timeout: configuration.databaseTimeoutSeconds) {
                log("looking for unfinished work failed, will retry: \(error)")
            }
            return nil
        }
        unfinishedCheckOutage.succeeded()
        if !unfinished { return .completed }
        if !waitingLogged {
            waitingLogged = true
            log("no claimable request right now: waiting for other workers' leases or retry delays")
        }
        return nil
    }

    /// The drain's last commit: tried until the deadline, since what it holds would otherwise be redone.
    private func finalCommit(until deadline: ContinuousClock.Instant) throws {
        while pendingSince != nil {
            let now = ContinuousClock.now
            nextCommitAttempt = now
            try commit(now: now)
            if pendingSince == nil || ContinuousClock.now >= deadline { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// On the way out after an error: stop the engine's work; unregistering hands the leases back.
    func abandonAll() {
        for (id, flight) in flights where flight.phase == .running { engine.cancel(requestID: id) }
        flights.removeAll()
        deferred.removeAll()
        parked.removeAll()
    }
}
