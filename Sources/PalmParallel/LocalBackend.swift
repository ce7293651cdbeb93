// LocalBackend: an in-process `Communicator` where threads act as logical devices.
//
// `LocalCluster(size:)` runs one closure per rank, each on its own Thread with its own buffers. A
// collective is a rendezvous: every rank posts a pointer to its buffer, the last to arrive closes the
// round, each rank then reduces one slice in fixed rank order into shared scratch, a second rendezvous
// follows, and each rank copies the result out. Sums are ((x₀ + x₁) + x₂) + … for every element, so the
// result is bit-identical to one device adding the same buffers in rank order. Every wait is bounded by
// `timeout`, except while some rank is in `whileBusy` (a long phase of its own: the deadline then
// restarts when the last such phase ends, `LocalWorld.deadline`); a phase is bounded by
// `phaseTimeout` in turn, after which the waiting ranks fail naming the busy rank and its phase.
// Errors name the ranks that did not arrive or that failed. Send is buffered (a copy).

import PalmModel
import Foundation

/// Runs a closure once per logical device (rank), each on its own thread.
///
/// ```swift
/// let cluster = try LocalCluster(size: 4, timeout: 10)
/// let out = try cluster.run { comm in
///   var x: [Float] = [1, 2]
///   try comm.allReduce(&x)      // [4, 8] on every rank
///   return x
/// }
/// ```
public final class LocalCluster: Sendable {
  /// Number of ranks.
  public let size: Int
  /// Longest time, in seconds, any single wait may take before it throws `.timeout`.
  public let timeout: Double
  /// Longest time, in seconds, a rank may stay in one `whileBusy` phase while others wait for it;
  /// then the waiting ranks throw `.timeout` naming it and the phase. Default: 10 × `timeout`.
  public let phaseTimeout: Double

  /// An error thrown by the body on one rank, as `run` reports it.
  public struct RankFailure: Error, CustomStringConvertible {
    public let rank: Int
    public let error: any Error
    public var description: String { "rank \(rank) failed: \(error)" }
  }

  /// The longest `timeout` accepted: one day (deadlines far beyond it overflow the condition
  /// variable's wait, which traps). `phaseTimeout` may be up to 10 × this.
  public static let maxTimeout: Double = 86_400

  public init(size: Int, timeout: Double = 60, phaseTimeout: Double? = nil) throws {
    guard size >= 1 && size <= 4096 else {
      throw CommError(.badArgument, "LocalCluster size must be in 1...4096 (got \(size))")
    }
    guard timeout > 0 && timeout <= Self.maxTimeout else {
      throw CommError(.badArgument, "LocalCluster timeout must be in (0, \(Int(Self.maxTimeout))] seconds (got \(timeout))")
    }
    let phase = phaseTimeout ?? 10 * timeout
    guard phase > 0 && phase <= 10 * Self.maxTimeout else {
      throw CommError(.badArgument, "LocalCluster phase timeout must be in (0, \(Int(10 * Self.maxTimeout))] seconds (got \(phase))")
    }
    self.size = size
    self.timeout = timeout
    self.phaseTimeout = phase
  }

  /// Runs `body` on every rank and returns the results in rank order. If any rank throws, throws a
  /// `RankFailure` for the first rank that failed on its own (not as a consequence of another's
  /// failure); the other ranks are woken and fail with an error naming it.
  public func run<R: Sendable>(_ body: @escaping @Sendable (any Communicator) throws -> R) throws -> [R] {
    let results = runCollectingResults(body)
    var values: [R] = []
    var firstFailure: RankFailure? = nil
    var consequence: RankFailure? = nil
    for (rank, result) in results.enumerated() {
      switch result {
      case .success(let value): values.append(value)
      case .failure(let error):
        let failure = RankFailure(rank: rank, error: error)
        if let comm = error as? CommError, comm.kind == .peerFailed || comm.kind == .peerExited {
          if consequence == nil { consequence = failure }
        } else if firstFailure == nil {
          firstFailure = failure
        }
      }
    }
    if let failure = firstFailure ?? consequence { throw failure }
    return values
  }

