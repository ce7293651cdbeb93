// Communicator: the collective layer (the contract; PalmParallel holds the backends).
//
// It lives in PalmModel because the one Model computes its shard of any mesh and calls the
// collectives itself (Model.swift, "Mesh hooks"). One protocol over Float32 buffers with three backends:
// `SoloCommunicator` (one rank, every operation a no-op: the single device, here),  `LocalCluster` (threads as logical devices in
// one process; LocalBackend.swift) and `MPICommunicator` (Open MPI processes; MPIBackend.swift).
// Reductions are sums. Semantics follow the MPI 3.1 standard, chapter 5 (collectives) and 3 (point to
// point). This file is the contract; it has no implementation besides array/Tensor conveniences.

import PalmTensor

/// Why a collective or point-to-point operation failed.
///
/// `ranks` lists the ranks (in the communicator's own numbering) the error is about: the ranks that
/// did not arrive before the deadline, the rank that failed, or the ranks that disagreed.
public struct CommError: Error, CustomStringConvertible, Sendable, Equatable {
  public enum Kind: Sendable, Equatable {
    /// The operation waited longer than the communicator's timeout.
    case timeout
    /// A peer threw (LocalBackend) and therefore cannot take part any more.
    case peerFailed
    /// A peer finished its work without joining this operation.
    case peerExited
    /// Ranks called different operations, or the same one with different sizes or roots.
    case mismatch
    /// An argument is out of range (buffer sizes, ranks, tags, colors).
    case badArgument
    /// The communicator is unusable since an earlier error.
    case broken
    /// An MPI call returned this error code (MPI_ERRORS_RETURN is set on every communicator).
    case mpi(Int32)
  }

  public let kind: Kind
  public let ranks: [Int]
  public let message: String

  public init(_ kind: Kind, ranks: [Int] = [], _ message: String) {
    self.kind = kind
    self.ranks = ranks
    self.message = message
  }

  public var description: String { message }
}

/// A non-blocking operation in flight (see `Communicator.iAllReduce`).
public protocol CommRequest: AnyObject, Sendable {
  /// Blocks until the operation completes; throws what the operation threw (never hangs: the
  /// communicator's timeout bounds the wait).
  func wait() throws
  /// True once the operation has completed (successfully or not); `wait()` then returns at once.
  func test() throws -> Bool
}

/// A group of ranks that run collectives together: a device mesh axis, or the whole world.
///
/// Every rank of the group must call the same collectives in the same order (non-blocking ones
/// count at the call that starts them). All reductions are sums of `Float`.
///
/// Determinism: a sum's result is bit-identical on every rank and does not depend on timing.
/// `LocalCluster` adds in rank order, `((x₀ + x₁) + x₂) + …`, for every element, so its result equals a
/// single device summing the same buffers in that order. `MPICommunicator` uses Open MPI's algorithm
/// for the communicator size and message length; that order is fixed for a given size and length but
/// is not the plain rank order (see MPIBackend.swift).
///
/// Hang protection: an operation that waits longer than the communicator's timeout throws a
/// `CommError` of kind `.timeout` naming the ranks that did not arrive; after any error the
/// communicator is broken and further calls throw at once.
///
/// Long phases: a rank about to work alone for longer than the timeout while the others wait for
/// it (rank 0 writing a checkpoint, every rank reading one) runs that work in `whileBusy`. While any
/// rank of the job is inside `whileBusy`, no wait of any rank times out (the waits form chains:
/// rank 3 waits for rank 2, which waits for the busy rank 0); each deadline restarts when the last
/// busy phase ends, so a rank that is dead or hung outside such a phase is still named, at most
/// `timeout` seconds after the busy phase ends. A phase has a bound of its own, the backend's
/// `phaseTimeout` (default 10 × `timeout`; `palm train --phase-timeout`): once a rank has been in
/// one phase (its outermost) for longer, every rank waiting meanwhile throws a `.timeout` naming the
/// busy rank and the phase, so a rank hung inside a phase is found too. The busy rank's own work is
/// not interrupted (it cannot be); it fails at its next call when the others have gone (or, under
/// mpirun, is ended with the job by their MPI_Abort). `LocalCluster` keeps the busy ranks in
/// shared state; `MPICommunicator` has the busy rank send a heartbeat to every rank (see MPIBackend.swift).
///
/// Example (two ranks):
/// ```swift
/// let cluster = try LocalCluster(size: 2)
/// let sums = try cluster.run { comm in
///   var grads: [Float] = [Float(comm.rank), 1]
///   try comm.allReduce(&grads)   // [0 + 1, 1 + 1] on both ranks
///   return grads
/// }
/// ```
public protocol Communicator: AnyObject, Sendable {
  /// This process's (or thread's) index in the group, 0 ..< size.
  var rank: Int { get }
  /// Number of ranks in the group.
  var size: Int { get }
  /// A readable name used in error messages ("world", "world/split(1)", ...).
  var name: String { get }

