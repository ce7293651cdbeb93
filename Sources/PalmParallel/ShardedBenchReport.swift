// ShardedBenchReport: one mesh step benchmark (ShardedBench) as a JSON line and as text, for
// `palm bench step --mesh …` and for `palm bench exchange`, which reads the JSON line back from
// the `mpirun … palm bench step --format json` child it starts.

import Foundation
import PalmTrain

/// The figures of a `ShardedBenchResult`, flat and Codable (keys in snake_case).
public struct ShardedBenchReport: Codable, Sendable, Equatable {
  public var config: String
  public var mesh: String
  public var devices: String
  public var threadsPerRank: Int
  public var globalBatch: Int
  public var seqLen: Int
  public var steps: Int
  /// Rank 0's step times, seconds.
  public var stepSeconds: [Double]
  public var medianSeconds: Double
  public var minSeconds: Double
  /// Global tokens per second at the median step time.
  public var tokensPerSecond: Double
  /// Per step, rank 0: gradient bytes put into the pod exchange (0 for pod = 1).
  public var exchangeBytes: Int
  /// Medians over the timed steps, rank 0: transfer time, wait after the backward, hidden fraction.
  public var exchangeSeconds: Double
  public var exchangeWaitSeconds: Double
  public var hiddenFraction: Double
  public var losses: [Float]

  enum CodingKeys: String, CodingKey {
    case config, mesh, devices, steps, losses
    case threadsPerRank = "threads_per_rank", globalBatch = "global_batch", seqLen = "seq_len"
    case stepSeconds = "step_seconds", medianSeconds = "median_seconds", minSeconds = "min_seconds"
    case tokensPerSecond = "tokens_per_s", exchangeBytes = "exchange_bytes", exchangeSeconds = "exchange_seconds"
    case exchangeWaitSeconds = "exchange_wait_seconds", hiddenFraction = "hidden_fraction"
  }

  public init(_ r: ShardedBenchResult, config: String, devices: String) {
    func median(_ xs: [Double]) -> Double { PalmTrain.median(xs) ?? 0 }
    self.config = config
    mesh = r.shape.description
    self.devices = devices
    threadsPerRank = r.threadsPerRank
    globalBatch = r.globalBatch
    seqLen = r.seqLen
    steps = r.steps
    stepSeconds = r.stepSeconds
    medianSeconds = r.medianSeconds
    minSeconds = r.minSeconds
    tokensPerSecond = r.tokensPerSecond
    exchangeBytes = r.exchange.first?.bytes ?? 0
    exchangeSeconds = median(r.exchange.map(\.transferSeconds))
    exchangeWaitSeconds = median(r.exchange.map(\.waitSeconds))
    hiddenFraction = median(r.exchange.map(\.hiddenFraction))
    losses = r.losses
  }

  /// One line of JSON, keys sorted.
  public func jsonLine() throws -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    return String(decoding: try e.encode(self), as: UTF8.self)
  }

  /// The last line of `output` that decodes as a report (a child's stdout may hold other lines).
  public static func parse(lastOf output: String) -> ShardedBenchReport? {
    for line in output.split(separator: "\n").reversed() where line.hasPrefix("{") {
      if let r = try? JSONDecoder().decode(ShardedBenchReport.self, from: Data(line.utf8)) { return r }
    }
    return nil
  }

  /// A few lines for people.
  public var text: String {
    """
    step \(config) mesh \(mesh) (\(devices)) \(threadsPerRank) thread(s)/rank, global batch \(globalBatch)×\(seqLen)
      step seconds: median \(String(format: "%.4f", medianSeconds)) min \(String(format: "%.4f", minSeconds)) (\(steps) steps)
      tokens/s: \(String(format: "%.0f", tokensPerSecond))
      pod exchange per step (rank 0): \(exchangeBytes) bytes, transfer \(String(format: "%.2f", exchangeSeconds * 1e3)) ms, \
    wait \(String(format: "%.2f", exchangeWaitSeconds * 1e3)) ms, hidden \(String(format: "%.1f", hiddenFraction * 100))%
      losses: \(losses.map { String(format: "%.4f", $0) }.joined(separator: " "))
    """
  }
}
