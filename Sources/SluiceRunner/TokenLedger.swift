import Foundation

/// An append-only record of how far each request's generation got, for measuring recomputed work
/// (`scripts/preemption-drill`). One line per event, written straight to the file (no buffering),
/// so a SIGKILL loses at most the line being written:
///
///     S <request> <lease> <tokens>   submitted to the engine, resuming after <tokens> generated tokens
///     P <request> <lease> <tokens>   progress pulled from the engine
///     X <request> <lease> <tokens>   stopped with a checkpoint of <tokens>
///     F <request> <lease> <tokens>   finished with <tokens> completion tokens
///     H <request> <lease> <tokens>   answered from the result cache (nothing generated)
public final class TokenLedger: Sendable {
    private let descriptor: Int32

    /// Opens `path` for appending, creating it.
    public init(path: String) throws {
        descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw WorkerError.invalidConfiguration("cannot open token ledger \(path): \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(descriptor) }

    func record(_ kind: Character, request: Int64, lease: Int, tokens: Int) {
        let line = "\(kind) \(request) \(lease) \(tokens)\n"
        line.utf8CString.withUnsafeBufferPointer { buffer in
            _ = write(descriptor, buffer.baseAddress, buffer.count - 1)
        }
    }
}