  /// Sums `buffer` over all ranks, in place. Every rank passes the same count.
  func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>) throws

  /// Concatenates every rank's `send` (n floats each) into `receive` (n·size floats), in rank order.
  func allGather(_ send: UnsafeBufferPointer<Float>, into receive: UnsafeMutableBufferPointer<Float>) throws

  /// Sums `send` (n·size floats) over ranks; rank r receives block r (n floats) of the sum.
  func reduceScatter(_ send: UnsafeBufferPointer<Float>, into receive: UnsafeMutableBufferPointer<Float>) throws

  /// Copies `root`'s buffer into every other rank's buffer.
  func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, root: Int) throws

  /// Sends `buffer` to `destination` with a tag ≥ 0. May return before the receiver has it.
  func send(_ buffer: UnsafeBufferPointer<Float>, to destination: Int, tag: Int) throws

  /// Receives exactly `buffer.count` floats sent by `source` with `tag`.
  func receive(into buffer: UnsafeMutableBufferPointer<Float>, from source: Int, tag: Int) throws

  /// Returns once every rank has called it.
  func barrier() throws

  /// Starts an in-place sum like `allReduce` and returns at once. The buffer must stay valid and
  /// untouched until `wait()` returns. Used to overlap the gradient exchange with the backward pass.
  func iAllReduce(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> any CommRequest

  /// Splits into sub-communicators: ranks with the same `color` (≥ 0) form one, ordered by `key`
  /// then by rank here. Collective over this communicator.
  func split(color: Int, key: Int) throws -> any Communicator

  /// Runs `body`, work of this rank alone that may outlast the timeout while other ranks wait for
  /// it (`phase` names it, e.g. "checkpoint write"); meanwhile no rank of the job times out, up to
  /// the phase timeout (see "Long phases" above). Not collective: any rank may call it, nested
  /// calls are fine (the outermost phase counts), and `body` may call collectives. The default
  /// runs `body` as it is (a group of one rank).
  func whileBusy<T>(_ phase: String, _ body: () throws -> T) rethrows -> T
}

extension Communicator {
  public func whileBusy<T>(_ phase: String, _ body: () throws -> T) rethrows -> T { try body() }
}

// MARK: - Array conveniences

extension Communicator {
  /// Sums `values` over all ranks, in place.
  public func allReduce(_ values: inout [Float]) throws {
    try values.withUnsafeMutableBufferPointer { try allReduce($0) }
  }

  /// Every rank's `values`, concatenated in rank order.
  public func allGather(_ values: [Float]) throws -> [Float] {
    var out = [Float](repeating: 0, count: values.count * size)
    try values.withUnsafeBufferPointer { send in
      try out.withUnsafeMutableBufferPointer { try allGather(send, into: $0) }
    }
    return out
  }

  /// Block `rank` of the sum of every rank's `values` (whose count must be a multiple of `size`).
  public func reduceScatter(_ values: [Float]) throws -> [Float] {
    guard values.count % size == 0 else {
      throw CommError(.badArgument, "reduceScatter on \(name): \(values.count) floats do not split into \(size) equal blocks")
    }
    var out = [Float](repeating: 0, count: values.count / size)
    try values.withUnsafeBufferPointer { send in
      try out.withUnsafeMutableBufferPointer { try reduceScatter(send, into: $0) }
    }
    return out
  }

