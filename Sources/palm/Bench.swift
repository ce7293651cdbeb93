// palm bench: the benchmark suite. Subcommands are added per benchmark.
import ArgumentParser

struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run benchmarks: matmul, kernels, step, exchange; with no subcommand, the whole suite.",
    subcommands: [BenchSuite.self, BenchMatmul.self, BenchKernels.self, BenchStep.self, BenchExchange.self],
    defaultSubcommand: BenchSuite.self)
}
