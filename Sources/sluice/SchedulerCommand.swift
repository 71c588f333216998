import ArgumentParser
import Foundation
import SluiceCore
import SluiceRunner
import SluiceSchedule
import Synchronization

struct SchedulerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scheduler",
        abstract: "Run job specs on their schedules, without cron (e.g. in a container).",
        discussion: """
        Reads every *.toml spec with a schedule in --jobs, and starts `sluice run SPEC` as a child process \
        each time a schedule fires (the same command, locks and exit codes as the crontab lines). Schedules \
        are read in this process's local time zone (TZ). Specs are read once at start: restart the \
        scheduler after editing them.

        SIGTERM or SIGINT: start nothing more, pass SIGTERM on to running `sluice run` processes (which \
        drain within their grace), wait for them, and exit 0.
        """
    )

    @OptionGroup var options: CronOptions

    func run() async throws {
        let specs: [JobSpec]
        do {
            specs = try Crontab.specs(in: options.jobsFolder).filter { $0.schedule != nil }
        } catch {
            throw CLIError.usage("\(error)")
        }
        guard !specs.isEmpty else {
            throw CLIError.usage("no spec in \(options.jobsFolder) has a schedule")
        }
        let binary = JobSpecPaths.currentBinary()
        let children = ChildRuns()
        let stop = StopSignal()
        let watcher = SignalWatcher(signals: [SIGTERM, SIGINT]) { number in
            printNote("sluice scheduler: \(SignalWatcher.name(of: number)): stopping; waiting for running specs to drain")
            stop.fire()
            children.signalAll(SIGTERM)
        }
        defer { watcher.cancel() }

        var next: [Date?] = specs.map { $0.schedule!.nextDate(after: Date(), in: .current) }
        for (spec, time) in zip(specs, next) {
            printNote("sluice scheduler: \(spec.name) (\(spec.schedule!.text)) next at \(time.map(Self.format) ?? "never")")
        }
        while !stop.isFired {
            let now = Date()
            for index in specs.indices {
                guard let due = next[index], due <= now else { continue }
                let spec = specs[index]
                let database = JobSpecPaths.absolute(spec.database ?? options.global.databasePath)
                printNote("sluice scheduler: starting sluice run \(spec.path)")
                children.start(binary, ["run", spec.path, "--db", database], name: spec.name)
                next[index] = spec.schedule!.nextDate(after: now, in: .current)
            }
            children.reap()
            // Wake at the next fire time, or every second to notice signals and clock changes.
            let wait = next.compactMap { $0?.timeIntervalSince(Date()) }.min() ?? 1
            try? await Task.sleep(for: .seconds(min(1, max(0.01, wait))))
        }
        await children.waitForAll()
        printNote("sluice scheduler: stopped")
    }

    static func format(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss ZZZZZ"
        formatter.timeZone = .current
        return formatter.string(from: date)
    }
}

/// The `sluice run` processes a scheduler started. (ChildProcess rather than Foundation's Process:
/// the children start with default signal actions, not this process's ignored SIGTERM and SIGINT,
/// and inherit none of its other descriptors.)
final class ChildRuns: Sendable {
    private let running = Mutex<[(process: ChildProcess, name: String)]>([])

    func start(_ binary: String, _ arguments: [String], name: String) {
        do {
            let process = try ChildProcess(executable: binary, arguments: arguments, standardInput: .null)
            running.withLock { $0.append((process, name)) }
        } catch {
            printError("\(error)")
        }
    }

    /// Notes the runs that have exited, and forgets them.
    func reap() {
        let ended = running.withLock { list in
            let ended = list.compactMap { entry in entry.process.exit.map { (entry, $0) } }
            list.removeAll { entry in ended.contains { $0.0.process === entry.process } }
            return ended
        }
        for ((process, name), termination) in ended {
            let how = switch termination {
            case .exited(let status): "exited with status \(status)"
            case .signalled(let signal): "was killed by signal \(signal)"
            }
            printNote("sluice scheduler: sluice run for \(name) (pid \(process.processIdentifier)) \(how)")
        }
    }

    func signalAll(_ number: Int32) {
        for entry in running.withLock({ $0 }) { entry.process.send(number) }
    }

    func waitForAll() async {
        while true {
            reap()
            if running.withLock({ $0.isEmpty }) { return }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }
}
