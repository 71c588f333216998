import Foundation
import SluiceCore

/// A job spec (`jobs/NAME.toml`): where input comes from, how it is processed, where results go, and when.
/// See docs/scheduling.md for the format. Relative paths are resolved against the spec file's folder,
/// so a spec means the same thing whatever the working directory (cron starts in `$HOME`).
public struct JobSpec: Sendable {
    /// Absolute path of the spec file.
    public var path: String
    /// `name`: names the spec's jobs (`NAME/FILE/SHA`) and its lock and ledger.
    public var name: String
    /// `database`: the queue; nil means `--db`, `$SLUICE_DB` or `./sluice.db`.
    public var database: String?
    public var input: Input
    public var engine: Engine
    /// `[defaults]`: merged under each request's body (the line's own keys win).
    public var bodyDefaults: JSON?
    public var output: Output
    /// `schedule`: when cron or `sluice scheduler` runs the spec.
    public var schedule: CronExpression?
    /// `deadline`: when a run stops working (the unfinished rest waits for the next run).
    public var deadline: Deadline?
    /// `priority`: of the jobs this spec creates (higher is claimed first).
    public var priority: Int
    /// `retention`: finished (and exported) jobs older than this are deleted from the database; nil keeps them.
    public var retentionSeconds: Double?
    /// `on_overlap`: what a run does while another run of this spec is working.
    public var onOverlap: Overlap
    /// `grace`: seconds a run may take to stop after its deadline or a signal.
    public var graceSeconds: Double

    public struct Input: Sendable {
        public enum Kind: Sendable, Equatable {
            /// One file.
            case file
            /// Every `*.jsonl` file directly in a folder.
            case folder
            /// Files whose name matches a pattern (`*`, `?`, `[…]`) in one folder.
            case glob(String)
        }

        /// The file, the folder, or the glob's folder (absolute).
        public var path: String
        public var kind: Kind
        /// `input.settle`: files modified more recently than this are left for the next run (still being written).
        public var settleSeconds: Double
    }

    public struct Engine: Sendable {
        /// `engine.kind`: `builtin` or `openai`.
        public var kind: String
        /// `engine.base_url` (openai).
        public var baseURL: String?
        /// `engine.model`: model name sent to the server (openai), or model file or name (builtin).
        public var model: String?
        /// `engine.concurrency`.
        public var concurrency: Int?
        /// `engine.api_key_env`: environment variable with the API key (openai).
        public var apiKeyEnvironment: String
        /// `engine.threads` (builtin).
        public var threads: Int?
        /// `engine.precision` (builtin): `auto`, `f32`, `int16` or `int8`, as `sluice work --precision`.
        public var precision: String?

        /// The values `engine.precision` takes.
        public static let precisions = ["auto", "f32", "int16", "int8"]
    }

    public struct Output: Sendable {
        /// `output.folder` (absolute).
        public var folder: String
        /// `output.name`: file name pattern; see `OutputNaming`.
        public var namePattern: String
        /// `output.errors`: pattern for the errors file; nil writes none.
        public var errorsPattern: String?
    }

    public enum Deadline: Sendable, Equatable {
        /// Seconds after the run started.
        case after(Double)
        /// The next time the local clock shows this hour and minute.
        case at(hour: Int, minute: Int)

        /// Seconds from `start` until the deadline, in `timeZone`.
        public func seconds(from start: Date, in timeZone: TimeZone) -> Double {
            switch self {
            case let .after(seconds):
                return seconds
            case let .at(hour, minute):
                let cron = try! CronExpression("\(minute) \(hour) * * *")
                let end = cron.nextDate(after: start, in: timeZone) ?? start.addingTimeInterval(86_400)
                return end.timeIntervalSince(start)
            }
        }
    }

    public enum Overlap: String, Sendable {
        /// Exit at once (status 6) while another run of this spec holds its lock.
        case exit
        /// Work alongside it as another worker on the same jobs.
        case join
    }
}
