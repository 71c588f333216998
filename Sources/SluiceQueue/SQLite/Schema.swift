/// The queue's schema as numbered migrations. Migration `n` (1-based) moves a database
/// from `PRAGMA user_version = n-1` to `n`, in its own transaction. Never edit a shipped
/// migration: append a new one.
enum Schema {
    static let migrations: [String] = [
        // 1: jobs, requests (with lease and checkpoint columns), results, workers.
        """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            name TEXT,
            state TEXT NOT NULL CHECK (state = 'loading' OR state = 'active' OR state = 'cancelled'),
            priority INTEGER NOT NULL DEFAULT 0,
            input_path TEXT NOT NULL,
            input_sha256 TEXT NOT NULL,
            request_count INTEGER NOT NULL DEFAULT 0,
            bad_line_count INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            -- Who is loading it, so a crashed enqueue's leftovers can be found and removed.
            creator_host TEXT NOT NULL,
            creator_pid INTEGER NOT NULL,
            loading_heartbeat REAL
        ) STRICT;
        CREATE UNIQUE INDEX jobs_name ON jobs(name) WHERE name IS NOT NULL;
        CREATE INDEX jobs_sha256 ON jobs(input_sha256);
        CREATE INDEX jobs_claim_order ON jobs(state, priority DESC, id);

        -- A request's id is (job id << 32) | line number: id order is input order, and a
        -- job's requests are one contiguous id range.
        CREATE TABLE requests (
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL REFERENCES jobs(id),
            line INTEGER NOT NULL,
            -- An OR chain, not IN (...): SQLite builds a temporary table for an IN list on
            -- every insert, which made loading a file twice as slow.
            state TEXT NOT NULL
                CHECK (state = 'queued' OR state = 'leased' OR state = 'done' OR state = 'failed' OR state = 'cancelled'),
            -- 1 = /v1/chat/completions, 2 = /v1/completions; NULL for bad input lines.
            endpoint INTEGER,
            failed_attempts INTEGER NOT NULL DEFAULT 0,
            not_before REAL NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_generation INTEGER NOT NULL DEFAULT 0,
            lease_expires_at REAL,
            -- Set for input lines that failed validation (the reason code); they never run.
            input_error TEXT,
            custom_id TEXT,
            checkpoint_tokens INTEGER,
            checkpoint_payload BLOB,
            -- The body's JSON text exactly as it appeared in the input line.
            body TEXT
        ) STRICT;
        CREATE UNIQUE INDEX requests_custom_id ON requests(job_id, custom_id) WHERE input_error IS NULL;
        CREATE INDEX requests_job_state ON requests(job_id, state);
        CREATE INDEX requests_lease_owner ON requests(lease_owner) WHERE state = 'leased';

        -- At most one result per request: the primary key makes a second one impossible.
        CREATE TABLE results (
            request_id INTEGER PRIMARY KEY REFERENCES requests(id),
            job_id INTEGER NOT NULL REFERENCES jobs(id),
            -- NULL for failures (then error_code and error_message are set).
            status_code INTEGER,
            error_code TEXT,
            error_message TEXT,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            finished_at REAL NOT NULL,
            worker_id TEXT,
            lease_generation INTEGER NOT NULL DEFAULT 0,
            body TEXT
        ) STRICT;
        CREATE INDEX results_job ON results(job_id);

        CREATE TABLE workers (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            description TEXT NOT NULL,
            started_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL,
            stopped_at REAL
        ) STRICT;
        """,
        // 2: the result cache (responses of deterministic requests, keyed by a hash of
        // everything the response depends on) and which results came from it.
        """
        CREATE TABLE result_cache (
            key TEXT PRIMARY KEY,
            status_code INTEGER NOT NULL,
            body TEXT NOT NULL,
            -- What computing the response cost the first time; reported again on every hit.
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            created_at REAL NOT NULL,
            hits INTEGER NOT NULL DEFAULT 0
        ) STRICT;
        ALTER TABLE results ADD COLUMN from_cache INTEGER NOT NULL DEFAULT 0;
        """,
        // 3: per-request timing and preemptions, for latency histograms, throughput over time and
        // reports after the fact. Written by the claim and by the commits that already touch the
        // row (no transaction of their own). Rows from before this migration keep NULL times.
        """
        -- When the request was first claimed, and when its current (or last) lease was claimed;
        -- seconds since the Unix epoch. A result's latency is results.finished_at - claimed_at.
        ALTER TABLE requests ADD COLUMN first_claimed_at REAL;
        ALTER TABLE requests ADD COLUMN claimed_at REAL;
        -- Leases that ended without an outcome and were claimed again: expired (a killed worker),
        -- handed back by a drain or a stopping worker, or resumed from a checkpoint.
        ALTER TABLE requests ADD COLUMN preemptions INTEGER NOT NULL DEFAULT 0;
        -- Set when a lease is handed back without counting as a failure; the next claim counts it.
        ALTER TABLE requests ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
        """,
        // 4: lost leases. A lease that expires while the checkpoint stayed where it was when the
        // lease was claimed counts; at the limit the request fails as `worker_lost`.
        """
        ALTER TABLE requests ADD COLUMN lost_leases INTEGER NOT NULL DEFAULT 0;
        -- checkpoint_tokens when the current (or last) lease was claimed; -1 for none.
        ALTER TABLE requests ADD COLUMN claimed_checkpoint_tokens INTEGER NOT NULL DEFAULT -1;
        """,
        // 5: files and batches of `sluice serve` (SQLiteStore+Batches.swift).
        batchTables,
        // 6: deleted files' places in the file list, for paging (SQLiteStore+Batches.swift).
        deletedFiles,
    ]

    static var currentVersion: Int { migrations.count }

    /// Applies every migration the database lacks, each in one `BEGIN IMMEDIATE` transaction
    /// (re-reading the version under the lock, so concurrent openers apply each once).
    static func migrate(_ connection: SQLiteConnection) throws {
        while true {
            let applied: Bool = try connection.writeTransaction("migrate schema") {
                let version = Int(try connection.queryInt("PRAGMA user_version", operation: "read schema version"))
                if version > currentVersion {
                    throw QueueError.newerSchema(path: connection.path, found: version, supported: currentVersion)
                }
                if version == currentVersion { return false }
                try connection.execute(migrations[version], operation: "migrate schema to version \(version + 1)")
                try connection.execute("PRAGMA user_version = \(version + 1)", operation: "record schema version \(version + 1)")
                return true
            }
            if !applied { return }
        }
    }
}
