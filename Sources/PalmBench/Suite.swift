// Suite: `palm bench` with no subcommand, the README's main job. On synthetic tokens (no data
// file) it measures the peak (PeakSource), the memory bandwidth (STREAM), a reduced GEMM set, the
// kernel microbenchmarks with their roofline, a short training-step run per config × remat ×
// threads, and prints PaLM's MFU table with the measured rows. Results go to a folder: one JSON
// lines file per stage, report.md, mfu.svg and roofline.svg, each written atomically (AtomicFile).

import CKernels
import Foundation
import PalmModel
import PalmParallel
import PalmTensor

/// The whole benchmark suite.
///
/// ```swift
/// var o = Suite.Options.standard(outDir: "palm-bench", peak: .environment,
///                                stepRunner: StepRuns.childProcess(executable: StepRuns.currentExecutable()))
/// let outcome = try Suite.run(o)
/// print(outcome.mfuMarkdown)
/// ```
public enum Suite {
  /// What to run.
  public struct Options: Sendable {
    public var outDir: String
    /// Configs for the GEMM shapes, kernels and step runs.
    public var configs: [PalmConfig]
    public var threads: [Int]
    public var remats: [RematPolicy]
    /// The GEMM precisions of the step and mesh rows (each row divides by its precision's peak).
    public var precisions: [GEMMPrecision] = [.fp32]
    public var warmup: Int
    public var steps: Int
    public var kernelRepeats: Int
    public var kernelMinSampleSeconds: Double
    /// Floats per STREAM array (three arrays).
    public var streamFloats: Int
    public var gemmShapes: [GEMMStage.Shape]
    public var gemmSamples: Int
    public var peak: PeakSource
    public var stepRunner: StepRuns.Runner
    /// Shell commands that reproduce the run (for the report).
    public var reproduce: [String]
    /// Receives one line per stage (the CLI prints it on stderr with the elapsed time).
    public var progress: @Sendable (String) -> Void
    /// Seconds the whole run should take at most: step runs that would end later are skipped and
    /// listed in the report (nil: no limit).
    public var timeBudgetSeconds: Double?
    /// Mesh rows: (config, mesh, remat) updates of the one Trainer in-process (LocalCluster), the
    /// machine's threads shared among the mesh's ranks.
    public var meshRuns: [(config: PalmConfig, shape: MeshShape, remat: RematPolicy)] = []
    /// Decode rows (DecodeBench): these configs, `decodeTokens` tokens each, at the largest thread count.
    public var decodeConfigs: [PalmConfig] = []
    public var decodeTokens = 64

    public init(outDir: String, configs: [PalmConfig], threads: [Int], remats: [RematPolicy] = RematPolicy.allCases,
                warmup: Int, steps: Int, kernelRepeats: Int, kernelMinSampleSeconds: Double, streamFloats: Int,
                gemmShapes: [GEMMStage.Shape], gemmSamples: Int, peak: PeakSource, stepRunner: @escaping StepRuns.Runner,
                reproduce: [String] = [], progress: @escaping @Sendable (String) -> Void = { _ in }) {
      self.outDir = outDir; self.configs = configs; self.threads = threads; self.remats = remats
      self.warmup = warmup; self.steps = steps; self.kernelRepeats = kernelRepeats
      self.kernelMinSampleSeconds = kernelMinSampleSeconds; self.streamFloats = streamFloats
      self.gemmShapes = gemmShapes; self.gemmSamples = gemmSamples; self.peak = peak
      self.stepRunner = stepRunner; self.reproduce = reproduce; self.progress = progress
    }

    /// The suite's default time budget (the README promises at most 5 minutes on 2 cores).
    public static let defaultTimeBudgetSeconds = 300.0

