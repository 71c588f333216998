import CSQLite
import Foundation

/// SQLite copies text and blobs bound with this destructor value. It is the C
/// macro `SQLITE_TRANSIENT` (`(sqlite3_destructor_type)-1`), which Swift does not import.
let sqliteTransient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
/// Extended result code of a UNIQUE constraint failure (a C macro Swift does not import).
let sqliteConstraintUnique: Int32 = SQLITE_CONSTRAINT | (8 << 8)
/// SQLite uses bound memory in place: only for buffers that outlive the statement's step.
let sqliteStatic: sqlite3_destructor_type? = nil

/// One connection to a database file. Not thread-safe: `SQLiteStore` keeps it behind a mutex.
final class SQLiteConnection {
    let path: String
    let busyTimeout: Double
    private(set) var handle: OpaquePointer?
    private var statementCache: [String: Statement] = [:]
    /// The device and inode `path` named when it was opened (nil when it names no file, e.g. `:memory:`).
    private let openedFile: (device: UInt64, inode: UInt64)?
    /// The database's page size: a database file is always a whole number of pages.
    private var pageSize = 0

    /// Opens (or creates) the file with WAL, `synchronous=NORMAL`, foreign keys and a busy timeout.
    init(path: String, busyTimeout: Double) throws {
        self.path = path
        self.busyTimeout = busyTimeout
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(db)
            throw QueueError.sqlite(path: path, operation: "open", code: rc, message: message)
        }
        handle = db
        var info = stat()
        openedFile = stat(path, &info) == 0 ? (UInt64(info.st_dev), UInt64(info.st_ino)) : nil
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, Int32(min(max(busyTimeout, 0) * 1000, Double(Int32.max))))
        try execute("PRAGMA foreign_keys = ON", operation: "enable foreign keys")
        // Changing the journal mode needs a moment of exclusive access; the busy timeout covers that.
        // SQLite answers SQLITE_BUSY at once, without the busy handler, when another connection is
        // migrating a brand-new file: retry until the busy timeout.
        let deadline = Date().addingTimeInterval(busyTimeout)
        var mode: String?
        while true {
            do {
                mode = try queryText("PRAGMA journal_mode = WAL", operation: "enable WAL")
                break
            } catch QueueError.databaseBusy where Date() < deadline {
                usleep(5_000)
            }
        }
        guard mode?.lowercased() == "wal" else {
            throw QueueError.sqlite(path: path, operation: "enable WAL", code: SQLITE_ERROR,
                                    message: "the file system does not support WAL (journal mode is \(mode ?? "unknown"))")
        }
        try execute("PRAGMA synchronous = NORMAL", operation: "set synchronous")
        pageSize = Int(try queryInt("PRAGMA page_size", operation: "read page size"))
        // After a checkpoint, shrink a WAL that a long reader let grow (say during a big export).
        _ = try queryInt("PRAGMA journal_size_limit = \(64 << 20)", operation: "limit WAL size")
    }

    deinit {
        statementCache.removeAll()
        sqlite3_close_v2(handle)
    }

    /// Throws `QueueError.databaseReplaced` when `path` no longer names the file this connection
    /// opened (deleted, or replaced by a rename or a copy): whatever this connection wrote from then
    /// on would go into a file nobody else sees.
    func checkFileIdentity() throws {
        guard let openedFile else { return }
        var info = stat()
        if stat(path, &info) != 0 {
            if errno == ENOENT { throw QueueError.databaseReplaced(path: path, how: "deleted") }
            return // unreadable for a moment: SQLite's own calls will say what is wrong
        }
        if UInt64(info.st_dev) != openedFile.device || UInt64(info.st_ino) != openedFile.inode {
            throw QueueError.databaseReplaced(path: path, how: "replaced by another file")
        }
        // Cut short in place (`: > q.db`, a bad copy): SQLite would go on from its cache and WAL,
        // and the next checkpoint would write pages into a file that lost the rest.
        // (Switching to WAL wrote page 1, so an open database's file is never empty.)
        if pageSize > 0, info.st_size == 0 || info.st_size % off_t(pageSize) != 0 {
            throw QueueError.databaseReplaced(path: path, how: "truncated to \(info.st_size) bytes (a database is one or more whole \(pageSize)-byte pages)")
        }
    }

    /// The error for a failed SQLite call: busy and full-disk conditions get their own cases.
    func error(_ code: Int32, operation: String) -> QueueError {
        let primary = code & 0xFF
        if primary == SQLITE_BUSY || primary == SQLITE_LOCKED {
            return .databaseBusy(path: path, operation: operation, waitedSeconds: busyTimeout)
        }
        if primary == SQLITE_FULL {
            return .diskFull(path: path, operation: operation)
        }
        let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(code))
        if primary == SQLITE_IOERR, let handle {
            // What the operating system said decides whether waiting can help.
            switch sqlite3_system_errno(handle) {
            case ENOSPC, EDQUOT: return .diskFull(path: path, operation: operation)
            case EROFS: return .sqlite(path: path, operation: operation, code: SQLITE_READONLY,
                                       message: "\(message) (the file system is read-only)")
            default: break
            }
        }
        return .sqlite(path: path, operation: operation, code: code, message: message)
    }

    /// Runs SQL that returns no rows (may hold several statements).
    func execute(_ sql: String, operation: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            sqlite3_free(message)
            throw error(rc, operation: operation)
        }
    }

    func queryText(_ sql: String, operation: String) throws -> String? {
        let statement = try prepare(sql, operation: operation)
        defer { statement.reset() }
        guard try statement.step() else { return nil }
        return statement.text(0)
    }

    func queryInt(_ sql: String, operation: String) throws -> Int64 {
        let statement = try prepare(sql, operation: operation)
        defer { statement.reset() }
        guard try statement.step() else { return 0 }
        return statement.int64(0)
    }

    /// A prepared statement, compiled once per connection and reused.
    func cached(_ sql: String, operation: String) throws -> Statement {
        if let statement = statementCache[sql] {
            // A statement abandoned mid-iteration (by a throw) is rewound here.
            statement.reset()
            statement.operation = operation
            return statement
        }
        let statement = try prepare(sql, operation: operation)
        statementCache[sql] = statement
        return statement
    }

    /// A freshly compiled statement (finalized when released).
    func prepare(_ sql: String, operation: String) throws -> Statement {
        var pointer: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &pointer, nil)
        guard rc == SQLITE_OK, let pointer else { throw error(rc, operation: operation) }
        return Statement(pointer, connection: self, operation: operation)
    }

    /// Runs `body` in a `BEGIN IMMEDIATE` transaction (takes the write lock up front, so it
    /// never fails half-way for lack of it), committing on return and rolling back on a throw.
    func writeTransaction<T>(_ operation: String, _ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE", operation: operation)
        let result: T
        do {
            result = try body()
        } catch {
            rollback()
            throw error
        }
        do {
            try execute("COMMIT", operation: operation)
        } catch {
            rollback()
            throw error
        }
        return result
    }

    /// A read transaction: one consistent snapshot for several queries.
    func readTransaction<T>(_ operation: String, _ body: () throws -> T) throws -> T {
        try execute("BEGIN", operation: operation)
        defer { rollback() }
        return try body()
    }

    func rollback() {
        if sqlite3_get_autocommit(handle) == 0 {
            sqlite3_exec(handle, "ROLLBACK", nil, nil, nil)
        }
    }

    var changes: Int { Int(sqlite3_changes(handle)) }
    var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }
}

