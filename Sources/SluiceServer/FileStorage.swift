import Foundation

/// Where file bytes live: one folder, files named by the server (never by a client), plus a
/// `tmp` folder for uploads in progress and exports being written.
struct FileStorage: Sendable {
    let directory: String

    init(directory: String) throws {
        self.directory = directory
        for folder in [directory, directory + "/tmp"] {
            do {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw ServeError.configuration("cannot create the data folder \(folder): \(error.localizedDescription)")
            }
        }
        // Uploads interrupted by a crash.
        if let leftovers = try? FileManager.default.contentsOfDirectory(atPath: directory + "/tmp") {
            for name in leftovers { unlink(directory + "/tmp/" + name) }
        }
    }

    /// The path of a stored file. `storageName` comes from the database, where the server wrote it.
    func path(of storageName: String) -> String {
        precondition(isWellFormedID(Substring(storageName)), "storage names are server-made ids")
        return directory + "/" + storageName
    }

    /// A fresh temporary path for an upload.
    func temporaryPath() -> String { directory + "/tmp/" + randomID("upload-") }

    func remove(_ storageName: String) {
        guard isWellFormedID(Substring(storageName)) else { return }
        unlink(path(of: storageName))
    }
}

/// Appends to a new file with plain `write(2)` calls (one upload's sink). Used by one task at a
/// time: the upload handler writes it, then hands it to `BatchService.storeUpload`.
final class FileSink: @unchecked Sendable {
    let path: String
    private var fd: Int32
    private(set) var bytesWritten = 0

    init(path: String) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw APIError(status: 500, message: "cannot store the upload: \(String(cString: strerror(errno)))", type: "server_error") }
    }

    deinit { if fd >= 0 { close(fd) } }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw APIError(status: 507, message: "cannot store the upload: \(String(cString: strerror(errno)))", type: "server_error")
            }
            offset += n
        }
        bytesWritten += bytes.count
    }

    /// Flushes to disk and closes.
    func finish() throws {
        guard fd >= 0 else { return }
        let synced = fsync(fd) == 0
        close(fd)
        fd = -1
        if !synced { throw APIError(status: 507, message: "cannot store the upload: fsync failed", type: "server_error") }
    }

    /// Closes and deletes the file (a failed upload).
    func discard() {
        if fd >= 0 { close(fd); fd = -1 }
        unlink(path)
    }
}
