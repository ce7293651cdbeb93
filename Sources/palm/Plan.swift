// palm plan: predict a training step of a PaLM-style model on a mesh of devices from first
// principles (PalmBench/Plan.swift), search meshes for N chips, or measure this machine into the
// hardware format (--profile). Nothing runs on the target hardware: every number is computed here.

import ArgumentParser
import Foundation
import PalmBench
import PalmModel
import PalmParallel
import PalmTensor
import PalmTrain

struct PlanCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "plan",
    abstract: "Predict memory, FLOPs, time, tokens/s, MFU and HFU of a training step on a device mesh.",
    discussion: """
      The cost model reuses the package's own accounting (MeshMemory, FLOPs, KernelBench's bytes) \
      with a hardware description (built-in: tpu-v4, tpu-v3, a100; or a JSON file, e.g. from \
      --profile) and a software preset (xla: PaLM's T5X on TPU; package: this package on a CPU). \
      Every assumption is printed with its source, and --sensitivity shows how MFU and HFU move \
      with each. A hardware file may carry published runs on that device (tpu-v4: MaxText's v4 \
      benchmarks): the plan is trusted only as far as it predicts them, so the device's compute \
      rates are calibrated on them, and the uncalibrated figures are printed too \
      (--no-calibration plans on the rates as given).

      Examples:
        # PaLM 540B as trained (2 pods x 3072 TPU v4), with the sensitivity table
        palm plan --config palm-540b --mesh pod=2,data=256,model=12 \\
          --remat full --batch 2048 --hardware tpu-v4 --sensitivity
        # every mesh x remat x micro-batching of 6144 chips, and where PaLM's ranks
        palm plan --config palm-540b --chips 6144 --batch 2048 \\
          --hardware tpu-v4 --mesh pod=2,data=256,model=12
        # measure this machine (MPI collectives too when mpirun is here), then plan on it
        palm plan --profile --threads 1 --output cpu-1t.json
        palm plan --config small --mesh data=2 --hardware cpu-1t.json
        palm plan --config small --mesh pod=2 --hardware cpu-1t.json --devices mpi
      """)

  enum Format: String, ExpressibleByArgument, CaseIterable { case markdown, json }
  enum Software: String, ExpressibleByArgument, CaseIterable { case xla, package }

  @Option(help: "Model preset: \(PalmConfig.presets.keys.sorted().joined(separator: ", ")).")
  var config: String?

  @Option(name: .customLong("config-file"), help: "Model shape as JSON (PalmConfig's fields: name, dModel, layers, heads, headDim, dFF, vocab, seqLen, batch).")
  var configFile: String?

  @Option(help: "Mesh pod=P,data=D,model=M (missing axes are 1). With --chips: the setting whose rank to show.")
  var mesh: String?

  @Option(help: "Rematerialization: none, selective or full (default full). With --chips: search only this policy.")
  var remat: RematPolicy?

  @Option(help: "Global batch in sequences (default: the preset's).")
  var batch: Int?

  @Option(name: .customLong("seq-len"), help: "Sequence length (default: the preset's).")
  var seqLen: Int?

  @Option(name: .customLong("micro-batches"), help: "Gradient-accumulation micro-batches per step (default 1). With --chips: search only this count.")
  var microBatches: Int?

  @Option(help: "Optimizer: adamw or adafactor (both keep two fp32 moments here).")
  var optimizer: String = "adafactor"

  @Option(help: "Hardware: tpu-v4, tpu-v3, a100, or a JSON file in the same format.")
  var hardware: String?

  @Option(help: "Software preset: xla (PaLM's T5X/GSPMD on TPU) or package (this package). Default: xla for accelerators, package for CPUs.")
  var software: Software?

  @Option(name: .customLong("threads-per-device"), help: "CPU hardware only: threads per device (default: cores / devices).")
  var threadsPerDevice: Int?

  @Option(help: "CPU hardware only: the ranks' backend, local (threads of one process) or mpi (processes under mpirun): whose measured collectives the plan uses. Default local.")
  var devices: DeviceBackend?

  @Option(help: "Search: rank every mesh of this many devices x remat x micro-batches that fits, by predicted MFU.")
  var chips: Int?

  @Option(help: "With --chips: rows to show.")
  var top: Int = 15

  @Flag(help: "Print how MFU and HFU move when each assumption is changed.")
  var sensitivity = false

  @Flag(name: .customLong("no-calibration"), help: "Plan on the hardware description's rates as given, not calibrated on its published runs (tpu-v4: MaxText's v4 benchmarks). The calibrated plan prints the uncalibrated figures too.")
  var noCalibration = false

  @Flag(help: "Measure this machine (peaks, GEMMs, kernels, memory bandwidth, collectives in-process and, with mpirun on PATH, over MPI) into a hardware file.")
  var profile = false

  @Option(help: "With --profile: threads per device to measure at (default: all cores).")
  var threads: Int?

  @Option(help: "With --profile: the file to write (atomically).")
  var output: String?

  @Option(help: "Output format: markdown or json.")
  var format: Format = .markdown

  func validate() throws {
    if profile {
      guard output != nil else { throw ValidationError("--profile needs --output FILE (the hardware description to write)") }
      if let t = threads, let problem = ThreadCounts.problem(t, option: "--threads") { throw ValidationError(problem) }
      if output!.isEmpty { throw ValidationError("--output must not be empty") }
      // --profile measures this machine and plans nothing: a planning option would be ignored.
      let planning: [(String, Bool)] = [
        ("--config", config != nil), ("--config-file", configFile != nil), ("--mesh", mesh != nil),
        ("--hardware", hardware != nil), ("--batch", batch != nil), ("--seq-len", seqLen != nil),
        ("--software", software != nil), ("--threads-per-device", threadsPerDevice != nil), ("--chips", chips != nil),
        ("--devices", devices != nil),
        ("--sensitivity", sensitivity), ("--remat", remat != nil), ("--micro-batches", microBatches != nil),
        ("--optimizer", optimizer != "adafactor"), ("--top", top != 15), ("--format", format != .markdown),
        ("--no-calibration", noCalibration),
      ]
      let given = planning.filter(\.1).map(\.0)
      if !given.isEmpty {
        throw ValidationError("--profile only measures this machine (with --threads, --output); \(given.joined(separator: ", ")) would be ignored: run `palm plan --hardware \(output!) ...` with them afterwards")
      }
      return
    }
    if threads != nil || output != nil {
      throw ValidationError("--threads and --output belong to --profile; to plan on a CPU, give --hardware FILE and --threads-per-device")
    }
    if chips == nil && top != 15 { throw ValidationError("--top needs --chips (it limits the search's rows)") }
    if chips != nil && sensitivity {
      throw ValidationError("--sensitivity applies to one setting: drop --chips, or run the search and then the chosen --mesh with --sensitivity")
    }
    if config != nil && configFile != nil { throw ValidationError("give --config or --config-file, not both") }
    if config == nil && configFile == nil { throw ValidationError("missing --config NAME or --config-file FILE") }
    if let config, PalmConfig.presets[config] == nil {
      throw ValidationError("unknown config \"\(config)\" (presets: \(PalmConfig.presets.keys.sorted().joined(separator: ", ")))")
    }
    if hardware == nil { throw ValidationError("missing --hardware (tpu-v4, tpu-v3, a100 or a JSON file)") }
    if chips == nil && mesh == nil { throw ValidationError("missing --mesh pod=P,data=D,model=M (or --chips N to search)") }
    if let b = batch, b < 1 { throw ValidationError("--batch must be at least 1 (got \(b))") }
    if let s = seqLen, s < 1 { throw ValidationError("--seq-len must be at least 1 (got \(s))") }
    if let k = microBatches, !(1...TrainOptions.maxMicroBatches).contains(k) {
      throw ValidationError("--micro-batches must be 1...\(TrainOptions.maxMicroBatches) (2^20, as palm train) (got \(k))")
    }
    if PlanInputs.optimizerMoments[optimizer] == nil { throw ValidationError("--optimizer must be adamw or adafactor (got \(optimizer))") }
    if let t = threadsPerDevice, !(1...HardwareSpec.maxCount).contains(t) {
      throw ValidationError("--threads-per-device must be 1...\(HardwareSpec.maxCount) (2^20) (got \(t))")
    }
    if let c = chips, !(1...PlanSearch.maxChips).contains(c) {
      throw ValidationError("--chips must be 1...\(PlanSearch.maxChips) (2^20, the mesh limit) (got \(c))")
    }
    if top < 1 { throw ValidationError("--top must be at least 1 (got \(top))") }
  }

  func run() throws {
    Threads.setBlocktime(milliseconds: 0)
    if profile { return try runProfile() }
    do {
      var c: PalmConfig
      if let configFile {
        guard let data = FileManager.default.contents(atPath: configFile) else { throw CLIError("cannot read --config-file \(configFile)") }
        do { c = try JSONDecoder().decode(PalmConfig.self, from: data) } catch {
          throw CLIError("--config-file \(configFile) is not a model config: \(error)")
        }
      } else {
        c = PalmConfig.presets[config!]!
      }
      if let batch { c.batch = batch }
      if let seqLen { c.seqLen = seqLen }
      try c.validate()
      let hw = try HardwareSpec.load(hardware!)
      if threadsPerDevice != nil && hw.kind != "cpu" {
        throw CLIError("--threads-per-device applies to CPU hardware only; \(hardware!) is \(hw.kind) hardware")
      }
      if devices != nil && hw.kind != "cpu" {
        throw CLIError("--devices applies to CPU hardware only (a --profile file); \(hardware!) is \(hw.kind) hardware, whose networks are described")
      }
      let shape = try mesh.map { try MeshShape(parsing: $0) } ?? MeshShape()
      let sw: PlanSoftware? = software.map { $0 == .xla ? .xla : .package }
      var inputs = PlanInputs(config: c, mesh: shape, remat: remat ?? .full,
                              microBatches: microBatches ?? 1, optimizer: optimizer, hardware: hw, software: sw,
                              threadsPerDevice: threadsPerDevice)
      if devices == .mpi { inputs.collectiveBackend = PlanProfile.mpi }
      if noCalibration && (hw.calibration?.runs ?? []).isEmpty {
        throw CLIError("--no-calibration: \(hardware!) carries no published runs to calibrate on, so there is nothing to turn off")
      }
      if let chips {
        // The search ranks on the calibrated rates (solved once; the given setting is not planned
        // on its own, so one that does not divide shows as "does not fit").
        let factor = noCalibration ? nil : try PlanCalibration.solve(hw)
        if let factor { inputs.hardware = hw.calibrated(factor) }
        // With --mesh, --remat and --micro-batches name the reference setting; without, they narrow the search.
        if mesh == nil { inputs.searchRemat = remat; inputs.searchMicroBatches = microBatches }
        var (rows, considered) = try PlanSearch.run(inputs, chips: chips)
        for i in rows.indices { rows[i].computeRateFactor = factor?.factor }
        let ref: (mesh: String, remat: String, microBatches: Int)? = mesh.map { _ in
          (mesh: shape.description, remat: (remat ?? .full).rawValue, microBatches: microBatches ?? 1)
        }
        if format == .json {
          // The top rows, and the reference setting's rank (nil: it does not fit), as the Markdown.
          struct Out: Encodable {
            let rows: [PlanSearch.Row], considered: Int, fitting: Int
            let reference: String?, referenceRank: Int?
            enum CodingKeys: String, CodingKey { case rows, considered, fitting, reference, referenceRank = "reference_rank" }
          }
          let rank = ref.flatMap { r in rows.firstIndex { $0.mesh == r.mesh && $0.remat == r.remat && $0.microBatches == r.microBatches } }
          var shown = Array(rows.prefix(top))
          if let rank, rank >= top { shown.append(rows[rank]) }
          let e = JSONEncoder()
          e.outputFormatting = [.sortedKeys]
          let out = Out(rows: shown, considered: considered, fitting: rows.count,
                        reference: ref.map { "\($0.mesh), remat \($0.remat), \($0.microBatches) micro-batch(es)" }, referenceRank: rank.map { $0 + 1 })
          print(String(decoding: try e.encode(out), as: UTF8.self))
        } else {
          print(PlanSearch.markdown(rows, considered: considered, chips: chips, top: top, reference: ref,
                                    calibration: factor), terminator: "")
        }
        return
      }
      var calibration: PlanCalibration? = nil
      if !noCalibration { (inputs, calibration) = try PlanCalibration.apply(inputs) }
      var plan = try Plan(inputs)
      plan.attach(calibration)
      let sens = sensitivity ? Plan.sensitivity(inputs) : []
      print(format == .json ? try plan.json(sensitivity: sens) : plan.markdown(sensitivity: sens), terminator: format == .json ? "\n" : "")
    } catch let e as CLIError {
      throw e
    } catch {
      throw CLIError("\(error)")
    }
  }

  func runProfile() throws {
    try Train.checkWritable(output!, flag: "--output")  // before the minutes of measuring
    let t = threads ?? ProcessInfo.processInfo.activeProcessorCount
    func log(_ line: String) { FileHandle.standardError.write(Data("palm plan --profile: \(line)\n".utf8)) }
    var spec = try PlanProfile.measure(threads: t, log: log)
    // The same collectives over MPI (ranks as processes), when mpirun is here: a child
    // `mpirun -np N palm bench exchange --devices mpi --part collectives` at each rank count.
    if ChildProcess.which("mpirun") != nil {
      // A failing mpirun costs the MPI rows, not the minutes of measurements before it.
      do {
        let mpi = try PlanProfile.collectiveRanks.flatMap { try mpiCollectives(ranks: $0) }
        spec.collectives = (spec.collectives ?? []) + mpi
        log("collectives measured over MPI at \(PlanProfile.collectiveRanks.map(String.init).joined(separator: ", ")) ranks")
      } catch {
        log("no MPI collectives measured (plans with --devices mpi will ask for them): \(error)")
      }
    } else {
      log("mpirun is not on PATH: no MPI collectives measured (plans with --devices mpi will ask for them)")
    }
    do { try spec.write(to: output!) } catch { throw CLIError("\(error)") }
    print("wrote \(output!) (\(spec.name))")
  }

  /// Latency (4 KiB) and bus bandwidth (4 MiB) of each collective over an mpirun job of `ranks`
  /// processes, as PlanProfile measures the in-process ones.
  func mpiCollectives(ranks: Int) throws -> [HardwareSpec.Collective] {
    let out = try BenchExchange.mpirun(np: ranks, ["bench", "exchange", "--devices", "mpi", "--part", "collectives", "--format", "json",
                                                   "--max-bytes", "\(PlanProfile.bandwidthBytes)", "--repeats", "3"], timeout: 600)
    guard let line = out.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
          let report = try? JSONDecoder().decode(BenchExchange.Report.self, from: Data(line.utf8)) else {
      throw CLIError("the mpirun child printed no collective results:\n\(out)")
    }
    return try PlanProfile.collectiveOperations.map { op in
      guard let c = PlanProfile.collective(report.collectives, operation: op, backend: PlanProfile.mpi) else {
        throw CLIError("the mpirun child's \(op.rawValue) results lack the \(PlanProfile.latencyBytes)- or \(PlanProfile.bandwidthBytes)-byte size")
      }
      return c
    }
  }
}
