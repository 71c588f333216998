import Foundation
import Synchronization

/// Hashes a regular file on its own thread while the caller reads the same file for
/// something else, so the hash costs no wall time on a machine with a spare core, and a
/// duplicate input can be noticed long before the load finishes.
final class FileHasher: Sendable {
    struct Digest: Sendable, Equatable {
        var hex: String
        var bytes: Int
    }

    private let outcome = Mutex<Result<Digest, QueueError>?>(nil)
    private let finished = DispatchSemaphore(value: 0)
    private let cancelled = Atomic<Bool>(false)

    init(path: String) {
        Thread.detachNewThread { [self] in
            let result = Self.hash(path: path, cancelled: cancelled)
            outcome.withLock { $0 = result }
            finished.signal()
        }
    }

    /// The digest if hashing has finished (without waiting).
    var finishedDigest: Digest? {
        outcome.withLock { result in
            if case let .success(digest)? = result { return digest }
            return nil
        }
    }

    /// Waits for the digest.
    func wait() throws -> Digest {
        finished.wait()
        finished.signal()
        return try outcome.withLock { result in try result!.get() }
    }

    /// Stops hashing early (the result is then an error nobody reads).
    func cancel() { cancelled.store(true, ordering: .relaxed) }

    private static func hash(path: String, cancelled: borrowing Atomic<Bool>) -> Result<Digest, QueueError> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(.cannotReadInput(path: path, reason: String(cString: strerror(errno)))) }
        defer { close(fd) }
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 64)
        defer { buffer.deallocate() }
        var hasher = SHA256()
        var total = 0
        while true {
            if cancelled.load(ordering: .relaxed) {
                return .failure(.cannotReadInput(path: path, reason: "hashing was cancelled"))
            }
            let got = read(fd, buffer, chunk)
            if got < 0 {
                if errno == EINTR { continue }
                return .failure(.cannotReadInput(path: path, reason: String(cString: strerror(errno))))
            }
            if got == 0 { break }
            hasher.update(UnsafeRawBufferPointer(start: buffer, count: got))
            total += got
        }
        return .success(Digest(hex: hasher.hexDigest(), bytes: total))
    }
}
