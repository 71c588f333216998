import CSQLite

extension QueueError {
    /// Why this error will not go away by waiting and trying again, in words for the user: the
    /// database file is corrupt, is not a database, cannot be written or opened, or is no longer the
    /// file that was opened. Nil for errors that may heal (a lock held by another process, a full
    /// disk, a moment's I/O error). A worker meeting such an error stops at once.
    public var unhealableReason: String? {
        switch self {
        case let .databaseReplaced(_, how):
            return "the database file was \(how) while in use"
        case let .sqlite(_, _, code, _):
            switch code & 0xFF {
            case SQLITE_CORRUPT: return "the database file is corrupt"
            case SQLITE_NOTADB: return "the file is not a SQLite database"
            case SQLITE_READONLY: return "the database cannot be written (a read-only file, folder or file system)"
            case SQLITE_CANTOPEN: return "the database (or its -wal or -shm file) cannot be opened"
            default: return nil
            }
        default:
            return nil
        }
    }
}
