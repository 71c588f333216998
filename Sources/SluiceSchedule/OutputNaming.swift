import Foundation

/// Output file names: a pattern with placeholders, filled in per job.
///
/// `{stem}` the input file's name without `.jsonl`; `{file}` the input file's name; `{spec}` the spec's
/// name; `{job}` the job id; `{sha8}` the first 8 hex digits of the input's SHA-256; `{date}` the day the
/// job was created (YYYY-MM-DD, local time).
public enum OutputNaming {
    public static let defaultPattern = "{stem}.results.jsonl"
    static let placeholders = ["stem", "file", "spec", "job", "sha8", "date"]

    /// What is wrong with `pattern`, if anything.
    public static func problem(in pattern: String) -> String? {
        if pattern.isEmpty { return "may not be empty" }
        if pattern.contains("/") { return "is a file name and may not contain \"/\" (set output.folder for the folder)" }
        var rest = Substring(pattern)
        while let open = rest.firstIndex(of: "{") {
            guard let close = rest[open...].firstIndex(of: "}") else { return "has a { without }" }
            let name = String(rest[rest.index(after: open)..<close])
            if !placeholders.contains(name) {
                return "unknown placeholder {\(name)} (known: \(placeholders.map { "{\($0)}" }.joined(separator: ", ")))"
            }
            rest = rest[rest.index(after: close)...]
        }
        return nil
    }

    /// The file name for one job.
    public static func fileName(_ pattern: String, spec: String, inputFile: String, job: Int64, sha256: String,
                                created: Date, timeZone: TimeZone = .current) -> String {
        let file = (inputFile as NSString).lastPathComponent
        let stem = file.hasSuffix(".jsonl") ? String(file.dropLast(6)) : (file as NSString).deletingPathExtension
        let wall = WallTime(unixSeconds: Int64(created.timeIntervalSince1970) + Int64(timeZone.secondsFromGMT(for: created)))
        let date = String(format: "%04d-%02d-%02d", wall.year, wall.month, wall.day)
        return pattern
            .replacingOccurrences(of: "{stem}", with: stem)
            .replacingOccurrences(of: "{file}", with: file)
            .replacingOccurrences(of: "{spec}", with: spec)
            .replacingOccurrences(of: "{job}", with: String(job))
            .replacingOccurrences(of: "{sha8}", with: String(sha256.prefix(8)))
            .replacingOccurrences(of: "{date}", with: date)
    }

    /// `name` with a `.jobN` part before its `.jsonl` extension (or at its end), for an export whose
    /// plain name is taken by another job's.
    public static func distinguished(_ name: String, job: Int64) -> String {
        name.hasSuffix(".jsonl") ? String(name.dropLast(6)) + ".job\(job).jsonl" : name + ".job\(job)"
    }
}
