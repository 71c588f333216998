import Foundation
import SluiceCore
import SluiceQueue
@testable import SluiceRunner
import Synchronization
import Testing

@Suite struct ProgressFormatTests {
    let figures = ProgressFigures(total: 200, done: 90, failed: 5, cancelled: 5, queued: 80, leased: 20, cacheHits: 7,
                                  completionTokensPerSecond: 812.44, finishedPerSecond: 2, retries: 3, inFlight: 20)

    @Test func barFillsInProportion() {
        #expect(ProgressFormat.bar(fraction: 0, width: 12) == "[----------]")
        #expect(ProgressFormat.bar(fraction: 0.5, width: 12) == "[#####-----]")
        #expect(ProgressFormat.bar(fraction: 1, width: 12) == "[##########]")
        #expect(ProgressFormat.bar(fraction: 7, width: 6) == "[####]")
        #expect(ProgressFormat.bar(fraction: .nan, width: 4) == "[--]")
    }

    @Test func terminalLineShowsTheFiguresAndFitsTheWidth() {
        let line = ProgressFormat.terminalLine(figures, width: 120)
        #expect(line == "[###############---------------]  50.0%  100/200  5 failed  812 tok/s  ETA 50s  7 cached  3 retries")
        for width in [20, 40, 60, 80] {
            #expect(ProgressFormat.terminalLine(figures, width: width).count <= width)
        }
        // Too narrow for a bar: the figures alone, cut to the width.
        #expect(ProgressFormat.terminalLine(figures, width: 40).hasPrefix(" 50.0%  100/200"))
    }

    @Test func logLineNamesEveryCount() {
        let line = ProgressFormat.logLine(figures, windowSeconds: 30)
        #expect(line == "progress: 100/200 requests finished (50.0%): 90 done, 5 failed, 5 cancelled; 80 queued, 20 leased; 812 completion tokens/s (this worker, last 30 s); ETA 50s; 7 cache hits; 20 in flight, 3 retries")
        var stale = figures
        stale.storeError = "database is locked"
        #expect(ProgressFormat.logLine(stale, windowSeconds: 30).hasSuffix("counts are stale, the store could not be read: database is locked"))
    }

    @Test func etaIsUnknownWithoutARateAndZeroWhenDone() {
        var unknown = figures
        unknown.finishedPerSecond = nil
        #expect(unknown.etaSeconds == nil)
        #expect(ProgressFormat.terminalLine(unknown, width: 200).contains("ETA --"))
        let done = ProgressFigures(total: 3, done: 3)
        #expect(done.etaSeconds == 0 && done.fraction == 1)
        #expect(ProgressFigures().fraction == 0)
    }

    @Test func durationsAreShort() {
        #expect(ProgressFormat.duration(4.25) == "4.2s" || ProgressFormat.duration(4.25) == "4.3s")
        #expect(ProgressFormat.duration(37) == "37s")
        #expect(ProgressFormat.duration(725) == "12m05s")
        #expect(ProgressFormat.duration(11_220) == "3h07m")
        #expect(ProgressFormat.duration(.infinity) == "?")
    }
}

@Suite struct ProgressSamplerTests {
    final class FakeStore: Sendable {
        let state = Mutex<(unfinished: [JobID], counts: [JobID: RequestCounts], reads: Int)>(([], [:], 0))
        func progress(_ jobs: [JobID]) -> [JobProgress] {
            state.withLock { state in
                state.reads += 1
                return jobs.map { JobProgress(job: $0, name: nil, state: .active, counts: state.counts[$0] ?? RequestCounts(),
                                              badLineCount: 0, promptTokens: 0, completionTokens: 0, cacheHits: 0) }
            }
        }
    }

