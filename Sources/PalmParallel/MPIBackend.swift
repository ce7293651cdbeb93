// MPIBackend: the `Communicator` protocol over MPI (Open MPI 4.1), one process per rank.
//
// MPI is initialised once per process (MPI_Init_thread, SERIALIZED: our own lock keeps calls one at
// a time so any thread may call). Every communicator gets MPI_ERRORS_RETURN, and error codes become
// `CommError(.mpi(code))`. By default (`Completion.polled`) each operation is started non-blocking
// (MPI_Iallreduce, MPI_Iallgather, MPI_Ireduce_scatter_block, MPI_Ibcast, MPI_Isend/Irecv,
// MPI_Ibarrier) and completed by polling MPI_Test against a deadline, so a missing peer becomes a
// thrown `.timeout` naming it, never a hang. `Completion.blocking` calls MPI_Allreduce, ... under a
// watchdog instead. Reference: MPI 3.1 §5.12 (non-blocking collectives), §8.3 (error handlers).

import PalmModel
import CMPI
import Foundation

/// A `Communicator` over an MPI communicator.
///
/// Reduction order: Open MPI picks the algorithm from the communicator size and the message length
/// only, never from timing: coll/libnbc for the non-blocking calls (`.polled` mode and iAllReduce:
/// binomial reduce + broadcast for small messages or fewer than 4 ranks, ring or
/// reduce-scatter/allgather for large ones), coll/tuned's fixed decision rules for the blocking
/// calls (`.blocking` mode). So a given (size, count, mode) always adds in the same order and every
/// rank receives the same bits (palm-mpi-check verifies this, and that allReduce and iAllReduce
/// agree, for 1-8 ranks). The order is not the plain rank order of `LocalCluster`, so the two
/// backends may differ in the last bits; with 2 ranks every algorithm computes x₀ + x₁ exactly alike.
/// Changing the MCA parameters (coll_tuned_*) changes the order.
///
/// What happens when a rank dies: under `mpirun` (ORTE), a process that exits without
/// MPI_Finalize, or is killed, makes mpirun kill the whole job and exit non-zero, printing which
/// rank died ("mpirun noticed that process rank 1 ... exited on signal 9"). A rank that hangs
/// (alive but not calling) is caught by our deadline instead: each waiting rank throws a
/// `.timeout` error naming the ranks that did not answer a short status exchange on a private
/// duplicate communicator (see `diagnose`). After that, call `MPIRuntime.abort` (the job cannot
/// recover: the outstanding MPI request cannot be cancelled). In `.blocking` mode the watchdog
/// prints the stuck call on stderr and exits with status 124 instead (mpirun then stops the job).
/// Verified with palm-mpi-check --die-rank / --hang-rank / --exit-rank (see its header).
///
/// Long phases (`whileBusy`, the contract in Communicator.swift): the busy rank's helper thread
/// sends a heartbeat (one Int32: 1 busy, 0 ended) every min(timeout / 4, 5 s) to every world rank
/// on a private duplicate of the world communicator (`MPIHeartbeat`); a rank whose wait reaches its
/// deadline reads the heartbeats that arrived and waits on while a peer's latest says busy and is
/// younger than the timeout, then restarts its deadline from the last beat it saw. A process that
/// is stopped (SIGSTOP) stops beating and is named one timeout later; one hung inside `whileBusy`
/// keeps beating (its helper thread is alive) and is not detected: a long phase has no deadline.
/// `.blocking` mode cannot read heartbeats during a blocking call, so its watchdog ignores them.
/// A wait that lasts longer than 10 ms sleeps 0.5 ms between polls, so waiting ranks (e.g. during
/// rank 0's checkpoint write) leave their cores to the ranks that work.
///
/// ```swift
/// let world = try MPICommunicator.world(timeout: 60)
/// var g: [Float] = [1, 2, 3]
/// try world.allReduce(&g)
/// MPIRuntime.finalize()
/// ```
public final class MPICommunicator: Communicator, @unchecked Sendable {
  public let rank: Int
  public let size: Int
  public let name: String
  /// Seconds any one operation may wait before it throws `.timeout`.
  public let timeout: Double
  /// How blocking operations wait (see `Completion`).
  public let completion: Completion
  /// World rank of each rank of this communicator (for messages).
  public let worldRanks: [Int]

