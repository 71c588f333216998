import ArgumentParser
import Foundation
import SluiceCore
import SluiceQueue

/// `sluice-bench queue`: enqueue throughput and memory on a generated file, then
/// claim + complete throughput with 1 and N worker processes against an instant engine.
struct QueueBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract: "Measure enqueue (lines/s, peak RSS) and claim+complete (requests/s) through the SQLite store.",
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

        func run() async throws {
            let workDir = dir ?? FileManager.default.temporaryDirectory.appendingPathComponent("sluice-bench-queue-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
            defer { if dir == nil { try? FileManager.default.removeItem(atPath: workDir) } }
            print("machine: \(ProcessInfo.processInfo.activeProcessorCount) CPUs, load average \(ProcessMemory.loadAverage())")
            let workerCounts = workers.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }

            let input = workDir + "/input.jsonl"
            let bytes = try BenchInput.generate(path: input, lines: lines)
            print("generated \(lines) lines, \(bytes / 1_000_000) MB (\(bytes / max(lines, 1)) bytes/line) in \(input)")

            let enqueueDB = workDir + "/enqueue.db"
            let enqueue = try runChild(["enqueue-child", "--db", enqueueDB, "--file", input])
            let seconds = enqueue["seconds"] as? Double ?? 0
            let accepted = enqueue["accepted"] as? Int ?? 0
            let peakMB = (enqueue["peak_rss_kb"] as? Int ?? 0) / 1024
            let cpu = enqueue["cpu_seconds"] as? Double ?? 0
            print(String(format: "enqueue: %d lines in %.2f s = %.0f lines/s, peak RSS %d MB, CPU %.2f s (user+sys, all threads), database %d MB",
                         accepted, seconds, Double(accepted) / max(seconds, 1e-9), peakMB, cpu,
                         fileSize(enqueueDB) / 1_000_000))
            removeDatabase(enqueueDB)

            let drainInput = workDir + "/drain.jsonl"
            _ = try BenchInput.generate(path: drainInput, lines: drainRequests)
            for count in workerCounts where count > 0 {
                let db = workDir + "/drain-\(count).db"
                let store = try SQLiteStore(path: db)
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
                removeDatabase(db)
            }
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
            let store = try SQLiteStore(path: db)
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
            let store = try SQLiteStore(path: db)
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
                    try store.heartbeat(worker: worker, leaseSeconds: 60)
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
