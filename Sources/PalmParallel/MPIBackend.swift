// MPIBackend: the `Communicator` protocol over MPI (Open MPI 4.1), one process per rank.
//
// MPI is initialised once per process (MPI_Init_thread, SERIALIZED: our own lock keeps calls one at
// a time so any thread may call). Every communicator gets MPI_ERRORS_RETURN, and error codes become
// `CommError(.mpi(code))`. Each operation is started non-blocking (MPI_Iallreduce, MPI_Iallgather,
// MPI_Ireduce_scatter_block, MPI_Ibcast, MPI_Isend/Irecv, MPI_Ibarrier) and completed by polling
// MPI_Test against a deadline, so a missing peer becomes a thrown `.timeout` naming it, never a
// hang. (The blocking calls, MPI_Allreduce, ..., cannot be bounded, named or kept alive by
// heartbeats, so they are not used.) Reference: MPI 3.1 §5.12 (non-blocking collectives), §8.3
// (error handlers).

import PalmModel
import CMPI
import Foundation

/// A `Communicator` over an MPI communicator.
///
/// Reduction order: Open MPI picks the algorithm from the communicator size and the message length
/// only, never from timing: coll/libnbc for the non-blocking calls (binomial reduce + broadcast for
/// small messages or fewer than 4 ranks, ring or reduce-scatter/allgather for large ones). So a
/// given (size, count) always adds in the same order and every rank receives the same bits
/// (palm-mpi-check verifies this, and that allReduce and iAllReduce agree, for 1-8 ranks). The order is not the plain rank order of `LocalCluster`, so the two
/// backends may differ in the last bits; with 2 ranks every algorithm computes x₀ + x₁ exactly alike.
/// Changing the MCA parameters (coll_libnbc_*) changes the order.
///
/// What happens when a rank dies: under `mpirun` (ORTE), a process that exits without
/// MPI_Finalize, or is killed, makes mpirun kill the whole job and exit non-zero, printing which
/// rank died ("mpirun noticed that process rank 1 ... exited on signal 9"). A rank that hangs
/// (alive but not calling) is caught by our deadline instead: each waiting rank throws a
/// `.timeout` error naming the ranks that did not answer a short status exchange on a private
/// duplicate communicator (see `diagnose`). After that, call `MPIRuntime.abort` (the job cannot
/// recover: the outstanding MPI request cannot be cancelled).
/// Verified with palm-mpi-check --die-rank / --hang-rank / --exit-rank (see its header).
///
/// Long phases (`whileBusy`, the contract in Communicator.swift): the busy rank's helper thread
/// sends a heartbeat every min(timeout / 4, 5 s) to every world rank on a private duplicate of the
/// world communicator (`MPIHeartbeat`): busy or ended, the phase's name, the seconds it has lasted
/// and its bound (`phaseTimeout`). A rank whose wait reaches its deadline reads the heartbeats that
/// arrived and waits on while a peer's latest says busy and is younger than the timeout, then
/// restarts its deadline from the last beat it saw. A process that is stopped (SIGSTOP) stops
/// beating and is named one timeout later; one hung inside `whileBusy` keeps beating, but once its
/// phase has lasted longer than its bound every waiting rank throws a `.timeout` naming that rank
/// and the phase (then `MPIRuntime.abort` ends the job, the hung rank included).
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
  /// Seconds one `whileBusy` phase of this rank may last while others wait for it (the bound its
  /// heartbeats carry; the waiting ranks then throw `.timeout` naming it).
  public let phaseTimeout: Double
  /// World rank of each rank of this communicator (for messages).
  public let worldRanks: [Int]

  private let comm: MPI_Comm?
  /// A duplicate used only for the status exchange after a timeout.
  private let control: MPI_Comm?
  /// The job's heartbeats (the world's, shared by its splits).
  private let heartbeat: MPIHeartbeat
  private let stateLock = NSLock()
  private var sequence = 0
  private var broken: CommError? = nil

  /// The world communicator (initialises MPI on first use). Works without mpirun as a singleton.
  /// `phaseTimeout` bounds each `whileBusy` phase (default: 10 × `timeout`).
  public static func world(timeout: Double = 60, phaseTimeout: Double? = nil) throws -> MPICommunicator {
    try MPIRuntime.initialize()
    guard timeout > 0 && timeout.isFinite else {
      throw CommError(.badArgument, "MPI timeout must be a positive number of seconds (got \(timeout))")
    }
    let phase = phaseTimeout ?? 10 * timeout
    guard phase > 0 && phase.isFinite else {
      throw CommError(.badArgument, "MPI phase timeout must be a positive number of seconds (got \(phase))")
    }
    let beats = try MPIHeartbeat(timeout: timeout, phaseTimeout: phase)
    return try MPICommunicator(adopting: swmpi_comm_world(), name: "world", timeout: timeout, heartbeat: beats)
  }

  private init(adopting comm: MPI_Comm?, name: String, timeout: Double, heartbeat: MPIHeartbeat) throws {
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
    self.phaseTimeout = heartbeat.phaseTimeout
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

  /// Runs one operation: the non-blocking MPI call, polled against the deadline.
  private func perform(_ op: String, _ sequence: Int, _ call: String, _ body: (inout MPI_Request?) -> Int32) throws {
    var request = try start(call, body)
    try complete(&request, op: op, sequence: sequence)
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
        // A peer in a long phase keeps this wait alive (up to the phase's bound); the deadline
        // restarts from its last beat.
        switch heartbeat.peers(now: now) {
        case .busy:
          lastBusy = now
          deadline = max(deadline, now + timeout)
          continue
        case .overdue(let worldRank, let phase, let seconds, let bound):
          let who = worldRanks.firstIndex(of: worldRank).map(label) ?? "world rank \(worldRank)"
          let error = CommError(.timeout, ranks: worldRanks.firstIndex(of: worldRank).map { [$0] } ?? [],
            "\(op) (call #\(sequence)) on \(name) at \(label(rank)): \(who) has been in its \(phase) for "
              + "\(Int(seconds)) s, longer than the phase timeout of \(bound) s (hung, or slower than that: raise --phase-timeout)")
          markBroken(error)
          throw error
        case .none: break
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
    try perform("allReduce", seq, "MPI_Iallreduce") {
      MPI_Iallreduce(swmpi_in_place(), buffer.baseAddress, n, swmpi_float(), swmpi_sum(), self.comm, &$0)
    }
  }

  public func allGather(_ send: UnsafeBufferPointer<Float>, into receive: UnsafeMutableBufferPointer<Float>) throws {
    try CommCheck.gatherSizes("allGather", send: send.count, receive: receive.count, self)
    let seq = try begin("allGather")
    let n = try count(send.count, "allGather")
    _ = try count(receive.count, "allGather")
    try perform("allGather", seq, "MPI_Iallgather") {
      MPI_Iallgather(send.baseAddress, n, swmpi_float(), receive.baseAddress, n, swmpi_float(), self.comm, &$0)
    }
  }

  public func reduceScatter(_ send: UnsafeBufferPointer<Float>, into receive: UnsafeMutableBufferPointer<Float>) throws {
    try CommCheck.gatherSizes("reduceScatter", send: receive.count, receive: send.count, self)
    let seq = try begin("reduceScatter")
    let n = try count(receive.count, "reduceScatter")
    _ = try count(send.count, "reduceScatter")
    try perform("reduceScatter", seq, "MPI_Ireduce_scatter_block") {
      MPI_Ireduce_scatter_block(send.baseAddress, receive.baseAddress, n, swmpi_float(), swmpi_sum(), self.comm, &$0)
    }
  }

  public func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, root: Int) throws {
    try CommCheck.rank(root, "broadcast root", self)
    let seq = try begin("broadcast")
    let n = try count(buffer.count, "broadcast")
    try perform("broadcast", seq, "MPI_Ibcast") {
      MPI_Ibcast(buffer.baseAddress, n, swmpi_float(), Int32(root), self.comm, &$0)
    }
  }

  public func send(_ buffer: UnsafeBufferPointer<Float>, to destination: Int, tag: Int) throws {
    try CommCheck.rank(destination, "send destination", self)
    try CommCheck.tag(tag, self)
    let seq = try begin("send")
    let n = try count(buffer.count, "send")
    try perform("send", seq, "MPI_Isend") {
      MPI_Isend(buffer.baseAddress, n, swmpi_float(), Int32(destination), Int32(tag), self.comm, &$0)
    }
  }

  public func receive(into buffer: UnsafeMutableBufferPointer<Float>, from source: Int, tag: Int) throws {
    try CommCheck.rank(source, "receive source", self)
    try CommCheck.tag(tag, self)
    let seq = try begin("receive")
    let n = try count(buffer.count, "receive")
    var status = MPI_Status()
    var request = try start("MPI_Irecv") {
      MPI_Irecv(buffer.baseAddress, n, swmpi_float(), Int32(source), Int32(tag), comm, &$0)
    }
    try complete(&request, op: "receive", sequence: seq, status: &status)
    var got: Int32 = 0
    try MPIRuntime.locked { try MPIRuntime.check(MPI_Get_count(&status, swmpi_float(), &got), "MPI_Get_count") }
    guard got == n else {
      throw CommError(.mismatch, ranks: [source],
        "receive on \(name): expected \(n) floats, \(label(source)) sent \(got)")
    }
  }

  public func barrier() throws {
    let seq = try begin("barrier")
    try perform("barrier", seq, "MPI_Ibarrier") { MPI_Ibarrier(self.comm, &$0) }
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
    return try MPICommunicator(adopting: newComm, name: "\(name)/split(\(color))", timeout: timeout, heartbeat: heartbeat)
  }

  public func whileBusy<T>(_ phase: String, _ body: () throws -> T) rethrows -> T {
    heartbeat.begin(phase)
    defer { heartbeat.end() }
    return try body()
  }
}