    /// The default run: tiny and small, 1 and 2 threads (at most the cores), 1 warm-up + 3 steps,
    /// 3 kernel samples, 64 MiB STREAM arrays, the forward GEMMs of both configs.
    public static func standard(outDir: String, peak: PeakSource, stepRunner: @escaping StepRuns.Runner,
                                threads: [Int]? = nil) -> Options {
      let t = threads ?? ThreadCounts.standard
      var o = Options(outDir: outDir, configs: [.tiny, .small], threads: t, warmup: 1, steps: 3, kernelRepeats: 3,
                      kernelMinSampleSeconds: 0.005, streamFloats: 16 << 20,
                      gemmShapes: GEMMStage.shapes(for: .tiny) + GEMMStage.shapes(for: .small)
                        + [GEMMStage.Shape(name: "square 1024", m: 1024, n: 1024, k: 1024)],
                      gemmSamples: 3, peak: peak, stepRunner: stepRunner)
      o.timeBudgetSeconds = defaultTimeBudgetSeconds
      // tiny on (1,1,1) and one mesh per axis, without and with full remat (≈ 20 s on 2 cores).
      let shapes = [try! MeshShape(), try! MeshShape(pod: 2), try! MeshShape(data: 2), try! MeshShape(model: 2)]
      o.meshRuns = shapes.flatMap { sh in [RematPolicy.none, .full].map { (PalmConfig.tiny, sh, $0) } }
      o.decodeConfigs = [.shakespeare, .small]
      return o
    }

    /// A seconds-long run on a micro config (tests, and `palm bench --smoke`): every stage, one sample.
    public static func smoke(outDir: String, peak: PeakSource, stepRunner: @escaping StepRuns.Runner = StepRuns.inProcess) -> Options {
      let micro = PalmConfig(name: "micro", dModel: 32, layers: 2, heads: 2, headDim: 16, dFF: 64, vocab: 61,
                             seqLen: 24, batch: 2)
      var o = Options(outDir: outDir, configs: [micro], threads: [1], warmup: 0, steps: 1, kernelRepeats: 1,
                      kernelMinSampleSeconds: 0, streamFloats: 1 << 16, gemmShapes: GEMMStage.shapes(for: micro),
                      gemmSamples: 1, peak: peak, stepRunner: stepRunner)
      o.meshRuns = [(micro, try! MeshShape(pod: 2), .full)]
      o.decodeConfigs = [micro]
      o.decodeTokens = 8
      return o
    }
  }

  /// This machine and run, for the report.
  public struct Machine: Codable, Sendable {
    public var cpuModel: String
    public var logicalCPUs: Int
    public var isaDetected: String
    public var isaActive: String
    public var avx512BF16: Bool
    public var gitCommit: String?
    public var date: String
    public var kmpBlocktime: String?

    enum CodingKeys: String, CodingKey {
      case cpuModel = "cpu_model", logicalCPUs = "logical_cpus", isaDetected = "isa_detected"
      case isaActive = "isa_active", avx512BF16 = "avx512_bf16", gitCommit = "git_commit", date
      case kmpBlocktime = "kmp_blocktime"
    }

    /// Reads /proc/cpuinfo, the ISA dispatch, PALM_GIT_COMMIT or `git rev-parse HEAD` (best effort).
    public static func current() -> Machine {
      var model = "unknown"
      if let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
         let line = info.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
         let colon = line.firstIndex(of: ":") {
        model = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
      }
      let env = ProcessInfo.processInfo.environment
      let formatter = ISO8601DateFormatter()
      return Machine(cpuModel: model, logicalCPUs: ProcessInfo.processInfo.activeProcessorCount,
                     isaDetected: ISA.detected.description, isaActive: ISA.active.description,
                     avx512BF16: pk_cpu_has_avx512_bf16() != 0,
                     gitCommit: env["PALM_GIT_COMMIT"] ?? gitHead(), date: formatter.string(from: Date()),
                     kmpBlocktime: env["KMP_BLOCKTIME"])
    }