  private let comm: MPI_Comm?
  /// A duplicate used only for the status exchange after a timeout.
  private let control: MPI_Comm?
  /// The job's heartbeats (the world's, shared by its splits); nil in `.blocking` mode.
  private let heartbeat: MPIHeartbeat?
  private let stateLock = NSLock()
  private var sequence = 0
  private var broken: CommError? = nil

  /// How the blocking operations (allReduce, allGather, ..., barrier) wait for completion.
  public enum Completion: String, Sendable, CaseIterable {
    /// Start the non-blocking MPI call and poll MPI_Test against the deadline. A missing peer is a
    /// thrown `.timeout` naming it. allReduce and iAllReduce then use the same algorithm (libnbc).
    case polled
    /// Call the blocking MPI function (MPI_Allreduce, ...: coll/tuned, often faster for large
    /// buffers, e.g. 1.5-2x at 64 MiB on 2 ranks here). A watchdog thread ends the process with
    /// status 124 and a message on stderr if one call exceeds the timeout (mpirun then stops the
    /// job); it cannot name the missing rank. iAllReduce stays non-blocking and polled.
    case blocking
  }

  /// The world communicator (initialises MPI on first use). Works without mpirun as a singleton.
  public static func world(timeout: Double = 60, completion: Completion = .polled) throws -> MPICommunicator {
    try MPIRuntime.initialize()
    guard timeout > 0 && timeout.isFinite else {
      throw CommError(.badArgument, "MPI timeout must be a positive number of seconds (got \(timeout))")
    }
    let beats: MPIHeartbeat? = completion == .polled ? try MPIHeartbeat(timeout: timeout) : nil
    return try MPICommunicator(adopting: swmpi_comm_world(), name: "world", timeout: timeout,
                               completion: completion, heartbeat: beats)
  }

  private init(adopting comm: MPI_Comm?, name: String, timeout: Double, completion: Completion,
               heartbeat: MPIHeartbeat?) throws {
    var r: Int32 = 0, s: Int32 = 0
    var control: MPI_Comm? = nil
    var world: [Int32] = []
    try MPIRuntime.locked {
      try MPIRuntime.check(MPI_Comm_set_errhandler(comm, swmpi_errors_return()), "MPI_Comm_set_errhandler")
      try MPIRuntime.check(MPI_Comm_rank(comm, &r), "MPI_Comm_rank")
      try MPIRuntime.check(MPI_Comm_size(comm, &s), "MPI_Comm_size")
      try MPIRuntime.check(MPI_Comm_dup(comm, &control), "MPI_Comm_dup")
      try MPIRuntime.check(MPI_Comm_set_errhandler(control, swmpi_errors_return()), "MPI_Comm_set_errhandler")
      // Translate our ranks to world ranks (local, no communication).
      var mine: MPI_Group? = nil, worldGroup: MPI_Group? = nil
      try MPIRuntime.check(MPI_Comm_group(comm, &mine), "MPI_Comm_group")
      try MPIRuntime.check(MPI_Comm_group(swmpi_comm_world(), &worldGroup), "MPI_Comm_group")
      var ours = (0..<s).map { $0 }
      world = Array(repeating: 0, count: Int(s))
      try MPIRuntime.check(MPI_Group_translate_ranks(mine, s, &ours, worldGroup, &world), "MPI_Group_translate_ranks")
      MPI_Group_free(&mine)
      MPI_Group_free(&worldGroup)
    }
    self.comm = comm
    self.control = control
    self.rank = Int(r)
    self.size = Int(s)
    self.name = name
    self.timeout = timeout
    self.completion = completion
    self.worldRanks = world.map(Int.init)
    self.heartbeat = heartbeat
  }

