// KernelSettings: serializes tests that change the kernels' process-wide settings (ISA, thread
// count, FLOP counting) so that suites running in parallel do not see each other's settings.

import CKernels
import Foundation
import PalmTensor

private let kernelSettingsLock = NSRecursiveLock()

/// Runs `body` while holding the global kernel-settings lock (nestable on one thread).
///
/// Use it around anything that reads or changes process-wide kernel state: the FLOP counter
/// (`pk_flops_*`), the forced ISA, or a comparison that needs the same ISA in two runs.
public func withKernelLock<R>(_ body: () throws -> R) rethrows -> R {
  kernelSettingsLock.lock()
  defer { kernelSettingsLock.unlock() }
  return try body()
}

/// Runs `body` with the kernels forced to `isa` (and, if given, `threads` OpenMP threads), under
/// the global kernel-settings lock; restores the previous ISA and thread count afterwards.
///
/// ```swift
/// for isa in ISA.supported { try withISA(isa, threads: 2) { try runKernel() } }
/// ```
/// - Throws: `KernelError` if `isa` is above `ISA.detected`, or whatever `body` throws.
public func withISA<R>(_ isa: ISA, threads: Int? = nil, _ body: () throws -> R) throws -> R {
  try withKernelLock {
    let oldISA = ISA.active, oldThreads = Threads.count
    try ISA.force(isa)
    if let threads { Threads.count = threads }
    defer {
      try? ISA.force(oldISA)
      Threads.count = oldThreads
    }
    return try body()
  }
}
