import Dispatch
import Testing

/// Runs each test of a suite on a thread of its own instead of on Swift's cooperative pool.
///
/// The cooperative pool has one thread per core: two on the CI machine. Engine tests compute for
/// seconds without suspending, so two of them at once would stall the async code of every other test
/// in the process, and tests elsewhere that wait on deadlines would time out for want of a thread.
/// A serial dispatch queue gets a thread of its own, and the kernel shares the cores fairly.
struct OwnThreadTrait: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(for test: Test, testCase: Test.Case?,
                      performing function: @Sendable () async throws -> Void) async throws {
        // The suite as a whole needs no scope; its test cases each get their own thread.
        guard testCase != nil else { return try await function() }
        try await withTaskExecutorPreference(SerialQueueExecutor(label: "sluice.test.\(test.name)")) {
            try await function()
        }
    }
}

extension Trait where Self == OwnThreadTrait {
    /// Each test runs on a thread of its own (see ``OwnThreadTrait``).
    static var ownThread: Self { Self() }
}

/// A task executor that runs its jobs one at a time on a serial dispatch queue.
final class SerialQueueExecutor: TaskExecutor {
    private let queue: DispatchQueue

    init(label: String) { queue = DispatchQueue(label: label) }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
