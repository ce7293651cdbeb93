// palm bench exchange (issue #5 item 7): (a) collective bandwidth at 1 KiB … 64 MiB over MPI or the
// in-process backend (PalmParallel/CollectiveBench.swift); (b) in ONE run, two pods of T/2 threads
// against one pod of T threads with the same global batch, alternating rounds, medians: both
// tokens/s, their ratio (bar ≥ 0.97) and the share of the pod exchange hidden behind the backward
// pass (bar ≥ 90%). With --devices mpi outside mpirun, the two-pod side (and the collectives) run
// as a child `mpirun -np 2 <this palm> …` whose JSON line is read back; the one-pod side runs here.
import ArgumentParser
import Foundation
import PalmBench
import PalmModel
import PalmParallel
import PalmTrain
import PalmTensor

struct BenchExchange: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "exchange",
    abstract: "Collective bandwidth (1 KiB … 64 MiB) and the two-pod comparison: pods=2 × T/2 threads vs pods=1 × T threads.",
    discussion: """
      --devices local: everything in this process (ranks are threads). --devices mpi: outside mpirun this command starts `mpirun -np 2 --oversubscribe --bind-to none` itself (with --allow-run-as-root as root) for the collectives and for each two-pod round (`palm bench step --mesh pod=2 --format json`), and runs the one-pod side in this process; under mpirun it measures the collectives over the job's ranks and skips the comparison (which needs its own mpirun). Progress lines go to stderr; results to stdout (text, or one JSON line with --format json). The bars are reported, not enforced.
        palm bench exchange --devices mpi --config small --rounds 3
        palm bench exchange --devices local --config tiny --batch 4 --part pods
        mpirun --oversubscribe --bind-to none -np 4 palm bench exchange --part collectives
      """)

  enum Part: String, ExpressibleByArgument, CaseIterable { case all, collectives, pods }

  @Option(help: "local or mpi (default: mpi under mpirun, else local).")
  var devices: DeviceBackend?
  @Option(help: "What to measure: all, collectives or pods.")
  var part: Part = .all
  // The pods comparison's options (refused with --part collectives) and the collectives' (refused
  // with --part pods): optional, so that one given to the part that does not read it is an error.
  @Option(help: "Pods comparison: model preset, tiny or small (default small).")
  var config: String?
  @Option(help: "Pods comparison: global batch of both meshes (default: the preset's).")
  var batch: Int?
  @Option(help: "Pods comparison: tokens per sequence (default: the preset's).")
  var seqLen: Int?
  @Option(help: "Pods comparison: timed steps per round and mesh (default 3).")
  var steps: Int?
  @Option(help: "Pods comparison: untimed warm-up steps per round and mesh (default 1).")
  var warmup: Int?
  @Option(help: "Pods comparison: rounds; the two meshes alternate, figures are medians over rounds (default 3).")
  var rounds: Int?
  @Option(help: "Pods comparison: threads of the one-pod run; each of the two pods gets half (default 2).")
  var threads: Int?
  @Option(help: "Collectives: ranks (local, or the child mpirun's -np; default 2).")
  var ranks: Int?
  @Option(help: "Collectives: largest size in bytes, sizes 1 KiB × 4^k up to it (default 67108864).")
  var maxBytes: Int?
  @Option(help: "Collectives: timed repeats per size (default 5).")
  var repeats: Int?
  @Option(help: "Seconds a collective may wait for the other ranks.")
  var commTimeout: Double = 300
  @Option(help: "With --devices mpi: seconds each child mpirun may take (default 600).")
  var childTimeout: Double?
  @Option(help: "Pods comparison: remat policy, none (default), selective or full.")
  var remat: String?
  @Option(help: "Pods comparison: optimizer, adamw (default) or adafactor (PaLM's).")
  var optimizer: String?
  @Option(help: "Output format: text or json.")
  var format: OutputFormat = .text

  var preset: String { config ?? "small" }
  var timedSteps: Int { steps ?? 3 }
  var warmupSteps: Int { warmup ?? 1 }
  var roundCount: Int { rounds ?? 3 }
  var onePodThreads: Int { threads ?? 2 }
  var collectiveRanks: Int { ranks ?? 2 }
  var largestBytes: Int { maxBytes ?? 64 << 20 }
  var collectiveRepeats: Int { repeats ?? 5 }

  func validate() throws {
    guard let c = PalmConfig.presets[preset], c.parameterCount < 1 << 30 else {
      throw ValidationError("--config must be tiny or small (got \(preset))")
    }
    let most = BenchStep.maxSteps
    if !(1...most).contains(timedSteps) || !(0...most).contains(warmupSteps) || !(1...most).contains(roundCount) {
      throw ValidationError("--steps and --rounds must be 1...\(most), --warmup 0...\(most)")
    }
    if let problem = ThreadCounts.problem(onePodThreads, option: "--threads") { throw ValidationError(problem) }
    if onePodThreads < 2 || onePodThreads % 2 != 0 { throw ValidationError("--threads must be even and at least 2 (two pods get half each)") }
    if collectiveRanks < 1 || !(1...most).contains(collectiveRepeats) {
      throw ValidationError("--ranks must be >= 1 and --repeats 1...\(most)")
    }
    let cap = CollectiveBench.defaultSizes.max()!
    if !(1024...cap).contains(largestBytes) {
      throw ValidationError("--max-bytes must be 1024...\(cap) (the sizes measured are 1 KiB × 4^k up to 64 MiB; got \(largestBytes))")
    }
    try BenchStep.checkCommTimeout(commTimeout)
    if let t = childTimeout {
      if devices == .local { throw ValidationError("--child-timeout bounds the child mpirun of --devices mpi; --devices local starts none") }
      guard t > 0 && t <= LocalCluster.maxTimeout else {
        throw ValidationError("--child-timeout must be in (0, \(Int(LocalCluster.maxTimeout))] seconds (one day; got \(t))")
      }
    }
    if let b = batch, b < 1 { throw ValidationError("--batch must be at least 1") }
    if let r = remat, RematPolicy(rawValue: r) == nil { throw ValidationError("--remat must be none, selective or full") }
    if let o = optimizer, !["adamw", "adafactor"].contains(o) { throw ValidationError("--optimizer must be adamw or adafactor") }
    if let t = seqLen, t < 1 { throw ValidationError("--seq-len must be at least 1") }
    let podsOptions: [(String, Bool)] = [("--config", config != nil), ("--batch", batch != nil), ("--seq-len", seqLen != nil),
                                         ("--steps", steps != nil), ("--warmup", warmup != nil), ("--rounds", rounds != nil),
                                         ("--threads", threads != nil), ("--remat", remat != nil), ("--optimizer", optimizer != nil)]
    let collectiveOptions: [(String, Bool)] = [("--ranks", ranks != nil), ("--max-bytes", maxBytes != nil), ("--repeats", repeats != nil)]
    if part == .collectives, let (flag, _) = podsOptions.first(where: \.1) {
      throw ValidationError("\(flag) sets the pods comparison; --part collectives has none (use --part pods or all)")
    }
    if part == .pods, let (flag, _) = collectiveOptions.first(where: \.1) {
      throw ValidationError("\(flag) sets the collective measurements; --part pods has none (use --part collectives or all)")
    }
  }

  /// Everything one run measured (the --format json line).
  struct Report: Codable {
    var backend: String
    var collectives: [CollectiveBench.Result]
    var comparison: Comparison?
  }

  /// The two-pod comparison: per-round reports and their medians.
  struct Comparison: Codable {
    var config: String
    var devices: String
    var globalBatch: Int, seqLen: Int, rounds: Int
    var twoPods: [ShardedBenchReport], onePod: [ShardedBenchReport]
    var twoPodsTokensPerSecond: Double, onePodTokensPerSecond: Double
    /// twoPods / onePod tokens/s (bar ≥ 0.97).
    var ratio: Double
    /// Median hidden fraction of the two-pod exchange (bar ≥ 0.9), bytes and transfer time per step.
    var hiddenFraction: Double, exchangeBytes: Int, exchangeSeconds: Double
  }

  func run() throws {
    Threads.setBlocktime(milliseconds: 0)
    let devices = self.devices ?? DeviceBackend.detected
    let underMPI = MPILaunch.worldSize != nil
    var c = PalmConfig.presets[preset]!
    if let batch { c.batch = batch }
    if let seqLen { c.seqLen = seqLen }
    if part != .collectives && !underMPI {
      do { _ = try ShardedLayout(config: c, shape: try MeshShape(pod: 2)) } catch { throw CLIError("\(error)") }
    }
    var report = Report(backend: devices.rawValue, collectives: [], comparison: nil)
    if part != .pods { report.collectives = try collectives(devices: devices, underMPI: underMPI) }
    if part != .collectives {
      if underMPI {
        if MeshCLI.isReporter(devices) {
          BenchExchange.progress("skipping the pods comparison under mpirun: it starts its own mpirun (run `palm bench exchange --devices mpi` without mpirun)")
        }
      } else {
        report.comparison = try compare(c, devices: devices)
      }
    }
    guard MeshCLI.isReporter(devices) else { return }
    if format == .json {
      let e = JSONEncoder()
      e.outputFormatting = [.sortedKeys]
      print(String(decoding: try e.encode(report), as: UTF8.self))
    } else {
      print(text(report))
    }
  }

  // MARK: - Collectives

  func collectives(devices: DeviceBackend, underMPI: Bool) throws -> [CollectiveBench.Result] {
    let sizes = CollectiveBench.defaultSizes.filter { $0 <= largestBytes }
    let repeats = collectiveRepeats
    @Sendable func all(_ comm: any Communicator) throws -> [CollectiveBench.Result] {
      try CollectiveBench.Operation.allCases.filter { $0 != .sendRecv || comm.size >= 2 }.flatMap { op -> [CollectiveBench.Result] in
        if comm.rank == 0 { BenchExchange.progress("\(op.rawValue) on \(comm.size) rank(s) …") }
        return try CollectiveBench.bandwidth(op, comm: comm, sizes: sizes, repeats: repeats)
      }
    }
    switch devices {
    case .local:
      do { return try LocalCluster(size: collectiveRanks, timeout: commTimeout).run(all)[0] } catch { throw CLIError("\(error)") }
    case .mpi where underMPI:
      do { return try all(try MPICommunicator.world(timeout: commTimeout)) } catch {
        throw MeshCLI.afterStart(error, devices: devices, command: "bench exchange")
      }
    case .mpi:
      let out = try mpirun(np: collectiveRanks, ["bench", "exchange", "--devices", "mpi", "--part", "collectives", "--format", "json",
                                       "--max-bytes", "\(largestBytes)", "--repeats", "\(repeats)",
                                       "--comm-timeout", "\(commTimeout)"])
      for line in out.split(separator: "\n").reversed() where line.hasPrefix("{") {
        if let r = try? JSONDecoder().decode(Report.self, from: Data(line.utf8)) { return r.collectives }
      }
      throw CLIError("the mpirun child printed no collective results:\n\(out)")
    }
  }

  // MARK: - Pods comparison

  func compare(_ c: PalmConfig, devices: DeviceBackend) throws -> Comparison {
    let half = onePodThreads / 2
    var two: [ShardedBenchReport] = [], one: [ShardedBenchReport] = []
    func runTwo() throws {
      let r: ShardedBenchReport
      if devices == .local {
        r = ShardedBenchReport(try ShardedBench.runLocal(config: c, shape: try MeshShape(pod: 2), batch: c.batch, steps: timedSteps,
                                                         warmup: warmupSteps, threadsPerRank: half, timeout: commTimeout,
                                                         remat: RematPolicy(rawValue: remat ?? "none")!,
                                                         optimizer: BenchStep.optimizerSettings(optimizer)),
                               config: c.name, devices: "local")
      } else {
        let out = try mpirun(np: 2, ["bench", "step", "--config", preset, "--batch", "\(c.batch)", "--seq-len", "\(c.seqLen)",
                                     "--mesh", "pod=2", "--devices", "mpi", "--threads-per-rank", "\(half)",
                                     "--remat", remat ?? "none", "--optimizer", optimizer ?? "adamw",
                                     "--steps", "\(timedSteps)", "--warmup", "\(warmupSteps)", "--format", "json",
                                     "--comm-timeout", "\(commTimeout)"])
        guard let parsed = ShardedBenchReport.parse(lastOf: out) else {
          throw CLIError("the mpirun child printed no bench step result:\n\(out)")
        }
        r = parsed
      }
      two.append(r)
      BenchExchange.progress(String(format: "round %d/%d: pods=2 × %d thread(s) (%@): %.0f tokens/s, exchange %.2f MB/step in %.1f ms, hidden %.0f%%",
                                    two.count, roundCount, half, devices.rawValue, r.tokensPerSecond, Double(r.exchangeBytes) / 1e6,
                                    r.exchangeSeconds * 1e3, r.hiddenFraction * 100))
    }
    func runOne() throws {
      let r = ShardedBenchReport(try ShardedBench.runLocal(config: c, shape: try MeshShape(), batch: c.batch, steps: timedSteps,
                                                           warmup: warmupSteps, threadsPerRank: onePodThreads, timeout: commTimeout,
                                                           remat: RematPolicy(rawValue: remat ?? "none")!,
                                                           optimizer: BenchStep.optimizerSettings(optimizer)),
                                 config: c.name, devices: "local")
      one.append(r)
      BenchExchange.progress(String(format: "round %d/%d: pods=1 × %d threads: %.0f tokens/s", one.count, roundCount, onePodThreads,
                                    r.tokensPerSecond))
    }
    do {
      for k in 0..<roundCount {
        // Alternate which mesh goes first, so a slow phase of the shared machine hits both.
        if k % 2 == 0 { try runTwo(); try runOne() } else { try runOne(); try runTwo() }
      }
    } catch let e as CLIError { throw e } catch { throw CLIError("\(error)") }
    func median(_ xs: [Double]) -> Double { PalmTrain.median(xs) ?? 0 }  // 0 when no round ran
    let tTwo = median(two.map(\.tokensPerSecond)), tOne = median(one.map(\.tokensPerSecond))
    return Comparison(config: c.name, devices: devices.rawValue, globalBatch: c.batch, seqLen: c.seqLen, rounds: roundCount,
                      twoPods: two, onePod: one, twoPodsTokensPerSecond: tTwo, onePodTokensPerSecond: tOne,
                      ratio: tOne > 0 ? tTwo / tOne : 0, hiddenFraction: median(two.map(\.hiddenFraction)),
                      exchangeBytes: two.first?.exchangeBytes ?? 0, exchangeSeconds: median(two.map(\.exchangeSeconds)))
  }

  /// Runs `mpirun -np N <this palm> arguments…` and returns its stdout; throws on a non-zero exit.
  func mpirun(np: Int, _ arguments: [String]) throws -> String {
    try BenchExchange.mpirun(np: np, arguments, timeout: childTimeout ?? 600)
  }

  /// `mpirun -np N <this palm> arguments…` within `timeout` seconds (also `palm plan --profile`'s).
  static func mpirun(np: Int, _ arguments: [String], timeout childTimeout: Double) throws -> String {
    guard let mpirun = ChildProcess.which("mpirun") else {
      throw CLIError("--devices mpi needs mpirun on PATH (Debian: apt-get install openmpi-bin), or use --devices local")
    }
    var args = ["--oversubscribe", "--bind-to", "none", "-np", "\(np)"]
    if geteuid() == 0 { args.insert("--allow-run-as-root", at: 0) }
    args += [ChildProcess.selfExecutable] + arguments
    BenchExchange.progress("running: mpirun \(args.joined(separator: " "))")
    let (status, out): (Int32, String)
    do {
      // stdout captured, stderr (the ranks' progress lines) passed through.
      let r = try ChildProcess.run(mpirun, args, environment: ChildProcess.cleanEnvironment, stderr: .inherit,
                                   deadline: childTimeout)
      (status, out) = (r.status, String(decoding: r.stdout, as: UTF8.self))
    } catch { throw CLIError("\(error)") }
    guard status == 0 else { throw CLIError("mpirun \(args.joined(separator: " ")) exited with status \(status):\n\(out)") }
    return out
  }

  static func progress(_ line: String) { FileHandle.standardError.write(Data(("palm bench exchange: " + line + "\n").utf8)) }

  // MARK: - Text

  func text(_ r: Report) -> String {
    var lines: [String] = []
    if !r.collectives.isEmpty {
      lines.append("collective bandwidth (\(r.backend), \(r.collectives.first!.ranks) ranks; median of \(collectiveRepeats), slowest rank):")
      lines.append("  operation         bytes   median ms   algbw GB/s   busbw GB/s   ok")
      for x in r.collectives {
        let name = x.operation.padding(toLength: 14, withPad: " ", startingAt: 0)
        lines.append("  " + name + String(format: " %9d %11.3f %12.3f %12.3f   ", x.bytes, x.medianSeconds * 1e3,
                                          x.algbwGBps, x.busbwGBps) + (x.correct ? "yes" : "NO"))
      }
    }
    if let c = r.comparison {
      let two = c.twoPods.first, one = c.onePod.first
      lines.append("pods comparison (\(c.config), global batch \(c.globalBatch)×\(c.seqLen), \(c.rounds) round(s), medians):")
      lines.append(String(format: "  pods=2 × %d thread(s) (%@): %.0f tokens/s; exchange %d bytes/step, %.2f ms, hidden %.1f%%",
                          two?.threadsPerRank ?? 0, c.devices, c.twoPodsTokensPerSecond, c.exchangeBytes,
                          c.exchangeSeconds * 1e3, c.hiddenFraction * 100))
      lines.append(String(format: "  pods=1 × %d threads: %.0f tokens/s", one?.threadsPerRank ?? 0, c.onePodTokensPerSecond))
      lines.append(String(format: "  ratio %.3f (bar >= 0.97: %@); hidden %.1f%% (bar >= 90%%: %@)", c.ratio,
                          c.ratio >= 0.97 ? "met" : "NOT met", c.hiddenFraction * 100,
                          c.hiddenFraction >= 0.9 ? "met" : "NOT met"))
    }
    return lines.joined(separator: "\n")
  }
}