  // MARK: Bookkeeping

  private func begin(_ op: String) throws -> Int {
    stateLock.lock()
    defer { stateLock.unlock() }
    if let broken { throw broken }
    sequence += 1
    return sequence
  }

  private func markBroken(_ error: CommError) {
    stateLock.lock()
    if broken == nil { broken = error }
    stateLock.unlock()
  }

  func label(_ r: Int) -> String {
    worldRanks[r] == r ? "rank \(r)" : "rank \(r) (world rank \(worldRanks[r]))"
  }

  private func count(_ n: Int, _ op: String) throws -> Int32 {
    guard n <= Int(Int32.max) else {
      throw CommError(.badArgument, "\(op) on \(name): \(n) floats exceed MPI's Int32 count limit")
    }
    return Int32(n)
  }

  /// Starts an operation with the lock held and returns its request.
  private func start(_ call: String, _ body: (inout MPI_Request?) -> Int32) throws -> MPI_Request? {
    var request: MPI_Request? = swmpi_request_null()
    try MPIRuntime.locked {
      try MPIRuntime.check(body(&request), call)
    }
    return request
  }

  /// Runs one operation: in `.blocking` mode the blocking MPI call under the watchdog, otherwise
  /// the non-blocking one polled against the deadline.
  private func perform(_ op: String, _ sequence: Int, blocking: (String, () -> Int32),
                       polled: (String, (inout MPI_Request?) -> Int32)) throws {
    if completion == .blocking {
      let token = MPIWatchdog.shared.arm(
        seconds: timeout, "MPI \(op) (call #\(sequence)) on \(name) at \(label(rank)) of \(size)")
      let rc = MPIRuntime.lockedCall(blocking.1)
      MPIWatchdog.shared.disarm(token)
      if rc != MPI_SUCCESS {
        let error = MPIRuntime.error(rc, "\(blocking.0) on \(name)")
        markBroken(error)
        throw error
      }
    } else {
      var request = try start(polled.0, polled.1)
      try complete(&request, op: op, sequence: sequence)
    }
  }

  /// Polls `request` until it completes or the deadline passes (then diagnoses and throws).
  fileprivate func complete(_ request: inout MPI_Request?, op: String, sequence: Int,
                            status: UnsafeMutablePointer<MPI_Status>? = nil) throws {
    let start = MPIRuntime.now()
    var deadline = start + timeout
    var spins = 0
    var lastBusy: Double? = nil  // when a peer was last seen busy during this wait
    while true {
      var flag: Int32 = 0
      let rc = MPIRuntime.lockedCall { MPI_Test(&request, &flag, status ?? swmpi_status_ignore()) }
      if rc != MPI_SUCCESS {
        let error = MPIRuntime.error(rc, "MPI_Test(\(op)) on \(name)")
        markBroken(error)
        throw error
      }
      if flag != 0 { return }
      spins += 1
      let now = MPIRuntime.now()
      if now - start > 0.01 { usleep(500) } else if spins > 100 { sched_yield() }
      if now > deadline || (lastBusy != nil && now > (lastBusy ?? 0) + 0.05) {
        // A peer in a long phase keeps this wait alive; the deadline restarts from its last beat.
        if let heartbeat, heartbeat.peerBusy(now: now) {
          lastBusy = now
          deadline = max(deadline, now + timeout)
          continue
        }
        if let seen = lastBusy {
          lastBusy = nil
          deadline = max(deadline, seen + timeout)
          continue
        }
      }
      if now > deadline {
        let error = diagnose(op: op, sequence: sequence)
        markBroken(error)
        throw error
      }
    }
  }

  private static let opCodes = ["allReduce", "allGather", "reduceScatter", "broadcast", "send",
                                "receive", "barrier", "iAllReduce", "split"]