/// A prepared statement: bind parameters (1-based), step, read columns (0-based), reset.
final class Statement {
    let pointer: OpaquePointer
    unowned let connection: SQLiteConnection
    var operation: String

    init(_ pointer: OpaquePointer, connection: SQLiteConnection, operation: String) {
        self.pointer = pointer
        self.connection = connection
        self.operation = operation
    }

    deinit { sqlite3_finalize(pointer) }

    /// Clears bindings and rewinds, ready for the next use.
    func reset() {
        sqlite3_reset(pointer)
        sqlite3_clear_bindings(pointer)
    }

    /// Advances to the next row; false when done.
    @discardableResult
    func step() throws -> Bool {
        let rc = sqlite3_step(pointer)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        // sqlite3_reset returns the same code; do it so the statement is reusable.
        sqlite3_reset(pointer)
        throw connection.error(rc, operation: operation)
    }

    /// Steps to completion (for statements that return no rows), then resets.
    func run() throws {
        defer { reset() }
        while try step() {}
    }

    /// Steps once and returns the raw result code (for callers that handle constraint failures).
    func stepCode() -> Int32 { sqlite3_step(pointer) }

    func bind(_ index: Int32, _ value: Int64) { sqlite3_bind_int64(pointer, index, value) }
    func bind(_ index: Int32, _ value: Int) { sqlite3_bind_int64(pointer, index, Int64(value)) }
    func bind(_ index: Int32, _ value: Double) { sqlite3_bind_double(pointer, index, value) }
    func bindNull(_ index: Int32) { sqlite3_bind_null(pointer, index) }

