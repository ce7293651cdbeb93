// KernelError: the typed Swift form of a C kernel's pk_status.

import CKernels

/// An error reported by a C kernel (`pk_status` other than `PK_STATUS_OK`).
public struct KernelError: Error, Equatable, CustomStringConvertible {
  /// Which kind of problem the kernel found.
  public enum Kind: Equatable, Sendable {
    case badSize, badStride, nullPointer, badArgument, noMemory, unknown(Int32)
  }
  public let kind: Kind
  /// The kernel that reported it, e.g. "sgemm".
  public let kernel: String

  public init(status: pk_status, kernel: String) {
    switch status {
    case PK_STATUS_BAD_SIZE: kind = .badSize
    case PK_STATUS_BAD_STRIDE: kind = .badStride
    case PK_STATUS_NULL_POINTER: kind = .nullPointer
    case PK_STATUS_BAD_ARGUMENT: kind = .badArgument
    case PK_STATUS_NO_MEMORY: kind = .noMemory
    default: kind = .unknown(Int32(status.rawValue))
    }
    self.kernel = kernel
    self.message = String(cString: pk_status_string(status))
  }

  public let message: String
  public var description: String { "\(kernel): \(message)" }

  /// Throws unless `status` is `PK_STATUS_OK`.
  @inlinable
  public static func check(_ status: pk_status, _ kernel: @autoclosure () -> String) throws {
    if status != PK_STATUS_OK { throw KernelError(status: status, kernel: kernel()) }
  }
}