  /// After a timeout: tell every peer which call we are stuck in and listen for them for a short
  /// grace period. Peers that answer are alive (and stuck too); the rest are named as missing.
  private func diagnose(op: String, sequence: Int) -> CommError {
    let grace = min(max(1.0, timeout), 10.0)
    let peers = (0..<size).filter { $0 != rank }
    // Leaked on purpose: requests that never complete may still write into them.
    let mine = UnsafeMutablePointer<Int32>.allocate(capacity: 2)
    mine[0] = Int32(sequence)
    mine[1] = Int32(Self.opCodes.firstIndex(of: op) ?? -1)
    let theirs = UnsafeMutablePointer<Int32>.allocate(capacity: 2 * max(size, 1))
    theirs.initialize(repeating: -1, count: 2 * max(size, 1))
    var receives: [Int: MPI_Request?] = [:]
    MPIRuntime.locked {
      for p in peers {
        var s: MPI_Request? = swmpi_request_null(), r: MPI_Request? = swmpi_request_null()
        if MPI_Irecv(theirs + 2 * p, 2, swmpi_int(), Int32(p), 31_000, control, &r) == MPI_SUCCESS {
          receives[p] = r
        }
        _ = MPI_Isend(mine, 2, swmpi_int(), Int32(p), 31_000, control, &s)
        _ = MPI_Request_free(&s)
      }
    }
    let end = MPIRuntime.now() + grace
    var answered: Set<Int> = []
    while MPIRuntime.now() < end && answered.count < receives.count {
      for (p, _) in receives where !answered.contains(p) {
        var flag: Int32 = 0
        var request = receives[p]!
        let rc = MPIRuntime.lockedCall { MPI_Test(&request, &flag, swmpi_status_ignore()) }
        receives[p] = request
        if rc == MPI_SUCCESS && flag != 0 { answered.insert(p) }
      }
      usleep(1000)
    }
    let silent = peers.filter { !answered.contains($0) }
    var notes: [String] = []
    for p in answered.sorted() {
      let seq = Int(theirs[2 * p]), code = Int(theirs[2 * p + 1])
      let theirOp = Self.opCodes.indices.contains(code) ? Self.opCodes[code] : "?"
      if seq == sequence && theirOp == op {
        notes.append("\(label(p)) is waiting in the same call")
      } else {
        notes.append("\(label(p)) is in \(theirOp) (call #\(seq)): mismatched call sequence")
      }
    }
    var message = "\(op) (call #\(sequence)) on \(name) at \(label(rank)) did not complete within \(timeout) s"
    if !silent.isEmpty {
      message += "; no answer from \(silent.map(label).joined(separator: ", ")) (dead, hung, or not calling collectives)"
    }
    if !notes.isEmpty { message += "; " + notes.joined(separator: "; ") }
    let mismatched = answered.filter { Int(theirs[2 * $0]) != sequence }
    return CommError(.timeout, ranks: silent.isEmpty ? mismatched.sorted() : silent, message)
  }

  // MARK: Collectives