/// The heartbeats of long phases (see `MPICommunicator`, "Long phases"): sent by a helper thread
/// while this rank is inside `whileBusy`, read by waits that reach their deadline. One per process.
///
/// A beat is 80 bytes: byte 0 the state (1 busy, 0 ended), bytes 8..<16 the seconds the phase has
/// lasted and 16..<24 its bound (Doubles, this machine's byte order: every rank runs the same
/// build), bytes 24..<80 the phase's name in UTF-8, zero-padded (eager: the sends complete locally).
final class MPIHeartbeat: @unchecked Sendable {
  private static let tag: Int32 = 31_001
  private static let beatBytes = 80
  private static let nameBytes = 56
  private let comm: MPI_Comm?
  private let rank: Int32
  private let size: Int32
  private let timeout: Double
  /// The bound of this rank's phases, sent with each beat.
  let phaseTimeout: Double
  private let interval: Double
  private let cond = NSCondition()
  private var depth = 0
  /// The outermost phase of this rank and when it began.
  private var phase = ""
  private var phaseStart = 0.0

  /// A peer's latest beat, and when this process received it.
  private struct Beat {
    var busy: Bool
    var phase: String
    var seconds: Double
    var bound: Double
    var at: Double
  }
  private var latest: [Int32: Beat] = [:]
  private let inbox = UnsafeMutableRawPointer.allocate(byteCount: beatBytes, alignment: 8)
  /// Beats in flight (Isend buffers must stay untouched until sent): one per peer and beat, freed
  /// only when the send completed; with eager 80-byte messages that is at once.
  private var outgoing: [(MPI_Request?, UnsafeMutableRawPointer)] = []

