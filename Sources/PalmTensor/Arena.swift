// Arena: one aligned block carved into tensors by a bump pointer, reset once per step.
//
// The training step allocates every activation from an arena sized beforehand by the memory plan,
// so the hot path never calls malloc (llm.c's malloc_and_point, ggml's ggml_init(mem_size)).

import CKernels

/// A bump allocator for per-step tensors.
public final class Arena: @unchecked Sendable {
  public enum Failure: Error, CustomStringConvertible {
    case exhausted(requested: Int, available: Int, capacity: Int)
    public var description: String {
      switch self {
      case let .exhausted(r, a, c):
        return "arena exhausted: \(r) floats requested, \(a) of \(c) available (the memory plan is too small)"
      }
    }
  }

  /// Alignment of each allocation, in floats (64 bytes: one cache line, one zmm register).
  public static let alignment = 16

  public let capacity: Int
  private let storage: TensorStorage
  public private(set) var used: Int = 0
  /// The largest `used` seen since creation: the arena's real peak.
  public private(set) var highWater: Int = 0

  /// An arena of `capacity` floats.
  public init(capacity: Int) {
    self.capacity = capacity
    self.storage = TensorStorage(count: capacity)
  }

  /// Floats an allocation of `count` takes once rounded up to the alignment.
  public static func rounded(_ count: Int) -> Int {
    (count + alignment - 1) / alignment * alignment
  }

  /// A tensor of `shape` from the arena. Its contents are whatever an earlier step left there:
  /// callers overwrite it.
  public func allocate(_ shape: [Int]) throws -> Tensor {
    let n = shape.reduce(1, *)
    let need = Arena.rounded(n)
    guard used + need <= capacity else {
      throw Failure.exhausted(requested: need, available: capacity - used, capacity: capacity)
    }
    let t = Tensor(storage: TensorStorage(borrowing: storage.base + used, count: n, owner: self),
                   offset: 0, shape: shape)
    used += need
    highWater = max(highWater, used)
    return t
  }

  /// Frees everything allocated since `mark` (a value of `used` taken earlier).
  public func release(to mark: Int) {
    precondition(mark >= 0 && mark <= used, "bad arena mark")
    used = mark
  }

  /// Frees everything.
  public func reset() { used = 0 }
}