  public func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
    let seq = try begin("allReduce")
    let n = try count(buffer.count, "allReduce")
    try perform("allReduce", seq,
      blocking: ("MPI_Allreduce", {
        MPI_Allreduce(swmpi_in_place(), buffer.baseAddress, n, swmpi_float(), swmpi_sum(), self.comm) }),
      polled: ("MPI_Iallreduce", {
        MPI_Iallreduce(swmpi_in_place(), buffer.baseAddress, n, swmpi_float(), swmpi_sum(), self.comm, &$0) }))
  }

  public func allGather(_ send: UnsafeBufferPointer<Float>, into receive: UnsafeMutableBufferPointer<Float>) throws {
    try CommCheck.gatherSizes("allGather", send: send.count, receive: receive.count, self)
    let seq = try begin("allGather")
    let n = try count(send.count, "allGather")
    _ = try count(receive.count, "allGather")
    try perform("allGather", seq,
      blocking: ("MPI_Allgather", {
        MPI_Allgather(send.baseAddress, n, swmpi_float(), receive.baseAddress, n, swmpi_float(), self.comm) }),
      polled: ("MPI_Iallgather", {
        MPI_Iallgather(send.baseAddress, n, swmpi_float(), receive.baseAddress, n, swmpi_float(), self.comm, &$0) }))
  }

  public func reduceScatter(_ send: UnsafeBufferPointer<Float>, into receive: UnsafeMutableBufferPointer<Float>) throws {
    try CommCheck.gatherSizes("reduceScatter", send: receive.count, receive: send.count, self)
    let seq = try begin("reduceScatter")
    let n = try count(receive.count, "reduceScatter")
    _ = try count(send.count, "reduceScatter")
    try perform("reduceScatter", seq,
      blocking: ("MPI_Reduce_scatter_block", {
        MPI_Reduce_scatter_block(send.baseAddress, receive.baseAddress, n, swmpi_float(), swmpi_sum(), self.comm) }),
      polled: ("MPI_Ireduce_scatter_block", {
        MPI_Ireduce_scatter_block(send.baseAddress, receive.baseAddress, n, swmpi_float(), swmpi_sum(), self.comm, &$0) }))
  }

  public func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, root: Int) throws {
    try CommCheck.rank(root, "broadcast root", self)
    let seq = try begin("broadcast")
    let n = try count(buffer.count, "broadcast")
    try perform("broadcast", seq,
      blocking: ("MPI_Bcast", { MPI_Bcast(buffer.baseAddress, n, swmpi_float(), Int32(root), self.comm) }),
      polled: ("MPI_Ibcast", { MPI_Ibcast(buffer.baseAddress, n, swmpi_float(), Int32(root), self.comm, &$0) }))
  }

  public func send(_ buffer: UnsafeBufferPointer<Float>, to destination: Int, tag: Int) throws {
    try CommCheck.rank(destination, "send destination", self)
    try CommCheck.tag(tag, self)
    let seq = try begin("send")
    let n = try count(buffer.count, "send")
    try perform("send", seq,
      blocking: ("MPI_Send", {
        MPI_Send(buffer.baseAddress, n, swmpi_float(), Int32(destination), Int32(tag), self.comm) }),
      polled: ("MPI_Isend", {
        MPI_Isend(buffer.baseAddress, n, swmpi_float(), Int32(destination), Int32(tag), self.comm, &$0) }))
  }

  public func receive(into buffer: UnsafeMutableBufferPointer<Float>, from source: Int, tag: Int) throws {
    try CommCheck.rank(source, "receive source", self)
    try CommCheck.tag(tag, self)
    let seq = try begin("receive")
    let n = try count(buffer.count, "receive")
    var status = MPI_Status()
    if completion == .blocking {
      let token = MPIWatchdog.shared.arm(
        seconds: timeout, "MPI receive (call #\(seq)) from \(label(source)) on \(name) at \(label(rank))")
      let rc = MPIRuntime.lockedCall {
        MPI_Recv(buffer.baseAddress, n, swmpi_float(), Int32(source), Int32(tag), comm, &status)
      }
      MPIWatchdog.shared.disarm(token)
      if rc != MPI_SUCCESS {
        let error = MPIRuntime.error(rc, "MPI_Recv on \(name)")
        markBroken(error)
        throw error
      }
    } else {
      var request = try start("MPI_Irecv") {
        MPI_Irecv(buffer.baseAddress, n, swmpi_float(), Int32(source), Int32(tag), comm, &$0)
      }
      try complete(&request, op: "receive", sequence: seq, status: &status)
    }
    var got: Int32 = 0
    try MPIRuntime.locked { try MPIRuntime.check(MPI_Get_count(&status, swmpi_float(), &got), "MPI_Get_count") }
    guard got == n else {
      throw CommError(.mismatch, ranks: [source],
        "receive on \(name): expected \(n) floats, \(label(source)) sent \(got)")
    }
  }

  public func barrier() throws {
    let seq = try begin("barrier")
    try perform("barrier", seq, blocking: ("MPI_Barrier", { MPI_Barrier(self.comm) }),
                polled: ("MPI_Ibarrier", { MPI_Ibarrier(self.comm, &$0) }))
  }

  public func iAllReduce(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> any CommRequest {
    let seq = try begin("iAllReduce")
    let n = try count(buffer.count, "iAllReduce")
    let request = try start("MPI_Iallreduce") {
      MPI_Iallreduce(swmpi_in_place(), buffer.baseAddress, n, swmpi_float(), swmpi_sum(), comm, &$0)
    }
    return MPIRequest(owner: self, request: request, sequence: seq)
  }

  public func split(color: Int, key: Int) throws -> any Communicator {
    guard color >= 0 && color <= Int(Int32.max) && abs(key) <= Int(Int32.max) else {
      throw CommError(.badArgument, "split on \(name): color must be in 0...Int32.max and key fit Int32 (got \(color), \(key))")
    }
    // MPI_Comm_split has no non-blocking form: an Ibarrier with our deadline first makes sure every
    // rank is there, so the split itself cannot hang on a missing rank.
    let seq = try begin("split")
    var request = try start("MPI_Ibarrier") { MPI_Ibarrier(comm, &$0) }
    try complete(&request, op: "split", sequence: seq)
    var newComm: MPI_Comm? = nil
    try MPIRuntime.locked {
      try MPIRuntime.check(MPI_Comm_split(comm, Int32(color), Int32(key), &newComm), "MPI_Comm_split")
    }
    return try MPICommunicator(adopting: newComm, name: "\(name)/split(\(color))", timeout: timeout,
                               completion: completion, heartbeat: heartbeat)
  }

  public func whileBusy<T>(_ phase: String, _ body: () throws -> T) rethrows -> T {
    guard let heartbeat else { return try body() }
    heartbeat.begin()
    defer { heartbeat.end() }
    return try body()
  }
}

