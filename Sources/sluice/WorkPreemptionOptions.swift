import ArgumentParser
import Foundation
import SluiceCore
import SluiceEngine
import SluiceRunner

/// `sluice work`'s options for surviving preemption: checkpoint cadence, the result cache, notices and deadlines.
struct WorkPreemptionOptions: ParsableArguments {
    @Option(name: .customLong("checkpoint-interval"), help: ArgumentHelp(
        "builtin: store partial output of requests in flight at least this often (0 = off; default 0.5s).", valueName: "duration"),
            transform: DurationOption.parse)
    var checkpointIntervalOption: DurationOption = 0.5
    var checkpointInterval: Double { checkpointIntervalOption.seconds }

    @Option(name: .customLong("checkpoint-tokens"), help: ArgumentHelp(
        "builtin: also store a request's partial output as soon as it is this many tokens past its last checkpoint.", valueName: "tokens"))
    var checkpointTokens: Int = 64

    @Flag(name: .customLong("no-checkpoints"), help: "Store partial output only when draining (same as --checkpoint-interval 0).")
    var noCheckpoints = false

    @Flag(name: .customLong("no-cache"), help: "Neither answer from nor add to the result cache.")
    var noCache = false

    @Option(name: .customLong("preemption-notice"), help: ArgumentHelp(
        "Drain when this metadata endpoint announces preemption (polled every few seconds); 'aws' or 'gcp' for the cloud's own.",
        valueName: "url"))
    var preemptionNotice: String?

    @Option(name: .customLong("preemption-style"), help: ArgumentHelp(
        "aws (IMDSv2 spot/instance-action) or gcp (instance/preempted); default: from the URL's path.", valueName: "style"))
    var preemptionStyle: String?

    @Option(name: .customLong("preemption-poll"), help: ArgumentHelp("Time between looks at the notice endpoint (default 5s).", valueName: "duration"),
            transform: DurationOption.parse)
    var preemptionPollOption: DurationOption = 5
    var preemptionPoll: Double { preemptionPollOption.seconds }

    @Option(name: .customLong("preemption-file"), help: ArgumentHelp("Drain when this file exists.", valueName: "path"))
    var preemptionFile: String?

    @Option(help: ArgumentHelp("Drain at this time: ISO 8601 (2026-11-27T06:00:00Z) or HH:MM local time.", valueName: "time"))
    var until: String?

    @Option(name: .customLong("token-ledger"), help: ArgumentHelp(
        "Append each request's generation progress to this file (used by scripts/preemption-drill to measure recomputed tokens).",
        valueName: "path"))
    var tokenLedger: String?

    /// Seconds between periodic checkpoints; 0 = off.
    var effectiveCheckpointInterval: Double { noCheckpoints ? 0 : checkpointInterval }

    func validate() throws {
        if !(checkpointInterval >= 0) { throw ValidationError("--checkpoint-interval must be 0 (off) or positive (got \(checkpointInterval))") }
        if checkpointTokens < 1 { throw ValidationError("--checkpoint-tokens must be at least 1 (got \(checkpointTokens))") }
        if checkpointInterval > 86_400 { throw ValidationError("--checkpoint-interval must be at most a day (got \(checkpointInterval))") }
        if preemptionPoll > 86_400 { throw ValidationError("--preemption-poll must be at most a day (got \(preemptionPoll))") }
        if !(preemptionPoll >= 0.05) { throw ValidationError("--preemption-poll must be at least 0.05 seconds (got \(preemptionPoll))") }
        if preemptionNotice != nil { _ = try noticeEndpoint() }
        if preemptionStyle != nil, preemptionNotice == nil { throw ValidationError("--preemption-style needs --preemption-notice URL") }
        if let until, UntilTime.parse(until) == nil {
            throw ValidationError("--until \(until): not a time (use ISO 8601 like 2026-11-27T06:00:00Z, or HH:MM local time)")
        }
    }

