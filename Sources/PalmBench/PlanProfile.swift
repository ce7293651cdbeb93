// PlanProfile: `palm plan --profile` measures THIS machine into the HardwareSpec format: the fp32
// and bf16 peaks (PeakSource.measured), GEMM efficiency at the shapes of the tiny and small steps
// on 1, 2 model shards and 1, 2, 4 data shards (GEMMBench), the element-wise and attention kernels
// (KernelBench), STREAM triad bandwidth, and collective latency and bandwidth on the in-process
// backend (CollectiveBench over a LocalCluster of 2, 4, 8 ranks; `palm plan --profile` adds the
// same over MPI when mpirun is on PATH, an mpirun child per rank count). A device is one rank of `threads`
// OpenMP threads, measured as a mesh runs it: with the machine full, i.e. cores / threads copies of
// each GEMM, kernel and STREAM run at once (the ranks of one host share its memory bandwidth and
// caches: measured alone on an idle machine, a 1-thread rank over-predicted the meshes by up to
// ~20%, docs/BENCHMARKS.md). The peaks are measured alone (they are the MFU denominator). Plans of
// meshes with more ranks × threads than cores time-share them (Plan.swift).

import Foundation
import PalmModel
import PalmParallel
import PalmTensor

public enum PlanProfile {
  /// The rank counts and operations whose latency and bus bandwidth are measured, on each backend.
  public static let collectiveRanks = [2, 4, 8]
  public static let collectiveOperations: [CollectiveBench.Operation] = [.allReduce, .allGather, .reduceScatter]
  /// A collective's latency is the time of a `latencyBytes` buffer; its bandwidth the bus
  /// bandwidth of a `bandwidthBytes` one.
  public static let latencyBytes = 4096, bandwidthBytes = 4 << 20
  /// The backend names a profile records (`palm plan --devices local` reads the first).
  public static let inProcess = "in-process", mpi = "mpi"

  /// The profile's entry for `operation` from CollectiveBench results at both sizes (any others
  /// ignored); nil when one is missing.
  public static func collective(_ results: [CollectiveBench.Result], operation: CollectiveBench.Operation,
                                backend: String) -> HardwareSpec.Collective? {
    let rows = results.filter { $0.operation == operation.rawValue }
    guard let small = rows.first(where: { $0.bytes == latencyBytes }), let large = rows.first(where: { $0.bytes == bandwidthBytes }) else {
      return nil
    }
    return HardwareSpec.Collective(operation: operation.rawValue, backend: backend, ranks: small.ranks,
                                   latency: small.medianSeconds, busBandwidth: large.busbwGBps * 1e9)
  }