/// The heartbeats of long phases (see `MPICommunicator`, "Long phases"): sent by a helper thread
/// while this rank is inside `whileBusy`, read by waits that reach their deadline. One per process.
final class MPIHeartbeat: @unchecked Sendable {
  private static let tag: Int32 = 31_001
  private let comm: MPI_Comm?
  private let rank: Int32
  private let size: Int32
  private let timeout: Double
  private let interval: Double
  private let cond = NSCondition()
  private var depth = 0
  /// Per world rank: its latest heartbeat (1 busy, 0 ended) and when this process received it.
  private var latest: [Int32: (busy: Bool, at: Double)] = [:]
  private let inbox = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
  private let outbox = UnsafeMutablePointer<Int32>.allocate(capacity: 2)  // [1, 0]: stable for Isend

  /// A duplicate of the world communicator (collective: every rank calls `world()`).
  init(timeout: Double) throws {
    var dup: MPI_Comm? = nil, r: Int32 = 0, n: Int32 = 0
    try MPIRuntime.locked {
      try MPIRuntime.check(MPI_Comm_dup(swmpi_comm_world(), &dup), "MPI_Comm_dup")
      try MPIRuntime.check(MPI_Comm_set_errhandler(dup, swmpi_errors_return()), "MPI_Comm_set_errhandler")
      try MPIRuntime.check(MPI_Comm_rank(dup, &r), "MPI_Comm_rank")
      try MPIRuntime.check(MPI_Comm_size(dup, &n), "MPI_Comm_size")
    }
    comm = dup
    rank = r
    size = n
    self.timeout = timeout
    interval = max(0.01, min(timeout / 4, 5))
    outbox[0] = 1
    outbox[1] = 0
  }

