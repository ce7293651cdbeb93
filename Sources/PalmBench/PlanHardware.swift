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

  /// The largest count a description may give (devices, ranks, threads, links): the mesh limit.
  public static let maxCount = 1 << 20
  /// The largest rate (FLOP/s, bytes/s) a description may give: far above any device, small
  /// enough that no product of the plan's reaches infinity.
  public static let maxRate = 1e18
  /// The largest latency, seconds.
  public static let maxLatency = 1e3
  /// The known network scopes and topologies (Plan.network, Plan.bandwidth).
  public static let scopes = ["pod", "between-pods"]
  public static let topologies = ["torus3d", "torus2d", "switch", "host-nic", "measured"]

  /// Checks every number the plan uses: one line naming the file, the field and the allowed range.
  public func validate(_ what: String) throws {
    func fail(_ field: String, _ range: String, _ got: String) throws -> Never {
      throw Invalid(message: "hardware \(what): \(field) must be \(range) (got \(got))")
    }
    func rate(_ x: Double, _ field: String) throws {
      guard x.isFinite && x >= 1 && x <= Self.maxRate else { try fail(field, "a rate in 1...1e18 per second", "\(x)") }
    }
    func fraction(_ x: Double, _ field: String, upTo top: Double = 1) throws {
      guard x.isFinite && x > 0 && x <= top else { try fail(field, "a fraction in (0, \(top)]", "\(x)") }
    }
    func latency(_ x: Double, _ field: String) throws {
      guard x.isFinite && x >= 0 && x <= Self.maxLatency else { try fail(field, "seconds in 0...\(Int(Self.maxLatency))", "\(x)") }
    }
    func count(_ x: Double, _ field: String, max top: Double = Double(Self.maxCount)) throws {
      guard x.isFinite && x >= 1 && x <= top && x.rounded() == x else {
        try fail(field, "a whole number in 1...\(top == Double(Self.maxCount) ? "2^20" : "\(Int(top))")", "\(x)")
      }
    }
    func count(_ x: Int, _ field: String) throws {
      guard (1...Self.maxCount).contains(x) else { try fail(field, "a whole number in 1...2^20", "\(x)") }
    }
    guard kind == "accelerator" || kind == "cpu" else {
      throw Invalid(message: "hardware \(what): kind must be accelerator or cpu (got \(kind))")
    }
    guard peakFLOPs[precision] != nil else {
      throw Invalid(message: "hardware \(what): precision \"\(precision)\" has no peak_flops entry")
    }
    for (p, n) in peakFLOPs.sorted(by: { $0.key < $1.key }) { try rate(n.value, "peak_flops.\(p)") }
    guard memoryBytes.value.isFinite && memoryBytes.value >= 1 && memoryBytes.value <= 0x1p60 else {
      try fail("memory_bytes", "bytes in 1...2^60", "\(memoryBytes.value)")
    }
    try rate(memoryBandwidth.value, "memory_bandwidth")
    try fraction(memoryEfficiency.value, "memory_efficiency")
    try fraction(attentionEfficiency.value, "attention_efficiency")
    for (i, p) in (gemmCurve?.points ?? []).enumerated() {
      try fraction(p.efficiency, "gemm_curve.points[\(i)].efficiency")
      guard p.minDim >= 0 else { try fail("gemm_curve.points[\(i)].min_dim", "at least 0", "\(p.minDim)") }
    }
    // Measured GEMMs may pass the probed peak a little (timer noise, turbo): up to 1.25.
    for (i, p) in (gemmPoints?.points ?? []).enumerated() {
      try fraction(p.efficiency, "gemm_points.points[\(i)].efficiency", upTo: 1.25)
      for (x, f) in [(p.m, "m"), (p.n, "n"), (p.k, "k")] { try count(x, "gemm_points.points[\(i)].\(f)") }
    }
    if let d = devicesPerPod { try count(d.value, "devices_per_pod", max: 1e9) }  // 1e9: no pod limit (a100)
    for n in networks {
      let f = "networks.\(n.name)"
      guard Self.scopes.contains(n.scope) else { try fail("\(f).scope", "one of \(Self.scopes.joined(separator: ", "))", "\"\(n.scope)\"") }
      guard Self.topologies.contains(n.topology) else {
        try fail("\(f).topology", "one of \(Self.topologies.joined(separator: ", "))", "\"\(n.topology)\"")
      }
      try count(n.domainDevices.value, "\(f).domain_devices", max: 1e9)  // a profile writes 1e9: unbounded
      try rate(n.linkBandwidth.value, "\(f).link_bandwidth")
      if let l = n.linksPerDevice { try count(l.value, "\(f).links_per_device") }
      if let h = n.devicesPerHost { try count(h.value, "\(f).devices_per_host") }
      try latency(n.latency.value, "\(f).latency")
      try fraction(n.efficiency.value, "\(f).efficiency")
    }
    for (i, k) in (kernels ?? []).enumerated() {
      try rate(k.bytesPerSecond, "kernels[\(i)].bytes_per_second")
      try count(k.tokens, "kernels[\(i)].tokens")
      // Element-wise kernels do no matmul FLOPs: efficiency 0 is theirs.
      guard k.efficiency.isFinite && k.efficiency >= 0 && k.efficiency <= 1.25 else {
        try fail("kernels[\(i)].efficiency", "a fraction in 0...1.25", "\(k.efficiency)")
      }
    }
    for (i, c) in (collectives ?? []).enumerated() {
      try count(c.ranks, "collectives[\(i)].ranks")
      try latency(c.latency, "collectives[\(i)].latency")
      try rate(c.busBandwidth, "collectives[\(i)].bus_bandwidth")
    }
    if let t = threadsPerDevice { try count(t, "threads_per_device") }
    if let c = concurrentDevices { try count(c, "concurrent_devices") }
    if let c = cores { try count(c, "cores") }
    for r in (calibration?.runs ?? []) + (calibration?.checks ?? []) {
      let f = "calibration run \(r.name)"
      guard r.tflopsPerChip.isFinite && r.tflopsPerChip > 0 && r.tflopsPerChip <= 1e6 else {
        try fail("\(f): tflops_per_chip", "in (0, 1e6]", "\(r.tflopsPerChip)")
      }
      for (x, name) in [(r.perDeviceBatch, "per_device_batch"), (r.embDim, "emb_dim"), (r.layers, "layers"), (r.queryHeads, "query_heads"),
                        (r.kvHeads, "kv_heads"), (r.headDim, "head_dim"), (r.mlpDim, "mlp_dim"), (r.seqLen, "seq_len"), (r.vocab, "vocab")] {
        try count(x, "\(f): \(name)")
      }
      guard r.mlpActivations == 1 || r.mlpActivations == 2 else { try fail("\(f): mlp_activations", "1 or 2", "\(r.mlpActivations)") }
      // The run's parameter and FLOP counts (Int products) stay far from overflowing.
      let e = Double(r.embDim), hq = Double(r.queryHeads * r.headDim), kv = Double(r.kvHeads * r.headDim)
      let perLayer = e * hq + 2 * e * kv + hq * e + Double(r.mlpActivations + 1) * e * Double(r.mlpDim)
      let parameters = Double(r.layers) * (perLayer + e) + Double(r.vocab) * e
      let attention = Double(r.layers) * hq * Double(r.seqLen)
      guard parameters <= 0x1p53 && attention <= 0x1p53 else {
        throw Invalid(message: "hardware \(what): \(f) has more than 2^53 parameters or attention FLOPs per token: shrink its shapes")
      }
    }
  }

  /// CPU: the fraction of the time each of `ranks` ranks of `threadsPerRank` threads runs when all
  /// are busy at once on this machine's cores (1 when they fit; cores / (ranks · threads) when they
  /// time-share). An accelerator's devices never share: 1.
  public func timeShare(ranks: Int, threadsPerRank: Int) -> Double {
    guard kind == "cpu" else { return 1 }
    return min(1, Double(max(1, cores ?? 1)) / (Double(max(1, ranks)) * Double(max(1, threadsPerRank))))
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