    static func gitHead() -> String? {
      for git in ["/usr/bin/git", "/usr/local/bin/git"] where FileManager.default.isExecutableFile(atPath: git) {
        guard let r = try? ChildProcess.run(git, ["rev-parse", "HEAD"], stderr: .discard), r.status == 0 else {
          return nil
        }
        let s = String(decoding: r.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return s.isEmpty ? nil : s
      }
      return nil
    }
  }

  /// The peak and bandwidth of one thread count.
  public struct Roofs: Codable, Sendable {
    public var threads: Int
    public var peakGFLOPs: Double?
    public var peakSource: String
    public var triadGBs: Double
    public var copyGBs: Double
    public var roofline: Roofline? { peakGFLOPs.map { Roofline(peakGFLOPs: $0, bandwidthGBs: triadGBs) } }

    enum CodingKeys: String, CodingKey {
      case threads, peakGFLOPs = "peak_gflops", peakSource = "peak_source", triadGBs = "triad_gbs", copyGBs = "copy_gbs"
    }
  }

  /// What a run produced.
  public struct Outcome: Sendable {
    /// Paths written, in order.
    public var files: [String]
    /// The MFU table (paper rows + measured rows) as Markdown.
    public var mfuMarkdown: String
    public var roofs: [Roofs]
    public var kernels: [KernelBench.Result]
    public var steps: [StepRuns.Measured]
    public var mesh: [MeshRow] = []
    /// Set when other processes disturbed the step runs (see `disturbance(_:)`): print it.
    public var warning: String?
  }

  /// A warning when the step runs cannot be trusted: any run during which other processes used
  /// more than 5% of the CPUs, or any MFU/HFU above 100% (the peak was measured while the machine
  /// was busier than during the run). Nil for a clean run.
  public static func disturbance(_ steps: [StepRuns.Measured]) -> String? {
    let busy = steps.filter { ($0.foreignCPU ?? 0) > 0.05 }
    let impossible = steps.filter { $0.row?.exceedsPeak ?? false }
    guard !busy.isEmpty || !impossible.isEmpty else { return nil }
    func names(_ m: [StepRuns.Measured]) -> String {
      m.map { "\($0.result.config) \($0.result.remat.rawValue) \($0.result.threads)T" }.joined(separator: ", ")
    }
    var w = "WARNING: these figures do not measure palm alone. "
    if !busy.isEmpty { w += "Other processes used more than 5% of the CPUs during \(busy.count) of \(steps.count) step runs (\(names(busy))). " }
    if !impossible.isEmpty {
      w += "MFU or HFU above 100% (\(names(impossible))) means the peak was measured while the machine was busier than during the run. "
    }
    return w + "Rerun `palm bench` on a quiet machine."
  }

  /// An output folder the suite will not write into: a file, a folder holding another run's (or
  /// anything else's) files, or one that cannot be made.
  public struct OutDirError: Error, CustomStringConvertible, Equatable {
    public let description: String
  }

  /// Checks that `dir` is a new or empty folder and makes it: a run never writes over another
  /// run's files (nor into a file's path).
  public static func prepareOutDir(_ dir: String) throws {
    let fm = FileManager.default
    var isDirectory: ObjCBool = false
    if fm.fileExists(atPath: dir, isDirectory: &isDirectory) {
      guard isDirectory.boolValue else {
        throw OutDirError(description: "--out \(dir) is a file, not a folder: give a new folder's path")
      }
      let entries = (try? fm.contentsOfDirectory(atPath: dir)) ?? []
      if !entries.isEmpty {
        throw OutDirError(description: "--out \(dir) already holds \(entries.count) file(s) (another run's?): give a new or empty folder, or move it away")
      }
    }
    do { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
      throw OutDirError(description: "--out \(dir): cannot create the folder (\((error as NSError).localizedDescription))")
    }
  }