  /// Runs `body` on every rank and returns each rank's result or error, in rank order. Returns at
  /// most `timeout` seconds after the first rank fails even if some rank never returns (its thread
  /// is then abandoned and its slot holds a `.peerFailed` error: a consequence, so `run` reports
  /// the failure that caused it). Only waits inside communicator calls
  /// are bounded: a body that loops forever with no failing peer keeps this waiting. Each
  /// `iAllReduce` runs on a helper thread of its own (started per call).
  public func runCollectingResults<R: Sendable>(
    _ body: @escaping @Sendable (any Communicator) throws -> R
  ) -> [Result<R, any Error>] {
    let world = LocalWorld(size: size, timeout: timeout, phaseTimeout: phaseTimeout)
    let group = world.makeGroup(members: Array(0..<size), name: "world")
    let box = ResultBox<R>(size: size)
    for r in 0..<size {
      let thread = Thread {
        let comm = LocalCommunicator(group: group, rank: r)
        let result: Result<R, any Error> = Result { try body(comm) }
        if case .failure(let error) = result {
          world.markFailed(r, error)
        } else {
          world.markExited(r)
        }
        box.set(r, result)
      }
      thread.name = "palm.local.rank\(r)"
      thread.stackSize = 8 << 20
      thread.start()
    }
    return box.waitAll(graceAfterFailure: timeout)
  }
}

// MARK: - Shared state

/// Per-run state shared by all ranks; one condition variable guards everything.
final class LocalWorld: @unchecked Sendable {
  let size: Int
  let timeout: Double
  let phaseTimeout: Double
  let cond = NSCondition()
  private(set) var failed: [Int: String] = [:]  // world rank -> message
  /// World ranks that failed on their own (not with a peerFailed/peerExited error), in time order.
  private(set) var rootFailures: [Int] = []
  private(set) var exited: Set<Int> = []
  private var nextGroupID = 0
  /// World ranks inside `whileBusy`: nesting depth, the outermost phase and when it began; and
  /// when the last busy phase ended.
  private var busy: [Int: (depth: Int, phase: String, since: Date)] = [:]
  private var lastBusyEnd: Date? = nil

  init(size: Int, timeout: Double, phaseTimeout: Double) {
    self.size = size
    self.timeout = timeout
    self.phaseTimeout = phaseTimeout
  }

  func makeGroup(members: [Int], name: String) -> LocalGroup {
    // Called either before the threads start or with `cond` held (split finalizer).
    nextGroupID += 1
    return LocalGroup(world: self, id: nextGroupID, members: members, name: name)
  }

  func markFailed(_ rank: Int, _ error: any Error) {
    cond.lock()
    failed[rank] = "\(error)"
    if let comm = error as? CommError, comm.kind == .peerFailed || comm.kind == .peerExited {
    } else {
      rootFailures.append(rank)
    }
    cond.broadcast()
    cond.unlock()
  }

  func beginBusy(_ rank: Int, _ phase: String) {
    cond.lock()
    if let b = busy[rank] { busy[rank] = (b.depth + 1, b.phase, b.since) } else { busy[rank] = (1, phase, Date()) }
    cond.broadcast()  // waiters recompute their deadlines
    cond.unlock()
  }

  func endBusy(_ rank: Int) {
    cond.lock()
    if let b = busy[rank] { busy[rank] = b.depth > 1 ? (b.depth - 1, b.phase, b.since) : nil }
    lastBusyEnd = Date()
    cond.broadcast()  // waiters recompute their deadlines
    cond.unlock()
  }

  /// With `cond` held: when a wait that began at `start` times out: `timeout` after it, or after
  /// the end of the last busy phase if that is later; nil (not now) while a rank is busy.
  func deadline(since start: Date) -> Date? {
    if !busy.isEmpty { return nil }
    return max(start, lastBusyEnd ?? start).addingTimeInterval(timeout)
  }

  /// The busy phase that began first (world rank, phase, start), if any.
  private var oldestBusy: (rank: Int, phase: String, since: Date)? {
    busy.min { $0.value.since < $1.value.since }.map { ($0.key, $0.value.phase, $0.value.since) }
  }