  /// Replaces `values` by `root`'s.
  public func broadcast(_ values: inout [Float], root: Int) throws {
    try values.withUnsafeMutableBufferPointer { try broadcast($0, root: root) }
  }

  public func send(_ values: [Float], to destination: Int, tag: Int = 0) throws {
    try values.withUnsafeBufferPointer { try send($0, to: destination, tag: tag) }
  }

  public func receive(count: Int, from source: Int, tag: Int = 0) throws -> [Float] {
    var out = [Float](repeating: 0, count: count)
    try out.withUnsafeMutableBufferPointer { try receive(into: $0, from: source, tag: tag) }
    return out
  }
}

// MARK: - Doubles over Float collectives

/// A Double carried as two Floats: `hi` = x's leading 12 significant bits (a Float with its low
/// 12 mantissa bits cleared), `lo = Float(x − hi)` the next 24, so `hi + lo` (added in Double) gives
/// x back to about 36 bits instead of Float's 24. A Float sum of up to 2¹² `hi`s is exact only when
/// their exponents are within a few binades of each other (e.g. per-rank losses); for summands of
/// very different size (a norm² part that also counts the replicated tensors) the `hi` sum rounds
/// and the result falls back towards Float's precision. Exact alternative, not done: all-gather the
/// Doubles' bit patterns and add in Double. Values beyond Float's range, and non-finite ones, come
/// back as ±inf or NaN.
package enum FloatPair {
  package static func split(_ x: Double) -> (hi: Float, lo: Float) {
    let f = Float(x)
    guard f.isFinite else { return (f, 0) }
    let hi = Float(bitPattern: f.bitPattern & ~0xFFF)
    return (hi, Float(x - Double(hi)))
  }

  package static func join(_ hi: Float, _ lo: Float) -> Double { Double(hi) + Double(lo) }

  /// `values` as [hi₀, lo₀, hi₁, lo₁, …].
  package static func pack(_ values: [Double]) -> [Float] {
    values.flatMap { x -> [Float] in let p = split(x); return [p.hi, p.lo] }
  }

  /// The doubles of `pack`'s layout.
  package static func unpack(_ floats: [Float]) -> [Double] {
    (0..<(floats.count / 2)).map { join(floats[2 * $0], floats[2 * $0 + 1]) }
  }
}

extension Communicator {
  /// Sums `values` over all ranks, in place: one Float all-reduce of their hi/lo pairs,
  /// recombined in Double (about 36 bits when the summands are of similar size; see `FloatPair`).
  public func allReduce(_ values: inout [Double]) throws {
    var parts = FloatPair.pack(values)
    try allReduce(&parts)
    values = FloatPair.unpack(parts)
  }

  /// Replaces `values` by `root`'s, carried as hi/lo float pairs (the same value on every rank).
  public func broadcast(_ values: inout [Double], root: Int) throws {
    var parts = FloatPair.pack(values)
    try broadcast(&parts, root: root)
    values = FloatPair.unpack(parts)
  }
}

// MARK: - Tensor conveniences (a Tensor's storage is stable, so it may be used non-blocking)

extension Communicator {
  private func buffer(_ t: Tensor) -> UnsafeMutableBufferPointer<Float> {
    UnsafeMutableBufferPointer(start: t.pointer, count: t.count)
  }

  /// Sums `tensor` over all ranks, in place.
  public func allReduce(_ tensor: Tensor) throws { try allReduce(buffer(tensor)) }

  /// Starts an in-place sum of `tensor`; the request keeps the tensor's storage alive until done.
  public func iAllReduce(_ tensor: Tensor) throws -> any CommRequest {
    TensorRequest(inner: try iAllReduce(buffer(tensor)), storage: tensor.storage)
  }

  /// Concatenates every rank's `tensor` (n elements) into `output` (n·size elements).
  public func allGather(_ tensor: Tensor, into output: Tensor) throws {
    try allGather(UnsafeBufferPointer(buffer(tensor)), into: buffer(output))
  }

