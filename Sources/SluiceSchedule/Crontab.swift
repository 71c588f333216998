import Foundation

/// Crontab lines for job specs, and the marked block `sluice cron install` maintains.
public enum Crontab {
    /// One spec's line: its schedule, then `sluice run` with absolute paths, appending to a log
    /// file, under `flock -n` when the spec's `on_overlap` is `exit` (status 6 when skipped).
    ///
    /// - Throws: `RunError.input` when a path or the schedule holds a control character: no quoting
    ///   keeps a newline from ending the crontab line (and what followed would run as its own line).
    public static func line(for spec: JobSpec, binary: String, databasePath: String, logPath: String,
                            lockPath: String) throws -> String {
        let parts = [("the schedule", spec.schedule?.text ?? ""), ("the spec's path", spec.path), ("the binary's path", binary),
                     ("the database path", databasePath), ("the log path", logPath), ("the lock path", lockPath)]
        for (what, text) in parts {
            if let control = firstControlCharacter(in: text) {
                throw RunError.input("spec \(spec.name): \(what) \(text.debugDescription) contains the control character \(control), which no crontab line can hold safely; rename it")
            }
        }
        var command = ""
        if spec.onOverlap == .exit {
            command += "/usr/bin/flock -n -E 6 \(quote(lockPath)) "
        }
        command += "\(quote(binary)) run \(quote(spec.path)) --db \(quote(databasePath)) >> \(quote(logPath)) 2>&1"
        return "\(spec.schedule?.text ?? "#") \(command)"
    }

    /// The first control character in `text` (C0, DEL, C1, and the Unicode line and paragraph
    /// separators), written as `U+000A`; nil when there is none.
    public static func firstControlCharacter(in text: String) -> String? {
        for scalar in text.unicodeScalars
        where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029 {
            return String(format: "U+%04X", scalar.value)
        }
        return nil
    }

    /// Quotes for /bin/sh, and escapes `%`, which cron turns into a newline.
    public static func quote(_ text: String) -> String {
        let safe = text.allSatisfy { $0.isLetter || $0.isNumber || "/._-+=:,@".contains($0) } && !text.isEmpty
        let quoted = safe ? text : "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
        return quoted.replacingOccurrences(of: "%", with: "\\%")
    }

    public static func beginMarker(_ owner: String) -> String { "# BEGIN sluice jobs \(owner) (managed by sluice cron install)" }
    public static func endMarker(_ owner: String) -> String { "# END sluice jobs \(owner)" }

    /// `crontab` with the block for `owner` replaced by `lines` (removed when `lines` is empty);
    /// everything else is kept as it was.
    public static func replacingBlock(in crontab: String, owner: String, lines: [String]) -> String {
        let begin = beginMarker(owner), end = endMarker(owner)
        var kept: [String] = []
        var inside = false
        for line in crontab.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line == begin { inside = true; continue }
            if inside { if line == end { inside = false }; continue }
            kept.append(line)
        }
        while kept.last == "" { kept.removeLast() }
        if !lines.isEmpty {
            kept.append(begin)
            kept.append(contentsOf: lines)
            kept.append(end)
        }
        return kept.isEmpty ? "" : kept.joined(separator: "\n") + "\n"
    }

    /// The specs in `folder` (`*.toml` directly in it, by name).
    public static func specs(in folder: String) throws -> [JobSpec] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: folder)
        } catch {
            throw RunError.input("cannot read the jobs folder \(folder): \(error.localizedDescription)")
        }
        var specs: [JobSpec] = []
        var seen: [String: String] = [:]
        for name in names.sorted() where name.hasSuffix(".toml") && !name.hasPrefix(".") {
            let spec = try JobSpec.load(path: (folder as NSString).appendingPathComponent(name))
            if let other = seen[spec.name] {
                throw RunError.input("\(name) and \(other) both use the name \"\(spec.name)\"; spec names must be unique")
            }
            seen[spec.name] = name
            specs.append(spec)
        }
        return specs
    }
}
