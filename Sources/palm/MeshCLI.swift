// MeshCLI: what the mesh subcommands (train --mesh, bench step --mesh, bench exchange) share: the
// --devices argument and how errors are reported. Bad input found before any work is reported once
// (under mpirun by rank 0; the other ranks found the same error and exit non-zero silently). A
// failure after MPI started cannot be recovered (a collective may be half done): the rank says why
// on stderr and MPI_Abort ends every rank of the job, so none waits for a dead peer.
import ArgumentParser
import Foundation
import PalmParallel

extension DeviceBackend: ExpressibleByArgument {}

enum MeshCLI {
  /// The error to throw for bad input found before any work.
  static func beforeWork(_ error: any Error, devices: DeviceBackend) -> any Error {
    if devices == .mpi, let r = MPILaunch.worldRank, r != 0 { return ExitCode(1) }
    return CLIError("\(error)")
  }

  /// The error to throw after the mesh started (never returns under MPI: the job is aborted).
  static func afterStart(_ error: any Error, devices: DeviceBackend, command: String) -> any Error {
    if devices == .mpi && MPIRuntime.isInitialized {
      FileHandle.standardError.write(Data("palm \(command) [rank \(MPIRuntime.worldRank)]: error: \(error)\n".utf8))
      MPIRuntime.abort(code: 1)
    }
    return CLIError("\(error)")
  }

  /// Fault drill for tests: PALM_FAULT_HANG=RANK:STEP makes that rank stop (sleep, no more MPI
  /// calls) after that update, so the others must time out naming it (Tests/PalmParallelTests/MeshTrainTests.swift).
  static var hangDrill: (rank: Int, step: Int)? {
    guard let v = ProcessInfo.processInfo.environment["PALM_FAULT_HANG"] else { return nil }
    let parts = v.split(separator: ":").compactMap { Int($0) }
    return parts.count == 2 ? (parts[0], parts[1]) : nil
  }

  /// Fault drill for tests: PALM_FAULT_KILL=RANK:STEP makes that rank kill itself with SIGKILL
  /// (kill -9: no cleanup, no message) after that update.
  static var killDrill: (rank: Int, step: Int)? {
    guard let v = ProcessInfo.processInfo.environment["PALM_FAULT_KILL"] else { return nil }
    let parts = v.split(separator: ":").compactMap { Int($0) }
    return parts.count == 2 ? (parts[0], parts[1]) : nil
  }

  /// Fault drill for tests: PALM_FAULT_SLOW_CHECKPOINT=SECONDS makes rank 0 take that much longer
  /// over each checkpoint write (a slow disk, or a hang), to show that a write longer than
  /// --comm-timeout does not make the waiting ranks give up, and one longer than --phase-timeout does.
  static var slowCheckpointDrill: Double? {
    ProcessInfo.processInfo.environment["PALM_FAULT_SLOW_CHECKPOINT"].flatMap(Double.init).flatMap { $0 > 0 ? $0 : nil }
  }

  /// True on the rank that prints results: rank 0 of an mpirun job, or the local process.
  static func isReporter(_ devices: DeviceBackend) -> Bool { devices == .local || (MPILaunch.worldRank ?? 0) == 0 }
}