  /// Runs every stage and writes the folder, which must be new or empty (`prepareOutDir`).
  /// Throws on a kernel, child-process or file error.
  public static func run(_ o: Options) throws -> Outcome {
    try prepareOutDir(o.outDir)
    var files: [String] = []
    func write(_ name: String, _ text: String) throws {
      let path = o.outDir + "/" + name
      try AtomicFile.write(to: path, bytes: Array(text.utf8))
      files.append(path)
    }
    let start = Date()
    func stage(_ text: String) { o.progress("[\(fixed(Date().timeIntervalSince(start), 1)) s] \(text)") }

    let machine = Machine.current()
    try write("machine.json", try JSONLines.encode([machine]))
    stage("machine: \(machine.cpuModel), \(machine.logicalCPUs) CPUs, ISA \(machine.isaActive)")

    // Peak and bandwidth per thread count.
    var roofs: [Roofs] = []
    for t in o.threads {
      let peak = try o.peak.gflops(t)
      let triad = try KernelBench.bandwidth(threads: t, kind: PK_STREAM_TRIAD, floats: o.streamFloats)
      let copy = try KernelBench.bandwidth(threads: t, kind: PK_STREAM_COPY, floats: o.streamFloats)
      roofs.append(Roofs(threads: t, peakGFLOPs: peak, peakSource: o.peak.name, triadGBs: triad, copyGBs: copy))
      stage("peak \(t) thread(s): " + (peak.map { fixed($0, 1) + " GFLOP/s (\(o.peak.name))" } ?? "unknown (set \(PeakSource.variable))")
            + "; STREAM triad \(fixed(triad, 1)) GB/s, copy \(fixed(copy, 1)) GB/s")
    }
    try write("roofs.jsonl", try JSONLines.encode(roofs))

    var gemm: [GEMMStage.Result] = []
    for r in roofs {
      gemm += try GEMMStage.run(o.gemmShapes, threads: r.threads, samples: o.gemmSamples, peakGFLOPs: r.peakGFLOPs)
    }
    try write("gemm.jsonl", try JSONLines.encode(gemm))
    stage("gemm: \(gemm.count) products, best \(fixed(gemm.map(\.gflops).max() ?? 0, 1)) GFLOP/s")

    var kernels: [KernelBench.Result] = []
    for c in o.configs {
      for r in roofs {
        kernels += try KernelBench.run(config: c, threads: r.threads, repeats: o.kernelRepeats,
                                       minSampleSeconds: o.kernelMinSampleSeconds, roofline: r.roofline)
      }
    }
    try write("kernels.jsonl", try JSONLines.encode(kernels))
    stage("kernels: \(kernels.count) measurements")

    let specs = o.configs.flatMap { c in
      o.remats.flatMap { rm in
        o.threads.flatMap { t in
          o.precisions.map { StepRuns.Spec(config: c, remat: rm, threads: t, warmup: o.warmup, steps: o.steps, precision: $0) }
        }
      }
    }
    let skippedRuns = SpecSink()
    let steps = try StepRuns.measure(specs, runner: o.stepRunner, peak: o.peak,
                                     deadline: o.timeBudgetSeconds.map { start.addingTimeInterval($0) },
                                     skipped: { skippedRuns.append($0) }, progress: stage)
    try write("steps.jsonl", try JSONLines.encode(steps))

    var meshRows: [MeshRow] = []
    let cores = o.threads.max() ?? 1
    for run in o.meshRuns {
      for precision in o.precisions {
        let perRank = max(1, cores / run.shape.count)
        let r = try ShardedBench.runLocal(config: run.config, shape: run.shape, batch: run.config.batch, steps: max(o.steps, 1),
                                          warmup: o.warmup, threadsPerRank: perRank, remat: run.remat, precision: precision)
        // The peak of the precision at all the mesh's threads (fp32's, labelled, where bf16 is emulated).
        let peak = try? o.peak.gflops(perRank * run.shape.count, precision: precision)
        let memory = try MeshMemory(config: run.config, shape: run.shape, remat: run.remat)
        let tps = r.tokensPerSecond
        let g = peak?.gflops
        meshRows.append(MeshRow(
          config: run.config.name, mesh: run.shape.description, remat: run.remat.rawValue, precision: precision.rawValue,
          peakPrecision: (peak?.peak ?? .fp32).rawValue, threadsPerRank: perRank, tokensPerSecond: tps,
          mfu: g.map { FLOPs.modelPerToken(run.config) * tps / ($0 * 1e9) },
          hfu: g.map { FLOPs.hardwarePerToken(run.config, remat: run.remat, mesh: run.shape) * tps / ($0 * 1e9) },
          plannedBytesPerRank: memory.totalBytes, exchangeHidden: run.shape.pod > 1 ? r.exchange.map(\.hiddenFraction).min() : nil))
        stage("mesh \(run.config.name) \(run.shape) remat \(run.remat.rawValue) \(precision.rawValue): \(fixed(tps, 0)) tokens/s")
      }
    }
    try write("mesh.jsonl", try JSONLines.encode(meshRows))

    var decodes: [DecodeBench.Result] = []
    for c in o.decodeConfigs {
      let r = try DecodeBench.run(config: c, threads: cores, tokens: o.decodeTokens)
      decodes.append(r)
      stage("decode \(c.name) \(cores) thread(s): \(DecodeBench.summary(r))")
    }
    try write("decode.jsonl", try JSONLines.encode(decodes))

    let rows = MFUTable.rows(measured: steps.compactMap(\.row))
    let mfuMarkdown = MFUTable.markdown(rows)
    try write("mfu.json", try MFUTable.json(rows))
    try write("mfu.svg", MFUTable.svg(rows))

    // Roofline chart at the largest thread count with a known peak.
    var rooflineNote = "roofline.svg not drawn: the peak is unknown (set \(PeakSource.variable) or run the peak probe)."
    if let r = roofs.last(where: { $0.peakGFLOPs != nil }), let roof = r.roofline {
      let points = kernels.filter { $0.threads == r.threads }.map {
        Roofline.Point(label: "\($0.shape.name) \($0.kernel.rawValue)", intensity: $0.intensity, gflops: $0.gflops)
      }
      try write("roofline.svg", roof.svg(points, title: "Roofline, \(r.threads) thread(s): kernels of palm"))
      rooflineNote = "roofline.svg: the kernels at \(r.threads) thread(s) under the STREAM-triad and peak roofs."
    }

    let warning = Self.disturbance(steps)
    var report = Self.report(machine: machine, options: o, roofs: roofs, gemm: gemm, kernels: kernels, steps: steps,
                             skipped: skippedRuns.all, mfuMarkdown: mfuMarkdown, rooflineNote: rooflineNote)
      + Self.meshMarkdown(meshRows) + Self.decodeMarkdown(decodes)
    if let warning { report = report.replacingOccurrences(of: "\n## ", with: "\n**\(warning)**\n\n## ", options: [], range: report.range(of: "\n## ")) }
    try write("report.md", report)
    stage("report written to \(o.outDir)/report.md")
    return Outcome(files: files, mfuMarkdown: mfuMarkdown, roofs: roofs, kernels: kernels, steps: steps, mesh: meshRows,
                   warning: warning)
  }

