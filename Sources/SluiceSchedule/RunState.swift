import Foundation
import SluiceQueue
#if canImport(Glibc)
import Glibc
#endif

/// The files a spec keeps beside its database, in `DATABASE-runs/SPEC/`:
/// `run.lock` (held by a run for its whole life with `on_overlap = "exit"`), `enqueue.lock` and
/// `export.lock` (held briefly, so that joined runs never enqueue or export the same thing twice),
/// and `ledger.tsv`, an append-only record of exports and retention deletions.
public struct RunState: Sendable {
    public let folder: String

    public init(databasePath: String, specName: String) throws {
        if isPostgresURL(databasePath) {
            // A server's queue: the run state lives on this host, in a folder named after the URL.
            let safe = String(databasePath.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" })
            folder = NSHomeDirectory() + "/.local/state/sluice/" + safe + "-runs/" + specName
        } else {
            folder = databasePath + "-runs/" + specName
        }
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        } catch {
            throw RunError.state("cannot create the run-state folder \(folder): \(error.localizedDescription)")
        }
    }

    /// An exclusive `flock` on `folder/name`; nil when `wait` is false and another process holds it.
    public func lock(_ name: String, wait: Bool) throws -> FileLock? {
        try FileLock.acquire(path: folder + "/" + name, wait: wait)
    }

    /// One ledger record.
    public enum Entry: Sendable, Equatable {
        /// `job` was exported when its finish time was `finishedAt`, to the file `output` whose
        /// content's SHA-256 was `outputSHA256`, with its errors file `errors` (empty: none); the last
        /// three are nil in records written before they were kept.
        case exported(job: Int64, finishedAt: Double, sha256: String, output: String? = nil, outputSHA256: String? = nil,
                      errors: String? = nil)
        /// `job` (input `sha256`) was deleted by retention: the input must not be enqueued again.
        case deleted(job: Int64, sha256: String)
        /// `job` is about to be exported to `output` (and `errors`, empty: none): a run killed between
        /// the export's rename and its `exported` record leaves files the next run knows as the job's,
        /// and writes over them instead of exporting the job a second time beside them.
        case exporting(job: Int64, output: String, errors: String)
    }

    var ledgerPath: String { folder + "/ledger.tsv" }

    /// Characters kept as they are in a ledger's paths: printable ASCII except `%`.
    static let plainPathCharacters: CharacterSet = {
        var set = CharacterSet(charactersIn: Unicode.Scalar(0x21)...Unicode.Scalar(0x7E))
        set.remove("%")
        return set
    }()

    /// The latest export record of `job`, if any.
    public func lastExport(of job: Int64, in ledger: [Entry]) -> (output: String?, outputSHA256: String?)? {
        for entry in ledger.reversed() {
            if case let .exported(j, _, _, output, outputSHA, _) = entry, j == job { return (output, outputSHA) }
        }
        return nil
    }

    /// The job whose export last wrote `path` (as its results or errors file), if any and if
    /// retention has not deleted that job since: the store may give a deleted job's id to a new
    /// job (SQLite reuses the newest id once its row is gone), and that job must not take the
    /// deleted one's files for its own and write over them.
    public func owner(of path: String, in ledger: [Entry]) -> Int64? {
        var deletedSince: Set<Int64> = []
        for entry in ledger.reversed() {
            switch entry {
            case let .deleted(job, _): deletedSince.insert(job)
            case let .exported(job, _, _, output?, _, errors) where output == path || errors == path:
                return deletedSince.contains(job) ? nil : job
            case let .exporting(job, output, errors) where output == path || errors == path:
                return deletedSince.contains(job) ? nil : job
            default: continue
            }
        }
        return nil
    }

    public func readLedger() throws -> [Entry] {
        guard let data = FileManager.default.contents(atPath: ledgerPath) else { return [] }
        var entries: [Entry] = []
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            if f.count == 4, f[0] == "exported", let job = Int64(f[1]), let at = Double(f[2]) {
                entries.append(.exported(job: job, finishedAt: at, sha256: f[3]))
            } else if f.count == 7, f[0] == "exported", let job = Int64(f[1]), let at = Double(f[2]),
                      let output = f[5].removingPercentEncoding, let errors = f[6].removingPercentEncoding {
                entries.append(.exported(job: job, finishedAt: at, sha256: f[3], output: output, outputSHA256: f[4],
                                         errors: errors))
            } else if f.count == 3, f[0] == "deleted", let job = Int64(f[1]) {
                entries.append(.deleted(job: job, sha256: f[2]))
            } else if f.count == 4, f[0] == "exporting", let job = Int64(f[1]), let output = f[2].removingPercentEncoding,
                      let errors = f[3].removingPercentEncoding {
                entries.append(.exporting(job: job, output: output, errors: errors))
            }
            // Anything else is a torn last line from a crash: ignored.
        }
        return entries
    }

    /// Appends a record with one `write` (under the caller's lock).
    public func append(_ entry: Entry) throws {
        let line: String
        // Paths percent-encoded, so that a tab or newline in a file name cannot break the record.
        func encoded(_ path: String) -> String {
            path.addingPercentEncoding(withAllowedCharacters: Self.plainPathCharacters) ?? ""
        }
        switch entry {
        case let .exported(job, at, sha, output?, outputSHA?, errors):
            line = "exported\t\(job)\t\(at)\t\(sha)\t\(outputSHA)\t\(encoded(output))\t\(encoded(errors ?? ""))\n"
        case let .exported(job, at, sha, _, _, _): line = "exported\t\(job)\t\(at)\t\(sha)\n"
        case let .deleted(job, sha): line = "deleted\t\(job)\t\(sha)\n"
        case let .exporting(job, output, errors): line = "exporting\t\(job)\t\(encoded(output))\t\(encoded(errors))\n"
        }
        let fd = open(ledgerPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw RunError.state("cannot write \(ledgerPath): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array(line.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(fd) == 0 else {
            throw RunError.state("cannot write \(ledgerPath): \(String(cString: strerror(errno)))")
        }
    }
}

/// An exclusive advisory lock (`flock`) on a file, released when this object is freed or the process exits.
public final class FileLock: Sendable {
    private let fd: Int32
    public let path: String

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// Takes the lock; nil when `wait` is false and another open file holds it.
    static func acquire(path: String, wait: Bool) throws -> FileLock? {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw RunError.state("cannot open lock file \(path): \(String(cString: strerror(errno)))") }
        while flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0 {
            if errno == EINTR { continue }
            let code = errno
            close(fd)
            if code == EWOULDBLOCK { return nil }
            throw RunError.state("cannot lock \(path): \(String(cString: strerror(code)))")
        }
        return FileLock(fd: fd, path: path)
    }

    // Unlocked before closing: an flock belongs to the open file, not to this descriptor, and a child
    // spawned by another thread holds a copy of every descriptor until its exec closes them (they are
    // all O_CLOEXEC). Closing alone would leave the lock held through that window, and a run starting
    // in it would take this spec for busy.
    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
