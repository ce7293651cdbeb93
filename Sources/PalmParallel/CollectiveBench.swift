// CollectiveBench: collective bandwidth over any Communicator, for `palm bench exchange`.
//
// For each size: fill the buffers (outside the timed region), barrier, time one operation; repeat.
// A repeat's time is the slowest rank's (allGather of the per-rank times). Reported like nccl-tests:
// algbw = bytes / time and busbw = algbw × the per-link traffic factor of a ring algorithm:
// all-reduce 2(n−1)/n, all-gather and reduce-scatter (n−1)/n (bytes = the whole n-block buffer),
// send/recv 1 (a ping-pong between ranks 0 and 1, time = half the round trip). Every repeat
// checks its result against values that are exact in Float.

import PalmModel
import PalmTrain

/// Collective bandwidth measurements.
public enum CollectiveBench {
  /// The measured operations.
  public enum Operation: String, Sendable, Codable, CaseIterable {
    case allReduce = "all-reduce"
    case allGather = "all-gather"
    case reduceScatter = "reduce-scatter"
    case sendRecv = "send-recv"
  }

  /// One buffer size's measurement.
  public struct Result: Sendable, Codable, Equatable {
    public var operation: String = Operation.allReduce.rawValue
    /// Buffer size in bytes (Float32 elements × 4): the all-reduce buffer, the whole gathered or
    /// scattered buffer (n blocks), or one message.
    public var bytes: Int
    public var ranks: Int
    public var repeats: Int
    /// Median and minimum over repeats of the slowest rank's time, in seconds.
    public var medianSeconds: Double
    public var minSeconds: Double
    /// bytes / medianSeconds, in GB/s (1e9 bytes per second).
    public var algbwGBps: Double
    /// algbw × the ring traffic factor of the operation, in GB/s.
    public var busbwGBps: Double
    /// True if every element of every repeat's result was the expected value on this rank.
    public var correct: Bool
  }

  /// Powers of four from 1 KiB to 64 MiB.
  public static let defaultSizes: [Int] = (0...8).map { 1024 << (2 * $0) }

  /// `bandwidth(.allReduce, ...)`: each rank holds rank + 1 everywhere; the sum is n(n+1)/2.
  public static func allReduceBandwidth(comm: any Communicator, sizes: [Int] = defaultSizes,
                                        repeats: Int = 5, warmup: Int = 1) throws -> [Result] {
    try bandwidth(.allReduce, comm: comm, sizes: sizes, repeats: repeats, warmup: warmup)
  }

  /// Measures `operation` for each byte size in `sizes` (rounded down to whole floats, and for
  /// all-gather / reduce-scatter to a multiple of n floats; at least one per rank). Collective:
  /// every rank calls it with the same arguments; results are the same on every rank except
  /// `correct`. send/recv needs at least 2 ranks (ranks above 1 only join the barriers).
  public static func bandwidth(_ operation: Operation, comm: any Communicator, sizes: [Int] = defaultSizes,
                               repeats: Int = 5, warmup: Int = 1) throws -> [Result] {
    guard repeats >= 1, warmup >= 0 else {
      throw CommError(.badArgument, "\(operation.rawValue) bandwidth: repeats must be ≥ 1 and warmup ≥ 0")
    }
    let n = comm.size, r = comm.rank
    if operation == .sendRecv && n < 2 {
      throw CommError(.badArgument, "send-recv bandwidth needs at least 2 ranks (got \(n))")
    }
    var results: [Result] = []
    for bytes in sizes {
      let floats = max(1, bytes / MemoryLayout<Float>.stride)
      let block = max(1, floats / n)  // per-rank block of all-gather / reduce-scatter
      let count: Int
      switch operation {
      case .allReduce, .sendRecv: count = floats
      case .allGather, .reduceScatter: count = block * n
      }
      var big = [Float](repeating: 0, count: count)
      var small = [Float](repeating: 0, count: block)
      var times: [Double] = []
      var correct = true
      for i in 0..<(warmup + repeats) {
        // Inputs (untimed).
        switch operation {
        case .allReduce, .reduceScatter: big.withUnsafeMutableBufferPointer { $0.update(repeating: Float(r + 1)) }
        case .allGather: small.withUnsafeMutableBufferPointer { $0.update(repeating: Float(r + 1)) }
        case .sendRecv: big.withUnsafeMutableBufferPointer { $0.update(repeating: r == 0 ? 1 : 0) }
        }
        try comm.barrier()
        let start = ContinuousClock.now
        switch operation {
        case .allReduce: try comm.allReduce(&big)
        case .allGather:
          try small.withUnsafeBufferPointer { s in try big.withUnsafeMutableBufferPointer { try comm.allGather(s, into: $0) } }
        case .reduceScatter:
          try big.withUnsafeBufferPointer { s in try small.withUnsafeMutableBufferPointer { try comm.reduceScatter(s, into: $0) } }
        case .sendRecv:
          if r == 0 {
            try comm.send(big, to: 1, tag: 7)
            try big.withUnsafeMutableBufferPointer { try comm.receive(into: $0, from: 1, tag: 8) }
          } else if r == 1 {
            try big.withUnsafeMutableBufferPointer { try comm.receive(into: $0, from: 0, tag: 7) }
            try comm.send(big, to: 0, tag: 8)
          }
        }
        let elapsed = ContinuousClock.now - start
        var seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        if operation == .sendRecv { seconds /= 2 }
        // Check (untimed).
        switch operation {
        case .allReduce: if big.contains(where: { $0 != Float(n * (n + 1) / 2) }) { correct = false }
        case .reduceScatter: if small.contains(where: { $0 != Float(n * (n + 1) / 2) }) { correct = false }
        case .allGather:
          for k in 0..<n where big[(k * block)..<((k + 1) * block)].contains(where: { $0 != Float(k + 1) }) { correct = false }
        case .sendRecv: if r <= 1 && big.contains(where: { $0 != 1 }) { correct = false }
        }
        if i >= warmup {
          let all = try comm.allGather([Float(seconds)])
          times.append(Double(all.max() ?? Float(seconds)))
        }
      }
      times.sort()
      let median = PalmTrain.median(times) ?? times[0]
      let realBytes = count * MemoryLayout<Float>.stride
      let algbw = Double(realBytes) / max(median, 1e-12) / 1e9
      let factor: Double
      switch operation {
      case .allReduce: factor = n > 1 ? 2 * Double(n - 1) / Double(n) : 0
      case .allGather, .reduceScatter: factor = n > 1 ? Double(n - 1) / Double(n) : 0
      case .sendRecv: factor = 1
      }
      results.append(Result(operation: operation.rawValue, bytes: realBytes, ranks: n, repeats: repeats,
                            medianSeconds: median, minSeconds: times[0], algbwGBps: algbw,
                            busbwGBps: algbw * factor, correct: correct))
    }
    return results
  }
}
