import ArgumentParser

/// Measurements of Sluice's parts. Each area adds a subcommand in its own file.
struct SluiceBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice-bench",
        abstract: "Measure Sluice's throughput and memory.",
        subcommands: [QueueBench.self]
    )
}

/// Parses and runs the chosen subcommand, taking the async path for async subcommands
/// (from top-level code `SluiceBench.main()` resolves to the synchronous overload).
func runBench() async {
    do {
        var command = try SluiceBench.parseAsRoot()
        if var asyncCommand = command as? any AsyncParsableCommand {
            try await asyncCommand.run()
        } else {
            try command.run()
        }
    } catch {
        SluiceBench.exit(withError: error)
    }
}

await runBench()
