import Foundation
import SluiceQueue

/// The metrics `sluice work` exposes: the followed jobs' counts from the store (right after a
/// resume, and counting every worker) and this process's own counters and histograms (which,
/// as Prometheus expects of a process, start from zero when it starts).
public enum MetricsPage {
    /// Who is exposing the metrics.
    public struct Process: Sendable, Equatable {
        public var host: String
        public var pid: Int32

        public init(host: String, pid: Int32) {
            self.host = host
            self.pid = pid
        }

        public static var current: Process {
            Process(host: ProcessInfo.processInfo.hostName, pid: ProcessInfo.processInfo.processIdentifier)
        }
    }

    /// The exposition text for one scrape.
    public static func render(sample: ProgressSample, telemetry: TelemetrySnapshot, process: Process) -> String {
        var page = MetricsExposition()
        let jobs = sample.jobs
        func jobLabels(_ job: JobProgress) -> [(String, String)] { [("job_id", String(job.job)), ("job_name", job.name ?? "")] }

        page.add("sluice_job_requests", .gauge,
                 help: "Requests of each job this worker follows, by state (read from the queue database).",
                 jobs.flatMap { job in
                     let counts = job.counts
                     return [("queued", counts.queued), ("leased", counts.leased), ("done", counts.done),
                             ("failed", counts.failed), ("cancelled", counts.cancelled)].map { state, count in
                         (labels: jobLabels(job) + [("state", state)], value: Double(count))
                     }
                 })
        page.add("sluice_job_prompt_tokens", .gauge, help: "Prompt tokens in the results of each job (from the queue database).",
                 jobs.map { (labels: jobLabels($0), value: Double($0.promptTokens)) })
        page.add("sluice_job_completion_tokens", .gauge,
                 help: "Completion tokens in the results of each job (from the queue database).",
                 jobs.map { (labels: jobLabels($0), value: Double($0.completionTokens)) })
        page.add("sluice_job_cache_hits", .gauge, help: "Results of each job answered from the result cache.",
                 jobs.map { (labels: jobLabels($0), value: Double($0.cacheHits)) })
        page.add("sluice_queue_depth", .gauge, help: "Queued requests (not leased) in the jobs this worker follows.",
                 value: Double(jobs.reduce(0) { $0 + $1.counts.queued }))
        page.add("sluice_store_readable", .gauge,
                 help: "1 if the last read of the queue database succeeded; 0 if the job figures are stale.",
                 value: sample.error == nil ? 1 : 0)

        page.add("sluice_results_total", .counter, help: "Results this worker committed, by outcome (succeeded: a 200 answer).",
                 [(labels: [("outcome", "succeeded")], value: Double(telemetry.succeeded)),
                  (labels: [("outcome", "failed")], value: Double(telemetry.failed))])
        page.add("sluice_prompt_tokens_total", .counter, help: "Prompt tokens (tokens in) of the results this worker committed.",
                 value: Double(telemetry.promptTokens))
        page.add("sluice_completion_tokens_total", .counter,
                 help: "Completion tokens (tokens out) of the results this worker committed, cache hits included.",
                 value: Double(telemetry.completionTokens))
        page.add("sluice_cache_hits_total", .counter, help: "Results this worker answered from the result cache.",
                 value: Double(telemetry.cacheHits))
        page.add("sluice_retries_total", .counter, help: "Attempts of this worker that failed transiently and were retried.",
                 value: Double(telemetry.retries))
        page.add("sluice_lost_leases_total", .counter,
                 help: "Leases this worker lost (taken over after expiry, or the job was cancelled).",
                 value: Double(telemetry.lostLeases))
        page.add("sluice_requests_in_flight", .gauge, help: "Requests this worker has in the engine.",
                 value: Double(telemetry.inFlight))
        page.add("sluice_completion_tokens_per_second", .gauge,
                 help: "Completion tokens per second this worker committed over the last \(Int(telemetry.windowSeconds.rounded())) s.",
                 value: telemetry.completionTokensPerSecond)
        page.add("sluice_checkpoint_lag_seconds", .gauge,
                 help: "Seconds since this worker last committed checkpoints while requests were in flight (0 when none is, or the engine does not checkpoint): the generation a SIGKILL would lose.",
                 value: telemetry.checkpointLagSeconds)
        page.addHistogram("sluice_request_latency_seconds",
                          help: "Seconds from a request's claim to the commit of its result, for results this worker committed.",
                          [(labels: [], histogram: telemetry.requestLatency)])
        page.addHistogram("sluice_engine_step_seconds",
                          help: "Mean engine step length, estimated from generation progress between checkpoint reads (tokens a running sequence gained = steps); includes prefill. Empty for engines without checkpoints.",
                          [(labels: [], histogram: telemetry.stepSeconds)])
        page.add("sluice_worker_info", .gauge, help: "This worker: its id in the queue database, host, pid and engine.",
                 [(labels: [("worker_id", telemetry.workerID ?? ""), ("host", process.host), ("pid", String(process.pid)),
                            ("engine", telemetry.engineDescription)], value: 1)])
        page.add("sluice_worker_start_time_seconds", .gauge, help: "When this worker registered, in seconds since the Unix epoch.",
                 value: telemetry.startedAt ?? 0)
        return page.text
    }
}
