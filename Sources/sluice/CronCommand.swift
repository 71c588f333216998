import ArgumentParser
import Foundation
import SluiceQueue
import SluiceSchedule

struct CronCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cron",
        abstract: "Crontab lines for the job specs that have a schedule.",
        discussion: """
        Each line runs `sluice run SPEC` with absolute paths, appends its output to \
        DATABASE-runs/NAME/cron.log, and (on_overlap = "exit") holds DATABASE-runs/NAME/cron.lock with \
        `flock -n`, so a run still working when the next one fires makes the new one exit at once (status 6). \
        The cron daemon reads schedules in the system's time zone.
        """,
        subcommands: [CronPrintCommand.self, CronInstallCommand.self, CronRemoveCommand.self]
    )
}

/// Options shared by the cron subcommands.
struct CronOptions: ParsableArguments {
    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("The folder of job specs (*.toml directly in it).", valueName: "dir"))
    var jobs: String = "jobs"

    var jobsFolder: String { JobSpecPaths.absolute(jobs) }

    /// The crontab lines for every spec with a schedule (creating the folders they log to).
    func lines() throws -> [String] {
        let specs: [JobSpec]
        do {
            specs = try Crontab.specs(in: jobsFolder)
        } catch {
            throw CLIError.usage("\(error)")
        }
        let binary = JobSpecPaths.currentBinary()
        var lines: [String] = []
        for spec in specs where spec.schedule != nil {
            let database = JobSpecPaths.absolute(spec.database ?? global.databasePath)
            let state = try RunState(databasePath: database, specName: spec.name)
            do {
                lines.append(try Crontab.line(for: spec, binary: binary, databasePath: database,
                                              logPath: state.folder + "/cron.log", lockPath: state.folder + "/cron.lock"))
            } catch {
                throw CLIError.usage("\(error)")
            }
        }
        return lines
    }
}

struct CronPrintCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "print", abstract: "Print the crontab lines.")
    @OptionGroup var options: CronOptions

    func run() throws {
        for line in try options.lines() { print(line) }
    }
}

struct CronInstallCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install",
        abstract: "Install the lines into the current user's crontab, between marker comments.",
        discussion: "Replaces the block an earlier install of the same jobs folder wrote; the rest of the crontab is kept.")
    @OptionGroup var options: CronOptions

    @Flag(name: .customLong("dry-run"), help: "Print the crontab that would be installed instead of installing it.")
    var dryRun = false

    func run() throws {
        let current = try UserCrontab.read()
        let updated = Crontab.replacingBlock(in: current, owner: options.jobsFolder, lines: try options.lines())
        if dryRun {
            print(updated, terminator: "")
            return
        }
        try UserCrontab.write(updated)
        printNote("sluice cron install: crontab updated (\(updated.split(separator: "\n").count) lines)")
    }
}

struct CronRemoveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Remove the block `sluice cron install` wrote for this jobs folder.")
    @OptionGroup var options: CronOptions

    @Flag(name: .customLong("dry-run"), help: "Print the crontab that would be installed instead of installing it.")
    var dryRun = false

    func run() throws {
        let updated = Crontab.replacingBlock(in: try UserCrontab.read(), owner: options.jobsFolder, lines: [])
        if dryRun {
            print(updated, terminator: "")
            return
        }
        try UserCrontab.write(updated)
        printNote("sluice cron remove: crontab updated")
    }
}

/// The current user's crontab, through the `crontab` program.
enum UserCrontab {
    static func read() throws -> String {
        let result = try runCrontab(["-l"], input: nil)
        if result.status == 0 { return result.output }
        if result.error.contains("no crontab") { return "" }
        throw CLIError(description: "crontab -l failed (status \(result.status)): \(result.error)")
    }

    /// Installs `text` as the crontab; an empty text removes the crontab.
    static func write(_ text: String) throws {
        if text.isEmpty {
            let result = try runCrontab(["-r"], input: nil)
            if result.status == 0 || result.error.contains("no crontab") { return }
            throw CLIError(description: "crontab -r failed (status \(result.status)): \(result.error)")
        }
        let result = try runCrontab(["-"], input: text)
        guard result.status == 0 else {
            throw CLIError(description: "crontab - failed (status \(result.status)): \(result.error)")
        }
    }

    private static func runCrontab(_ arguments: [String], input: String?) throws -> (status: Int32, output: String, error: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["crontab"] + arguments
        let out = Pipe(), err = Pipe(), inPipe = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = inPipe
        do {
            try process.run()
        } catch {
            throw CLIError(description: "cannot run crontab (is cron installed? apt-get install cron): \(error)")
        }
        if let input { inPipe.fileHandleForWriting.write(Data(input.utf8)) }
        try? inPipe.fileHandleForWriting.close()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let error = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self))
    }
}

enum JobSpecPaths {
    static func absolute(_ path: String) -> String {
        if isPostgresURL(path) { return path }
        let expanded = (path as NSString).expandingTildeInPath
        let joined = expanded.hasPrefix("/") ? expanded
            : (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(expanded)
        return (joined as NSString).standardizingPath
    }

    /// This program's absolute path.
    static func currentBinary() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? absolute(CommandLine.arguments[0])
    }
}