    func bind(_ index: Int32, _ value: String) {
        var copy = value
        copy.withUTF8 { buffer in
            let base = UnsafeRawPointer(buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self)
            _ = sqlite3_bind_text(pointer, index, base, Int32(buffer.count), sqliteTransient)
        }
    }

    func bind(_ index: Int32, _ value: String?) {
        if let value { bind(index, value) } else { bindNull(index) }
    }

    func bind(_ index: Int32, _ value: Int64?) {
        if let value { bind(index, value) } else { bindNull(index) }
    }

    func bind(_ index: Int32, _ value: Double?) {
        if let value { bind(index, value) } else { bindNull(index) }
    }

    func bind(_ index: Int32, blob: [UInt8]) {
        blob.withUnsafeBytes { buffer in
            _ = sqlite3_bind_blob(pointer, index, buffer.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(buffer.count), sqliteTransient)
        }
    }

    /// Binds UTF-8 bytes in place: the memory must stay valid and unchanged until the next reset.
    func bindTextNoCopy(_ index: Int32, _ bytes: UnsafeBufferPointer<UInt8>) {
        let base = UnsafeRawPointer(bytes.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self)
        sqlite3_bind_text(pointer, index, base, Int32(bytes.count), sqliteStatic)
    }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(pointer, column) == SQLITE_NULL }
    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(pointer, column) }
    func int(_ column: Int32) -> Int { Int(sqlite3_column_int64(pointer, column)) }
    func double(_ column: Int32) -> Double { sqlite3_column_double(pointer, column) }
    func optionalDouble(_ column: Int32) -> Double? { isNull(column) ? nil : double(column) }
    func optionalInt(_ column: Int32) -> Int? { isNull(column) ? nil : int(column) }

    func text(_ column: Int32) -> String? {
        guard let raw = sqlite3_column_text(pointer, column) else { return nil }
        let count = Int(sqlite3_column_bytes(pointer, column))
        return String(decoding: UnsafeBufferPointer(start: raw, count: count), as: UTF8.self)
    }

    /// The column's UTF-8 bytes, valid until the next step or reset.
    func textBytes(_ column: Int32) -> UnsafeBufferPointer<UInt8> {
        guard let raw = sqlite3_column_text(pointer, column) else { return UnsafeBufferPointer(start: nil, count: 0) }
        return UnsafeBufferPointer(start: raw, count: Int(sqlite3_column_bytes(pointer, column)))
    }

    func blob(_ column: Int32) -> [UInt8]? {
        if isNull(column) { return nil }
        let count = Int(sqlite3_column_bytes(pointer, column))
        guard count > 0, let raw = sqlite3_column_blob(pointer, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: raw, count: count))
    }
}
