import Foundation
import SluiceCore
import Testing

/// Issue 13, defect 7: absurd durations on the command line are usage errors, never a trap when a
/// timer or deadline is computed from them.
@Suite(.serialized) struct AbsurdOptionTests {
    @Test func absurdDurationsAreUsageErrorsNotCrashes() async throws {
        let scratch = try Scratch(), children = Children()
        defer { children.killAll(); scratch.remove() }
        let input = scratch.path("batch.jsonl"), db = scratch.path("sluice.db")
        try writeBatchFile(input, count: 2)
        #expect(try await sluice(["enqueue", input, "--db", db], in: scratch, children: children).status == 0)
        let work = ["work", "--db", db, "--engine", "openai", "--base-url", "http://127.0.0.1:9"]
        let cases: [[String]] = [
            work + ["--lease", "1e300"], work + ["--grace", "1e300"], work + ["--max-runtime", "1e300"],
            work + ["--checkpoint-interval", "1e300"], work + ["--request-timeout", "1e300"],
            work + ["--progress-interval", "1e300"], work + ["--metrics-interval", "1e300"],
            work + ["--preemption-poll", "1e300"],
            ["status", "--db", db, "--watch", "--interval", "1e300"],
        ]
        for arguments in cases {
            let result = try await sluice(arguments, in: scratch, children: children, seconds: 60)
            #expect(result.status == 2, "\(arguments.suffix(2)): status \(result.status): \(result.stderr)")
            #expect(result.stderr.contains(arguments.last == "1e300" ? arguments[arguments.count - 2] : "?"),
                    "\(arguments.suffix(2)): \(result.stderr)")
        }
    }
}