    /// The notice URL and its style, from --preemption-notice and --preemption-style.
    func noticeEndpoint() throws -> (url: URL, style: PreemptionStyle)? {
        guard let text = preemptionNotice else { return nil }
        var style: PreemptionStyle?
        if let name = preemptionStyle {
            guard let named = PreemptionStyle(rawValue: name.lowercased()) else {
                throw ValidationError("--preemption-style must be aws or gcp (got \(name))")
            }
            style = named
        }
        if let cloud = PreemptionStyle(rawValue: text.lowercased()) {
            if let style, style != cloud { throw ValidationError("--preemption-notice \(text) contradicts --preemption-style \(style.rawValue)") }
            return (cloud.defaultURL, cloud)
        }
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https", url.host != nil else {
            throw ValidationError("--preemption-notice \(text) is not an http:// URL (or 'aws' / 'gcp')")
        }
        // A bare base URL would poll `/`, whose 404 reads as "no notice": the worker would never drain.
        if url.path.isEmpty || url.path == "/" {
            let base = text.hasSuffix("/") ? String(text.dropLast()) : text
            let endpoints = (style.map { [$0] } ?? PreemptionStyle.allCases).map { "\(base)\($0.defaultURL.path) (\($0.rawValue))" }
            throw ValidationError("--preemption-notice \(text) names a server, not its notice endpoint (polling / would never see a notice); "
                                  + "give the endpoint's full URL: \(endpoints.joined(separator: " or "))")
        }
        guard let chosen = style ?? PreemptionStyle.implied(by: url) else {
            throw ValidationError("--preemption-notice \(text): cannot tell aws from gcp by the path; add --preemption-style aws|gcp")
        }
        return (url, chosen)
    }

    func apply(to configuration: inout WorkerConfiguration) throws {
        configuration.checkpointInterval = effectiveCheckpointInterval
        configuration.checkpointTokens = checkpointTokens
        if let tokenLedger { configuration.tokenLedger = try TokenLedger(path: tokenLedger) }
    }

    /// How often the built-in engine publishes checkpoints for the worker to pull.
    var enginePublishInterval: Duration {
        let interval = effectiveCheckpointInterval
        // Off: the engine never publishes; a drain still takes a checkpoint of everything it stops.
        if interval == 0 { return .seconds(1_000_000) }
        return .milliseconds(Int(max(20, min(250, interval * 250))))
    }

    /// The result cache for this engine, unless --no-cache.
    func resultCachePolicy(engine: any InferenceEngine, options: EngineOptions) throws -> ResultCachePolicy? {
        if noCache { return nil }
        if let builtin = builtinGenerationEngine(engine) {
            let path = try ModelCache().resolve(options.model)
            let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
            let attributes = try FileManager.default.attributesOfItem(atPath: resolved)
            let size = (attributes[.size] as? NSNumber)?.int64Value ?? -1
            let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            // The file's identity and every setting that changes outputs (threads and batch size do not).
            let identity = ["builtin", "path=\(resolved)", "size=\(size)", "mtime=\(modified)",
                            "chat-template=\(options.chatTemplate.map { "\($0)" } ?? "model")",
                            "context=\(builtin.contextLength)"]
                // Integer precisions are named with the revision of their arithmetic, which changes their
                // last bits; f32 is not named, so results cached before the setting existed keep their keys.
                + (builtin.precision == .float32
                    ? [] : ["precision=\(builtin.precision.rawValue)", "arithmetic=\(MatmulPrecision.integerArithmeticRevision)"])
            let namespace = identity.joined(separator: "\n")
            return ResultCachePolicy(namespace: namespace,
                                     keying: BuiltinResultCacheKeying(embeddingIdentity: embeddingModelIdentity(options)))
        }
        let namespace = ["openai", "base-url=\(options.baseURL ?? "")", "model=\(options.model ?? "")"].joined(separator: "\n")
        return ResultCachePolicy(namespace: namespace, keying: RemoteResultCacheKeying())
    }

    /// Starts the notice, file and deadline watchers; each asks `worker` to drain.
    func startWatchers(worker: Worker, log: WorkerLog) throws -> [Task<Void, Never>] {
        var tasks: [Task<Void, Never>] = []
        if let (url, style) = try noticeEndpoint() {
            let poller = PreemptionNoticePoller(url: url, style: style, interval: preemptionPoll)
            log("watching \(url.absoluteString) (\(style.rawValue)) for a preemption notice every \(preemptionPoll) s")
            tasks.append(poller.start(log: log) { _ in worker.requestDrain(.preemptionNotice(url.absoluteString)) })
        }
        if let preemptionFile {
            let watcher = PreemptionFileWatcher(path: preemptionFile, interval: min(1, preemptionPoll))
            tasks.append(watcher.start(log: log) { path in worker.requestDrain(.preemptionNotice(path)) })
        }
        if let until, let date = UntilTime.parse(until) {
            let seconds = max(0, date.timeIntervalSinceNow)
            log("draining at \(ISO8601DateFormatter().string(from: date)) (--until \(until), in \(Int(seconds)) s)")
            tasks.append(Task {
                try? await Task.sleep(for: .seconds(seconds))
                if !Task.isCancelled { worker.requestDrain(.deadline) }
            })
        }
        return tasks
    }
}