  func begin() {
    cond.lock()
    depth += 1
    let first = depth == 1
    cond.unlock()
    guard first else { return }
    send(busy: true)
    let thread = Thread { [self] in
      cond.lock()
      while depth > 0 {
        _ = cond.wait(until: Date(timeIntervalSinceNow: interval))
        if depth > 0 {
          cond.unlock()
          send(busy: true)
          cond.lock()
        }
      }
      cond.unlock()
    }
    thread.name = "palm.mpi.heartbeat"
    thread.start()
  }

  func end() {
    cond.lock()
    depth -= 1
    let last = depth == 0
    cond.broadcast()
    cond.unlock()
    if last { send(busy: false) }
  }

  /// One heartbeat to every other rank (eager, 4 bytes: the sends complete locally).
  private func send(busy: Bool) {
    MPIRuntime.locked {
      for p in 0..<size where p != rank {
        var request: MPI_Request? = swmpi_request_null()
        if MPI_Isend(outbox + (busy ? 0 : 1), 1, swmpi_int(), p, Self.tag, comm, &request) == MPI_SUCCESS {
          _ = MPI_Request_free(&request)
        }
      }
    }
  }

  /// Reads the heartbeats that arrived; true when some peer's latest says busy and came within
  /// the timeout.
  func peerBusy(now: Double) -> Bool {
    MPIRuntime.locked {
      while true {
        var flag: Int32 = 0
        var status = MPI_Status()
        guard MPI_Iprobe(swmpi_any_source(), Self.tag, comm, &flag, &status) == MPI_SUCCESS, flag != 0 else { break }
        let source = status.MPI_SOURCE
        guard MPI_Recv(inbox, 1, swmpi_int(), source, Self.tag, comm, swmpi_status_ignore()) == MPI_SUCCESS else { break }
        cond.lock()
        latest[source] = (inbox[0] == 1, now)
        cond.unlock()
      }
    }
    cond.lock()
    defer { cond.unlock() }
    return latest.values.contains { $0.busy && now - $0.at < timeout }
  }
}

/// A non-blocking MPI operation; `wait` polls MPI_Test against the owner's timeout.
final class MPIRequest: CommRequest, @unchecked Sendable {
  private let owner: MPICommunicator
  private let lock = NSLock()
  private var request: MPI_Request?
  private var done = false
  private var failure: (any Error)? = nil
  private let sequence: Int

  init(owner: MPICommunicator, request: MPI_Request?, sequence: Int) {
    self.owner = owner
    self.request = request
    self.sequence = sequence
  }

  func wait() throws {
    lock.lock()
    defer { lock.unlock() }
    if !done {
      do {
        try owner.complete(&request, op: "iAllReduce", sequence: sequence)
      } catch {
        failure = error
      }
      done = true
    }
    if let failure { throw failure }
  }

  func test() throws -> Bool {
    lock.lock()
    defer { lock.unlock() }
    if !done {
      var flag: Int32 = 0
      let rc = MPIRuntime.lockedCall { MPI_Test(&request, &flag, swmpi_status_ignore()) }
      if rc != MPI_SUCCESS {
        failure = MPIRuntime.error(rc, "MPI_Test(iAllReduce) on \(owner.name)")
        done = true
      } else if flag != 0 {
        done = true
      }
    }
    if let failure { throw failure }
    return done
  }
}

/// Process-wide MPI state: initialisation, the call lock, finalize and abort.
public enum MPIRuntime {
  private static let lock = NSRecursiveLock()
  nonisolated(unsafe) private static var initialized = false
  nonisolated(unsafe) private static var finalized = false
  /// The thread level MPI granted (MPI_THREAD_SERIALIZED is enough: calls are serialized by a lock).
  nonisolated(unsafe) public private(set) static var threadLevel: Int32 = -1

