import Foundation
import Hummingbird
import NIOCore
import SluiceCore
import SluiceQueue

/// `sluice serve`: the OpenAI Files and Batches API over Sluice's queue, with the reconciler that
/// moves batches along and (optionally) the worker processes.
public struct SluiceServer: Sendable {
    public let configuration: ServeConfiguration
    public let service: BatchService
    public let reconciler: Reconciler
    public let supervisor: WorkerSupervisor?
    let keys: APIKeys?
    let metrics: ServeMetrics
    let report: @Sendable (JobID) throws -> String
    let log: @Sendable (String) -> Void

    /// - Parameters:
    ///   - report: the `sluice report` page of a job (linked from the status page).
    ///   - reconcilerStore: the store the reconciler uses (a second connection, so that loading a large
    ///     batch into the queue does not hold up API requests); `store` when nil.
    public init(configuration: ServeConfiguration, store: any BatchStore, reconcilerStore: (any BatchStore)? = nil,
                supervisor: WorkerSupervisor?,
                report: @escaping @Sendable (JobID) throws -> String, log: @escaping @Sendable (String) -> Void) throws {
        let keys = try configuration.apiKeysFile.map { try APIKeys(path: $0) }
        if keys == nil, !Self.isLoopback(configuration.host) {
            throw ServeError.configuration("""
                refusing to listen on \(configuration.host) without --api-keys: anyone who can reach it could read \
                and submit batches. Give --api-keys FILE, or listen on a loopback address (127.0.0.1, ::1, localhost).
                """)
        }
        self.configuration = configuration
        self.keys = keys
        self.metrics = ServeMetrics()
        self.service = try BatchService(store: store, dataDirectory: configuration.dataDirectory, limits: configuration.limits)
        self.reconciler = Reconciler(service: service, store: reconcilerStore ?? store, metrics: metrics, log: log)
        self.supervisor = supervisor
        self.report = report
        self.log = log
    }

    /// Loopback names and addresses only (127.0.0.0/8, ::1, localhost).
    public static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" || host == "[::1]" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    /// Rereads the API key file (SIGHUP).
    public func reloadKeys() {
        guard let keys else { return }
        do {
            let n = try keys.reload()
            log("reloaded \(n) API keys from \(keys.path)")
        } catch {
            log("kept the old API keys: \(error)")
        }
    }

    func makeRouter() -> Router<ServeContext> {
        let router = Router(context: ServeContext.self)
        router.add(middleware: ErrorMiddleware(metrics: metrics))
        router.add(middleware: AuthMiddleware(keys: keys))
        let supervisor = self.supervisor
        let view = OperatorView(store: service.store, metrics: metrics, report: report,
                                workerCount: { supervisor?.pids.count ?? 0 })
        Routes(service: service, operatorView: view, limits: configuration.limits).register(on: router)
        return router
    }

    /// Serves until SIGTERM or SIGINT, running the reconciler (and workers) beside the server.
    /// - Parameter onListening: called with the bound port once the server accepts connections.
    public func run(onListening: @escaping @Sendable (Int) -> Void) async throws {
        let limits = configuration.limits
        let app = Application(
            router: makeRouter(),
            server: .http1(configuration: .init(idleTimeout: .milliseconds(Int64(limits.idleTimeoutSeconds * 1000)))),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? 0) })
        let reconciler = self.reconciler
        let interval = configuration.reconcileInterval
        let supervisor = self.supervisor
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await reconciler.run(interval: interval) }
            if let supervisor { group.addTask { await supervisor.run(interval: interval) } }
            group.addTask { try await app.runService() }
            // The server ends first (a signal); then stop the loops.
            _ = try await group.next()
            group.cancelAll()
        }
        supervisor?.stop(grace: 30)
    }
}