  /// A duplicate of the world communicator (collective: every rank calls `world()`).
  init(timeout: Double, phaseTimeout: Double) throws {
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
    self.phaseTimeout = phaseTimeout
    interval = max(0.01, min(timeout / 4, 5))
  }

  func begin(_ name: String) {
    cond.lock()
    depth += 1
    let first = depth == 1
    if first {
      phase = name
      phaseStart = MPIRuntime.now()
    }
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

  /// One heartbeat to every other rank.
  private func send(busy: Bool) {
    cond.lock()
    let name = Array(phase.utf8.prefix(Self.nameBytes)), seconds = MPIRuntime.now() - phaseStart
    cond.unlock()
    MPIRuntime.locked {
      // Free the buffers of beats whose sends completed.
      outgoing = outgoing.filter { entry in
        var (request, buffer) = entry
        var flag: Int32 = 0
        if MPI_Test(&request, &flag, swmpi_status_ignore()) == MPI_SUCCESS && flag == 0 { return true }
        buffer.deallocate()
        return false
      }
      for p in 0..<size where p != rank {
        let beat = UnsafeMutableRawPointer.allocate(byteCount: Self.beatBytes, alignment: 8)
        beat.initializeMemory(as: UInt8.self, repeating: 0, count: Self.beatBytes)
        beat.storeBytes(of: busy ? 1 : 0, as: UInt8.self)
        beat.storeBytes(of: seconds, toByteOffset: 8, as: Double.self)
        beat.storeBytes(of: phaseTimeout, toByteOffset: 16, as: Double.self)
        for (i, b) in name.enumerated() { beat.storeBytes(of: b, toByteOffset: 24 + i, as: UInt8.self) }
        var request: MPI_Request? = swmpi_request_null()
        if MPI_Isend(beat, Int32(Self.beatBytes), swmpi_byte(), p, Self.tag, comm, &request) == MPI_SUCCESS {
          outgoing.append((request, beat))
        } else {
          beat.deallocate()
        }
      }
    }
  }

  /// What the peers' heartbeats say to a wait that reached its deadline.
  enum PeerState {
    /// No peer is in a long phase.
    case none
    /// Some peer is, within its bound.
    case busy
    /// World rank `rank` has been in `phase` for `seconds`, beyond its `bound`.
    case overdue(rank: Int, phase: String, seconds: Double, bound: Double)
  }

  /// Reads the heartbeats that arrived; `.overdue` when some peer's phase has outlasted its
  /// bound, else `.busy` when some peer's latest beat says busy and came within the timeout.
  func peers(now: Double) -> PeerState {
    MPIRuntime.locked {
      while true {
        var flag: Int32 = 0
        var status = MPI_Status()
        guard MPI_Iprobe(swmpi_any_source(), Self.tag, comm, &flag, &status) == MPI_SUCCESS, flag != 0 else { break }
        let source = status.MPI_SOURCE
        guard MPI_Recv(inbox, Int32(Self.beatBytes), swmpi_byte(), source, Self.tag, comm, swmpi_status_ignore()) == MPI_SUCCESS
        else { break }
        let name = (0..<Self.nameBytes).map { inbox.load(fromByteOffset: 24 + $0, as: UInt8.self) }.prefix { $0 != 0 }
        let beat = Beat(busy: inbox.load(as: UInt8.self) == 1, phase: String(decoding: name, as: UTF8.self),
                        seconds: inbox.load(fromByteOffset: 8, as: Double.self),
                        bound: inbox.load(fromByteOffset: 16, as: Double.self), at: now)
        cond.lock()
        latest[source] = beat
        cond.unlock()
      }
    }
    cond.lock()
    defer { cond.unlock() }
    let busy = latest.filter { $0.value.busy && now - $0.value.at < timeout }
    if let (source, b) = busy.first(where: { $0.value.seconds + (now - $0.value.at) > $0.value.bound }) {
      return .overdue(rank: Int(source), phase: b.phase, seconds: b.seconds + (now - b.at), bound: b.bound)
    }
    return busy.isEmpty ? .none : .busy
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
