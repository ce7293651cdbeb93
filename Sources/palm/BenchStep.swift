// palm bench step: time the training step (forward + backward; with --optimizer the update too) of
// a preset in fp32 or bf16 (--precision); with --mesh, the sharded training step on a mesh
// (BenchStepMesh.swift).
import ArgumentParser
import Foundation
import PalmBench
import PalmModel
import PalmParallel
import PalmTensor

struct BenchStep: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "step",
    abstract: "Time the training step (forward + backward; --optimizer adds the update) and report tokens/s and MFU.",
    discussion: """
      --precision bf16 runs every GEMM on bf16-rounded inputs with fp32 accumulation (fp32 master weights; docs/ARCHITECTURE.md, "Mixed precision"); its MFU and HFU divide by the bf16 dot-product peak measured in this process. An fp32 run gives its MFU against the fp32 FMA peak and, labelled, against the bf16 peak. --optimizer adamw|adafactor ends every timed step with the update, as a peer's timed opt.step() does.
        palm bench step --config small --threads 2 --precision bf16 --optimizer adamw

      With --mesh pod=P,data=D,model=M: times the sharded training step (forward, backward, pod exchange, AdamW update) on that mesh, on threads of this process (--devices local) or as the ranks of mpirun (--devices mpi, the default under mpirun; only rank 0 prints), with --threads-per-rank OpenMP threads per rank. Prints tokens/s and, per step, the bytes exchanged between pods, the exchange time and the fraction of it hidden behind the backward pass (rank 0's). --batch is the global batch.
        palm bench step --config tiny --mesh pod=2 --devices local --threads-per-rank 1
        mpirun --oversubscribe --bind-to none -np 2 palm bench step --config small --mesh pod=2 --threads-per-rank 1 --format json
      """)

  @OptionGroup var compute: ComputeOptions

  @Option(help: "Model preset: tiny or small.")
  var config = "tiny"

  @Option(help: "Rematerialization policy: none, selective or full.")
  var remat = "none"

  @Option(help: "Sequences per step (default: the preset's).")
  var batch: Int?

  @Option(help: "Untimed warm-up steps.")
  var warmup = 2

  @Option(help: "Timed steps.")
  var steps = 5

  @Option(help: "Peak FLOP/s of the cores used at --precision, in GFLOP/s, for MFU (default: measured now; `palm peak` prints both).")
  var peak: Double?

  @Option(help: "GEMM precision: fp32, or bf16 (inputs rounded to bf16, fp32 accumulation and master weights).")
  var precision: GEMMPrecision = .fp32

  @Option(help: "Output format: text or json.")
  var format: OutputFormat = .text

  @Option(help: "Tokens per sequence (default: the preset's).")
  var seqLen: Int?

  @Option(help: "Vocabulary size (default: the preset's 256 bytes), e.g. 32768 for a subword vocabulary's head.")
  var vocab: Int?

  @Option(help: "Time the sharded step on a mesh pod=P,data=D,model=M (see below).")
  var mesh: String?

  @Option(help: "With --mesh: local (threads of this process) or mpi (the ranks of mpirun). Default: mpi under mpirun, else local.")
  var devices: DeviceBackend?

  @Option(help: "The optimizer whose update each timed step includes: adamw or adafactor (PaLM's). With --mesh the default is adamw; without it, no update.")
  var optimizer: String?
  @Option(help: "With --mesh: OpenMP threads per rank (default: --threads, else cores / ranks on this machine).")
  var threadsPerRank: Int?

  @Option(help: "With --mesh: seconds a collective may wait for the other ranks (default 300).")
  var commTimeout: Double?

  func validate() throws {
    guard let c = PalmConfig.presets[config], c.parameterCount < 1 << 30 else {
      throw ValidationError("--config must be tiny or small (got \(config))")
    }
    guard RematPolicy(rawValue: remat) != nil else {
      throw ValidationError("--remat must be none, selective or full (got \(remat))")
    }
    if !(1...Self.maxSteps).contains(steps) || !(0...Self.maxSteps).contains(warmup) {
      throw ValidationError("--steps must be 1...\(Self.maxSteps) and --warmup 0...\(Self.maxSteps) (got \(steps), \(warmup))")
    }
    if let p = peak, let problem = Self.peakProblem(p) { throw ValidationError(problem) }
    if let b = batch, b < 1 { throw ValidationError("--batch must be at least 1") }
    if let t = seqLen, t < 1 { throw ValidationError("--seq-len must be at least 1") }
    if let v = vocab, !(2...(1 << 20)).contains(v) { throw ValidationError("--vocab must be in 2...1048576 (got \(v))") }
    if let t = threadsPerRank, let problem = ThreadCounts.problem(t, option: "--threads-per-rank") { throw ValidationError(problem) }
    if let o = optimizer, !["adamw", "adafactor"].contains(o) { throw ValidationError("--optimizer must be adamw or adafactor") }
    if mesh != nil && peak != nil {
      throw ValidationError("--peak gives the single-device step's MFU; the --mesh report is tokens/s and the exchange (palm bench has mesh MFU rows)")
    }
    if mesh == nil && (devices != nil || threadsPerRank != nil || commTimeout != nil) {
      throw ValidationError("--devices, --threads-per-rank and --comm-timeout need --mesh")
    }
    if let t = commTimeout { try Self.checkCommTimeout(t) }
  }

  /// The most timed or warm-up steps (and samples of `palm peak` / `bench matmul --repeat`) a
  /// benchmark accepts: far more than any figure needs, and a bound on how long a typo can run.
  static let maxSteps = 10_000

  /// Why `--peak` (GFLOP/s) cannot be an MFU denominator, or nil: zero, negative, nan and inf are
  /// refused rather than printed as "peak unknown" or MFU 0%.
  static func peakProblem(_ gflops: Double) -> String? {
    gflops > 0 && gflops.isFinite ? nil : "--peak must be a positive number of GFLOP/s (got \(gflops))"
  }

  /// --comm-timeout of `bench step` and `bench exchange`: (0, 1 day] seconds, the bound of the
  /// in-process backend's waits (LocalCluster.maxTimeout).
  static func checkCommTimeout(_ t: Double) throws {
    guard t > 0 && t <= LocalCluster.maxTimeout else {
      throw ValidationError("--comm-timeout must be in (0, \(Int(LocalCluster.maxTimeout))] seconds (one day; got \(t))")
    }
  }

  func run() throws {
    try compute.apply()
    if let mesh { return try runMesh(mesh) }
    var c = PalmConfig.presets[config]!
    if let batch { c.batch = batch }
    if let seqLen { c.seqLen = seqLen }
    if let vocab { c.vocab = vocab }
    if precision == .bf16 && !ISA.bf16Native { BenchStep.noteEmulatedBF16() }
    let r = try StepBench.run(config: c, remat: RematPolicy(rawValue: remat)!, warmup: warmup, steps: steps,
                              precision: precision, update: optimizer.map { BenchStep.optimizerSettings($0) })
    var peaks = try StepRuns.Peaks.of(BenchDefaults.peak, threads: r.threads, precision: precision)
    if let peak { peaks = StepRuns.Peaks(gflops: peak, precision: precision) }
    if format == .json {
      print(try StepRuns.jsonLine(r, config: c, peaks: peaks))
      return
    }
    let mfu = StepRuns.utilizationText(r, config: c, peaks: peaks)
    print("""
      step \(r.config) \(precision.rawValue) remat=\(r.remat.rawValue) threads=\(r.threads) batch=\(r.batch)×\(r.seqLen)\(r.update.map { " update=\($0)" } ?? " (no update)")
        step seconds: best \(String(format: "%.4f", r.bestSeconds)) median \(String(format: "%.4f", r.medianSeconds)) (\(r.steps) steps)
        tokens/s: median \(String(format: "%.0f", r.tokensPerSecond)) best \(String(format: "%.0f", r.bestTokensPerSecond))
        model FLOPs/token \(String(format: "%.2f", r.modelFLOPsPerToken / 1e6)) M, hardware \(String(format: "%.2f", r.hardwareFLOPsPerToken / 1e6)) M
        model GFLOP/s \(String(format: "%.1f", r.modelFLOPsPerSecond / 1e9)), \(mfu)
        activations planned \(r.plannedActivationBytes) B (saved \(r.plannedSavedBytes), scratch \(r.plannedScratchBytes)), parameters \(r.parameterBytes) B
        peak RSS \(r.peakRSSBytes.map(String.init) ?? "?") B, last loss \(r.lastLoss)
      """)
    // Flag a utilization above 100% (MeasuredRow.exceedsPeak, as the suite does) rather than print it as a result.
    if let row = StepRuns.row(r, config: c, peaks: peaks), row.exceedsPeak {
      let why = peak != nil ? "the --peak given is below what the steps reached."
        : PeakSource.environmentSetting(bf16: peaks.precision == .bf16).map { "the peak set by \($0.variable)=\($0.value) is below what the steps reached." }
        ?? "the peak was measured while the machine was busier than during the steps. Rerun on a quiet machine, or pass --peak."
      FileHandle.standardError.write(Data("WARNING: MFU or HFU above 100%: \(why)\n".utf8))
    }
  }

  /// The one line a bf16 run prints where bf16 is emulated (no AVX512_BF16, or --isa below it).
  static func noteEmulatedBF16() {
    FileHandle.standardError.write(Data("note: \(bf16EmulationText)\n".utf8))
  }

  /// The one wording of emulated bf16 (bench commands on stderr, `palm train`'s header).
  static var bf16EmulationText: String {
    "bf16 is emulated (\(ISA.hasBF16 ? "--isa below avx512bf16" : "no AVX512_BF16 on this CPU")): "
      + "operands rounded to bf16, fp32 FMA on \(ISA.active), at most the fp32 speed"
  }
}