  /// Calls MPI_Init_thread once per process (later calls do nothing). Finalize is registered with
  /// atexit; after MPI_Finalize, MPI cannot be initialised again in this process.
  public static func initialize() throws {
    lock.lock()
    defer { lock.unlock() }
    if initialized { return }
    if finalized { throw CommError(.broken, "MPI was finalized in this process and cannot start again") }
    var already: Int32 = 0
    MPI_Initialized(&already)
    var provided: Int32 = 0
    if already == 0 {
      let rc = MPI_Init_thread(nil, nil, swmpi_thread_serialized(), &provided)
      if rc != MPI_SUCCESS { throw error(rc, "MPI_Init_thread") }
      atexit { MPIRuntime.finalize() }
    } else {
      MPI_Query_thread(&provided)
    }
    threadLevel = provided
    _ = MPI_Comm_set_errhandler(swmpi_comm_world(), swmpi_errors_return())
    initialized = true
  }

  /// True once `initialize` succeeded (and before `finalize`).
  public static var isInitialized: Bool {
    lock.lock()
    defer { lock.unlock() }
    return initialized && !finalized
  }

  /// MPI_Finalize, once; safe to call more than once or without initialisation.
  public static func finalize() {
    lock.lock()
    defer { lock.unlock() }
    if initialized && !finalized {
      finalized = true
      MPI_Finalize()
    }
  }

  /// Ends every rank of the job with `code` (MPI_Abort on the world). Use after a failed collective.
  public static func abort(code: Int32) -> Never {
    fflush(nil)
    if isInitialized { MPI_Abort(swmpi_comm_world(), code) }
    exit(code)
  }

  /// World rank of this process (0 when MPI is not initialised).
  public static var worldRank: Int {
    guard isInitialized else { return 0 }
    var r: Int32 = 0
    lockedCall { MPI_Comm_rank(swmpi_comm_world(), &r) }
    return Int(r)
  }

  static func locked<T>(_ body: () throws -> T) rethrows -> T {
    lock.lock()
    defer { lock.unlock() }
    return try body()
  }

  @discardableResult
  static func lockedCall(_ body: () -> Int32) -> Int32 {
    lock.lock()
    defer { lock.unlock() }
    return body()
  }

  static func check(_ rc: Int32, _ call: String) throws {
    if rc != MPI_SUCCESS { throw error(rc, call) }
  }

  static func error(_ rc: Int32, _ call: String) -> CommError {
    var text = [CChar](repeating: 0, count: Int(swmpi_max_error_string()) + 1)
    var length: Int32 = 0
    MPI_Error_string(rc, &text, &length)
    let message = String(decoding: text.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return CommError(.mpi(rc), "\(call) failed: \(message) (MPI error \(rc))")
  }

  static func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
  }
}

/// Ends the process when a blocking MPI call (`Completion.blocking`) exceeds its deadline.
final class MPIWatchdog: @unchecked Sendable {
  static let shared = MPIWatchdog()
  private let cond = NSCondition()
  private var armed: [Int: (deadline: Double, seconds: Double, what: String)] = [:]
  private var nextToken = 0
  private var started = false

  func arm(seconds: Double, _ what: String) -> Int {
    cond.lock()
    defer { cond.unlock() }
    nextToken += 1
    armed[nextToken] = (MPIRuntime.now() + seconds, seconds, what)
    if !started {
      started = true
      let thread = Thread { [self] in watch() }
      thread.name = "palm.mpi.watchdog"
      thread.start()
    }
    cond.broadcast()
    return nextToken
  }

  func disarm(_ token: Int) {
    cond.lock()
    armed[token] = nil
    cond.unlock()
  }

  private func watch() {
    cond.lock()
    while true {
      let now = MPIRuntime.now()
      if let late = armed.values.first(where: { $0.deadline <= now }) {
        let message = "palm: \(late.what) blocked for more than \(late.seconds) s (blocking completion mode "
          + "cannot name the missing rank; the polled mode can). Exiting with status 124 so that mpirun stops the job.\n"
        fflush(nil)
        FileHandle.standardError.write(Data(message.utf8))
        _exit(124)
      }
      let next = armed.values.map(\.deadline).min() ?? now + 3600
      _ = cond.wait(until: Date(timeIntervalSinceNow: max(0.01, min(next - now, 3600)) + 0.01))
    }
  }
}
