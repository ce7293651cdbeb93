// Threads and ISA: the OpenMP team size and the kernels' instruction set, set from Swift.

import CKernels

/// The kernels' instruction-set level.
public enum ISA: Int, CaseIterable, Comparable, Sendable, CustomStringConvertible {
  case scalar = 0, avx2 = 1, avx512 = 2

  public static func < (a: ISA, b: ISA) -> Bool { a.rawValue < b.rawValue }
  public var description: String { String(cString: pk_isa_name(pk_isa(rawValue: UInt32(rawValue)))) }

  /// The best level this CPU supports.
  public static var detected: ISA { ISA(rawValue: Int(pk_isa_detected().rawValue)) ?? .scalar }
  /// The level the kernels use now (`PALM_ISA` in the environment can lower it).
  public static var active: ISA { ISA(rawValue: Int(pk_isa_active().rawValue)) ?? .scalar }
  /// Every level this CPU can run, lowest first.
  public static var supported: [ISA] { allCases.filter { $0 <= detected } }

  /// Makes the kernels use `isa` (at most `detected`).
  public static func force(_ isa: ISA) throws {
    try KernelError.check(pk_isa_force(pk_isa(rawValue: UInt32(isa.rawValue))), "isa")
  }
}

/// The OpenMP team that runs every parallel kernel.
public enum Threads {
  /// Number of threads the kernels use.
  public static var count: Int {
    get { Int(pk_threads_get()) }
    set { pk_threads_set(Int32(max(1, newValue))) }
  }

  /// Idle OpenMP workers spin for this long (ms) before sleeping; 0 returns the cores at once,
  /// which matters on a 2-core machine shared with Swift code or another MPI rank.
  public static func setBlocktime(milliseconds: Int) { pk_threads_set_blocktime(Int32(milliseconds)) }
}
