// CollectiveBench: all-reduce bandwidth over any Communicator, for `palm bench exchange`.
//
// For each size: fill the buffer (rank r holds r + 1 everywhere, outside the timed region), barrier,
// time one in-place allReduce; repeat. A repeat's time is the slowest rank's (allGather of the
// per-rank times). Reported like nccl-tests: algbw = bytes / time, busbw = algbw · 2(n−1)/n (the
// traffic of a ring all-reduce per link). Every run checks the result (n(n+1)/2 is exact in Float).

/// All-reduce bandwidth measurements.
public enum CollectiveBench {
  /// One buffer size's measurement.
  public struct Result: Sendable, Codable, Equatable {
    /// Buffer size in bytes (Float32 elements × 4).
    public var bytes: Int
    public var ranks: Int
    public var repeats: Int
    /// Median and minimum over repeats of the slowest rank's time, in seconds.
    public var medianSeconds: Double
    public var minSeconds: Double
    /// bytes / medianSeconds, in GB/s (1e9 bytes per second).
    public var algbwGBps: Double
    /// algbw · 2(n−1)/n, in GB/s.
    public var busbwGBps: Double
    /// True if every element of every repeat's result equalled n(n+1)/2 on this rank.
    public var correct: Bool
  }

  /// Powers of four from 1 KiB to 64 MiB.
  public static let defaultSizes: [Int] = (0...8).map { 1024 << (2 * $0) }

  /// Measures `comm.allReduce` for each byte size in `sizes` (rounded down to whole floats, at
  /// least one). Collective: every rank must call it with the same arguments. Results are the same
  /// on every rank.
  public static func allReduceBandwidth(comm: any Communicator, sizes: [Int] = defaultSizes,
                                        repeats: Int = 5, warmup: Int = 1) throws -> [Result] {
    guard repeats >= 1, warmup >= 0 else {
      throw CommError(.badArgument, "allReduceBandwidth: repeats must be ≥ 1 and warmup ≥ 0")
    }
    let n = comm.size
    let expected = Float(n * (n + 1) / 2)
    var results: [Result] = []
    for bytes in sizes {
      let count = max(1, bytes / MemoryLayout<Float>.stride)
      var buffer = [Float](repeating: 0, count: count)
      var times: [Double] = []
      var correct = true
      for i in 0..<(warmup + repeats) {
        buffer.withUnsafeMutableBufferPointer { $0.update(repeating: Float(comm.rank + 1)) }
        try comm.barrier()
        let start = ContinuousClock.now
        try comm.allReduce(&buffer)
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        if buffer.contains(where: { $0 != expected }) { correct = false }
        if i >= warmup {
          let all = try comm.allGather([Float(seconds)])
          times.append(Double(all.max() ?? Float(seconds)))
        }
      }
      times.sort()
      let median = times.count % 2 == 1
        ? times[times.count / 2] : (times[times.count / 2 - 1] + times[times.count / 2]) / 2
      let realBytes = count * MemoryLayout<Float>.stride
      let algbw = Double(realBytes) / max(median, 1e-12) / 1e9
      results.append(Result(bytes: realBytes, ranks: n, repeats: repeats, medianSeconds: median,
                            minSeconds: times[0], algbwGBps: algbw,
                            busbwGBps: n > 1 ? algbw * 2 * Double(n - 1) / Double(n) : 0,
                            correct: correct))
    }
    return results
  }
}
