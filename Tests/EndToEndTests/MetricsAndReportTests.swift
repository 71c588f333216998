import Foundation
import SluiceCore
import SluiceTestSupport
import Testing

/// `sluice work --metrics-port/--metrics-file`, progress lines and `sluice report`, through the built binary.
@Suite(.serialized) struct MetricsAndReportTests {
    /// Parses Prometheus text with the `prometheus_client` package's parser (the reference
    /// implementation, not ours) and prints the samples as JSON; nil when the package is missing.
    static let parserScript = """
    import json, sys
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        print("MISSING")
        sys.exit(0)
    text = open(sys.argv[1], encoding="utf-8").read()
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.append({"family": family.name, "type": family.type, "name": sample.name,
                        "labels": sample.labels, "value": sample.value})
    print(json.dumps(out))
    """

    struct Sample {
        var family: String
        var type: String
        var name: String
        var labels: [String: String]
        var value: Double
    }

    /// The samples of a metrics text, parsed by prometheus_client; nil (with a note) if python3 cannot import it.
    func parseWithPrometheusClient(_ text: String, scratch: Scratch, children: Children) async throws -> [Sample]? {
        let script = scratch.path("parse-metrics.py"), input = scratch.path("metrics-\(UUID().uuidString).txt")
        try Self.parserScript.write(toFile: script, atomically: true, encoding: .utf8)
        try text.write(toFile: input, atomically: true, encoding: .utf8)
        let out = scratch.path("parse.out"), err = scratch.path("parse.err")
        let process = try children.spawn("/usr/bin/env", ["python3", script, input], stdout: out, stderr: err)
        let status = try await waitForExit(process, seconds: 60)
        let stdout = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        if stdout.hasPrefix("MISSING") { return nil }
        try #require(status == 0, "prometheus_client rejected the metrics: \(stderr)\n\(text)")
        return try #require(try JSON.parse(stdout).arrayValue).map { entry in
            var labels: [String: String] = [:]
            if case let .object(pairs)? = entry["labels"] { for (key, value) in pairs { labels[key] = value.stringValue ?? "" } }
            return Sample(family: entry["family"]?.stringValue ?? "", type: entry["type"]?.stringValue ?? "",
                          name: entry["name"]?.stringValue ?? "", labels: labels, value: entry["value"]?.doubleValue ?? .nan)
        }
    }

    /// GET over loopback with a plain socket (not the code under test); nil if the connection fails.
    func scrape(port: Int, path: String = "/metrics") -> String? {
        guard let fd = connectToLoopback(port: port) else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        _ = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
        var response = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            response.append(contentsOf: buffer[0..<count])
        }
        return String(decoding: response, as: UTF8.self)
    }

    func value(_ samples: [Sample], _ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }?.value
    }

    /// 12 quick requests (one answered 400), then one that takes an hour: the worker is still
    /// running, with a known state, while the test scrapes it.
    func writeJob(_ path: String) throws {
        var lines: [String] = []
        for index in 1...12 {
            let extra = index == 5 ? #","x_fake_status":400"# : ""
            lines.append(#"{"custom_id":"q\#(index)","method":"POST","url":"/v1/completions","body":{"model":"m","prompt":"number \#(index)","max_tokens":\#(8 + index)\#(extra)}}"#)
        }
        lines.append(#"{"custom_id":"slow","method":"POST","url":"/v1/completions","body":{"model":"m","prompt":"slow","max_tokens":4,"x_fake_delay":3600}}"#)
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// Whether python3 can import prometheus_client (scripts/test installs it; without it the test is skipped).
    static let prometheusClientAvailable: Bool = {
        (try? runHelper(["python3", "-c", "import prometheus_client"]))?.status == 0
    }()

    @Test(.enabled(if: prometheusClientAvailable,
                   "python3 cannot import prometheus_client (pip install --user prometheus_client; scripts/test installs it)"))
    func metricsEndpointAndFileParseWithPrometheusClientWhileWorking() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(scratch: scratch, children: children)
        let input = scratch.path("batch.jsonl"), db = scratch.path("sluice.db"), metricsFile = scratch.path("sluice.prom")
        try writeJob(input)
        #expect(try await sluice(["enqueue", input, "--db", db, "--name", "metrics \"e2e\""], in: scratch, children: children).status == 0)
        let errPath = scratch.path("work.err")
        let worker = try children.spawn(try sluiceBinary(), [
            "work", "--db", db, "--engine", "openai", "--base-url", server.baseURL, "--concurrency", "2", "--grace", "2",
            "--metrics-port", "0", "--metrics-file", metricsFile, "--metrics-interval", "0.2", "--progress-interval", "0.2",
        ], stdout: scratch.path("work.out"), stderr: errPath)
        var port: Int?
        try await waitUntil("the worker logged its metrics port") {
            let log = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
            if let range = log.range(of: "metrics: serving http://127.0.0.1:"),
               let end = log[range.upperBound...].firstIndex(of: "/") {
                port = Int(log[range.upperBound..<end])
            }
            return port != nil
        }
        let metricsPort = try #require(port)
        var scraped = ""
        try await waitUntil("a scrape shows the 12 quick requests done") {
            guard let response = scrape(port: metricsPort), response.hasPrefix("HTTP/1.1 200 OK") else { return false }
            scraped = response
            // The store's counts and the process's own (recorded just after each commit) both show the 12.
            return response.contains("state=\"done\"} 12\n") && response.contains("state=\"leased\"} 1\n")
                && response.contains("sluice_request_latency_seconds_count 12\n")
        }
        #expect(scraped.contains("Content-Type: text/plain; version=0.0.4"))
        let body = String(scraped[scraped.range(of: "\r\n\r\n")!.upperBound...])
        let samples = try #require(try await parseWithPrometheusClient(body, scratch: scratch, children: children),
                                   "python3 cannot import prometheus_client")
        let job = ["job_name": "metrics \"e2e\""]
        #expect(value(samples, "sluice_job_requests", job.merging(["state": "done"]) { $1 }) == 12)
        #expect(value(samples, "sluice_job_requests", job.merging(["state": "leased"]) { $1 }) == 1)
        #expect(value(samples, "sluice_job_requests", job.merging(["state": "queued"]) { $1 }) == 0)
        #expect(value(samples, "sluice_queue_depth") == 0)
        #expect(value(samples, "sluice_results_total", ["outcome": "succeeded"]) == 11)
        #expect(value(samples, "sluice_results_total", ["outcome": "failed"]) == 1)
        #expect(value(samples, "sluice_requests_in_flight") == 1)
        #expect((value(samples, "sluice_completion_tokens_total") ?? 0) > 0)
        #expect(value(samples, "sluice_request_latency_seconds_count") == 12)
        #expect(value(samples, "sluice_request_latency_seconds_bucket", ["le": "+Inf"]) == 12)
        #expect(samples.contains { $0.family == "sluice_request_latency_seconds" && $0.type == "histogram" })
        #expect(samples.contains { $0.family == "sluice_engine_step_seconds" && $0.type == "histogram" })
        #expect(samples.contains { $0.name == "sluice_checkpoint_lag_seconds" })
        #expect(value(samples, "sluice_worker_info", ["pid": String(worker.processIdentifier)]) == 1)
        // Bad requests are answered, and the server keeps serving.
        #expect(scrape(port: metricsPort, path: "/nope")?.hasPrefix("HTTP/1.1 404") == true)
        #expect(scrape(port: metricsPort)?.hasPrefix("HTTP/1.1 200 OK") == true)

        var fileText = ""
        try await waitUntil("the metrics file shows the 12 quick requests done") {
            fileText = (try? String(contentsOfFile: metricsFile, encoding: .utf8)) ?? ""
            return fileText.contains("state=\"done\"} 12\n") && fileText.contains("sluice_request_latency_seconds_count 12\n")
        }
        let fileSamples = try #require(try await parseWithPrometheusClient(fileText, scratch: scratch, children: children))
        #expect(value(fileSamples, "sluice_job_requests", job.merging(["state": "done"]) { $1 }) == 12)
        #expect(value(fileSamples, "sluice_request_latency_seconds_count") == 12)
        // Progress lines (not a terminal): counts from the store.
        try await waitUntil("a progress line shows 12 of 13 finished") {
            ((try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "").contains("progress: 12/13 requests finished")
        }

        kill(worker.processIdentifier, SIGTERM)
        #expect(try await waitForExit(worker, seconds: 60) == 0)
        let log = try String(contentsOfFile: errPath, encoding: .utf8)
        #expect(!log.contains("\u{1B}["), "escape codes in a log that is not a terminal")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).filter { $0.hasSuffix(".tmp") }.isEmpty)
    }

    @Test func badMetricsOptionsAreUsageErrors() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let portOutOfRange = try await sluice(["work", "--db", scratch.path("x.db"), "--metrics-port", "70000"], in: scratch, children: children)
        #expect(portOutOfRange.status == 2 && portOutOfRange.stderr.contains("--metrics-port must be 0-65535"))
        let missingFolder = try await sluice(["work", "--db", scratch.path("x.db"), "--metrics-file", scratch.path("no/such/m.prom")],
                                             in: scratch, children: children)
        #expect(missingFolder.status == 2 && missingFolder.stderr.contains("does not exist"))
    }

    @Test func reportIsOneSelfContainedPageWithChartsAndEscapedText() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let server = try await FakeServer(scratch: scratch, children: children)
        let input = scratch.path("batch.jsonl"), db = scratch.path("sluice.db")
        try writeBatchFile(input, count: 30)
        // A bad line whose error message carries markup, and a request answered 400.
        var text = try String(contentsOfFile: input, encoding: .utf8)
        text += #"{"custom_id":"evil","method":"POST","url":"/v1/completions","body":{},"<script>alert(1)</script>":1}"# + "\n"
        text += #"{"custom_id":"refused","method":"POST","url":"/v1/completions","body":{"prompt":"x","x_fake_status":400}}"# + "\n"
        try text.write(toFile: input, atomically: true, encoding: .utf8)
        #expect(try await sluice(["enqueue", input, "--db", db, "--name", "<b>report</b>"], in: scratch, children: children).status == 0)
        let work = try await sluice(["work", "--db", db, "--engine", "openai", "--base-url", server.baseURL, "--concurrency", "4", "--no-progress"],
                                    in: scratch, children: children)
        #expect(work.status == 0, "\(work.stderr)")
        #expect(!work.stderr.contains("progress:"))
        let output = scratch.path("report.html")
        let report = try await sluice(["report", "<b>report</b>", "--db", db, "-o", output, "--hourly-price", "2.5"], in: scratch, children: children)
        #expect(report.status == 0, "\(report.stderr)")
        let page = try String(contentsOfFile: output, encoding: .utf8)
        #expect(page.hasPrefix("<!DOCTYPE html>"))
        #expect(page.components(separatedBy: "<svg").count - 1 >= 3, "the charts are missing")
        #expect(page.contains("<rect class=\"bar\""), "the throughput and latency charts have no bars")
        #expect(!page.contains("http://") && !page.contains("https://"), "the page names a URL")
        #expect(!page.contains("<script") && !page.contains("<link") && !page.contains("<img") && !page.contains("url("))
        #expect(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && page.contains("&lt;b&gt;report&lt;/b&gt;"))
        #expect(page.contains("http_400") && page.contains("unknown_field"))
        #expect(page.contains("$2.50 per machine-hour") && page.contains("How it is computed"))

        let unknown = try await sluice(["report", "nope", "--db", db, "-o", output], in: scratch, children: children)
        #expect(unknown.status == 1 && unknown.stderr.contains("nope"))
        let negative = try await sluice(["report", "1", "--db", db, "-o", output, "--hourly-price", "-1"], in: scratch, children: children)
        #expect(negative.status == 2)
    }
}
