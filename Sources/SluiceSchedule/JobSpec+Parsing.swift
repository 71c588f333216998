import Foundation
import SluiceQueue
import SluiceCore

extension JobSpec {
    /// Reads and checks the spec at `path`.
    /// - Throws: `SpecError` naming the file, line and field.
    public static func load(path: String) throws(SpecError) -> JobSpec {
        let absolute = absolutePath(path, relativeTo: FileManager.default.currentDirectoryPath)
        guard let data = FileManager.default.contents(atPath: absolute) else {
            throw SpecError(file: path, line: nil, field: nil, message: "cannot read the file")
        }
        guard let text = String(validating: Array(data), as: UTF8.self) else {
            throw SpecError(file: path, line: nil, field: nil, message: "the file is not valid UTF-8")
        }
        return try parse(text, path: absolute, displayName: path)
    }

    /// Parses spec text as if it were the file at `path` (absolute; relative paths in the spec resolve against its folder).
    public static func parse(_ text: String, path: String, displayName: String? = nil) throws(SpecError) -> JobSpec {
        let document = try SpecDocument(parsing: text, fileName: displayName ?? path)
        var reader = SpecReader(table: document.root, prefix: "", file: displayName ?? path,
                                baseFolder: (path as NSString).deletingLastPathComponent)
        return try reader.readSpec(path: path)
    }

    static func absolutePath(_ path: String, relativeTo base: String) -> String {
        let expanded = (path as NSString).expandingTildeInPath
        let joined = expanded.hasPrefix("/") ? expanded : (base as NSString).appendingPathComponent(expanded)
        return (joined as NSString).standardizingPath
    }
}

/// Reads one table of a spec, remembering which keys were used so that unknown ones (typos) are errors.
struct SpecReader {
    let table: SpecTable
    let prefix: String
    let file: String
    let baseFolder: String
    private var used: Set<String> = []

    init(table: SpecTable, prefix: String, file: String, baseFolder: String) {
        self.table = table
        self.prefix = prefix
        self.file = file
        self.baseFolder = baseFolder
    }

    func fieldName(_ key: String) -> String { prefix.isEmpty ? key : "\(prefix).\(key)" }

    func fail(_ key: String, _ message: String, line: Int? = nil) -> SpecError {
        SpecError(file: file, line: line ?? table[key]?.line ?? table.line, field: fieldName(key), message: message)
    }

    mutating func value(_ key: String) -> SpecValue? {
        used.insert(key)
        return table[key]
    }

    mutating func string(_ key: String) throws(SpecError) -> String? {
        guard let v = value(key) else { return nil }
        guard case let .string(s) = v.kind else { throw fail(key, "must be a string, not \(v.kindName)") }
        // Values end up in crontab lines, shell commands and log lines, where a newline starts a new one.
        if let control = Crontab.firstControlCharacter(in: s) {
            throw fail(key, "contains the control character \(control); names, paths and settings may not contain control characters")
        }
        return s
    }

    mutating func requiredString(_ key: String) throws(SpecError) -> String {
        guard let s = try string(key) else { throw fail(key, "is required", line: table.line) }
        if s.trimmingSpaces().isEmpty { throw fail(key, "may not be empty") }
        return s
    }

    mutating func integer(_ key: String, range: ClosedRange<Int>) throws(SpecError) -> Int? {
        guard let v = value(key) else { return nil }
        guard case let .integer(n) = v.kind else { throw fail(key, "must be a whole number, not \(v.kindName)") }
        guard range.contains(n) else { throw fail(key, "must be between \(range.lowerBound) and \(range.upperBound) (got \(n))") }
        return n
    }

    mutating func subtable(_ key: String) throws(SpecError) -> SpecReader? {
        guard let v = value(key) else { return nil }
        guard case let .table(t) = v.kind else { throw fail(key, "must be a table ([\(fieldName(key))]), not \(v.kindName)") }
        return SpecReader(table: t, prefix: fieldName(key), file: file, baseFolder: baseFolder)
    }

    /// Seconds from `90`, `"90s"`, `"15m"`, `"2h"`, `"7d"` or combinations like `"1h30m"`.
    mutating func duration(_ key: String) throws(SpecError) -> Double? {
        guard let v = value(key) else { return nil }
        switch v.kind {
        case let .integer(n):
            guard n >= 0 else { throw fail(key, "may not be negative") }
            guard Double(n) <= Self.longestDuration else { throw fail(key, "\(n) s is longer than \(Self.longestDurationText)") }
            return Double(n)
        case let .string(text):
            guard let seconds = Self.parseDuration(text) else {
                throw fail(key, "\"\(text)\" is not a duration (examples: \"90s\", \"15m\", \"2h\", \"1h30m\", \"7d\")")
            }
            guard seconds <= Self.longestDuration else {
                throw fail(key, "\"\(text.prefix(40))\(text.count > 40 ? "…" : "")\" is longer than \(Self.longestDurationText)")
            }
            return seconds
        default:
            throw fail(key, "must be a duration such as \"2h\", not \(v.kindName)")
        }
    }

