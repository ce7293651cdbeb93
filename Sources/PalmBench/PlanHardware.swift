// PlanHardware: a device and its networks as `palm plan` reads them: small JSON files in which every
// number carries its public source (Hardware/*.json, shipped as resources: tpu-v4, tpu-v3, a100),
// or what `palm plan --profile` measured on this machine (PlanProfile.swift), in the same format.
// Numbers no source settled are marked `"assumption": true`; the plan prints them and how its
// prediction moves with each (PlanReport.swift). Calculon's system files (calculon-ai/calculon
// systems/*.json: an efficiency by size for matrix, memory and network) inspired the shape.

import Foundation
import PalmTensor

/// One device type, its memory and its networks.
///
/// ```swift
/// let tpu = try HardwareSpec.load("tpu-v4")                 // a built-in name, or a file path
/// let e = tpu.gemmEfficiency(m: 8192, n: 13824, k: 18432, layout: "nn")   // 0.95 (gemm_curve)
/// ```
public struct HardwareSpec: Codable, Sendable, Equatable {
  /// A number and where it comes from.
  public struct Number: Codable, Sendable, Equatable {
    public var value: Double
    public var source: String
    /// True when no public source settled it (a guess or a stand-in from another device).
    public var assumption: Bool?
    public init(_ value: Double, _ source: String, assumption: Bool? = nil) {
      self.value = value; self.source = source; self.assumption = assumption
    }
  }

  /// GEMM efficiency (of the precision's peak) by the smallest of m, n, k: the first point whose
  /// `min_dim` is at most the GEMM's smallest dimension, points sorted by `min_dim` descending.
  public struct Curve: Codable, Sendable, Equatable {
    public struct Point: Codable, Sendable, Equatable {
      public var minDim: Int
      public var efficiency: Double
      enum CodingKeys: String, CodingKey { case minDim = "min_dim", efficiency }
    }
    public var source: String
    public var assumption: Bool?
    public var points: [Point]
  }

  /// Measured GEMMs (the profile): the efficiency of the nearest shape in log space wins.
  public struct GEMMPoints: Codable, Sendable, Equatable {
    public struct Point: Codable, Sendable, Equatable {
      public var m: Int, n: Int, k: Int
      public var layout: String
      public var efficiency: Double
    }
    public var source: String
    public var points: [Point]
  }

  /// A measured kernel (the profile): bytes per second for element-wise kernels, fraction of the
  /// peak for attention, at `tokens` tokens of the named config's shapes.
  public struct KernelRate: Codable, Sendable, Equatable {
    public var kernel: String
    public var config: String
    public var tokens: Int
    public var bytesPerSecond: Double
    public var efficiency: Double
    enum CodingKeys: String, CodingKey {
      case kernel, config, tokens, bytesPerSecond = "bytes_per_second", efficiency
    }
  }

  /// A measured collective (the profile): latency (the small-message time) and bus bandwidth
  /// (nccl-tests' busbw: algbw × the ring factor, bytes/s) at `ranks` ranks.
  public struct Collective: Codable, Sendable, Equatable {
    public var operation: String
    public var backend: String
    public var ranks: Int
    public var latency: Double
    public var busBandwidth: Double
    enum CodingKeys: String, CodingKey { case operation, backend, ranks, latency, busBandwidth = "bus_bandwidth" }
    public init(operation: String, backend: String, ranks: Int, latency: Double, busBandwidth: Double) {
      self.operation = operation; self.backend = backend; self.ranks = ranks; self.latency = latency; self.busBandwidth = busBandwidth
    }
  }

  /// A network level. Mesh axes are placed innermost first (model, then data; rank order has
  /// `model` fastest): an in-pod axis uses the first `pod` network whose `domain_devices` holds it;
  /// the pod axis uses the `between-pods` network.
  public struct Network: Codable, Sendable, Equatable {
    public var name: String
    /// "pod" (inside a pod) or "between-pods".
    public var scope: String
    /// "torus3d" / "torus2d" (link_bandwidth per link per direction, `links_per_device` of them,
    /// shared by the axes), "switch" (link_bandwidth per device per direction), "host-nic"
    /// (link_bandwidth per host, shared by `devices_per_host`), "measured" (use `collectives`).
    public var topology: String
    public var domainDevices: Number
    public var linkBandwidth: Number
    public var linksPerDevice: Number?
    public var devicesPerHost: Number?
    public var latency: Number
    public var efficiency: Number
    enum CodingKeys: String, CodingKey {
      case name, scope, topology, latency, efficiency
      case domainDevices = "domain_devices", linkBandwidth = "link_bandwidth"
      case linksPerDevice = "links_per_device", devicesPerHost = "devices_per_host"
    }
  }