    @Test func followsEveryJobThatHadWorkAndMeasuresTheFinishRate() {
        let store = FakeStore()
        store.state.withLock { $0 = ([1], [1: RequestCounts(queued: 10)], 0) }
        let sampler = ProgressSampler(discover: { store.state.withLock { $0.unfinished } }, read: { store.progress($0) })
        let t0 = ContinuousClock.now
        #expect(sampler.sample(maxAge: 0, now: t0).jobs.map(\.job) == [1])
        // Job 1 finishes, job 2 appears: both are followed from now on.
        store.state.withLock { $0 = ([2], [1: RequestCounts(done: 8, failed: 2), 2: RequestCounts(queued: 5)], $0.reads) }
        let later = sampler.sample(maxAge: 0, now: t0 + .seconds(5))
        #expect(later.jobs.map(\.job) == [1, 2])
        #expect(later.finishedPerSecond == 2)
        // A fresh enough read is reused.
        let reads = store.state.withLock { $0.reads }
        _ = sampler.sample(maxAge: 60, now: t0 + .seconds(6))
        #expect(store.state.withLock { $0.reads } == reads)
    }

    @Test func aFailedReadKeepsTheLastFiguresAndSaysWhy() {
        struct Broken: Error, CustomStringConvertible { var description: String { "disk I/O error" } }
        let fail = Mutex(false)
        let sampler = ProgressSampler(discover: { [1] }, read: { jobs in
            if fail.withLock({ $0 }) { throw Broken() }
            return jobs.map { JobProgress(job: $0, name: "n", state: .active, counts: RequestCounts(done: 1), badLineCount: 0,
                                          promptTokens: 0, completionTokens: 0, cacheHits: 0) }
        })
        let t0 = ContinuousClock.now
        #expect(sampler.sample(maxAge: 0, now: t0).error == nil)
        fail.withLock { $0 = true }
        let stale = sampler.sample(maxAge: 0, now: t0 + .seconds(1))
        #expect(stale.jobs.first?.counts.done == 1 && stale.error == "disk I/O error")
    }
}

@Suite struct ProgressReporterTests {
    final class Output: Sendable {
        let text = Mutex("")
        var write: @Sendable (String) -> Void { { piece in self.text.withLock { $0 += piece } } }
        var value: String { text.withLock { $0 } }
    }

    func sampler(done: Int) -> ProgressSampler {
        ProgressSampler(discover: { [1] }, read: { jobs in
            jobs.map { JobProgress(job: $0, name: nil, state: .active, counts: RequestCounts(queued: 10 - done, done: done), badLineCount: 0,
                                   promptTokens: 0, completionTokens: 0, cacheHits: 0) }
        })
    }

    @Test func terminalModeRedrawsOneLineAndKeepsLogLinesApart() async throws {
        let output = Output()
        let reporter = ProgressReporter(sampler: sampler(done: 4), telemetry: WorkerTelemetry(), mode: .terminal(refresh: 0.05),
                                        write: output.write, width: { 100 })
        reporter.start()
        let deadline = ContinuousClock.now + .seconds(60)
        while !output.value.contains("4/10"), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        reporter.log("a log line")
        reporter.stop()
        let text = output.value
        #expect(text.contains("\r\u{1B}[K[") && text.contains("4/10"))
        // The log line erases the bar, ends with a newline, and the bar is drawn again after it.
        let logged = try #require(text.range(of: " a log line\n"))
        #expect(text[logged.upperBound...].hasPrefix("["))
        #expect(text.hasSuffix("\n") && !text.dropLast().hasSuffix("\n"))
    }

    @Test func lineModeWritesTimestampedLinesAndAFinalOne() async throws {
        let output = Output()
        let reporter = ProgressReporter(sampler: sampler(done: 10), telemetry: WorkerTelemetry(), mode: .lines(interval: 0.05),
                                        write: output.write, width: { 100 })
        reporter.start()
        let deadline = ContinuousClock.now + .seconds(60)
        while output.value.components(separatedBy: "progress:").count < 3, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        reporter.stop()
        let lines = output.value.split(separator: "\n")
        #expect(lines.count >= 3)
        #expect(lines.allSatisfy { $0.contains(" progress: 10/10 requests finished (100.0%)") && !$0.contains("\u{1B}") })
    }
}

