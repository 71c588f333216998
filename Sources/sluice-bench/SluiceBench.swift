import ArgumentParser

/// Benchmarks of Sluice's parts, run by the scripts in scripts/ (never by the test suite).
@main
struct SluiceBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice-bench",
        abstract: "Benchmarks of Sluice's parts (see scripts/bench*).",
        subcommands: [EngineBench.self, MatMulBench.self])
}
