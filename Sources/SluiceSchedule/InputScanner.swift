import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Finds a spec's input files.
public enum InputScanner {
    /// One candidate input file.
    public struct Candidate: Sendable, Equatable {
        public var path: String
        public var modified: Date
    }

    /// What a scan found.
    public struct Result: Sendable, Equatable {
        public var ready: [Candidate] = []
        /// Files modified less than `input.settle` ago.
        public var settling = 0
        /// What the run should say about the input though it is not an error: the path does not
        /// exist (yet), or a name that matches is not a regular file (a dangling link, a folder).
        public var notes: [String] = []
    }

    /// The files the spec's input names, sorted by name. Hidden files (`.name`, e.g. files still
    /// being copied by tools that write a temporary dot-file first) are ignored in folders and globs.
    /// Files modified less than `input.settle` before `now` are left out (`settling` counts them).
    /// A missing input is no input (an inbox may be created later), with a note saying so.
    public static func scan(_ input: JobSpec.Input, now: Date) throws -> Result {
        let fm = FileManager.default
        var result = Result()
        var paths: [String] = []
        switch input.kind {
        case .file:
            var info = stat()
            guard lstat(input.path, &info) == 0 else {
                result.notes.append("input \(input.path) does not exist (yet)")
                return result
            }
            paths = [input.path]
        case .folder, .glob:
            guard let names = try? fm.contentsOfDirectory(atPath: input.path) else {
                var isDirectory: ObjCBool = false
                if fm.fileExists(atPath: input.path, isDirectory: &isDirectory) && !isDirectory.boolValue {
                    throw RunError.input("\(input.path) is not a folder")
                }
                result.notes.append("input folder \(input.path) does not exist (yet), or cannot be read")
                return result // a missing inbox is an empty inbox
            }
            for name in names.sorted() where !name.hasPrefix(".") {
                switch input.kind {
                case .folder where name.hasSuffix(".jsonl"): paths.append(input.path + "/" + name)
                case let .glob(pattern) where fnmatch(pattern, name, 0) == 0: paths.append(input.path + "/" + name)
                default: break
                }
            }
        }
        for path in paths {
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & mode_t(S_IFMT)) == mode_t(S_IFREG) else {
                result.notes.append("skipped \(path): not a regular file (a folder, a dangling link, or unreadable)")
                continue
            }
            let modified = Date(timeIntervalSince1970: Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9)
            if now.timeIntervalSince(modified) < input.settleSeconds {
                result.settling += 1
                continue
            }
            result.ready.append(Candidate(path: path, modified: modified))
        }
        return result
    }
}

/// Why a run could not do part of its work.
public enum RunError: Error, Sendable, CustomStringConvertible {
    case input(String)
    case state(String)

    public var description: String {
        switch self {
        case let .input(message): return message
        case let .state(message): return message
        }
    }
}