  /// Block `rank` (n elements) of the sum of every rank's `tensor` (n·size elements) into `output`.
  public func reduceScatter(_ tensor: Tensor, into output: Tensor) throws {
    try reduceScatter(UnsafeBufferPointer(buffer(tensor)), into: buffer(output))
  }

  /// Replaces `tensor` by `root`'s.
  public func broadcast(_ tensor: Tensor, root: Int) throws { try broadcast(buffer(tensor), root: root) }
}

/// Keeps a tensor's storage alive while its non-blocking operation runs.
final class TensorRequest: CommRequest, @unchecked Sendable {
  let inner: any CommRequest
  let storage: TensorStorage
  init(inner: any CommRequest, storage: TensorStorage) {
    self.inner = inner
    self.storage = storage
  }
  func wait() throws { try inner.wait() }
  func test() throws -> Bool { try inner.test() }
}

// MARK: - Argument checks shared by the backends

package enum CommCheck {
  package static func rank(_ r: Int, _ what: String, _ comm: some Communicator) throws {
    guard r >= 0 && r < comm.size else {
      throw CommError(.badArgument, "\(what) on \(comm.name): rank \(r) is outside 0..<\(comm.size)")
    }
  }

  package static func tag(_ t: Int, _ comm: some Communicator) throws {
    guard t >= 0 && t < 32_767 else {
      throw CommError(.badArgument, "tag \(t) on \(comm.name) must be in 0..<32767")
    }
  }

  package static func gatherSizes(_ op: String, send: Int, receive: Int, _ comm: some Communicator) throws {
    guard receive == send * comm.size else {
      throw CommError(.badArgument,
        "\(op) on \(comm.name): receive buffer holds \(receive) floats, expected \(send) × \(comm.size) = \(send * comm.size)")
    }
  }
}

// MARK: - One rank

/// The communicator of a group of one rank: the single device, and every axis of size 1. Sums,
/// gathers and broadcasts of one rank leave the data as it is, so every operation returns at once
/// (the gathers copy when input and output are different buffers). Point-to-point calls throw:
/// a rank has no peer to talk to.
public final class SoloCommunicator: Communicator, @unchecked Sendable {
  public let name: String
  public init(name: String = "solo") { self.name = name }
  public var rank: Int { 0 }
  public var size: Int { 1 }
  public func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>) throws {}
  public func allGather(_ send: UnsafeBufferPointer<Float>, into receive: UnsafeMutableBufferPointer<Float>) throws {
    try CommCheck.gatherSizes("allGather", send: send.count, receive: receive.count, self)
    if let s = send.baseAddress, let r = receive.baseAddress, s != UnsafePointer(r) { r.update(from: s, count: send.count) }
  }
  public func reduceScatter(_ send: UnsafeBufferPointer<Float>, into receive: UnsafeMutableBufferPointer<Float>) throws {
    try CommCheck.gatherSizes("reduceScatter", send: receive.count, receive: send.count, self)
    if let s = send.baseAddress, let r = receive.baseAddress, s != UnsafePointer(r) { r.update(from: s, count: send.count) }
  }
  public func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, root: Int) throws { try CommCheck.rank(root, "broadcast", self) }
  public func send(_ buffer: UnsafeBufferPointer<Float>, to destination: Int, tag: Int) throws {
    throw CommError(.badArgument, "send on \(name): a group of one rank has no peer")
  }
  public func receive(into buffer: UnsafeMutableBufferPointer<Float>, from source: Int, tag: Int) throws {
    throw CommError(.badArgument, "receive on \(name): a group of one rank has no peer")
  }
  public func barrier() throws {}
  public func iAllReduce(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> any CommRequest { DoneRequest() }
  public func split(color: Int, key: Int) throws -> any Communicator {
    guard color >= 0 else { throw CommError(.badArgument, "split on \(name): color \(color) < 0") }
    return SoloCommunicator(name: "\(name)/split(\(color))")
  }
}

/// A request that completed when it was made.
final class DoneRequest: CommRequest, @unchecked Sendable {
  func wait() throws {}
  func test() throws -> Bool { true }
}