  /// How a bounded wait ended.
  enum WaitOutcome {
    /// Woken (or not yet due): look again.
    case woken
    /// The wait's own deadline passed.
    case timedOut
    /// World rank `rank` has been in `phase` (since `since`) longer than `phaseTimeout`.
    case phaseOverdue(rank: Int, phase: String, since: Date)
  }

  /// With `cond` held: waits until woken or the deadline of a wait that began at `start` (endBusy
  /// wakes the waiters, so a busy phase is waited out, up to `phaseTimeout`).
  func wait(since start: Date) -> WaitOutcome {
    func due() -> (Date, WaitOutcome) {
      if let b = oldestBusy { return (b.since.addingTimeInterval(phaseTimeout), .phaseOverdue(rank: b.rank, phase: b.phase, since: b.since)) }
      return (deadline(since: start) ?? Date.distantFuture, .timedOut)
    }
    let (until, _) = due()
    if Date() < until && cond.wait(until: until) { return .woken }
    let (dueAt, outcome) = due()  // again: a phase may have begun or ended meanwhile
    return Date() >= dueAt ? outcome : .woken
  }

  /// The error of a wait that ended with `.phaseOverdue`: `op` on `group` at group rank `rank`.
  func overdueError(_ busyRank: Int, _ phase: String, since: Date, op: String, group: LocalGroup, rank: Int) -> CommError {
    let who = group.members.firstIndex(of: busyRank).map(group.label) ?? "world rank \(busyRank)"
    return CommError(.timeout, ranks: group.members.firstIndex(of: busyRank).map { [$0] } ?? [],
      "\(op) on \(group.name) at \(group.label(rank)): \(who) has been in its \(phase) for \(Int(Date().timeIntervalSince(since))) s, "
        + "longer than the phase timeout of \(phaseTimeout) s (hung, or slower than that: raise --phase-timeout)")
  }

  func markExited(_ rank: Int) {
    cond.lock()
    exited.insert(rank)
    cond.broadcast()
    cond.unlock()
  }
}

/// A raw pointer plus a few integers that one rank contributes to a round.
struct Payload: @unchecked Sendable {
  var pointer: UnsafeMutableRawPointer? = nil
  var count = 0
  var a = 0  // root, color
  var b = 0  // key
}

/// Scratch memory shared by the ranks of one collective; freed when the last rank lets go of it.
final class Scratch: @unchecked Sendable {
  let buffer: UnsafeMutableBufferPointer<Float>
  init(count: Int) {
    buffer = .allocate(capacity: max(count, 1))
  }
  deinit { buffer.deallocate() }
}

/// One rendezvous: the contributions of every rank to one phase of one collective.
final class Round {
  let op: String
  var payloads: [Payload?]
  var arrivals = 0
  var complete = false
  var error: CommError? = nil
  var shared: AnyObject? = nil
  init(op: String, size: Int) {
    self.op = op
    payloads = Array(repeating: nil, count: size)
  }
}

/// The ranks of one communicator (world or split) and their pending rounds and mailboxes.
final class LocalGroup: @unchecked Sendable {
  let world: LocalWorld
  let id: Int
  let members: [Int]  // group rank -> world rank
  let name: String
  // Guarded by world.cond:
  var rounds: [Int: Round] = [:]  // key: sequence number * 4 + phase
  var broken: CommError? = nil
  var mail: [MailKey: [[Float]]] = [:]

  struct MailKey: Hashable { let source, destination, tag: Int }

  init(world: LocalWorld, id: Int, members: [Int], name: String) {
    self.world = world
    self.id = id
    self.members = members
    self.name = name
  }

  var size: Int { members.count }

  /// "rank 2" or "rank 2 (world rank 5)".
  func label(_ rank: Int) -> String {
    members[rank] == rank ? "rank \(rank)" : "rank \(rank) (world rank \(members[rank]))"
  }

  func labels(_ ranks: [Int]) -> String { ranks.map(label).joined(separator: ", ") }

