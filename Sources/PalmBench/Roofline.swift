// Roofline: the attainable GFLOP/s of a kernel of arithmetic intensity I (FLOPs per byte of DRAM
// traffic) is min(peak, I × bandwidth) (Williams, Waterman & Patterson, "Roofline", CACM 2009).
// A kernel sits under the memory roof when I < peak / bandwidth (the ridge point), else under the
// compute roof; its efficiency is achieved / attainable. SVG chart: Roofline+SVG.swift.

/// The two roofs of this machine at one thread count.
///
/// ```swift
/// let roof = Roofline(peakGFLOPs: 530, bandwidthGBs: 40)
/// roof.classify(intensity: 0.5, gflops: 15)   // memory bound, attainable 20, fraction 0.75
/// ```
public struct Roofline: Codable, Equatable, Sendable {
  /// Compute roof: peak GFLOP/s of the threads used.
  public var peakGFLOPs: Double
  /// Memory roof slope: measured streaming bandwidth, GB/s (1e9 bytes/s).
  public var bandwidthGBs: Double

  public init(peakGFLOPs: Double, bandwidthGBs: Double) {
    self.peakGFLOPs = peakGFLOPs
    self.bandwidthGBs = bandwidthGBs
  }

  /// Which roof bounds a kernel.
  public enum Bound: String, Codable, Sendable {
    case memory, compute
  }

  /// Where one kernel sits.
  public struct Placement: Codable, Equatable, Sendable {
    public var bound: Bound
    /// min(peak, intensity × bandwidth), GFLOP/s.
    public var attainableGFLOPs: Double
    /// achieved / attainable (may exceed 1 when the operands stay in cache: the memory roof is
    /// the DRAM bandwidth).
    public var fraction: Double

    enum CodingKeys: String, CodingKey {
      case bound
      case attainableGFLOPs = "attainable_gflops"
      case fraction
    }
  }

  /// Intensity (FLOP/byte) at which the roofs meet.
  public var ridge: Double { peakGFLOPs / bandwidthGBs }

  /// min(peak, intensity × bandwidth).
  public func attainable(intensity: Double) -> Double { min(peakGFLOPs, intensity * bandwidthGBs) }

  /// The bound of a kernel of `intensity` FLOP/byte that achieved `gflops`.
  /// At the ridge exactly the kernel is called compute bound.
  public func classify(intensity: Double, gflops: Double) -> Placement {
    let bound: Bound = intensity < ridge ? .memory : .compute
    let roof = attainable(intensity: intensity)
    return Placement(bound: bound, attainableGFLOPs: roof, fraction: roof > 0 ? gflops / roof : 0)
  }

  enum CodingKeys: String, CodingKey {
    case peakGFLOPs = "peak_gflops"
    case bandwidthGBs = "bandwidth_gbs"
  }
}
