import Foundation

/// Reads a file line by line in constant memory: one buffer of `maxLineBytes` plus a read
/// chunk, whatever the file size. Lines end at `\n`; a `\r` before it is dropped; a last line
/// without `\n` is still a line. A line longer than `maxLineBytes` is skipped without being
/// held in memory and reported as `.tooLong`.
final class LineReader {
    enum Line {
        /// The line's bytes (no terminator), valid until the next call to `next()`.
        case text(number: Int, bytes: UnsafeBufferPointer<UInt8>)
        case tooLong(number: Int, length: Int)
    }

    let path: String
    let maxLineBytes: Int
    private let fd: Int32
    private let chunkSize: Int
    private let buffer: UnsafeMutablePointer<UInt8>
    private let capacity: Int
    private var start = 0
    private var end = 0
    private var scanFrom = 0
    private var atEOF = false
    private(set) var lineNumber = 0
    private(set) var bytesRead = 0
    /// Hashes every byte read when set (for inputs that cannot be read twice).
    var hasher: SHA256?
    /// Called every `idleSeconds` while a read waits for input that has not come (a pipe or FIFO
    /// whose writer is slow), so the caller can show it is alive; nil: reads simply block.
    var onIdle: (() throws -> Void)?
    var idleSeconds: Double = 30

    init(path: String, maxLineBytes: Int, chunkSize: Int = 1 << 20) throws {
        guard maxLineBytes > 0 else { throw QueueError.invalidArgument("the line length limit must be positive") }
        self.path = path
        self.maxLineBytes = maxLineBytes
        self.chunkSize = chunkSize
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw QueueError.cannotReadInput(path: path, reason: String(cString: strerror(errno))) }
        var info = stat()
        if fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
            close(fd)
            throw QueueError.cannotReadInput(path: path, reason: "it is a directory")
        }
        self.fd = fd
        // A line of maxLineBytes plus its "\r\n" and one more chunk always fit.
        capacity = maxLineBytes + 2 + chunkSize
        buffer = .allocate(capacity: capacity)
    }

    deinit {
        buffer.deallocate()
        close(fd)
    }

    /// The file's identity and size now, to notice a file changed while it was read.
    func fileStamp() -> FileStamp? {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return nil }
        return FileStamp(isRegular: (info.st_mode & S_IFMT) == S_IFREG, size: Int64(info.st_size),
                         modifiedSeconds: Int64(info.st_mtim.tv_sec), modifiedNanoseconds: Int64(info.st_mtim.tv_nsec))
    }

    /// The next line, or nil at the end of the file.
    func next() throws -> Line? {
        while true {
            if scanFrom < end, let newline = memchr(buffer + scanFrom, 0x0A, end - scanFrom) {
                let index = buffer.distance(to: newline.assumingMemoryBound(to: UInt8.self))
                let line = finishLine(upTo: index)
                start = index + 1
                scanFrom = start
                return line
            }
            scanFrom = end
            if atEOF {
                guard start < end else { return nil }
                let line = finishLine(upTo: end)
                start = end
                return line
            }
            if end - start > maxLineBytes + 1 {
                return try skipRestOfLongLine()
            }
            try fill()
        }
    }

    private func finishLine(upTo index: Int) -> Line {
        lineNumber += 1
        var length = index - start
        if length > 0, buffer[start + length - 1] == 0x0D { length -= 1 }
        if length > maxLineBytes { return .tooLong(number: lineNumber, length: length) }
        return .text(number: lineNumber, bytes: UnsafeBufferPointer(start: buffer + start, count: length))
    }

    /// Reads more bytes after `end`, first moving the unfinished line to the front if needed.
    private func fill() throws {
        if capacity - end < chunkSize {
            let pending = end - start
            if start > 0 { memmove(buffer, buffer + start, pending) }
            scanFrom -= start
            start = 0
            end = pending
        }
        let want = min(chunkSize, capacity - end)
        let got = try readSome(into: buffer + end, count: want)
        if got == 0 { atEOF = true } else { end += got }
    }

    private func readSome(into target: UnsafeMutablePointer<UInt8>, count: Int) throws -> Int {
        while true {
            if let onIdle {
                var wait = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&wait, 1, Int32(min(max(idleSeconds, 0.001) * 1000, 3_600_000)))
                if ready == 0 {
                    try onIdle()
                    continue
                }
                if ready < 0 && errno == EINTR { continue }
                // Ready, hung up or failed: read() tells which.
            }
            let got = read(fd, target, count)
            if got >= 0 {
                if got > 0 {
                    bytesRead += got
                    hasher?.update(UnsafeRawBufferPointer(start: target, count: got))
                }
                return got
            }
            if errno == EINTR { continue }
            throw QueueError.cannotReadInput(path: path, reason: String(cString: strerror(errno)))
        }
    }

    /// Drops the current line's bytes as they are read, counting them, up to its newline.
    private func skipRestOfLongLine() throws -> Line {
        lineNumber += 1
        var length = end - start
        start = 0
        end = 0
        scanFrom = 0
        while true {
            let got = try readSome(into: buffer, count: min(chunkSize, capacity))
            if got == 0 {
                atEOF = true
                return .tooLong(number: lineNumber, length: length)
            }
            if let newline = memchr(buffer, 0x0A, got) {
                let index = buffer.distance(to: newline.assumingMemoryBound(to: UInt8.self))
                length += index
                start = index + 1
                scanFrom = start
                end = got
                return .tooLong(number: lineNumber, length: length)
            }
            length += got
        }
    }
}

/// What a file looked like, to notice it changing under us.
struct FileStamp: Equatable {
    var isRegular: Bool
    var size: Int64
    var modifiedSeconds: Int64
    var modifiedNanoseconds: Int64
}