  /// With `world.cond` held: an error if a member has failed or the group is broken.
  func peerProblem(waitingFor missing: [Int]?, op: String) -> CommError? {
    if let broken { return broken }
    // Name the ranks that failed on their own, not those that failed because of them.
    let roots = world.rootFailures.compactMap { members.firstIndex(of: $0) }
    let failedMembers = roots.isEmpty ? (0..<size).filter { world.failed[members[$0]] != nil } : roots
    if let first = failedMembers.first {
      return CommError(.peerFailed, ranks: failedMembers,
        "\(op) on \(name) cannot complete: \(label(first)) failed: \(world.failed[members[first]] ?? "")")
    }
    if let missing {
      let gone = missing.filter { world.exited.contains(members[$0]) }
      if !gone.isEmpty {
        return CommError(.peerExited, ranks: gone,
          "\(op) on \(name) cannot complete: \(labels(gone)) finished without joining it")
      }
    }
    return nil
  }

  /// Waits until every rank has posted its payload for (sequence, phase); the last to arrive runs
  /// `finalize` (with the lock held) whose result every rank receives. Bounded by the timeout.
  func rendezvous(sequence: Int, phase: Int, rank: Int, op: String, payload: Payload,
                  finalize: ([Payload]) throws(CommError) -> AnyObject? = { _ in nil }) throws -> ([Payload], AnyObject?) {
    let cond = world.cond
    cond.lock()
    defer { cond.unlock() }
    if let problem = peerProblem(waitingFor: nil, op: op) { throw problem }
    let key = sequence * 4 + phase
    let round: Round
    if let existing = rounds[key] {
      round = existing
      if round.op != op {
        let first = round.payloads.firstIndex { $0 != nil } ?? 0
        let error = CommError(.mismatch, ranks: [first, rank],
          "collective mismatch on \(name) at call #\(sequence): \(label(first)) called \(round.op) but \(label(rank)) called \(op)")
        broken = error
        cond.broadcast()
        throw error
      }
    } else {
      round = Round(op: op, size: size)
      rounds[key] = round
    }
    round.payloads[rank] = payload
    round.arrivals += 1
    if round.arrivals == size {
      let all = round.payloads.map { $0 ?? Payload() }
      do {
        round.shared = try finalize(all)
      } catch {
        round.error = error
        broken = error
      }
      round.complete = true
      rounds[key] = nil
      cond.broadcast()
    } else {
      let start = Date()
      while !round.complete {
        let missing = (0..<size).filter { round.payloads[$0] == nil }
        if let problem = peerProblem(waitingFor: missing, op: op) { throw problem }
        let outcome = world.wait(since: start)
        if round.complete { break }
        var failure: CommError? = nil
        switch outcome {
        case .woken: break
        case .timedOut:
          let missing = (0..<size).filter { round.payloads[$0] == nil }
          failure = CommError(.timeout, ranks: missing,
            "\(op) (call #\(sequence)) on \(name): \(labels(missing)) did not arrive within \(world.timeout) s")
        case .phaseOverdue(let busyRank, let phase, let since):
          failure = world.overdueError(busyRank, phase, since: since, op: "\(op) (call #\(sequence))", group: self, rank: rank)
        }
        if let failure {
          broken = failure
          cond.broadcast()
          throw failure
        }
      }
    }
    if let error = round.error { throw error }
    return (round.payloads.map { $0 ?? Payload() }, round.shared)
  }
}

/// Results of the rank threads, waited on by `runCollectingResults`.
final class ResultBox<R: Sendable>: @unchecked Sendable {
  private let cond = NSCondition()
  private var results: [Result<R, any Error>?]
  private var firstFailure: Date? = nil

  init(size: Int) { results = Array(repeating: nil, count: size) }

  func set(_ rank: Int, _ result: Result<R, any Error>) {
    cond.lock()
    results[rank] = result
    if case .failure = result, firstFailure == nil { firstFailure = Date() }
    cond.broadcast()
    cond.unlock()
  }

