import Foundation
import SluiceCore
import SluiceQueue
@testable import SluiceRunner
import Testing

@Suite struct ReportTests {
    static let t0 = 1_800_000_000.0

    func result(claimed: Double?, finished: Double, status: Int? = 200, prompt: Int = 10, completion: Int = 20,
                cache: Bool = false, preemptions: Int = 0, host: String? = "a") -> ReportResult {
        ReportResult(claimedAt: claimed.map { Self.t0 + $0 }, firstClaimedAt: claimed.map { Self.t0 + $0 }, finishedAt: Self.t0 + finished,
                     statusCode: status, promptTokens: prompt, completionTokens: completion, fromCache: cache,
                     preemptions: preemptions, host: host)
    }

    func data(_ results: [ReportResult], failures: [FailureGroup] = [], name: String? = "nightly") -> JobReportData {
        let job = JobInfo(id: 3, name: name, state: .active, priority: 0, inputPath: "/data/in.jsonl", inputSHA256: String(repeating: "ab", count: 32),
                          createdAt: Self.t0 - 10, requestCount: results.count, badLineCount: 0)
        return JobReportData(job: job, counts: RequestCounts(done: results.count), startedAt: Self.t0, finishedAt: Self.t0 + 100,
                             results: results, failures: failures, unfinishedPreempted: 0)
    }

    @Test func unionOfIntervalsMergesOverlapsAndSkipsGaps() {
        #expect(ReportSummary.unionLength([]) == 0)
        #expect(ReportSummary.unionLength([(0, 10), (5, 15), (20, 30), (21, 22)]) == 25)
        #expect(ReportSummary.unionLength([(3, 4), (0, 1)]) == 2)
    }

    @Test func costIsActiveMachineTimeTimesThePrice() throws {
        // Host a: busy 0–10 and 20–30 (20 s); host b: 0–40 (40 s). 60 machine-seconds in all.
        let results = [
            result(claimed: 0, finished: 10, prompt: 100, completion: 400),
            result(claimed: 5, finished: 10, prompt: 100, completion: 400),
            result(claimed: 20, finished: 30, prompt: 100, completion: 400),
            result(claimed: 0, finished: 40, prompt: 100, completion: 400, host: "b"),
            result(claimed: nil, finished: 0, status: nil, prompt: 0, completion: 0, host: nil),
        ]
        let summary = ReportSummary(data: data(results), hourlyPrice: 3.6, generatedAt: Self.t0 + 200)
        #expect(summary.activeSeconds == 60)
        #expect(summary.activeSecondsByHost.map(\.host) == ["b", "a"])
        let cost = try #require(summary.cost)
        #expect(abs(cost - 0.06) < 1e-12)
        #expect(abs(try #require(summary.costPerMillionTokens) - 0.06 / 2000 * 1e6) < 1e-9)
        #expect(abs(try #require(summary.costPerMillionCompletionTokens) - 0.06 / 1600 * 1e6) < 1e-9)
        #expect(summary.wallSeconds == 40 && summary.succeeded == 4 && summary.failures == 1)
        #expect(ReportSummary(data: data(results), hourlyPrice: nil, generatedAt: 0).cost == nil)
    }

    @Test func throughputBinsCompletionTokensByResultTimeAsAPerMinuteRate() {
        // 100 s of work: 2 s bins (50 of them at most 60).
        let results = [
            result(claimed: 0, finished: 0.5, completion: 30),
            result(claimed: 0, finished: 1.5, completion: 10),
            result(claimed: 0, finished: 50, completion: 60),
            result(claimed: 0, finished: 100, completion: 6),
        ]
        let series = ReportSummary(data: data(results), hourlyPrice: nil, generatedAt: Self.t0 + 200).throughput()
        #expect(series.binSeconds == 2 && series.start == Self.t0)
        #expect(series.tokensPerMinute.count == 51)
        #expect(series.tokensPerMinute[0] == 40 * 30)
        #expect(series.tokensPerMinute[25] == 60 * 30)
        #expect(series.tokensPerMinute[50] == 6 * 30)
        #expect(series.tokensPerMinute.reduce(0, +) == 106 * 30)
    }

