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

  /// Whether the bf16 GEMM runs natively now (`vdpbf16ps`: AVX512_BF16 and the AVX-512 level);
  /// otherwise it is emulated (same rounding, fp32 FMA, at most the fp32 speed).
  public static var bf16Native: Bool { pk_isa_bf16_active() != 0 }
  /// Allows or forbids native bf16 (`PALM_ISA=avx512` forbids it); allowing needs AVX512_BF16.
  public static func forceBF16(_ enabled: Bool) throws {
    try KernelError.check(pk_isa_force_bf16(enabled ? 1 : 0), "isa_bf16")
  }
  /// Whether the CPU has AVX512_BF16.
  public static var hasBF16: Bool { pk_cpu_has_avx512_bf16() != 0 }
}

/// The OpenMP team that runs every parallel kernel.
public enum Threads {
  /// Number of threads the kernels use (a value below 1 sets 1, one beyond Int32 the Int32 maximum:
  /// the commands bound their thread options at parse time, so this only keeps the setter from trapping).
  public static var count: Int {
    get { Int(pk_threads_get()) }
    set { pk_threads_set(Int32(clamping: max(1, newValue))) }
  }

  /// Idle OpenMP workers spin for this long (ms) before sleeping; 0 returns the cores at once,
  /// which matters on a 2-core machine shared with Swift code or another MPI rank.
  public static func setBlocktime(milliseconds: Int) { pk_threads_set_blocktime(Int32(milliseconds)) }
}
