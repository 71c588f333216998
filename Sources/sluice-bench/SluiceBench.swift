import ArgumentParser

/// Measurements of Sluice's parts, run by the scripts in scripts/ (never by the test suite).
/// Each area adds a subcommand in its own file.
@main
struct SluiceBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice-bench",
        abstract: "Measure Sluice's throughput and memory (see scripts/bench*).",
        subcommands: [QueueBench.self, EngineBench.self, MatMulBench.self, PrefixBench.self, SpeculationBench.self, StructuredBench.self]
    )
}
