import Foundation
import SluiceCore
import Testing

/// Issue 15 through the built binary, against the throwaway PostgreSQL server that scripts/test
/// starts (`SLUICE_TEST_POSTGRES_URL`): a bad database argument is one clear line, and a worker
/// outlives its database going away (it keeps its answers and commits them when the database is
/// back) unless the database stays away past `--db-timeout`, which ends it with status 6.
///
/// The outage is made by `scripts/cut-proxy.py` between the worker and the server: it resets every
/// connection and refuses new ones until it is told to restore them. Each test gets a database of
/// its own. Under CI=true a missing server fails these tests instead of skipping them.
@Suite(.serialized) struct PostgresWorkerTests {
    static let cutProxyScript = repositoryRoot.appendingPathComponent("scripts/cut-proxy.py").path

    /// The test server's URL; nil (with a recorded failure under CI) when scripts/test did not start one.
    static func serverURL() -> String? {
        let environment = ProcessInfo.processInfo.environment
        if let url = environment["SLUICE_TEST_POSTGRES_URL"], !url.isEmpty { return url }
        if environment["CI"] == "true" {
            Issue.record("CI=true but SLUICE_TEST_POSTGRES_URL is not set: these tests need a PostgreSQL server (run scripts/test)")
        } else {
            print("PostgresWorkerTests: skipped: SLUICE_TEST_POSTGRES_URL is not set (scripts/test starts a server)")
        }
        return nil
    }