  func waitAll(graceAfterFailure grace: Double) -> [Result<R, any Error>] {
    cond.lock()
    defer { cond.unlock() }
    while results.contains(where: { $0 == nil }) {
      if let failure = firstFailure {
        let deadline = failure.addingTimeInterval(grace)
        if !cond.wait(until: deadline) { break }
      } else {
        cond.wait()
      }
    }
    return results.enumerated().map { rank, result in
      result ?? .failure(CommError(.peerFailed, ranks: [rank],
        "rank \(rank) was still running \(grace) s after another rank failed; abandoned"))
    }
  }
}

// MARK: - The communicator

final class LocalCommunicator: Communicator, @unchecked Sendable {
  let group: LocalGroup
  let rank: Int
  private let sequenceLock = NSLock()
  private var nextSequence = 0

  init(group: LocalGroup, rank: Int) {
    self.group = group
    self.rank = rank
  }

  var size: Int { group.size }
  var name: String { group.name }

  private func takeSequence() -> Int {
    sequenceLock.lock()
    defer { sequenceLock.unlock() }
    nextSequence += 1
    return nextSequence
  }

  /// The slice of `count` elements this rank reduces.
  private func slice(_ count: Int) -> Range<Int> {
    let lo = count * rank / size, hi = count * (rank + 1) / size
    return lo..<hi
  }

  private static func sameCounts(_ op: String, _ payloads: [Payload], _ group: LocalGroup) throws(CommError) {
    for (r, p) in payloads.enumerated() where p.count != payloads[0].count {
      throw CommError(.mismatch, ranks: [0, r],
        "\(op) on \(group.name): \(group.label(0)) passed \(payloads[0].count) floats but \(group.label(r)) passed \(p.count)")
    }
  }

