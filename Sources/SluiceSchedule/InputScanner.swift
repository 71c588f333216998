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

    /// The files the spec's input names, sorted by name. Hidden files (`.name`, e.g. files still
    /// being copied by tools that write a temporary dot-file first) are ignored in folders and globs.
    /// Files modified less than `input.settle` before `now` are left out (`settling` counts them).
    public static func scan(_ input: JobSpec.Input, now: Date) throws -> (ready: [Candidate], settling: Int) {
        let fm = FileManager.default
        var paths: [String] = []
        switch input.kind {
        case .file:
            guard fm.fileExists(atPath: input.path) else { return ([], 0) }
            paths = [input.path]
        case .folder, .glob:
            guard let names = try? fm.contentsOfDirectory(atPath: input.path) else {
                var isDirectory: ObjCBool = false
                if fm.fileExists(atPath: input.path, isDirectory: &isDirectory) && !isDirectory.boolValue {
                    throw RunError.input("\(input.path) is not a folder")
                }
                return ([], 0) // a missing inbox is an empty inbox
            }
            for name in names.sorted() where !name.hasPrefix(".") {
                switch input.kind {
                case .folder where name.hasSuffix(".jsonl"): paths.append(input.path + "/" + name)
                case let .glob(pattern) where fnmatch(pattern, name, 0) == 0: paths.append(input.path + "/" + name)
                default: break
                }
            }
        }
        var ready: [Candidate] = []
        var settling = 0
        for path in paths {
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & mode_t(S_IFMT)) == mode_t(S_IFREG) else { continue }
            let modified = Date(timeIntervalSince1970: Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9)
            if now.timeIntervalSince(modified) < input.settleSeconds {
                settling += 1
                continue
            }
            ready.append(Candidate(path: path, modified: modified))
        }
        return (ready, settling)
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