    @Test func latencyBinsAndPercentiles() throws {
        var results = (1...99).map { result(claimed: 0, finished: Double($0) / 10) }
        results.append(result(claimed: 0, finished: 1000))
        let summary = ReportSummary(data: data(results), hourlyPrice: nil, generatedAt: 0)
        #expect(abs(try #require(summary.latencyPercentile(0.5)) - 5.0) < 1e-6)
        #expect(abs(try #require(summary.latencyPercentile(0.99)) - 9.9) < 1e-6)
        #expect(summary.latencyPercentile(1) == 1000)
        let bins = summary.latencyBins(maxBins: 30)
        // Up to the 99th percentile (9.9 s) in 0.5 s bins; the 1000 s outlier goes in "more".
        #expect(bins.width == 0.5 && bins.counts.count == 20 && bins.overflow == 1)
        #expect(bins.counts.reduce(0, +) == 99)
        #expect(ReportSummary.niceStep(0.33) == 0.5 && ReportSummary.niceStep(7) == 10 && ReportSummary.niceStep(2) == 2)
    }

    @Test func preemptionsAreCounted() {
        let results = [result(claimed: 0, finished: 1, preemptions: 0), result(claimed: 0, finished: 1, preemptions: 1),
                       result(claimed: 0, finished: 1, preemptions: 2), result(claimed: 0, finished: 1, preemptions: 5)]
        let summary = ReportSummary(data: data(results), hourlyPrice: nil, generatedAt: 0)
        #expect(summary.preemptions == 8 && summary.preemptedRequests == 3 && summary.preemptionHistogram == [1, 1, 1, 1])
    }

    @Test func pageEscapesUserTextAndIsSelfContained() {
        let failures = [
            FailureGroup(code: "unknown_field", message: #"unknown field "<img src=x onerror=alert(1)>""#, count: 2, badInput: true),
            FailureGroup(code: "http_400", message: "a & b </td><script>alert('x')</script>", count: 1, badInput: false),
        ]
        let results = [result(claimed: 0, finished: 3), result(claimed: 1, finished: 2, status: 400, completion: 0)]
        let page = ReportPage.html(ReportSummary(data: data(results, failures: failures, name: "<b>job</b> & \"co\""),
                                                 hourlyPrice: 2.5, generatedAt: Self.t0 + 60))
        #expect(!page.contains("<script") && !page.contains("<img") && !page.contains("<b>job"))
        #expect(page.contains("&lt;img src=x onerror=alert(1)&gt;"))
        #expect(page.contains("a &amp; b &lt;/td&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"))
        #expect(page.contains("&lt;b&gt;job&lt;/b&gt; &amp; &quot;co&quot;"))
        #expect(page.components(separatedBy: "<svg").count - 1 == 4)
        #expect(!page.contains("http://") && !page.contains("https://") && !page.contains("url(") && !page.contains("@import"))
        #expect(!page.contains(" href=") && !page.contains("<link") && !page.contains("<img"))
        #expect(page.contains("Cost = the sum of the machines' active hours × the hourly price"))
        #expect(page.contains("$2.50 per machine-hour"))
    }

    @Test func htmlEscapingCoversMarkupQuotesAndControls() {
        #expect(HTMLText.escape(#"<a href="x">'&'</a>"#) == "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;")
        #expect(HTMLText.escape("tab\tok\u{1}bell") == "tab\tok\u{FFFD}bell")
        #expect(HTMLText.escape("héllo ✓") == "héllo ✓")
    }

    @Test func reportOfARealStoreRoundTrips() throws {
        let database = try WorkerSQLiteTests.Database()
        let store = try SQLiteStore(path: database.path)
        let job = try database.enqueue(store, count: 3)
        let worker = try store.registerWorker(host: "h", pid: 1, description: "t")
        let claimed = try store.claim(worker: worker, job: nil, limit: 3, leaseSeconds: 30)
        var batch = CommitBatch()
        batch.results = claimed.map { (lease: LeaseRef(requestID: $0.id, leaseGeneration: $0.leaseGeneration), outcome: okOutcome($0.id)) }
        try store.commit(batch, worker: worker)
        let summary = ReportSummary(data: try store.reportData(job: job), hourlyPrice: 1, generatedAt: Date().timeIntervalSince1970)
        #expect(summary.succeeded == 3 && summary.latencies.count == 3 && summary.completionTokens == 15)
        #expect(summary.activeSecondsByHost.map(\.host) == ["h"])
        #expect(ReportPage.html(summary).contains("No failures"))
    }
}
