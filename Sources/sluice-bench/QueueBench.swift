import ArgumentParser
import Foundation
import SluiceCore
import SluiceQueue

/// `sluice-bench queue`: enqueue throughput and memory on a generated file, then
/// claim + complete throughput with 1 and N worker processes against an instant engine.
struct QueueBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract: "Measure enqueue (lines/s, peak RSS) and claim+complete (requests/s) through the SQLite and PostgreSQL stores.",
        subcommands: [Run.self, EnqueueChild.self, WorkerChild.self],
        defaultSubcommand: Run.self
    )

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "run", abstract: "Run the whole queue benchmark.")

        @Option(help: "Lines in the generated input file for the enqueue measurement.")
        var lines = 1_000_000
        @Option(help: "Requests drained in each claim+complete measurement.")
        var drainRequests = 100_000
        @Option(help: "Worker process counts to measure, comma-separated.")
        var workers = "1,4"
        @Option(help: "Requests per claim.")
        var claim = 256
        @Option(help: "Results per commit transaction.")
        var commit = 64
        @Option(help: "Directory for the generated files and databases (default: a new temporary directory, removed afterwards).")
        var dir: String?
        @Option(help: "A PostgreSQL server to measure beside SQLite (postgresql://…; each measurement gets a schema of its own).")
        var postgresURL: String?

        /// The queues measured: SQLite files in the work directory, and schemas on the PostgreSQL server.
        private func location(_ store: String, _ name: String, workDir: String) throws -> String {
            guard store == "postgresql", let postgresURL else { return workDir + "/" + name + ".db" }
            let schema = "bench_" + name.replacingOccurrences(of: "-", with: "_") + "_" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
            try psql(postgresURL, "CREATE SCHEMA \(schema)")
            return postgresURL + (postgresURL.contains("?") ? "&" : "?") + "options=-csearch_path%3D" + schema
        }

        private func dropLocation(_ location: String) {
            if let range = location.range(of: "search_path%3D"), let postgresURL {
                try? psql(postgresURL, "DROP SCHEMA \(location[range.upperBound...]) CASCADE")
            } else {
                removeDatabase(location)
            }
        }

        private func psql(_ url: String, _ sql: String) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", "SET client_min_messages = warning; " + sql]
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { throw ValidationError("psql failed: \(sql)") }
        }

        func run() async throws {
            let workDir = dir ?? FileManager.default.temporaryDirectory.appendingPathComponent("sluice-bench-queue-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
            defer { if dir == nil { try? FileManager.default.removeItem(atPath: workDir) } }
            print("machine: \(ProcessInfo.processInfo.activeProcessorCount) CPUs, load average \(ProcessMemory.loadAverage())")
            let workerCounts = workers.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }

            let input = workDir + "/input.jsonl"
            let bytes = try BenchInput.generate(path: input, lines: lines)
            print("generated \(lines) lines, \(bytes / 1_000_000) MB (\(bytes / max(lines, 1)) bytes/line) in \(input)")
            let drainInput = workDir + "/drain.jsonl"
            _ = try BenchInput.generate(path: drainInput, lines: drainRequests)

            var summary: [(what: String, figures: [String: Double])] = []
            for store in ["sqlite"] + (postgresURL == nil ? [] : ["postgresql"]) {
                print("— \(store)")
                let figures = try measure(store: store, input: input, drainInput: drainInput, workDir: workDir,
                                          workerCounts: workerCounts)
                for (what, value) in figures {
                    if let index = summary.firstIndex(where: { $0.what == what }) {
                        summary[index].figures[store] = value
                    } else {
                        summary.append((what, [store: value]))
                    }
                }
            }
            if postgresURL != nil {
                print("side by side (same machine, same run):")
                print("  measurement                          SQLite      PostgreSQL   PostgreSQL/SQLite")
                for row in summary {
                    let sqlite = row.figures["sqlite"] ?? 0, postgres = row.figures["postgresql"] ?? 0
                    let label = row.what.padding(toLength: 34, withPad: " ", startingAt: 0)
                    print("  " + label + String(format: " %10.0f %13.0f %12.2fx", sqlite, postgres, postgres / max(sqlite, 1e-9)))
                }
            }
        }

        /// Enqueue and drain figures of one store, by measurement name.
        private func measure(store: String, input: String, drainInput: String, workDir: String,
                             workerCounts: [Int]) throws -> [(String, Double)] {
            var figures: [(String, Double)] = []
            let enqueueDB = try location(store, "enqueue", workDir: workDir)
            let enqueue = try runChild(["enqueue-child", "--db", enqueueDB, "--file", input])
            let seconds = enqueue["seconds"] as? Double ?? 0
            let accepted = enqueue["accepted"] as? Int ?? 0
            let peakMB = (enqueue["peak_rss_kb"] as? Int ?? 0) / 1024
            let cpu = enqueue["cpu_seconds"] as? Double ?? 0
            print(String(format: "enqueue: %d lines in %.2f s = %.0f lines/s, peak RSS %d MB, CPU %.2f s (user+sys, all threads of the client)%@",
                         accepted, seconds, Double(accepted) / max(seconds, 1e-9), peakMB, cpu,
                         store == "sqlite" ? ", database \(fileSize(enqueueDB) / 1_000_000) MB" as NSString : "" as NSString))
            figures.append(("enqueue lines/s", Double(accepted) / max(seconds, 1e-9)))
            dropLocation(enqueueDB)

            for count in workerCounts where count > 0 {
                let db = try location(store, "drain-\(count)", workDir: workDir)
                let store = try openStore(db)
                let job = try store.enqueue(file: drainInput, allowDuplicate: true)
                guard let jobID = job.jobID else { throw ValidationError("drain input was rejected") }
                let start = Date()
                let processes = try (0..<count).map { _ in
                    try spawnChild(["worker-child", "--db", db, "--job", String(jobID), "--claim", String(claim), "--commit", String(commit)])
                }
                var completed = 0
                var cpu = 0.0
                for process in processes {
                    let report = try finishChild(process)
                    completed += report["completed"] as? Int ?? 0
                    cpu += report["cpu_seconds"] as? Double ?? 0
                }
                let elapsed = Date().timeIntervalSince(start)
                let status = try store.status(job: jobID)[0]
                print(String(format: "claim+complete, %d worker process%@ (claim %d, commit %d): %d requests in %.2f s = %.0f requests/s, workers' CPU %.2f s; done %d of %d",
                             count, count == 1 ? "" : "es", claim, commit, completed, elapsed, Double(completed) / elapsed, cpu,
                             status.counts.done, status.counts.total))
                if status.counts.done != drainRequests || completed != drainRequests {
                    throw ValidationError("the drain lost or duplicated requests: completed \(completed), done \(status.counts.done)")
                }
                figures.append(("claim+complete req/s, \(count) worker\(count == 1 ? "" : "s")", Double(completed) / elapsed))
                dropLocation(db)
            }
            return figures
        }

        private func removeDatabase(_ path: String) {
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        }

        private func fileSize(_ path: String) -> Int {
            ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
        }

        private func spawnChild(_ arguments: [String]) throws -> (Process, Pipe) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            process.arguments = ["queue"] + arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            return (process, pipe)
        }

        private func finishChild(_ child: (Process, Pipe)) throws -> [String: Any] {
            let data = child.1.fileHandleForReading.readDataToEndOfFile()
            child.0.waitUntilExit()
            guard child.0.terminationStatus == 0,
                  let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw ValidationError("benchmark child \(child.0.arguments ?? []) failed (status \(child.0.terminationStatus)): \(String(decoding: data, as: UTF8.self))")
            }
            return object
        }

        private func runChild(_ arguments: [String]) throws -> [String: Any] {
            try finishChild(try spawnChild(arguments))
        }
    }

    /// Enqueues one file and prints its figures as JSON (a separate process, so its peak RSS is its own).
    struct EnqueueChild: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "enqueue-child", shouldDisplay: false)
        @Option var db: String
        @Option var file: String

        func run() throws {
            let store = try openStore(db)
            let report = try store.enqueue(file: file, allowDuplicate: true)
            let object: [String: Any] = [
                "seconds": report.seconds, "accepted": report.accepted, "bad": report.badLineCount,
                "peak_rss_kb": ProcessMemory.peakResidentKB(), "cpu_seconds": ProcessMemory.cpuSeconds(),
            ]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self))
        }
    }

    /// Drains a job like a worker with an engine that answers instantly: claims a batch,
    /// completes every request, commits the results in batches of `commit`.
    struct WorkerChild: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "worker-child", shouldDisplay: false)
        @Option var db: String
        @Option var job: Int64
        @Option var claim: Int
        @Option var commit: Int

        func run() throws {
            let store = try openStore(db)
            let worker = try store.registerWorker(host: "bench", pid: getpid(), description: "instant engine")
            var completed = 0
            var lastHeartbeat = Date()
            while true {
                let claimed = try store.claim(worker: worker, job: job, limit: claim, leaseSeconds: 60)
                if claimed.isEmpty {
                    if try !store.hasUnfinishedWork(job: job) { break }
                    usleep(1000)
                    continue
                }
                var batch = CommitBatch()
                for request in claimed {
                    batch.results.append((lease: LeaseRef(requestID: request.id, leaseGeneration: request.leaseGeneration),
                                          outcome: BenchInput.instantResponse(for: request)))
                    if batch.results.count >= commit {
                        completed += batch.results.count - (try store.commit(batch, worker: worker)).lostLeases.count
                        batch = CommitBatch()
                    }
                }
                if !batch.isEmpty {
                    completed += batch.results.count - (try store.commit(batch, worker: worker)).lostLeases.count
                }
                if Date().timeIntervalSince(lastHeartbeat) > 5 {
                    // Everything claimed is committed by now: the heartbeat only marks the worker alive.
                    try store.heartbeat(worker: worker, leases: [], leaseSeconds: 60)
                    lastHeartbeat = Date()
                }
            }
            try store.unregisterWorker(worker)
            let object: [String: Any] = ["completed": completed, "peak_rss_kb": ProcessMemory.peakResidentKB(),
                                         "cpu_seconds": ProcessMemory.cpuSeconds()]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self))
        }
    }
}

