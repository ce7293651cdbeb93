// Tensor: a Float32 n-d array, row-major and contiguous, over 64-byte aligned storage.
//
// Views (rows, reshape) share storage and cost nothing. Storage either owns its memory (one
// aligned allocation) or borrows a slice of an Arena, which it keeps alive. Not a graph or an
// autograd tape: the model calls kernels on tensors explicitly (see PalmModel).

import CKernels

/// Aligned memory that a tensor points into.
public final class TensorStorage: @unchecked Sendable {
  public let base: UnsafeMutablePointer<Float>
  public let count: Int
  private let owner: AnyObject?  // the Arena for borrowed storage; nil when we own the memory

  /// Allocates `count` zeroed floats, 64-byte aligned.
  public init(count: Int) {
    precondition(count >= 0, "negative element count")
    let bytes = max(count, 1) * MemoryLayout<Float>.stride
    guard let raw = pk_aligned_alloc(bytes) else { fatalError("out of memory allocating \(bytes) bytes") }
    base = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    base.initialize(repeating: 0, count: max(count, 1))
    self.count = count
    owner = nil
  }

  /// Borrows memory owned by `owner` (an arena) for as long as this storage lives.
  init(borrowing base: UnsafeMutablePointer<Float>, count: Int, owner: AnyObject) {
    self.base = base
    self.count = count
    self.owner = owner
  }

  deinit { if owner == nil { pk_aligned_free(base) } }
}

/// A contiguous row-major Float32 tensor.
///
/// ```swift
/// var x = Tensor(shape: [4, 8])        // zeros
/// x[0, 1] = 3
/// let row = x.rows(1..<3)              // a view of rows 1 and 2, shape [2, 8]
/// ```
public struct Tensor: @unchecked Sendable {
  public let storage: TensorStorage
  public let offset: Int
  public let shape: [Int]

  /// A new zero-filled tensor that owns its memory.
  public init(shape: [Int]) {
    precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
    let n = shape.reduce(1, *)
    self.storage = TensorStorage(count: n)
    self.offset = 0
    self.shape = shape
  }

  /// A tensor holding a copy of `values`.
  public init(shape: [Int], values: [Float]) {
    self.init(shape: shape)
    precondition(values.count == count, "\(values.count) values for shape \(shape)")
    values.withUnsafeBufferPointer { src in
      if let s = src.baseAddress { pointer.update(from: s, count: count) }
    }
  }

  /// A view of `storage` starting at `offset`.
  public init(storage: TensorStorage, offset: Int, shape: [Int]) {
    let n = shape.reduce(1, *)
    precondition(offset >= 0 && offset + n <= storage.count, "view out of bounds")
    self.storage = storage
    self.offset = offset
    self.shape = shape
  }

  public var count: Int { shape.reduce(1, *) }
  public var rank: Int { shape.count }
  /// The first element (valid even when count == 0).
  public var pointer: UnsafeMutablePointer<Float> { storage.base + offset }

  /// Rows `range` of the first axis, as a view.
  public func rows(_ range: Range<Int>) -> Tensor {
    precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0], "rows out of range")
    let rowSize = shape.dropFirst().reduce(1, *)
    return Tensor(storage: storage, offset: offset + range.lowerBound * rowSize,
                  shape: [range.count] + shape.dropFirst())
  }

  /// The same elements with another shape (same count), as a view.
  public func reshaped(_ newShape: [Int]) -> Tensor {
    precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
    return Tensor(storage: storage, offset: offset, shape: newShape)
  }

  /// Element access by a full index (bounds-checked; for tests and tools, not hot loops).
  public subscript(_ index: Int...) -> Float {
    get { pointer[flatIndex(index)] }
    nonmutating set { pointer[flatIndex(index)] = newValue }
  }

  private func flatIndex(_ index: [Int]) -> Int {
    precondition(index.count == rank, "index \(index) for shape \(shape)")
    var flat = 0
    for (i, d) in zip(index, shape) {
      precondition(i >= 0 && i < d, "index \(index) out of bounds for shape \(shape)")
      flat = flat * d + i
    }
    return flat
  }

  /// A copy of the elements as an array.
  public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

  /// Sets every element to `value`.
  public func fill(_ value: Float) { pointer.update(repeating: value, count: count) }

  /// Copies `other` (same count) into this tensor.
  public func copy(from other: Tensor) {
    precondition(other.count == count, "copy of \(other.shape) into \(shape)")
    pointer.update(from: other.pointer, count: count)
  }
}