    /// Runs SQL on the test server with `psql` (independent of the code under test).
    @discardableResult
    static func psql(_ url: String, _ sql: String, scratch: Scratch, children: Children) async throws -> String {
        let id = UUID().uuidString
        let out = scratch.path("psql-\(id).out"), err = scratch.path("psql-\(id).err")
        let process = try children.spawn("/usr/bin/env", ["psql", "-qAtX", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                                         stdout: out, stderr: err)
        let status = try await waitForExit(process, seconds: 60)
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw EndToEndError.io("psql \(sql): \((try? String(contentsOfFile: err, encoding: .utf8)) ?? "")")
        }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A new, empty database on the test server, dropped when `body` returns.
    static func withDatabase(_ scratch: Scratch, _ children: Children, _ body: (String) async throws -> Void) async throws {
        guard let server = serverURL() else { return }
        let name = "e2e_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(20)
        try await psql(server, "CREATE DATABASE \(name)", scratch: scratch, children: children)
        let url = Self.url(server, database: String(name))
        do {
            try await body(url)
        } catch {
            children.killAll()
            _ = try? await psql(server, "DROP DATABASE \(name) WITH (FORCE)", scratch: scratch, children: children)
            throw error
        }
        children.killAll()
        try await psql(server, "DROP DATABASE \(name) WITH (FORCE)", scratch: scratch, children: children)
    }

    /// `url` with its database (the path) replaced.
    static func url(_ url: String, database: String) -> String {
        guard let slash = url.range(of: "/", options: .backwards), url.distance(from: url.startIndex, to: slash.lowerBound) > 10 else {
            return url
        }
        let query = url[slash.upperBound...].firstIndex(of: "?").map { String(url[$0...]) } ?? ""
        return String(url[..<slash.upperBound]) + database + query
    }

    /// The proxy between the worker and the server, and its controls.
    final class CutProxy: @unchecked Sendable {
        let process: ChildProcess
        let port: Int
        let stateFile: String

        init(to server: String, scratch: Scratch, children: Children) async throws {
            guard let components = URLComponents(string: server), let host = components.host, let port = components.port else {
                throw EndToEndError.io("cannot read host and port from \(server)")
            }
            stateFile = scratch.path("proxy.state")
            let portFile = scratch.path("proxy.port")
            process = try children.spawn("/usr/bin/env", ["python3", PostgresWorkerTests.cutProxyScript, "--target", "\(host):\(port)",
                                                          "--port-file", portFile, "--state-file", stateFile],
                                         stdout: scratch.path("proxy.out"), stderr: scratch.path("proxy.err"))
            self.port = try await waitForPort(in: portFile, of: process)
        }

        /// `url` pointed at the proxy instead of the server.
        func route(_ url: String) -> String {
            guard var components = URLComponents(string: url) else { return url }
            components.host = "127.0.0.1"
            components.port = port
            return components.string ?? url
        }

        func cut() async throws { try await set(SIGUSR1, "cut") }
        func restore() async throws { try await set(SIGUSR2, "open") }

        private func set(_ signal: Int32, _ state: String) async throws {
            kill(process.processIdentifier, signal)
            try await waitUntil("the proxy is \(state)", seconds: 10) {
                (try? String(contentsOfFile: stateFile, encoding: .utf8)) == state
            }
        }
    }

    func text(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    // MARK: Bad database arguments

    @Test func everyBadDatabaseArgumentIsOneClearLine() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        try await Self.withDatabase(scratch, children) { url in
            let server = try #require(Self.serverURL())
            /// `sluice jobs --db URL` fails with one line of stderr that holds every fragment.
            /// Exit 7 where waiting would not help (the URL, the credentials, the database), 1 for a server not reached.
            func expectOneLine(_ db: String, _ fragments: [String], status: Int32 = 7, environment: [String: String]? = nil,
                               sourceLocation: SourceLocation = #_sourceLocation) async throws {
                let result = try await sluice(["jobs", "--db", db], in: scratch, children: children, seconds: 60, environment: environment)
                let lines = result.stderr.split(separator: "\n")
                #expect(result.status == status, "sluice jobs --db \(db): status \(result.status)", sourceLocation: sourceLocation)
                #expect(lines.count == 1, "not one line: \(result.stderr)", sourceLocation: sourceLocation)
                for fragment in fragments {
                    #expect(result.stderr.contains(fragment), "\(fragment) missing from: \(result.stderr)", sourceLocation: sourceLocation)
                }
            }
            // A malformed URL is named as such, not as a failed connection.
            try await expectOneLine("postgresql://sluice@127.0.0.1:5432/db?colour=blue", ["invalid PostgreSQL URL", "colour"])
            // libpq quotes what it could not parse: the password is taken out of that too.
            let badEscape = try await sluice(["jobs", "--db", "postgresql://u:My%ZZsecret@127.0.0.1:5432/db"], in: scratch,
                                             children: children)
            #expect(badEscape.status == 7 && badEscape.stderr.contains("invalid PostgreSQL URL") && !badEscape.stderr.contains("secret"),
                    "\(badEscape.stderr)")
            // A host where nothing listens.
            let closedPort = try freeLoopbackPort()
            try await expectOneLine("postgresql://sluice@127.0.0.1:\(closedPort)/postgres",
                                    ["cannot connect to PostgreSQL at postgresql://sluice@127.0.0.1:\(closedPort)/postgres"], status: 1)
            // A worker that starts while the server is down waits for it up to --db-timeout, then exits 6.
            let waiting = try await sluice(["work", "--db", "postgresql://sluice@127.0.0.1:\(closedPort)/postgres", "--engine", "openai",
                                            "--base-url", "http://127.0.0.1:\(closedPort)", "--db-timeout", "2s"],
                                           in: scratch, children: children, seconds: 60)
            #expect(waiting.status == 6 && waiting.stderr.contains("retrying for up to 2s")
                    && waiting.stderr.contains("stayed unreachable for 2s"), "\(waiting.status): \(waiting.stderr)")
            // A database that does not exist.
            try await expectOneLine(Self.url(server, database: "no_such_database_here"),
                                    ["cannot connect to PostgreSQL", "\"no_such_database_here\" does not exist"])
            // A database with tables of its own is not taken over.
            try await Self.psql(url, "CREATE TABLE invoices (id integer)", scratch: scratch, children: children)
            try await expectOneLine(url, ["is not a Sluice queue"])
            #expect(try await Self.psql(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", scratch: scratch, children: children) == "1")
            try await Self.psql(url, "DROP TABLE invoices", scratch: scratch, children: children)
            // A wrong password (scripts/test's cluster asks this role for one); it never appears in the message.
            let role = ProcessInfo.processInfo.environment["SLUICE_TEST_POSTGRES_PASSWORD_ROLE"] ?? ""
            if role.isEmpty {
                if ProcessInfo.processInfo.environment["CI"] == "true" {
                    Issue.record("SLUICE_TEST_POSTGRES_PASSWORD_ROLE is not set: scripts/test's cluster provides a role that needs a password")
                }
            } else {
                try await Self.psql(url, "ALTER ROLE \(role) PASSWORD 'the-right-password'", scratch: scratch, children: children)
                var wrong = try #require(URLComponents(string: url))
                wrong.user = role
                wrong.password = "a-wrong-password"
                try await expectOneLine(wrong.string!, ["cannot connect to PostgreSQL", "password authentication failed", ":***@"])
                #expect(!(try await sluice(["jobs", "--db", wrong.string!], in: scratch, children: children)).stderr.contains("a-wrong-password"))
                // The password from PGPASSWORD, as libpq reads it: the same URL without one works.
                wrong.password = nil
                let viaEnvironment = try await sluice(["jobs", "--db", wrong.string!], in: scratch, children: children,
                                                      environment: ["PGPASSWORD": "the-right-password"])
                #expect(viaEnvironment.status == 0, "PGPASSWORD was not used: \(viaEnvironment.stderr)")
            }
            // A Sluice database made by a newer Sluice.
            #expect(try await sluice(["jobs", "--db", url], in: scratch, children: children).status == 0)
            try await Self.psql(url, "UPDATE sluice_schema_version SET version = version + 7", scratch: scratch, children: children)
            try await expectOneLine(url, ["made by a newer Sluice", "Upgrade Sluice"])
        }
    }

    // MARK: Outages

    /// A job of `count` requests enqueued on `url`, with the fake server's answers for it.
    func enqueue(_ count: Int, on url: String, scratch: Scratch, children: Children) async throws -> (input: String, answers: [String: JSON]) {
        let input = scratch.path("batch.jsonl")
        try writeBatchFile(input, count: count)
        let enqueued = try await sluice(["enqueue", input, "--db", url], in: scratch, children: children)
        #expect(enqueued.status == 0, "\(enqueued.stderr)")
        return (input, try await expectedAnswers(for: input, scratch: scratch, children: children))
    }

    /// `sluice work` with the fake server's engine, reaching the database through `proxy`.
    func startWorker(_ url: String, through proxy: CutProxy, server: FakeServer, _ options: [String], log: String,
                     scratch: Scratch, children: Children) throws -> ChildProcess {
        try children.spawn(try sluiceBinary(), ["work", "--db", proxy.route(url), "--engine", "openai", "--base-url", server.baseURL,
                                                "--no-progress"] + options,
                           stdout: scratch.path("worker.out"), stderr: log)
    }

    /// Exports job 1 and checks it holds exactly one answer per request, the fake server's, in input order.
    func expectExactExport(_ url: String, count: Int, answers: [String: JSON], scratch: Scratch, children: Children) async throws {
        let export = scratch.path("export.jsonl")
        let exported = try await sluice(["export", "1", "--db", url, "--output", export], in: scratch, children: children)
        #expect(exported.status == 0, "\(exported.stderr)")
        try expectExportMatches(export, customIDs: (1...count).map { "req-\($0)" }, answers: answers)
    }

    func doneCount(_ url: String, scratch: Scratch, children: Children) async throws -> Int {
        Int(try await Self.psql(url, "SELECT count(*) FROM requests WHERE state = 'done'", scratch: scratch, children: children)) ?? -1
    }

    @Test func aWorkerKeepsItsAnswersThroughAnOutageShorterThanDbTimeoutAndCommitsThemOnce() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        try await Self.withDatabase(scratch, children) { url in
            let count = 40
            let (_, answers) = try await enqueue(count, on: url, scratch: scratch, children: children)
            // A second per answer: the job takes five rounds of eight, so the cut lands mid-job.
            let server = try await FakeServer(["--delay", "1"], scratch: scratch, children: children)
            let proxy = try await CutProxy(to: url, scratch: scratch, children: children)
            let log = scratch.path("worker.err")
            // Eight in flight, so the worker holds requests to answer while the database is away.
            let worker = try startWorker(url, through: proxy, server: server, ["--concurrency", "8", "--lease", "30", "--db-timeout", "2m"],
                                         log: log, scratch: scratch, children: children)

            try await waitUntilAsync("some answers are committed") { try await doneCount(url, scratch: scratch, children: children) >= 2 }
            try await proxy.cut()
            // The worker notices and says it will retry (its requests in flight, if any, go on meanwhile:
            // whether any are in flight at the cut depends on timing, so only the retry is awaited).
            let answeredAtCut = server.loggedRequests().count
            do {
                try await waitUntil("the worker fails to reach the database and will retry", seconds: 30) {
                    text(log).contains("will retry")
                }
            } catch {
                Issue.record("answered \(server.loggedRequests().count) (at the cut: \(answeredAtCut)); worker log: \(text(log))")
                throw error
            }
            // Read once the worker has failed to reach the database, so no commit of before the cut is still landing.
            let doneAtCut = try await doneCount(url, scratch: scratch, children: children)
            #expect(worker.isRunning, "the worker ended during a short outage: \(text(log))")
            try await waitUntil("the worker retries again") { text(log).components(separatedBy: "will retry").count > 2 }
            #expect(try await doneCount(url, scratch: scratch, children: children) == doneAtCut)
            try await proxy.restore()

            let status = try await waitForExit(worker, seconds: 120)
            #expect(status == 0, "worker: \(String(describing: status)) \(text(log))")
            #expect(try await doneCount(url, scratch: scratch, children: children) == count)
            // Nothing was asked twice: the answers held through the outage were committed, not recomputed.
            let asked = server.loggedRequests().count
            #expect(asked == count, "the fake server answered \(asked) requests for \(count)")
            try await expectExactExport(url, count: count, answers: answers, scratch: scratch, children: children)
        }
    }

    @Test func aDatabaseAwayLongerThanDbTimeoutEndsTheWorkerWithStatus6AndNothingIsLost() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        try await Self.withDatabase(scratch, children) { url in
            let count = 16
            let (_, answers) = try await enqueue(count, on: url, scratch: scratch, children: children)
            let server = try await FakeServer(["--delay", "0.25"], scratch: scratch, children: children)
            let proxy = try await CutProxy(to: url, scratch: scratch, children: children)
            let log = scratch.path("worker.err")
            let worker = try startWorker(url, through: proxy, server: server, ["--concurrency", "2", "--lease", "2", "--db-timeout", "3"],
                                         log: log, scratch: scratch, children: children)
            try await waitUntilAsync("some answers are committed") { try await doneCount(url, scratch: scratch, children: children) >= 2 }
            try await proxy.cut()
            let cutAt = ContinuousClock.now
            let status = try await waitForExit(worker, seconds: 60)
            let waited = ContinuousClock.now - cutAt
            #expect(status == 6, "worker: \(String(describing: status)) \(text(log))")
            #expect(waited >= .seconds(3), "the worker gave up after \(waited), before --db-timeout")
            #expect(text(log).contains("--db-timeout"), "\(text(log))")
            // What was committed before the cut stands, and the rest is another worker's to finish.
            try await proxy.restore()
            let finisher = try children.spawn(try sluiceBinary(), [
                "work", "--db", url, "--engine", "openai", "--base-url", server.baseURL, "--concurrency", "4", "--no-progress"],
                stdout: scratch.path("finisher.out"), stderr: scratch.path("finisher.err"))
            let finished = try await waitForExit(finisher, seconds: 120)
            #expect(finished == 0, "finisher: \(String(describing: finished)) \(text(scratch.path("finisher.err")))")
            try await expectExactExport(url, count: count, answers: answers, scratch: scratch, children: children)
        }
    }
}

/// Polls an asynchronous `condition` until it holds, failing the test after `seconds`.
func waitUntilAsync(_ what: String, seconds: Double = 60, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while try await !condition() {
        if ContinuousClock.now > deadline {
            Issue.record("timed out after \(seconds) s waiting until \(what)")
            throw EndToEndError.timeout(what)
        }
        try await Task.sleep(for: .milliseconds(50))
    }
}

/// A loopback port nothing listens on (bound, read and released).
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw EndToEndError.io("socket") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw EndToEndError.io("bind") }
    return Int(UInt16(bigEndian: address.sin_port))
}