enum BenchInput {
    private static let words = ["batch", "queue", "model", "token", "river", "stone", "cloud", "paper", "light", "green",
                                "quick", "silent", "number", "orange", "window", "market", "garden", "planet", "signal", "bridge"]

    /// Writes `lines` chat-completion requests of about 300 bytes each; returns the byte count.
    static func generate(path: String, lines: Int) throws -> Int {
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let handle = FileHandle(forWritingAtPath: path) else {
            throw ValidationError("cannot create \(path)")
        }
        defer { try? handle.close() }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(1 << 20)
        var total = 0
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in 1...max(lines, 1) where lines > 0 {
            var prompt = "Summarize item \(i) of the nightly batch in one sentence:"
            for _ in 0..<5 {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                prompt += " " + words[Int(state >> 59) % words.count]
            }
            let line = #"{"custom_id":"request-\#(i)","method":"POST","url":"/v1/chat/completions","body":{"model":"gemma-3-270m","messages":[{"role":"system","content":"You are concise."},{"role":"user","content":"\#(prompt)"}],"max_tokens":64,"temperature":0}}"#
            buffer.append(contentsOf: line.utf8)
            buffer.append(0x0A)
            if buffer.count >= 1 << 20 {
                handle.write(Data(buffer))
                total += buffer.count
                buffer.removeAll(keepingCapacity: true)
            }
        }
        handle.write(Data(buffer))
        total += buffer.count
        return total
    }

    /// What an OpenAI-compatible server answering at once would return.
    static func instantResponse(for request: ClaimedRequest) -> EngineOutcome {
        let body: JSON = .object([
            "id": .string("chatcmpl-\(request.id)"),
            "object": .string("chat.completion"),
            "model": .string("gemma-3-270m"),
            "choices": .array([.object([
                "index": .int(0),
                "message": .object(["role": .string("assistant"), "content": .string("OK.")]),
                "finish_reason": .string("stop"),
            ])]),
            "usage": .object(["prompt_tokens": .int(40), "completion_tokens": .int(2), "total_tokens": .int(42)]),
        ])
        return .response(statusCode: 200, body: body, usage: Usage(promptTokens: 40, completionTokens: 2))
    }
}

enum ProcessMemory {
    /// User + system CPU seconds of this process, all threads.
    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    }

    /// The 1-, 5- and 15-minute load averages, as /proc/loadavg says them.
    static func loadAverage() -> String {
        let text = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
        return text.split(separator: " ").prefix(3).joined(separator: " ")
    }

    /// Peak resident set size of this process in KiB (`VmHWM` from /proc/self/status).
    static func peakResidentKB() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
        }
        return 0
    }
}
