import Foundation
import SluiceCore
import SluiceQueue
@testable import SluiceRunner
import SluiceTestSupport
import Synchronization
import Testing

@Suite struct MetricsExpositionTests {
    @Test func textFormatHasHelpTypeEscapedLabelsAndCumulativeHistograms() {
        var page = MetricsExposition()
        page.add("demo_requests", .gauge, help: "Requests by state.\nSecond line \\ backslash.",
                 [(labels: [("job_name", "a \"quoted\" \\ name\nline two"), ("state", "done")], value: 3),
                  (labels: [("job_name", ""), ("state", "queued")], value: 0.25)])
        page.add("demo_total", .counter, help: "A counter.", value: 12)
        var histogram = MetricsHistogram(bounds: [0.1, 1])
        histogram.observe(0.05)
        histogram.observe(0.5, times: 2)
        histogram.observe(7)
        histogram.observe(.nan)
        page.addHistogram("demo_seconds", help: "Latency.", [(labels: [("kind", "x")], histogram: histogram)])
        #expect(page.text == """
        # HELP demo_requests Requests by state.\\nSecond line \\\\ backslash.
        # TYPE demo_requests gauge
        demo_requests{job_name="a \\"quoted\\" \\\\ name\\nline two",state="done"} 3
        demo_requests{job_name="",state="queued"} 0.25
        # HELP demo_total A counter.
        # TYPE demo_total counter
        demo_total 12
        # HELP demo_seconds Latency.
        # TYPE demo_seconds histogram
        demo_seconds_bucket{kind="x",le="0.1"} 1
        demo_seconds_bucket{kind="x",le="1"} 3
        demo_seconds_bucket{kind="x",le="+Inf"} 4
        demo_seconds_sum{kind="x"} 8.05
        demo_seconds_count{kind="x"} 4

        """)
    }

    @Test func valuesAreFormattedAsTheFormatSpellsThem() {
        #expect(MetricsExposition.format(3) == "3")
        #expect(MetricsExposition.format(-2) == "-2")
        #expect(MetricsExposition.format(0.001) == "0.001")
        #expect(MetricsExposition.format(1e20) == "1e+20")
        #expect(MetricsExposition.format(.infinity) == "+Inf")
        #expect(MetricsExposition.format(-.infinity) == "-Inf")
        #expect(MetricsExposition.format(.nan) == "NaN")
        #expect(MetricsExposition.isValidName("sluice_job_requests") && MetricsExposition.isValidName("a:b_1"))
        #expect(!MetricsExposition.isValidName("1abc") && !MetricsExposition.isValidName("a-b") && !MetricsExposition.isValidName(""))
    }

    @Test func workerPageNamesEveryFamilyOnceWithJobAndWorkerLabels() {
        let job = JobProgress(job: 7, name: "night\"ly", state: .active, counts: RequestCounts(queued: 4, leased: 2, done: 10, failed: 1),
                              badLineCount: 0, promptTokens: 100, completionTokens: 250, cacheHits: 3)
        var telemetry = TelemetrySnapshot(workerID: "w-1", engineDescription: "openai http://x", startedAt: 1_800_000_000,
                                          succeeded: 9, failed: 1, promptTokens: 90, completionTokens: 240, cacheHits: 3,
                                          retries: 2, inFlight: 2, completionTokensPerSecond: 12.5, windowSeconds: 30,
                                          engineCheckpoints: true, checkpointLagSeconds: 0.4)
        telemetry.requestLatency.observe(0.3)
        let text = MetricsPage.render(sample: ProgressSample(jobs: [job]), telemetry: telemetry,
                                      process: .init(host: "host-1", pid: 42))
        let lines = text.split(separator: "\n").map(String.init)
        let types = lines.filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] }
        #expect(types.count == Set(types).count, "a family appears twice")
        #expect(lines.filter { $0.hasPrefix("# HELP ") }.count == types.count)
        for needed in ["sluice_job_requests", "sluice_queue_depth", "sluice_prompt_tokens_total", "sluice_completion_tokens_total",
                       "sluice_request_latency_seconds", "sluice_engine_step_seconds", "sluice_checkpoint_lag_seconds",
                       "sluice_cache_hits_total", "sluice_worker_info"] {
            #expect(types.contains(Substring(needed)), "missing \(needed)")
        }
        #expect(lines.contains(#"sluice_job_requests{job_id="7",job_name="night\"ly",state="done"} 10"#))
        #expect(lines.contains(#"sluice_job_requests{job_id="7",job_name="night\"ly",state="queued"} 4"#))
        #expect(lines.contains("sluice_queue_depth 4"))
        #expect(lines.contains("sluice_completion_tokens_total 240"))
        #expect(lines.contains("sluice_checkpoint_lag_seconds 0.4"))
        #expect(lines.contains(#"sluice_request_latency_seconds_bucket{le="+Inf"} 1"#))
        #expect(lines.contains(#"sluice_worker_info{worker_id="w-1",host="host-1",pid="42",engine="openai http://x"} 1"#))
        #expect(lines.contains("sluice_store_readable 1"))
    }
}

@Suite struct MetricsHTTPServerTests {
    /// One raw exchange: sends `request` as is, reads until the server closes.
    func exchange(_ port: Int, _ request: [UInt8]) throws -> String {
        let fd = try #require(connectToLoopback(port: port))
        defer { close(fd) }
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if !request.isEmpty { _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
        // Done sending: a server waiting for more sees the end at once.
        shutdown(fd, Int32(SHUT_WR))
        var response = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            response.append(contentsOf: buffer[0..<count])
        }
        return String(decoding: response, as: UTF8.self)
    }

    @Test func servesMetricsAndAnswersBadRequestsWithoutStopping() throws {
        let server = try MetricsHTTPServer(port: 0) { "# HELP x y\n# TYPE x gauge\nx 1\n" }
        defer { server.stop() }
        #expect(server.port > 0)
        server.start()
        let ok = try exchange(server.port, Array("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8))
        #expect(ok.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"))
        #expect(ok.contains("Content-Length: 30\r\n") && ok.hasSuffix("\r\n\r\n# HELP x y\n# TYPE x gauge\nx 1\n"))
        #expect(try exchange(server.port, Array("GET /metrics?x=1 HTTP/1.0\n\n".utf8)).hasPrefix("HTTP/1.1 200 OK"))
        let head = try exchange(server.port, Array("HEAD /metrics HTTP/1.1\r\n\r\n".utf8))
        #expect(head.hasPrefix("HTTP/1.1 200 OK") && head.hasSuffix("\r\n\r\n"))
        #expect(try exchange(server.port, Array("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 405"))
        #expect(try exchange(server.port, Array("GET /other HTTP/1.1\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 404"))
        #expect(try exchange(server.port, Array("garbage\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 400"))
        #expect(try exchange(server.port, [0xFF, 0xFE, 0x20, 0x2F, 0x20, 0x0D, 0x0A, 0x0D, 0x0A]).hasPrefix("HTTP/1.1 400"))
        #expect(try exchange(server.port, Array(repeating: UInt8(ascii: "a"), count: 17_000)).hasPrefix("HTTP/1.1 431"))
        #expect(try exchange(server.port, []).isEmpty)
        // Still serving after all that.
        #expect(try exchange(server.port, Array("GET /metrics HTTP/1.1\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 200 OK"))
    }

    @Test func aPortInUseIsAClearError() throws {
        let first = try MetricsHTTPServer(port: 0) { "" }
        defer { first.stop() }
        #expect {
            _ = try MetricsHTTPServer(port: first.port) { "" }
        } throws: { error in
            "\(error)".contains("cannot listen on 127.0.0.1:\(first.port)")
        }
    }

    @Test func metricsFileIsReplacedAtomically() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-metrics-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("sluice.prom").path
        let counter = Counter()
        let writer = MetricsFileWriter(path: path, interval: 60, log: .silent) { "x \(counter.next())\n" }
        try writer.write()
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "x 1\n")
        try writer.write()
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "x 2\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["sluice.prom"])
    }

    final class Counter: Sendable {
        private let value = Mutex(0)
        func next() -> Int { value.withLock { $0 += 1; return $0 } }
    }
}

struct MetricsHostTests {
    @Test func bindsTheAddressItIsGiven() throws {
        let server = try MetricsHTTPServer(host: "127.0.0.1", port: 0) { "x 1\n" }
        defer { server.stop() }
        #expect(server.host == "127.0.0.1")
        let fd = try #require(connectToLoopback(port: server.port))
        close(fd)
    }

    @Test(arguments: ["localhost", "::1", "1.2.3", "300.1.1.1", ""])
    func refusesWhatIsNotAnIPv4Address(_ host: String) {
        #expect(throws: (any Error).self) { _ = try MetricsHTTPServer(host: host, port: 0) { "" } }
    }
}

struct WorkerLogTimestampTests {
    @Test func logLinesCarryTheDate() throws {
        let stamp = WorkerLog.timestamp()
        // 2026-12-06T16:20:01.123Z
        let pattern = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/
        #expect(stamp.wholeMatch(of: pattern) != nil, "\(stamp)")
    }
}