  public var name: String
  public var description: String
  /// "accelerator" or "cpu" (a CPU device is one rank with `threads_per_device` threads).
  public var kind: String
  /// The precision whose peak MFU and HFU divide by ("bf16" or "fp32").
  public var precision: String
  /// Peak matmul FLOP/s per device, by precision.
  public var peakFLOPs: [String: Number]
  public var memoryBytes: Number
  public var memoryBandwidth: Number
  /// Fraction of `memory_bandwidth` element-wise kernels reach (when no kernel is measured).
  public var memoryEfficiency: Number
  public var gemmCurve: Curve?
  public var gemmPoints: GEMMPoints?
  /// Fraction of the peak the attention products reach (when not measured).
  public var attentionEfficiency: Number
  public var devicesPerPod: Number?
  public var networks: [Network]
  public var kernels: [KernelRate]?
  public var collectives: [Collective]?
  /// CPU: OpenMP threads of one device (rank) in the measurements, and the machine's cores.
  public var threadsPerDevice: Int?
  /// CPU: devices that ran at once while the rates were measured (cores / threads: the machine
  /// full, as a mesh runs it; absent: one).
  public var concurrentDevices: Int?
  public var cores: Int?
  /// The CPU model, when measured.
  public var cpu: String?
  /// Published runs on this device that `palm plan` calibrates the compute rates on (PlanCalibration).
  public var calibration: Calibration? = nil

  enum CodingKeys: String, CodingKey {
    case name, description, kind, precision, networks, kernels, collectives, cores, cpu, calibration
    case peakFLOPs = "peak_flops", memoryBytes = "memory_bytes", memoryBandwidth = "memory_bandwidth"
    case memoryEfficiency = "memory_efficiency", gemmCurve = "gemm_curve", gemmPoints = "gemm_points"
    case attentionEfficiency = "attention_efficiency", devicesPerPod = "devices_per_pod"
    case threadsPerDevice = "threads_per_device", concurrentDevices = "concurrent_devices"
  }