    /// The longest duration a spec may give (100 years): every time computed from one stays far
    /// inside what dates, `Duration` and integer seconds can hold.
    static let longestDuration: Double = 100 * 365.25 * 86_400
    static let longestDurationText = "the longest duration accepted (100 years)"

    /// The command line's duration syntax (SluiceCore's `DurationText`), with a unit required;
    /// +infinity when it is a duration longer than DurationText allows (refused by the caller as too long).
    static func parseDuration(_ text: String) -> Double? {
        do {
            return try DurationText.seconds(text, plainNumbers: false)
        } catch {
            return error.isTooLong ? .infinity : nil
        }
    }

    func path(_ text: String) -> String { JobSpec.absolutePath(text, relativeTo: baseFolder) }

    /// Fails on keys nobody read (most often a typo).
    func rejectUnknownKeys(allowed: [String]) throws(SpecError) {
        for (key, value) in table.entries where !used.contains(key) {
            var message = "unknown field (allowed here: \(allowed.joined(separator: ", ")))"
            if let close = allowed.first(where: { Self.closeEnough($0, key) }) { message += "; did you mean \(close)?" }
            throw SpecError(file: file, line: value.line, field: fieldName(key), message: message)
        }
    }

    private static func closeEnough(_ a: String, _ b: String) -> Bool {
        let x = Array(a.lowercased()), y = Array(b.lowercased())
        var row = Array(0...y.count)
        for i in 1...max(1, x.count) where !x.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: y.count, by: 1) {
                let saved = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (x[i - 1] == y[j - 1] ? 0 : 1))
                previous = saved
            }
        }
        return row[y.count] <= 2
    }

    // MARK: The spec

    static let topKeys = ["name", "database", "schedule", "deadline", "priority", "retention", "on_overlap", "grace",
                          "input", "engine", "defaults", "output"]

    mutating func readSpec(path: String) throws(SpecError) -> JobSpec {
        if let control = Crontab.firstControlCharacter(in: path) {
            throw SpecError(file: file.debugDescription, line: nil, field: nil,
                            message: "the spec's file name contains the control character \(control); rename the file")
        }
        let name = try requiredString("name")
        if name.contains("/") || name.unicodeScalars.contains(where: { $0.value < 0x20 }) || name.allSatisfy(\.isNumber) {
            throw fail("name", "\"\(name)\" may not contain \"/\" or control characters, or be a number")
        }
        let database = try string("database").map { isPostgresURL($0) ? $0 : self.path($0) }
        var schedule: CronExpression?
        if let text = try string("schedule") {
            do {
                schedule = try CronExpression(text)
            } catch {
                throw fail("schedule", "\(error)")
            }
        }
        let deadline = try readDeadline()
        let priority = try integer("priority", range: -1_000_000...1_000_000) ?? 0
        var retention: Double?
        if let v = table["retention"], case let .string(text) = v.kind, text == "forever" {
            used.insert("retention")
        } else {
            retention = try duration("retention")
        }
        var overlap = JobSpec.Overlap.exit
        if let text = try string("on_overlap") {
            guard let parsed = JobSpec.Overlap(rawValue: text) else {
                throw fail("on_overlap", "must be \"exit\" or \"join\" (got \"\(text)\")")
            }
            overlap = parsed
        }
        let grace = try duration("grace") ?? 30
        guard grace >= 0.5 else { throw fail("grace", "must be at least 0.5 seconds") }

        guard var inputReader = try subtable("input") else {
            throw fail("input", "is required: an [input] table with path = a file, a folder, or a glob", line: table.line)
        }
        let input = try inputReader.readInput()
        var engineReader = try subtable("engine")
        let engine = try engineReader?.readEngine()
            ?? JobSpec.Engine(kind: "builtin", baseURL: nil, model: nil, concurrency: nil, apiKeyEnvironment: "OPENAI_API_KEY", threads: nil,
                              precision: nil)
        var defaults: JSON?
        if let v = value("defaults") {
            guard case let .table(t) = v.kind else { throw fail("defaults", "must be a table of body parameters") }
            defaults = Self.json(.table(t))
        }
        guard var outputReader = try subtable("output") else {
            throw fail("output", "is required: an [output] table with folder = where results go", line: table.line)
        }
        let output = try outputReader.readOutput()
        try rejectUnknownKeys(allowed: Self.topKeys)
        return JobSpec(path: path, name: name, database: database, input: input, engine: engine, bodyDefaults: defaults,
                       output: output, schedule: schedule, deadline: deadline, priority: priority,
                       retentionSeconds: retention, onOverlap: overlap, graceSeconds: grace)
    }

    mutating func readDeadline() throws(SpecError) -> JobSpec.Deadline? {
        guard let v = table["deadline"] else { return nil }
        if case let .string(text) = v.kind, text.contains(":") {
            used.insert("deadline")
            let parts = text.split(separator: ":")
            guard parts.count == 2, let hour = Int(parts[0]), let minute = Int(parts[1]), (0...23).contains(hour),
                  (0...59).contains(minute), parts[1].count == 2 else {
                throw fail("deadline", "\"\(text)\" is not a time of day (HH:MM, 00:00 to 23:59)")
            }
            return .at(hour: hour, minute: minute)
        }
        guard let seconds = try duration("deadline") else { return nil }
        guard seconds > 0 else { throw fail("deadline", "must be positive") }
        return .after(seconds)
    }

    mutating func readInput() throws(SpecError) -> JobSpec.Input {
        let text = try requiredString("path")
        let settle = try duration("settle") ?? 10
        try rejectUnknownKeys(allowed: ["path", "settle"])
        let resolved = path(text)
        let name = (resolved as NSString).lastPathComponent
        let folder = (resolved as NSString).deletingLastPathComponent
        if folder.contains(where: { "*?[".contains($0) }) {
            throw fail("path", "wildcards are supported in the file name only, not in folders (\(text))")
        }
        if name.contains(where: { "*?[".contains($0) }) {
            return JobSpec.Input(path: folder, kind: .glob(name), settleSeconds: settle)
        }
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: resolved, isDirectory: &isDirectory)
        if text.hasSuffix("/") || (exists && isDirectory.boolValue) {
            return JobSpec.Input(path: resolved, kind: .folder, settleSeconds: settle)
        }
        return JobSpec.Input(path: resolved, kind: .file, settleSeconds: settle)
    }

    mutating func readEngine() throws(SpecError) -> JobSpec.Engine {
        let kind = try string("kind") ?? "builtin"
        guard kind == "builtin" || kind == "openai" else {
            throw fail("kind", "must be \"builtin\" or \"openai\" (got \"\(kind)\")")
        }
        let baseURL = try string("base_url")
        if let baseURL {
            guard let url = URL(string: baseURL), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
                  url.host != nil else {
                throw fail("base_url", "\"\(baseURL)\" is not an http:// or https:// URL")
            }
        }
        if kind == "openai" && baseURL == nil {
            throw fail("base_url", "is required when kind = \"openai\" (e.g. \"http://127.0.0.1:8080\")", line: table.line)
        }
        let model = try string("model")
        let concurrency = try integer("concurrency", range: 1...100_000)
        let apiKey = try string("api_key_env") ?? "OPENAI_API_KEY"
        let threads = try integer("threads", range: 1...1024)
        let precision = try string("precision")
        if let precision, !JobSpec.Engine.precisions.contains(precision) {
            throw fail("precision", "must be one of \(JobSpec.Engine.precisions.map { "\"\($0)\"" }.joined(separator: ", ")) (got \"\(precision)\")")
        }
        try rejectUnknownKeys(allowed: ["kind", "base_url", "model", "concurrency", "api_key_env", "threads", "precision"])
        return JobSpec.Engine(kind: kind, baseURL: baseURL, model: model, concurrency: concurrency,
                              apiKeyEnvironment: apiKey, threads: threads, precision: precision)
    }

    mutating func readOutput() throws(SpecError) -> JobSpec.Output {
        let folder = path(try requiredString("folder"))
        let name = try string("name") ?? OutputNaming.defaultPattern
        let errors = try string("errors")
        for (key, pattern) in [("name", name), ("errors", errors)] {
            guard let pattern else { continue }
            if let problem = OutputNaming.problem(in: pattern) { throw fail(key, problem) }
        }
        if let errors, errors == name { throw fail("errors", "must differ from output.name") }
        try rejectUnknownKeys(allowed: ["folder", "name", "errors"])
        return JobSpec.Output(folder: folder, namePattern: name, errorsPattern: errors)
    }

    static func json(_ kind: SpecValue.Kind) -> JSON {
        switch kind {
        case let .string(s): return .string(s)
        case let .integer(n): return .int(n)
        case let .float(value, _): return .double(value)
        case let .bool(b): return .bool(b)
        case let .array(items): return .array(items.map { json($0.kind) })
        case let .table(t): return .object(t.entries.map { (key: $0.key, value: json($0.value.kind)) })
        }
    }
}