  /// Measures this machine with `threads` threads per device; `log` receives progress lines.
  public static func measure(threads: Int, configs: [PalmConfig] = [.tiny, .small],
                             log: (String) -> Void = { _ in }) throws -> HardwareSpec {
    let cores = ProcessInfo.processInfo.activeProcessorCount
    let copies = max(1, cores / threads)
    let fp32 = try PeakSource.measured.gflops(threads) ?? 0
    let bf16 = try PeakSource.measured.bf16Gflops(threads)
    log(String(format: "peak fp32 %.1f GFLOP/s at %d thread(s)", fp32, threads) + (bf16.map { String(format: ", bf16 %.1f", $0) } ?? ""))
    let stream = try concurrently(copies) { try KernelBench.bandwidth(threads: threads) * 1e9 }
    log(String(format: "STREAM triad %.1f GB/s per device with %d device(s) running", stream / 1e9, copies))

    // GEMMs of the step at the shard shapes (MemoryPlan/FLOPs name them; FLOPs.swift's table).
    var cases: [GEMMCase] = []
    var seen = Set<String>()
    for c in configs {
      for m in [1, 2] where c.heads % m == 0 {
        var local = c
        local.heads /= m
        local.dFF /= m
        for split in [1, 2, 4] where c.batch % split == 0 {
          let n = c.batch / split * c.seqLen, d = c.dModel
          let cin = local.inputProjectionColumns, cout = local.outputProjectionRows, v = c.vocab
          let shapes: [(Int, Int, Int, GEMMLayout)] = [
            (n, cin, d, .nn), (n, d, cin, .nt), (d, cin, n, .tn),
            (n, d, cout, .nn), (n, cout, d, .nt), (cout, d, n, .tn),
            (n, v, d, .nn), (n, d, v, .nt), (v, d, n, .tn),
          ]
          for (mm, nn, kk, layout) in shapes where seen.insert("\(mm)x\(nn)x\(kk)\(layout)").inserted {
            cases.append(GEMMCase(m: mm, n: nn, k: kk, layout: layout, threads: threads))
          }
        }
      }
    }
    let points = try concurrently(copies, each: cases) { c in
      // 5 repeats, not 3: the median of 3 let one disturbed sample set a shape's efficiency (2-thread
      // profiles had shapes at 25-50%); 5 costs ~1.7x the GEMM part of the profile.
      let r = try GEMMBench.run(c, repeats: 5, minSampleSeconds: 0.01, peakGflops: fp32)
      return HardwareSpec.GEMMPoints.Point(m: c.m, n: c.n, k: c.k, layout: c.layout.rawValue, efficiency: r.fractionOfPeak ?? 0)
    }
    log("\(points.count) GEMM shapes measured")

    let kernelCases = configs.flatMap { c in KernelBench.Kernel.allCases.map { (c, $0) } }
    let kernels = try concurrently(copies, each: kernelCases) { c, kernel in
      let r = try KernelBench.run(config: c, threads: threads, repeats: 3, kernels: [kernel])[0]
      return HardwareSpec.KernelRate(kernel: r.kernel.rawValue, config: c.name, tokens: r.shape.tokens,
                                     bytesPerSecond: r.gbs * 1e9, efficiency: fp32 > 0 ? r.gflops / fp32 : 0)
    }
    log("\(kernels.count) kernel rates measured")

    var collectives: [HardwareSpec.Collective] = []
    for ranks in collectiveRanks {
      let cluster = try LocalCluster(size: ranks, timeout: 120)
      for op in collectiveOperations {
        let results = try cluster.run { comm in
          try CollectiveBench.bandwidth(op, comm: comm, sizes: [latencyBytes, bandwidthBytes], repeats: 3, warmup: 1)
        }[0]
        if let c = collective(results, operation: op, backend: inProcess) { collectives.append(c) }
      }
    }
    log("collectives measured on the in-process backend at 2, 4, 8 ranks")

    let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
      .split(separator: "\n").first { $0.hasPrefix("model name") }
      .map { $0.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "" } ?? "unknown"
    let when = ISO8601DateFormatter().string(from: Date())
    let src = "palm plan --profile, \(when), \(cpu), \(threads) thread(s)"
    var peaks = ["fp32": HardwareSpec.Number(fp32 * 1e9, "\(src): PeakProbe.fp32 (FMA chains)")]
    if let b = bf16 { peaks["bf16"] = HardwareSpec.Number(b * 1e9, "\(src): PeakProbe.bf16 (vdpbf16ps chains)") }
    let shm = HardwareSpec.Network(
      name: inProcess, scope: "pod", topology: "measured",
      domainDevices: .init(1e9, "threads of one process"), linkBandwidth: .init(stream, "\(src): STREAM triad (unused: collectives measured)"),
      linksPerDevice: nil, devicesPerHost: nil, latency: .init(0, "measured per collective"), efficiency: .init(1, "measured per collective"))
    var between = shm
    between.scope = "between-pods"
    return HardwareSpec(
      name: "this-machine-\(threads)t", description: "This machine measured by palm plan --profile: \(cpu), \(cores) cores; a device is one rank of \(threads) thread(s).",
      kind: "cpu", precision: "fp32", peakFLOPs: peaks,
      memoryBytes: .init(Double(MemoryBudget.machineBytes), "\(src): physical memory or the cgroup limit (MemoryBudget)"),
      memoryBandwidth: .init(stream, "\(src): STREAM triad (KernelBench.bandwidth)"),
      memoryEfficiency: .init(1, "element-wise kernels measured (kernels); STREAM otherwise"),
      gemmCurve: nil, gemmPoints: .init(source: "\(src): GEMMBench at the tiny/small step shapes", points: points),
      attentionEfficiency: .init(kernels.first { $0.kernel == "attention.forward" }?.efficiency ?? 0.5, "\(src): KernelBench attention.forward"),
      devicesPerPod: nil, networks: [shm, between], kernels: kernels, collectives: collectives,
      threadsPerDevice: threads, concurrentDevices: copies, cores: cores, cpu: cpu)
  }

  /// `body` on `copies` rank threads at once (a LocalCluster); rank 0's result.
  static func concurrently<R: Sendable>(_ copies: Int, _ body: @escaping @Sendable () throws -> R) throws -> R {
    try concurrently(copies, each: [0]) { _ in try body() }[0]
  }

  /// `body` of each case on `copies` rank threads at once, the ranks starting each case together
  /// (a barrier), so that every timed sample runs while the other copies run too; rank 0's results.
  static func concurrently<C: Sendable, R: Sendable>(_ copies: Int, each cases: [C],
                                                    _ body: @escaping @Sendable (C) throws -> R) throws -> [R] {
    try LocalCluster(size: copies, timeout: 600).run { comm in
      try cases.map { c in
        try comm.barrier()
        return try body(c)
      }
    }[0]
  }
}