  /// One mesh row of the suite: the whole update of the one Trainer (optimizer included) on a mesh.
  public struct MeshRow: Codable, Sendable, Equatable {
    public let config: String, mesh: String, remat: String
    /// The GEMM precision of the run, and the peak its MFU divides by (fp32 where bf16 is emulated).
    public let precision: String, peakPrecision: String
    public let threadsPerRank: Int
    public let tokensPerSecond: Double
    /// Against the peak of `peakPrecision` measured at all the mesh's threads (nil when unknown).
    public let mfu: Double?, hfu: Double?
    /// MeshMemory's total: parameters, gradients, optimizer state, gathered buffers, activations.
    public let plannedBytesPerRank: Int
    /// Pods only: the smallest share of the pod exchange hidden behind the backward.
    public let exchangeHidden: Double?
    enum CodingKeys: String, CodingKey {
      case config, mesh, remat, precision, peakPrecision = "peak_precision", threadsPerRank = "threads_per_rank"
      case tokensPerSecond = "tokens_per_s", mfu, hfu
      case plannedBytesPerRank = "planned_bytes_per_rank", exchangeHidden = "exchange_hidden"
    }
  }

  static func decodeMarkdown(_ rows: [DecodeBench.Result]) -> String {
    guard !rows.isEmpty else { return "" }
    var s = "\n## Decoding\n\nOne token at a time with the KV cache (`palm sample`'s loop, greedy, from a fresh "
      + "initialization), against the weight-bandwidth bound: every weight is read once a token, so at the STREAM "
      + "triad bandwidth the rate is at most bandwidth / bytes per token (weights that fit in the last-level cache can beat it).\n\n"
    s += "| Config | Threads | Tokens | Tokens/s | MB a token | Triad GB/s | Bound tokens/s | Of bound | Weights fit in LLC |\n"
    s += "|---|---:|---:|---:|---:|---:|---:|---:|---|\n"
    for r in rows {
      s += "| \(r.config) | \(r.threads) | \(r.tokens) | \(fixed(r.tokensPerSecond, 1)) | \(fixed(r.bytesPerToken / 1e6, 1)) | "
        + "\(fixed(r.bandwidthGBs, 1)) | \(fixed(r.boundTokensPerSecond, 0)) | \(pct(r.fractionOfBound, 0)) | "
        + "\(r.weightsFitInCache.map { $0 ? "yes" : "no" } ?? "?") |\n"
    }
    return s
  }