  /// A hardware name or file `palm plan` cannot use.
  public struct Invalid: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
  }

  /// The built-in descriptions (Sources/PalmBench/Hardware/*.json).
  public static let builtInNames = ["tpu-v4", "tpu-v3", "a100"]

  /// A built-in name, or a path to a JSON file in this format.
  /// - Throws: `Invalid` naming the known names, or the file's problem.
  public static func load(_ nameOrPath: String) throws -> HardwareSpec {
    let data: Data
    if builtInNames.contains(nameOrPath) {
      guard let url = Bundle.module.url(forResource: nameOrPath, withExtension: "json", subdirectory: "Hardware"),
            let d = try? Data(contentsOf: url) else {
        throw Invalid(message: "built-in hardware \(nameOrPath) is missing from the package's resources")
      }
      data = d
    } else if FileManager.default.fileExists(atPath: nameOrPath) {
      guard let d = FileManager.default.contents(atPath: nameOrPath) else {
        throw Invalid(message: "cannot read hardware file \(nameOrPath)")
      }
      data = d
    } else {
      throw Invalid(message: "unknown hardware \"\(nameOrPath)\": use \(builtInNames.joined(separator: ", ")) or a JSON file (palm plan --profile writes one)")
    }
    let spec: HardwareSpec
    do {
      spec = try JSONDecoder().decode(HardwareSpec.self, from: data)
    } catch {
      throw Invalid(message: "hardware file \(nameOrPath) is not a valid description: \(PlanJSON.describe(error))")
    }
    try spec.validate(nameOrPath)
    return spec
  }

  /// Checks the numbers a plan divides by.
  public func validate(_ what: String) throws {
    func positive(_ x: Double, _ field: String) throws {
      guard x.isFinite && x > 0 else { throw Invalid(message: "hardware \(what): \(field) must be a positive number (got \(x))") }
    }
    guard let peak = peakFLOPs[precision] else {
      throw Invalid(message: "hardware \(what): precision \"\(precision)\" has no peak_flops entry")
    }
    try positive(peak.value, "peak_flops.\(precision)")
    try positive(memoryBytes.value, "memory_bytes")
    try positive(memoryBandwidth.value, "memory_bandwidth")
    try positive(memoryEfficiency.value, "memory_efficiency")
    try positive(attentionEfficiency.value, "attention_efficiency")
    for n in networks {
      try positive(n.linkBandwidth.value, "networks.\(n.name).link_bandwidth")
      try positive(n.efficiency.value, "networks.\(n.name).efficiency")
    }
    for r in (calibration?.runs ?? []) + (calibration?.checks ?? []) {
      try positive(r.tflopsPerChip, "calibration run \(r.name): tflops_per_chip")
      guard r.perDeviceBatch >= 1, r.embDim >= 1, r.layers >= 1, r.queryHeads >= 1, r.headDim >= 1, r.mlpDim >= 1,
            r.mlpActivations == 1 || r.mlpActivations == 2 else {
        throw Invalid(message: "hardware \(what): calibration run \(r.name) needs positive shapes and mlp_activations 1 or 2")
      }
    }
    guard kind == "accelerator" || kind == "cpu" else {
      throw Invalid(message: "hardware \(what): kind must be accelerator or cpu (got \(kind))")
    }
  }

  /// CPU: the fraction of the time each of `ranks` ranks of `threadsPerRank` threads runs when all
  /// are busy at once on this machine's cores (1 when they fit; cores / (ranks · threads) when they
  /// time-share). An accelerator's devices never share: 1.
  public func timeShare(ranks: Int, threadsPerRank: Int) -> Double {
    guard kind == "cpu" else { return 1 }
    return min(1, Double(max(1, cores ?? 1)) / Double(max(1, ranks * threadsPerRank)))
  }

  /// The peak of the precision MFU divides by, FLOP/s per device.
  public var peak: Double { peakFLOPs[precision]?.value ?? 0 }

  /// The efficiency of one GEMM `C(m, n) = A(m, k)·B(k, n)` in `layout` ("nn", "nt", "tn"): the
  /// nearest measured shape, else the curve, else 1.
  public func gemmEfficiency(m: Int, n: Int, k: Int, layout: String) -> Double {
    if let pts = gemmPoints?.points, !pts.isEmpty {
      func distance(_ p: GEMMPoints.Point) -> Double {
        let d = [(p.m, m), (p.n, n), (p.k, k)].reduce(0.0) { s, pair in
          let r = log(Double(max(pair.0, 1)) / Double(max(pair.1, 1)))
          return s + r * r
        }
        return d + (p.layout == layout ? 0 : 0.25)
      }
      return pts.min { distance($0) < distance($1) }!.efficiency
    }
    if let curve = gemmCurve {
      let dim = min(m, n, k)
      for p in curve.points.sorted(by: { $0.minDim > $1.minDim }) where dim >= p.minDim { return p.efficiency }
      return curve.points.map(\.efficiency).min() ?? 1
    }
    return 1
  }

  /// The measured rate of `kernel` nearest to `tokens` tokens (same config name preferred).
  public func kernelRate(_ kernel: String, config: String, tokens: Int) -> KernelRate? {
    let rates = (kernels ?? []).filter { $0.kernel == kernel }
    func distance(_ r: KernelRate) -> Double {
      abs(log(Double(max(r.tokens, 1)) / Double(max(tokens, 1)))) + (r.config == config ? 0 : 10)
    }
    return rates.min { distance($0) < distance($1) }
  }

  /// Writes the description as indented JSON, atomically (temporary file, fsync, rename).
  public func write(to path: String) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let data = try encoder.encode(self)
    try AtomicFile.write(to: path, bytes: [UInt8](data) + [10])
  }
}

/// JSON helpers shared by the plan's readers.
enum PlanJSON {
  /// A decoding error in one line: the coding path and what was wrong.
  static func describe(_ error: any Error) -> String {
    guard let e = error as? DecodingError else { return "\(error)" }
    func path(_ c: DecodingError.Context) -> String {
      let p = c.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
      return p.isEmpty ? "" : " at \(p)"
    }
    switch e {
    case .keyNotFound(let key, let c): return "missing field \"\(key.stringValue)\"\(path(c))"
    case .typeMismatch(_, let c), .valueNotFound(_, let c): return "wrong type\(path(c)): \(c.debugDescription)"
    case .dataCorrupted(let c): return "not JSON\(path(c)): \(c.debugDescription)"
    @unknown default: return "\(error)"
    }
  }
}
