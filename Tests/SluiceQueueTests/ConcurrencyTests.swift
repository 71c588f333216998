import Foundation
import SluiceCore
import Synchronization
import Testing
@testable import SluiceQueue

@Suite struct ConcurrencyTests {
    /// Workers on separate threads, some sharing a store and some with their own connection to
    /// the file, drain one job: every request is handed out once and gets exactly one result.
    @Test(arguments: StoreKind.all) func concurrentClaimsNeverHandOneRequestToTwoHolders(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let setup = try openTestStore(kind, dir)
        let total = 2000
        let job = try #require(try setup.enqueue(file: try inputFile(dir, count: total)).jobID)
        let shared = try openTestStore(kind, dir)
        let stores: [any JobStore] = try [shared, shared, shared] + (0..<5).map { _ in try openTestStore(kind, dir) }

        let claims = Mutex<[Int64: [String]]>([:])
        let failures = Mutex<[String]>([])
        let group = DispatchGroup()
        for (index, store) in stores.enumerated() {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                do {
                    let worker = try store.registerWorker(host: "h", pid: Int32(index), description: "w\(index)")
                    while true {
                        let claimed = try store.claim(worker: worker, job: job, limit: Int.random(in: 1...40), leaseSeconds: 600)
                        if claimed.isEmpty { break }
                        claims.withLock { map in for request in claimed { map[request.id, default: []].append(worker) } }
                        let report = try store.commit(results(claimed.map { ($0.lease, okOutcome(worker)) }), worker: worker)
                        if !report.lostLeases.isEmpty { failures.withLock { $0.append("\(worker) lost \(report.lostLeases)") } }
                    }
                } catch {
                    failures.withLock { $0.append("worker \(index): \(error)") }
                }
            }
        }
        #expect(group.wait(timeout: .now() + 120) == .success)
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
        let holders = claims.withLock { $0 }
        #expect(holders.count == total)
        #expect(holders.values.allSatisfy { $0.count == 1 })
        let status = try #require(try setup.status(job: job).first)
        #expect(status.counts.done == total && status.isFinished)
        let resultRows = try setup.testQueryInt("SELECT count(*) FROM results")
        #expect(resultRows == Int64(total))
    }

    /// Leases that expire while other workers race for them: at any moment a request has one
    /// holder, and only the newest generation's result is kept.
    @Test(arguments: StoreKind.all) func racingTakeoversKeepOneResultPerRequest(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let clock = TestClock()
        let setup = try openTestStore(kind, dir, clock: clock)
        let total = 300
        let job = try #require(try setup.enqueue(file: try inputFile(dir, count: total)).jobID)
        let stores = try (0..<4).map { _ in try openTestStore(kind, dir, clock: clock) }
        let committed = Mutex<[Int64: [LeaseRef]]>([:])
        let errors = Mutex<[String]>([])
        let group = DispatchGroup()
        for (index, store) in stores.enumerated() {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                do {
                    let worker = try store.registerWorker(host: "h", pid: Int32(index), description: "w")
                    var idle = 0
                    while idle < 200 {
                        // Some workers "stall" past their lease so others take over.
                        let claimed = try store.claim(worker: worker, job: job, limit: 8, leaseSeconds: 1, maxLostLeases: 1_000)
                        if claimed.isEmpty {
                            idle += 1
                            clock.advance(0.5)
                            if !(try store.hasUnfinishedWork(job: job)) { break }
                            continue
                        }
                        idle = 0
                        if Int.random(in: 0..<3) == 0 { clock.advance(1.5) }
                        let report = try store.commit(results(claimed.map { ($0.lease, okOutcome("\(worker)/\($0.leaseGeneration)")) }),
                                                      worker: worker)
                        let kept = claimed.map(\.lease).filter { !report.lostLeases.contains($0) }
                        committed.withLock { map in for lease in kept { map[lease.requestID, default: []].append(lease) } }
                    }
                } catch {
                    errors.withLock { $0.append("\(error)") }
                }
            }
        }
        #expect(group.wait(timeout: .now() + 120) == .success)
        #expect(errors.withLock { $0 }.isEmpty, "\(errors.withLock { $0 })")
        let map = committed.withLock { $0 }
        #expect(map.count == total)
        #expect(map.values.allSatisfy { $0.count == 1 }, "a request got two accepted results")
        // The stored result is the one whose commit was accepted.
        let out = dir.file("out.jsonl")
        _ = try setup.export(job: job, to: out)
        let lines = try readLines(out)
        #expect(lines.count == total)
        for (offset, line) in lines.enumerated() {
            let id = RequestKey.id(job: job, line: offset + 1)
            let lease = try #require(map[id]?.first)
            #expect(line.contains("/\(lease.leaseGeneration)\"}"), "\(line)")
        }
    }

    @Test(arguments: StoreKind.all) func severalStoresOpeningANewFileAtOnceAllSucceed(_ kind: StoreKind) throws {
        let dir = try TempDir()
        let errors = Mutex<[String]>([])
        let group = DispatchGroup()
        for _ in 0..<6 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                do { _ = try openTestStore(kind, dir) } catch { errors.withLock { $0.append("\(error)") } }
            }
        }
        #expect(group.wait(timeout: .now() + 60) == .success)
        #expect(errors.withLock { $0 }.isEmpty, "\(errors.withLock { $0 })")
        let store = try openTestStore(kind, dir)
        #expect(try store.testSchemaVersion() == Int64(kind == .sqlite ? Schema.currentVersion : PostgresSchema.currentVersion))
    }
}
