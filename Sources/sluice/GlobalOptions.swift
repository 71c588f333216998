import ArgumentParser
import Foundation
import SluiceQueue

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The queue database file (default: $SLUICE_DB, else ./sluice.db).", valueName: "path"))
    var db: String?

    var databasePath: String {
        if let db, !db.isEmpty { return db }
        if let fromEnvironment = ProcessInfo.processInfo.environment["SLUICE_DB"], !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        return "./sluice.db"
    }

    /// Opens the database, creating it.
    func openOrCreateStore() throws -> SQLiteStore {
        do {
            return try SQLiteStore(path: databasePath)
        } catch {
            throw CLIError(description: "cannot open database \(databasePath): \(error)")
        }
    }

    /// Opens an existing database; a missing file is an error rather than a new empty queue.
    func openExistingStore() throws -> SQLiteStore {
        guard FileManager.default.fileExists(atPath: databasePath) else {
            throw CLIError(description: "no database at \(databasePath) (enqueue a file first, or pass --db PATH / set SLUICE_DB)")
        }
        return try openOrCreateStore()
    }
}

extension SQLiteStore {
    /// The job a user named (id or name), as a CLI error when there is none.
    func job(named reference: String) throws -> JobID {
        do {
            return try resolveJob(reference)
        } catch let error as QueueError {
            throw CLIError(description: error.description)
        }
    }
}
