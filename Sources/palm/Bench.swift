// palm bench: the benchmark suite. Subcommands are added per benchmark.
import ArgumentParser

struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run benchmarks: matmul, kernels, step; with no subcommand, the whole suite.",
    subcommands: [BenchSuite.self, BenchMatmul.self, BenchKernels.self, BenchStep.self],
    defaultSubcommand: BenchSuite.self)
}