  func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
    try allReduce(buffer, sequence: takeSequence())
  }

  private func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>, sequence: Int) throws {
    let op = "allReduce", n = buffer.count, group = self.group
    let (payloads, shared) = try group.rendezvous(
      sequence: sequence, phase: 0, rank: rank, op: op,
      payload: Payload(pointer: UnsafeMutableRawPointer(buffer.baseAddress), count: n)
    ) { payloads throws(CommError) in
      try Self.sameCounts(op, payloads, group)
      return Scratch(count: n)
    }
    guard let scratch = shared as? Scratch else { return }
    let inputs = payloads.map { $0.pointer?.assumingMemoryBound(to: Float.self) }
    let mine = slice(n)
    if !mine.isEmpty, let out = scratch.buffer.baseAddress {
      // Fixed order: out = x₀, then out += x₁, out += x₂, ... element by element.
      for (r, input) in inputs.enumerated() {
        guard let input else { continue }
        if r == 0 {
          for i in mine { out[i] = input[i] }
        } else {
          for i in mine { out[i] += input[i] }
        }
      }
    }
    _ = try group.rendezvous(sequence: sequence, phase: 1, rank: rank, op: op, payload: Payload())
    if n > 0, let out = scratch.buffer.baseAddress, let dst = buffer.baseAddress {
      dst.update(from: out, count: n)
    }
  }

  func allGather(_ send: UnsafeBufferPointer<Float>, into receive: UnsafeMutableBufferPointer<Float>) throws {
    try CommCheck.gatherSizes("allGather", send: send.count, receive: receive.count, self)
    let op = "allGather", n = send.count, group = self.group
    let sequence = takeSequence()
    let (payloads, _) = try group.rendezvous(
      sequence: sequence, phase: 0, rank: rank, op: op,
      payload: Payload(pointer: UnsafeMutableRawPointer(mutating: send.baseAddress), count: n)
    ) { payloads throws(CommError) in
      try Self.sameCounts(op, payloads, group)
      return nil
    }
    if n > 0, let dst = receive.baseAddress {
      for (r, p) in payloads.enumerated() {
        if let src = p.pointer?.assumingMemoryBound(to: Float.self) {
          (dst + r * n).update(from: src, count: n)
        }
      }
    }
    // Nobody may change its send buffer before every rank has copied it.
    _ = try group.rendezvous(sequence: sequence, phase: 1, rank: rank, op: op, payload: Payload())
  }

  func reduceScatter(_ send: UnsafeBufferPointer<Float>, into receive: UnsafeMutableBufferPointer<Float>) throws {
    try CommCheck.gatherSizes("reduceScatter", send: receive.count, receive: send.count, self)
    let op = "reduceScatter", n = receive.count, group = self.group
    let sequence = takeSequence()
    let (payloads, _) = try group.rendezvous(
      sequence: sequence, phase: 0, rank: rank, op: op,
      payload: Payload(pointer: UnsafeMutableRawPointer(mutating: send.baseAddress), count: send.count)
    ) { payloads throws(CommError) in
      try Self.sameCounts(op, payloads, group)
      return nil
    }
    if n > 0, let out = receive.baseAddress {
      let base = rank * n
      for (r, p) in payloads.enumerated() {
        guard let input = p.pointer?.assumingMemoryBound(to: Float.self) else { continue }
        if r == 0 {
          for i in 0..<n { out[i] = input[base + i] }
        } else {
          for i in 0..<n { out[i] += input[base + i] }
        }
      }
    }
    _ = try group.rendezvous(sequence: sequence, phase: 1, rank: rank, op: op, payload: Payload())
  }

  func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, root: Int) throws {
    try CommCheck.rank(root, "broadcast root", self)
    let op = "broadcast", n = buffer.count, group = self.group
    let sequence = takeSequence()
    let (payloads, _) = try group.rendezvous(
      sequence: sequence, phase: 0, rank: rank, op: op,
      payload: Payload(pointer: UnsafeMutableRawPointer(buffer.baseAddress), count: n, a: root)
    ) { payloads throws(CommError) in
      try Self.sameCounts(op, payloads, group)
      for (r, p) in payloads.enumerated() where p.a != payloads[0].a {
        throw CommError(.mismatch, ranks: [0, r],
          "broadcast on \(group.name): \(group.label(0)) names root \(payloads[0].a) but \(group.label(r)) names \(p.a)")
      }
      return nil
    }
    if rank != root, n > 0, let dst = buffer.baseAddress,
       let src = payloads[root].pointer?.assumingMemoryBound(to: Float.self) {
      dst.update(from: src, count: n)
    }
    _ = try group.rendezvous(sequence: sequence, phase: 1, rank: rank, op: op, payload: Payload())
  }

  func send(_ buffer: UnsafeBufferPointer<Float>, to destination: Int, tag: Int) throws {
    try CommCheck.rank(destination, "send destination", self)
    try CommCheck.tag(tag, self)
    let cond = group.world.cond
    cond.lock()
    defer { cond.unlock() }
    if let broken = group.broken { throw broken }
    group.mail[.init(source: rank, destination: destination, tag: tag), default: []].append(Array(buffer))
    cond.broadcast()
  }

  func receive(into buffer: UnsafeMutableBufferPointer<Float>, from source: Int, tag: Int) throws {
    try CommCheck.rank(source, "receive source", self)
    try CommCheck.tag(tag, self)
    let group = self.group, cond = group.world.cond
    let key = LocalGroup.MailKey(source: source, destination: rank, tag: tag)
    let op = "receive from \(group.label(source)) tag \(tag)"
    cond.lock()
    defer { cond.unlock() }
    let start = Date(), world = group.world
    while group.mail[key, default: []].isEmpty {
      if let problem = group.peerProblem(waitingFor: [source], op: op) { throw problem }
      let outcome = world.wait(since: start)
      if !group.mail[key, default: []].isEmpty { break }
      switch outcome {
      case .woken: break
      case .timedOut:
        throw CommError(.timeout, ranks: [source],
          "\(op) on \(group.name) at \(group.label(rank)): nothing arrived within \(group.world.timeout) s")
      case .phaseOverdue(let busyRank, let phase, let since):
        throw world.overdueError(busyRank, phase, since: since, op: op, group: group, rank: rank)
      }
    }
    let message = group.mail[key]!.removeFirst()
    guard message.count == buffer.count else {
      throw CommError(.mismatch, ranks: [source],
        "\(op) on \(group.name): expected \(buffer.count) floats, \(group.label(source)) sent \(message.count)")
    }
    if let dst = buffer.baseAddress {
      message.withUnsafeBufferPointer { dst.update(from: $0.baseAddress!, count: message.count) }
    }
  }

  func barrier() throws {
    _ = try group.rendezvous(sequence: takeSequence(), phase: 0, rank: rank, op: "barrier", payload: Payload())
  }

  func iAllReduce(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> any CommRequest {
    // The sequence number is taken now, so the operation matches in call order on every rank
    // whatever the helper thread's timing.
    let sequence = takeSequence()
    let request = LocalRequest(timeout: group.world.timeout * 3, world: group.world)
    let target = Payload(pointer: UnsafeMutableRawPointer(buffer.baseAddress), count: buffer.count)
    let thread = Thread { [self] in
      let buffer = UnsafeMutableBufferPointer(
        start: target.pointer?.assumingMemoryBound(to: Float.self), count: target.count)
      do {
        try allReduce(buffer, sequence: sequence)
        request.finish(nil)
      } catch {
        request.finish(error)
      }
    }
    thread.name = "palm.local.rank\(rank).iallreduce"
    thread.start()
    return request
  }

  func whileBusy<T>(_ phase: String, _ body: () throws -> T) rethrows -> T {
    let world = group.world, me = group.members[rank]
    world.beginBusy(me, phase)
    defer { world.endBusy(me) }
    return try body()
  }

  func split(color: Int, key: Int) throws -> any Communicator {
    guard color >= 0 else {
      throw CommError(.badArgument, "split on \(name): color must be ≥ 0 (got \(color))")
    }
    let group = self.group
    let parentName = name
    let (_, shared) = try group.rendezvous(
      sequence: takeSequence(), phase: 0, rank: rank, op: "split",
      payload: Payload(count: 0, a: color, b: key)
    ) { payloads throws(CommError) in
      // Runs once, with the lock held: build every new group.
      var byColor: [Int: [(key: Int, rank: Int)]] = [:]
      for (r, p) in payloads.enumerated() { byColor[p.a, default: []].append((p.b, r)) }
      let table = SplitTable()
      for (color, entries) in byColor {
        let ordered = entries.sorted { ($0.key, $0.rank) < ($1.key, $1.rank) }
        let newGroup = group.world.makeGroup(
          members: ordered.map { group.members[$0.rank] }, name: "\(parentName)/split(\(color))")
        for (newRank, e) in ordered.enumerated() { table.entries[e.rank] = (newGroup, newRank) }
      }
      return table
    }
    guard let table = shared as? SplitTable, let (newGroup, newRank) = table.entries[rank] else {
      throw CommError(.broken, "split on \(name): internal error, no group for rank \(rank)")
    }
    return LocalCommunicator(group: newGroup, rank: newRank)
  }
}