  static func meshMarkdown(_ rows: [MeshRow]) -> String {
    guard !rows.isEmpty else { return "" }
    var s = "\n## Meshes (the one Trainer, whole update, in-process ranks)\n\n"
    s += "| Config | Mesh | Remat | Precision | Peak | Threads/rank | Tokens/s | MFU | HFU | Planned MiB/rank | Exchange hidden |\n"
    s += "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|\n"
    for r in rows {
      s += "| \(r.config) | \(r.mesh) | \(r.remat) | \(r.precision) | \(r.peakPrecision) | \(r.threadsPerRank) | \(fixed(r.tokensPerSecond, 0)) | "
        + "\(r.mfu.map { pct($0, 1) } ?? "—") | \(r.hfu.map { pct($0, 1) } ?? "—") | "
        + "\(fixed(Double(r.plannedBytesPerRank) / 1_048_576, 1)) | \(r.exchangeHidden.map { pct($0, 0) } ?? "—") |\n"
    }
    return s
  }

  /// The Markdown report of a run.
  static func report(machine: Machine, options o: Options, roofs: [Roofs], gemm: [GEMMStage.Result],
                     kernels: [KernelBench.Result], steps: [StepRuns.Measured], skipped: [StepRuns.Spec], mfuMarkdown: String,
                     rooflineNote: String) -> String {
    var s = "# palm bench report\n\n"
    s += "- Date: \(machine.date)\n- CPU: \(machine.cpuModel), \(machine.logicalCPUs) logical CPUs\n"
    s += "- ISA: detected \(machine.isaDetected), active \(machine.isaActive)"
      + (machine.avx512BF16 ? " (AVX512-BF16 present)" : "") + "\n"
    s += "- Commit: \(machine.gitCommit ?? "unknown")\n- KMP_BLOCKTIME: \(machine.kmpBlocktime ?? "unset")\n"
    s += "- Configs: \(o.configs.map(\.name).joined(separator: ", ")); threads \(o.threads.map(String.init).joined(separator: ", ")); "
      + "step runs: \(o.warmup) warm-up + \(o.steps) timed steps (median)\n\n"
    if !o.reproduce.isEmpty {
      s += "Reproduce:\n\n```sh\n" + o.reproduce.joined(separator: "\n") + "\n```\n\n"
    }
    s += "Timings on a shared machine are noisy: medians and minima over repeats are reported.\n\n"
    s += "## Peak and memory bandwidth\n\n| Threads | Peak GFLOP/s | Source | STREAM triad GB/s | STREAM copy GB/s | Ridge (FLOP/byte) |\n"
    s += "|---:|---:|---|---:|---:|---:|\n"
    for r in roofs {
      s += "| \(r.threads) | \(r.peakGFLOPs.map { fixed($0, 1) } ?? "unknown") | \(r.peakSource) | \(fixed(r.triadGBs, 1)) | "
        + "\(fixed(r.copyGBs, 1)) | \(r.roofline.map { fixed($0.ridge, 1) } ?? "—") |\n"
    }
    s += "\n## GEMM (reduced set; `palm bench matmul` has the full one)\n\n" + GEMMStage.markdown(gemm)
    s += "\n## Kernels and roofline\n\nBytes are the compulsory traffic (each operand once); the memory roof is the "
      + "STREAM triad bandwidth, so a kernel whose operands stay in cache can exceed 100% of its bound. "
      + rooflineNote + "\n\n" + KernelBench.markdown(kernels)
    s += "\n## Training steps\n\nForward + backward on synthetic tokens; `palm bench` runs each in its own process (peak RSS per run; "
      + "not with --smoke or --in-process). "
      + "Other load: the share of all CPUs other processes used during the run (a disturbed figure when above a few %).\n\n"
    s += "| Config | Precision | Remat | Threads | Median step s | Tokens/s | Model MFLOPs/token | Hardware MFLOPs/token | Peak | MFU | HFU | HFU full T | Planned activations MiB | Peak RSS MiB | Loss | Other load |\n"
    s += "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n"
    for m in steps {
      let r = m.result
      s += "| \(r.config) | \((r.precision ?? .fp32).rawValue) | \(r.remat.rawValue) | \(r.threads) | \(fixed(r.medianSeconds, 3)) | \(fixed(r.tokensPerSecond, 0)) | "
        + "\(fixed(r.modelFLOPsPerToken / 1e6, 2)) | \(fixed(r.hardwareFLOPsPerToken / 1e6, 2)) | \(m.row.map { $0.peakPrecision.rawValue } ?? "—") | "
        + "\(m.row.map { pct($0.mfu, 1) } ?? "—") | \(m.row.map { pct($0.hfu, 1) } ?? "—") | \(m.row.map { pct($0.hfuFullT, 1) } ?? "—") | "
        + "\(fixed(Double(r.plannedActivationBytes) / 1_048_576, 1)) | "
        + "\(r.peakRSSBytes.map { fixed(Double($0) / 1_048_576, 1) } ?? "—") | \(fixed(Double(r.lastLoss), 3)) | "
        + "\(m.foreignCPU.map { pct($0, 0) } ?? "—") |\n"
    }
    if !skipped.isEmpty {
      s += "\nSkipped to stay within the time budget of \(fixed(o.timeBudgetSeconds ?? 0, 0)) s (rerun them with "
        + "`palm bench step`): " + skipped.map { "\($0.config.name) \($0.precision.rawValue) \($0.remat.rawValue) \($0.threads)T" }.joined(separator: ", ") + ".\n"
    }
    s += "\n" + mfuMarkdown.replacingOccurrences(of: "\n## ", with: "\n### ")
    return s
  }
}

/// Step runs the time budget skipped.
private final class SpecSink: @unchecked Sendable {
  private let lock = NSLock()
  private var specs: [StepRuns.Spec] = []
  func append(_ s: StepRuns.Spec) { lock.lock(); specs.append(s); lock.unlock() }
  var all: [StepRuns.Spec] { lock.lock(); defer { lock.unlock() }; return specs }
}