extension ProgressReporterTests {
    /// A job that is done before the first periodic line is still in the final one (not 0/0).
    @Test func aJobDoneBeforeTheFirstLineIsInTheFinalOne() {
        let finished = Atomic<Bool>(false)
        let sampler = ProgressSampler(discover: { finished.load(ordering: .relaxed) ? [] : [1] }, read: { jobs in
            jobs.map { JobProgress(job: $0, name: nil, state: .active, counts: RequestCounts(done: 3), badLineCount: 0,
                                   promptTokens: 0, completionTokens: 0, cacheHits: 0) }
        })
        let output = Output()
        let reporter = ProgressReporter(sampler: sampler, telemetry: WorkerTelemetry(), mode: .lines(interval: 3600),
                                        write: output.write, width: { 100 })
        reporter.start()
        finished.store(true, ordering: .relaxed)
        reporter.stop()
        #expect(output.value.contains(" progress: 3/3 requests finished"), "\(output.value)")
    }
}

@Suite struct TelemetryTests {
    @Test func workerRecordsResultsLatencyAndThroughputItCommitted() async throws {
        let database = try WorkerSQLiteTests.Database()
        let store = try SQLiteStore(path: database.path)
        _ = try database.enqueue(store, count: 40)
        // c7 fails for good; the rest answer 200 with 5 completion tokens.
        let engine = ScriptedEngine(capacity: 8) { request in
            request.customID == "c7"
                ? .respond(after: 0.001, .failure(code: "bad", message: "no", retryable: false))
                : .respond(after: 0.002, okOutcome(request.id))
        }
        var configuration = fastConfiguration()
        let telemetry = WorkerTelemetry(windowSeconds: 600)
        configuration.telemetry = telemetry
        let worker = Worker(store: store, engine: engine, configuration: configuration, log: .silent)
        #expect(try await worker.run() == .completed)
        let snapshot = telemetry.snapshot()
        #expect(snapshot.succeeded == 39 && snapshot.failed == 1)
        #expect(snapshot.completionTokens == 39 * 5)
        #expect(snapshot.requestLatency.count == 40 && snapshot.requestLatency.sum > 0)
        #expect(snapshot.completionTokensPerSecond > 0 && snapshot.resultsPerSecond > 0)
        #expect(snapshot.workerID != nil && snapshot.engineDescription == "scripted engine")
        #expect(snapshot.inFlight == 0 && snapshot.checkpointLagSeconds == 0)
    }

    @Test func stepLengthsComeFromCheckpointProgress() async throws {
        let database = try WorkerSQLiteTests.Database()
        let store = try SQLiteStore(path: database.path)
        _ = try database.enqueue(store, count: 2)
        // Stalled requests gain one token per checkpoint collect; a drain ends the run.
        let engine = ScriptedEngine(capacity: 2, checkpoints: true) { _ in .stall }
        var configuration = fastConfiguration()
        let telemetry = WorkerTelemetry()
        configuration.telemetry = telemetry
        let worker = Worker(store: store, engine: engine, configuration: configuration, log: .silent)
        let run = Task { try await worker.run() }
        let deadline = ContinuousClock.now + .seconds(60)
        while telemetry.snapshot().stepSeconds.count < 3, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(telemetry.snapshot().inFlight == 2)
        worker.requestDrain(.requested)
        _ = try await run.value
        let steps = telemetry.snapshot().stepSeconds
        #expect(steps.count >= 3 && steps.sum > 0)
    }

    @Test func slidingWindowForgetsOldResults() {
        let telemetry = WorkerTelemetry(windowSeconds: 10)
        let t0 = ContinuousClock.now
        telemetry.started(worker: "w", engine: "e", checkpoints: false, now: t0)
        telemetry.recordResult(succeeded: true, promptTokens: 1, completionTokens: 100, fromCache: false, latencySeconds: 1, now: t0 + .seconds(1))
        #expect(telemetry.snapshot(now: t0 + .seconds(5)).completionTokensPerSecond == 20)
        #expect(telemetry.snapshot(now: t0 + .seconds(10)).completionTokensPerSecond == 10)
        #expect(telemetry.snapshot(now: t0 + .seconds(30)).completionTokensPerSecond == 0)
        #expect(telemetry.snapshot(now: t0 + .seconds(30)).completionTokens == 100)
    }
}
