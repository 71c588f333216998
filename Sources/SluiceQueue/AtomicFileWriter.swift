import Foundation

/// Writes an export so that readers see either the old file or the complete new one: under a
/// temporary name in the same directory, renamed into place on `commit`.
///
/// What the path names decides how:
/// - a regular file, or nothing yet: the temporary file and the rename;
/// - a symbolic link: the file it leads to is replaced that way, and the link stays;
/// - a device, FIFO or socket (`-o /dev/null`, a pipe a reader waits on): written in place, since
///   a rename would put a regular file where the device was.
final class AtomicFileWriter {
    /// The path as given (for messages).
    let path: String
    /// Where the bytes go: the temporary file, or the special file itself.
    let temporaryPath: String
    /// The file `commit` renames the temporary file onto (the link's target for a link); nil
    /// when writing a special file in place.
    private let finalPath: String?
    private var fd: Int32
    private var buffer: [UInt8] = []
    private let flushThreshold = 1 << 20

    init(path: String) throws {
        self.path = path
        let target = try Self.resolveLinks(path)
        var info = stat()
        if stat(target, &info) == 0, info.st_mode & S_IFMT != S_IFREG {
            guard info.st_mode & S_IFMT != S_IFDIR else { throw QueueError.cannotWriteOutput(path: path, reason: "it is a directory") }
            finalPath = nil
            temporaryPath = target
            fd = open(target, O_WRONLY | O_CLOEXEC)
        } else {
            finalPath = target
            let url = URL(fileURLWithPath: target)
            let directory = url.deletingLastPathComponent().path
            let prefix = Self.temporaryPrefix(for: url.lastPathComponent)
            // A killed export's temporary file goes with the next export of the name.
            LeftoverFiles.remove(in: directory, prefix: prefix)
            temporaryPath = directory + "/" + prefix + "\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        }
        guard fd >= 0 else { throw QueueError.cannotWriteOutput(path: path, reason: String(cString: strerror(errno))) }
        buffer.reserveCapacity(flushThreshold + 65536)
    }

    deinit { discard() }

    func write(_ bytes: [UInt8]) throws {
        buffer.append(contentsOf: bytes)
        if buffer.count >= flushThreshold { try flush() }
    }

    private func flush() throws {
        try buffer.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw QueueError.cannotWriteOutput(path: path, reason: String(cString: strerror(errno)))
                }
                offset += n
            }
        }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Flushes, syncs and renames the file into place (a special file: flushes and closes it).
    func commit() throws {
        try flush()
        guard let finalPath else {
            close(fd)
            fd = -1
            return
        }
        guard fsync(fd) == 0 else { throw QueueError.cannotWriteOutput(path: path, reason: String(cString: strerror(errno))) }
        close(fd)
        fd = -1
        guard rename(temporaryPath, finalPath) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporaryPath)
            throw QueueError.cannotWriteOutput(path: path, reason: reason)
        }
    }

    /// Removes the temporary file (after a failure).
    func discard() {
        if fd >= 0 {
            close(fd)
            fd = -1
            if finalPath != nil { unlink(temporaryPath) }
        }
    }

    /// `.NAME.tmp-`, with NAME cut (at a character boundary) so that the whole temporary name, pid
    /// and random suffix included, stays within the 255 bytes a file name may have.
    static func temporaryPrefix(for name: String) -> String {
        let room = 255 - ".".utf8.count - ".tmp-".utf8.count - 21 // "<pid>-<random>": at most 10 + 1 + 10
        var cut = name
        while cut.utf8.count > room { cut.removeLast() }
        return "." + cut + ".tmp-"
    }

    /// Follows symbolic links (a chain of them, relative ones from their own folder) to the path
    /// the data belongs at; a dangling link leads to the file it names, which the export creates.
    static func resolveLinks(_ path: String) throws -> String {
        var current = path
        for _ in 0..<40 {
            var info = stat()
            guard lstat(current, &info) == 0, info.st_mode & S_IFMT == S_IFLNK else { return current }
            var target = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let length = readlink(current, &target, target.count - 1)
            guard length >= 0 else { throw QueueError.cannotWriteOutput(path: path, reason: String(cString: strerror(errno))) }
            let destination = String(decoding: target.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            current = destination.hasPrefix("/")
                ? destination
                : URL(fileURLWithPath: current).deletingLastPathComponent().path + "/" + destination
        }
        throw QueueError.cannotWriteOutput(path: path, reason: "too many levels of symbolic links")
    }
}

/// Temporary files named `PREFIX<pid>-<number>…` that a killed process left behind.
public enum LeftoverFiles {
    /// How long a leftover must have gone unwritten before it is removed.
    public static let age: TimeInterval = 3600

    /// Removes the files in `directory` named `prefix` + `<pid>-<digits>` (anything may follow) whose
    /// process is gone from this host and that were not written to for `age` (the age spares a live
    /// writer on another host sharing the folder, whose pid means nothing here).
    public static func remove(in directory: String, prefix: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        let now = Date().timeIntervalSince1970
        for name in names where name.hasPrefix(prefix) {
            let parts = name.dropFirst(prefix.count).split(separator: "-", maxSplits: 1)
            guard parts.count == 2, let pid = Int32(parts[0]), pid > 0, parts[1].first?.isASCII == true,
                  parts[1].first?.isNumber == true else { continue }
            guard kill(pid, 0) != 0, errno == ESRCH else { continue }
            var info = stat()
            let leftover = directory + "/" + name
            guard lstat(leftover, &info) == 0, info.st_mode & S_IFMT == S_IFREG,
                  now - Double(info.st_mtim.tv_sec) > age else { continue }
            unlink(leftover)
        }
    }
}
