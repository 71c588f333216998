import ArgumentParser
import Foundation
import SluiceQueue

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "The queue: a SQLite file, or postgresql://user@host:5432/dbname for a fleet (default: $SLUICE_DB, else ./sluice.db).",
        valueName: "path-or-url"))
    var db: String?

    var databasePath: String {
        if let db, !db.isEmpty { return db }
        if let fromEnvironment = ProcessInfo.processInfo.environment["SLUICE_DB"], !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        return "./sluice.db"
    }

    /// Whether the queue is a PostgreSQL server rather than a SQLite file.
    var isPostgres: Bool { isPostgresURL(databasePath) }
    /// The database as messages name it (a PostgreSQL URL without its password).
    var databaseLabel: String { displayedLocation(databasePath) }

    /// Opens the queue, creating it (a SQLite file, or the schema in an empty PostgreSQL database).
    func openOrCreateStore() throws -> any JobStore {
        try Self.openStore(databasePath)
    }

    /// Opens `location` with one clear line on failure (a PostgreSQL error already names the server).
    static func openStore(_ location: String) throws -> any JobStore {
        do {
            return try SluiceQueue.openStore(location)
        } catch {
            throw openingError(error, location: location)
        }
    }

    /// A store's failure to open as the command-line error: exit 7 where the database cannot be
    /// used and waiting would not help (corrupt, not a database, refused credentials…), else 1.
    static func openingError(_ error: any Error, location: String) -> CLIError {
        switch error {
        case let error as PostgresError:
            return CLIError(description: error.description,
                            exitCode: error.isUnusable ? ExitStatus.databaseUnusable : ExitStatus.failure)
        case let error as QueueError where error.unhealableReason != nil:
            return CLIError(description: "cannot open database \(location): \(error.unhealableReason!): \(error)",
                            exitCode: ExitStatus.databaseUnusable)
        default:
            return CLIError(description: "cannot open database \(displayedLocation(location)): \(error)")
        }
    }

    /// Opens an existing database; a missing file is an error rather than a new empty queue.
    func openExistingStore() throws -> any JobStore {
        guard isPostgres || FileManager.default.fileExists(atPath: databasePath) else {
            throw CLIError(description: "no database at \(databasePath) (enqueue a file first, or pass --db PATH / set SLUICE_DB)")
        }
        return try openOrCreateStore()
    }
}

extension JobStore {
    /// The job a user named (id or name), as a CLI error when there is none.
    func job(named reference: String) throws -> JobID {
        do {
            return try resolveJob(reference)
        } catch let error as QueueError {
            throw CLIError(description: error.description)
        }
    }
}
