// MeshLauncher: where a mesh's ranks come from, for the CLI (`--devices local|mpi`).
//
// `local`: a LocalCluster in this process, one thread per rank. `mpi`: this process is one rank of
// an mpirun job. Open MPI's launcher exports OMPI_COMM_WORLD_SIZE / _RANK / _LOCAL_SIZE to every
// rank before MPI_Init, so a mesh that does not match the job is refused before any MPI call (and
// `mpi` is the default exactly when that variable is set).

import PalmModel
import Foundation
import PalmTensor

/// Where the devices (ranks) of a mesh run.
public enum DeviceBackend: String, Sendable, CaseIterable {
  /// Threads of this process (LocalCluster).
  case local
  /// Processes of an mpirun job (MPICommunicator).
  case mpi

  /// `mpi` when this process was started by mpirun, else `local`.
  public static var detected: DeviceBackend { MPILaunch.worldSize != nil ? .mpi : .local }
}

/// What mpirun told this process through its environment (nil outside mpirun).
public enum MPILaunch {
  static func env(_ key: String) -> Int? { ProcessInfo.processInfo.environment[key].flatMap { Int($0) } }
  /// Ranks in the job (OMPI_COMM_WORLD_SIZE).
  public static var worldSize: Int? { env("OMPI_COMM_WORLD_SIZE") }
  /// This process's rank (OMPI_COMM_WORLD_RANK).
  public static var worldRank: Int? { env("OMPI_COMM_WORLD_RANK") }
  /// Ranks on this machine (OMPI_COMM_WORLD_LOCAL_SIZE).
  public static var localSize: Int? { env("OMPI_COMM_WORLD_LOCAL_SIZE") }
}

public enum MeshLauncher {
  /// Throws a `MeshError` when `shape` cannot run on `devices`: for MPI its size must equal the
  /// number of ranks mpirun started (1 when not launched by mpirun). No communication.
  public static func check(_ shape: MeshShape, devices: DeviceBackend) throws {
    guard devices == .mpi else { return }
    let ranks = MPILaunch.worldSize ?? 1
    guard shape.count == ranks else {
      let how = MPILaunch.worldSize == nil
        ? "this process was not started by mpirun (1 rank); launch it with mpirun -np \(shape.count)"
        : "mpirun started \(ranks) ranks; use mpirun -np \(shape.count) or a mesh of \(ranks) devices"
      throw MeshError("mesh \(shape) has \(shape.count) devices but \(how)")
    }
  }

  /// OpenMP threads per rank when none is given: OpenMP's default for this process (the cores, or
  /// OMP_NUM_THREADS) shared among this machine's ranks. Call it before setting `Threads.count`.
  public static func defaultThreadsPerRank(_ shape: MeshShape, devices: DeviceBackend) -> Int {
    let cores = Threads.count
    return max(1, cores / max(1, ranksHere(shape, devices: devices)))
  }

  /// The devices of `shape` on this machine: all of them as threads, or the mpirun ranks placed here.
  public static func ranksHere(_ shape: MeshShape, devices: DeviceBackend) -> Int {
    devices == .local ? shape.count : (MPILaunch.localSize ?? 1)
  }

  /// Runs `body` once per rank of `shape` and returns rank 0's result (local) or this process's
  /// (MPI). Each rank's thread gets `threadsPerRank` OpenMP threads. The mesh of one local device
  /// runs `body` on the calling thread with a `SoloCommunicator` (no thread, nothing to wait for).
  /// MPI is initialised here and finalized at exit; `timeout` bounds every wait of a collective,
  /// `phaseTimeout` every `whileBusy` phase (seconds; nil: 10 × `timeout`).
  /// - Throws: what `check` throws (before any work), or the first rank's failure.
  public static func run<R: Sendable>(shape: MeshShape, devices: DeviceBackend, threadsPerRank: Int,
                                      timeout: Double, phaseTimeout: Double? = nil,
                                      _ body: @escaping @Sendable (any Communicator) throws -> R) throws -> R {
    try check(shape, devices: devices)
    switch devices {
    case .local where shape.count == 1:
      Threads.count = threadsPerRank
      return try body(SoloCommunicator(name: "world"))
    case .local:
      let cluster = try LocalCluster(size: shape.count, timeout: timeout, phaseTimeout: phaseTimeout)
      return try cluster.run { comm in
        Threads.count = threadsPerRank  // a per-thread OpenMP setting: each rank thread sets its own
        return try body(comm)
      }[0]
    case .mpi:
      let world = try MPICommunicator.world(timeout: timeout, phaseTimeout: phaseTimeout)
      Threads.count = threadsPerRank
      return try body(world)
    }
  }
}
