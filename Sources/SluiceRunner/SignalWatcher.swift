import Dispatch
import Foundation
import Synchronization

/// Turns process signals into calls of a handler on a private queue (never in signal context).
public final class SignalWatcher: Sendable {
    private let sources: Mutex<[any DispatchSourceSignal]>
    private let queue = DispatchQueue(label: "sluice.signals")

    /// Starts watching `signals`; their default actions are turned off while the watcher lives.
    public init(signals: [Int32], handler: @escaping @Sendable (Int32) -> Void) {
        var made: [any DispatchSourceSignal] = []
        for number in signals {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { handler(number) }
            source.resume()
            made.append(source)
        }
        sources = Mutex(made)
    }

    /// Stops watching; the signals stay ignored.
    public func cancel() {
        sources.withLock { sources in
            for source in sources { source.cancel() }
            sources.removeAll()
        }
    }

    /// The usual name of a signal, for log lines.
    public static func name(of number: Int32) -> String {
        switch number {
        case SIGTERM: return "SIGTERM"
        case SIGINT: return "SIGINT"
        case SIGHUP: return "SIGHUP"
        case SIGQUIT: return "SIGQUIT"
        default: return "signal \(number)"
        }
    }
}