final class SplitTable: @unchecked Sendable {
  var entries: [Int: (LocalGroup, Int)] = [:]
}

/// A `CommRequest` completed by a helper thread.
final class LocalRequest: CommRequest, @unchecked Sendable {
  private let cond = NSCondition()
  private var done = false
  private var error: (any Error)? = nil
  private let timeout: Double
  private let world: LocalWorld

  init(timeout: Double, world: LocalWorld) {
    self.timeout = timeout
    self.world = world
  }

  func finish(_ error: (any Error)?) {
    cond.lock()
    self.error = error
    done = true
    cond.broadcast()
    cond.unlock()
  }

  func wait() throws {
    cond.lock()
    defer { cond.unlock() }
    let start = Date()
    // The helper thread's allReduce is bounded (and extended by busy phases) itself; this bound
    // only guards against a helper that never runs, re-read every second for busy phases.
    func deadline() -> Date {
      world.cond.lock()
      defer { world.cond.unlock() }
      return world.deadline(since: start)?.addingTimeInterval(timeout - world.timeout) ?? Date(timeIntervalSinceNow: 60)
    }
    while !done {
      if !cond.wait(until: min(deadline(), Date(timeIntervalSinceNow: 1))) && !done && Date() >= deadline() {
        throw CommError(.timeout, "iAllReduce request did not complete within \(timeout) s")
      }
    }
    if let error { throw error }
  }

  func test() throws -> Bool {
    cond.lock()
    defer { cond.unlock() }
    if done, let error { throw error }
    return done
  }
}
