// Tests of the collective layer: LocalCluster collectives against plain rank-order sums (bit-exact),
// splits on a 2×2×2 mesh, timeouts and failing ranks, mesh parsing and validation, and the MPI
// backend (in-process singleton, and palm-mpi-check under mpirun -np 2 / -np 4 when available).

import Foundation
import PalmBench
import PalmModel
import PalmTensor
import Testing
import _PalmTestSupport

@testable import PalmParallel

/// Deterministic non-integer data, different per rank (an LCG; values in about ±1.4).
private func noise(rank: Int, count: Int, seed: UInt64 = 7) -> [Float] {
  var state = seed &* 6_364_136_223_846_793_005 &+ UInt64(rank + 1) &* 1_442_695_040_888_963_407
  return (0..<count).map { _ in
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return Float(Double(state >> 40) / Double(1 << 24) * 2 - 1) * 1.37
  }
}

/// One device's sum of the ranks' buffers in rank order: ((x₀ + x₁) + x₂) + …
private func rankOrderSum(_ inputs: [[Float]]) -> [Float] {
  var acc = inputs[0]
  for input in inputs.dropFirst() {
    for i in acc.indices { acc[i] += input[i] }
  }
  return acc
}

/// Nil if bit-identical, else the first difference and the largest absolute difference.
private func bitDifference(_ got: [Float], _ want: [Float]) -> String? {
  guard got.count == want.count else { return "count \(got.count) vs \(want.count)" }
  var first: Int? = nil
  var worst: Float = 0
  for i in got.indices where got[i].bitPattern != want[i].bitPattern {
    if first == nil { first = i }
    worst = max(worst, abs(got[i] - want[i]))
  }
  guard let first else { return nil }
  return "first at \(first): \(got[first]) vs \(want[first]); max |diff| \(worst)"
}

@Suite("LocalBackend collectives")
struct LocalCollectiveTests {
  @Test("allReduce / iAllReduce equal the rank-order sum bit for bit", arguments: [1, 2, 3, 4, 8])
  func allReduceBitExact(size: Int) throws {
    let counts = [0, 1, 37, 1001]
    let results = try LocalCluster(size: size, timeout: 30).run { comm in
      var out: [[Float]] = []
      for count in counts {
        var x = noise(rank: comm.rank, count: count)
        try comm.allReduce(&x)
        out.append(x)
        let y = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(count, 1))
        defer { y.deallocate() }
        let src = noise(rank: comm.rank, count: count)
        for i in 0..<count { y[i] = src[i] }
        let request = try comm.iAllReduce(UnsafeMutableBufferPointer(rebasing: y[0..<count]))
        try request.wait()
        #expect(try request.test())
        out.append(Array(y[0..<count]))
      }
      return out
    }
    for (c, count) in counts.enumerated() {
      let want = rankOrderSum((0..<size).map { noise(rank: $0, count: count) })
      for rank in 0..<size {
        let blocking = bitDifference(results[rank][2 * c], want)
        let nonBlocking = bitDifference(results[rank][2 * c + 1], want)
        #expect(blocking == nil, "allReduce size \(size) count \(count) rank \(rank): \(blocking ?? "")")
        #expect(nonBlocking == nil, "iAllReduce size \(size) count \(count) rank \(rank): \(nonBlocking ?? "")")
      }
    }
  }

  @Test("allGather, reduceScatter, broadcast, send/receive, barrier", arguments: [1, 2, 3, 4, 8])
  func otherCollectives(size: Int) throws {
    let n = 5
    let results = try LocalCluster(size: size, timeout: 30).run { comm in
      let r = comm.rank
      let gathered = try comm.allGather(noise(rank: r, count: n))
      let scattered = try comm.reduceScatter(noise(rank: r, count: n * comm.size, seed: 3))
      var roots: [[Float]] = []
      for root in 0..<comm.size {
        var x = r == root ? noise(rank: r, count: n, seed: 11) : [Float](repeating: -9, count: n)
        try comm.broadcast(&x, root: root)
        roots.append(x)
      }
      try comm.send(noise(rank: r, count: n, seed: 5), to: (r + 1) % comm.size, tag: 2)
      let received = try comm.receive(count: n, from: (r + comm.size - 1) % comm.size, tag: 2)
      try comm.barrier()
      return [gathered, scattered, received] + roots
    }
    let sums = rankOrderSum((0..<size).map { noise(rank: $0, count: n * size, seed: 3) })
    for rank in 0..<size {
      let out = results[rank]
      #expect(out[0] == (0..<size).flatMap { noise(rank: $0, count: n) }, "allGather rank \(rank)")
      let block = Array(sums[rank * n ..< (rank + 1) * n])
      #expect(bitDifference(out[1], block) == nil, "reduceScatter rank \(rank): \(bitDifference(out[1], block) ?? "")")
      #expect(out[2] == noise(rank: (rank + size - 1) % size, count: n, seed: 5), "receive rank \(rank)")
      for root in 0..<size {
        #expect(out[3 + root] == noise(rank: root, count: n, seed: 11), "broadcast root \(root) rank \(rank)")
      }
    }
  }

  @Test("splits on a 2×2×2 mesh give the right peers")
  func meshSplits() throws {
    let shape = try MeshShape(parsing: "pod=2,data=2,model=2")
    let results = try LocalCluster(size: 8, timeout: 30).run { comm in
      let mesh = try Mesh(shape: shape, world: comm)
      var sums: [Float] = []
      for axis in [mesh.podComm, mesh.dataComm, mesh.modelComm] {
        var x = [Float(comm.rank)]
        try axis.allReduce(&x)
        sums.append(x[0])
      }
      let ranks = [mesh.podComm, mesh.dataComm, mesh.modelComm].map { Float($0.rank) }
      let sizes = [mesh.podComm, mesh.dataComm, mesh.modelComm].map { Float($0.size) }
      return sums + ranks + sizes
    }
    for rank in 0..<8 {
      let (p, d, m) = shape.coordinates(of: rank)
      #expect(shape.rank(pod: p, data: d, model: m) == rank)
      let want: [Float] = [
        Float(shape.rank(pod: 0, data: d, model: m) + shape.rank(pod: 1, data: d, model: m)),
        Float(shape.rank(pod: p, data: 0, model: m) + shape.rank(pod: p, data: 1, model: m)),
        Float(shape.rank(pod: p, data: d, model: 0) + shape.rank(pod: p, data: d, model: 1)),
        Float(p), Float(d), Float(m), 2, 2, 2,
      ]
      #expect(results[rank] == want, "rank \(rank) at (\(p), \(d), \(m))")
    }
    // Model peers are adjacent ranks: (pod·D + data)·M + model.
    #expect(shape.rank(pod: 1, data: 0, model: 1) == 5)
  }

  @Test("Tensor forms: allReduce, iAllReduce, allGather, reduceScatter, broadcast")
  func tensors() throws {
    let size = 3, n = 4
    let results = try LocalCluster(size: size, timeout: 30).run { comm -> [[Float]] in
      let r = comm.rank
      let a = Tensor(shape: [2, 2], values: noise(rank: r, count: n))
      try comm.allReduce(a)
      let b = Tensor(shape: [n], values: noise(rank: r, count: n))
      let request = try comm.iAllReduce(b)
      try request.wait()
      let gathered = Tensor(shape: [size, n])
      try comm.allGather(Tensor(shape: [n], values: noise(rank: r, count: n)), into: gathered)
      let scattered = Tensor(shape: [n])
      try comm.reduceScatter(Tensor(shape: [size * n], values: noise(rank: r, count: size * n, seed: 3)),
                             into: scattered)
      let c = Tensor(shape: [n], values: noise(rank: r, count: n, seed: 11))
      try comm.broadcast(c, root: 1)
      return [a.array, b.array, gathered.array, scattered.array, c.array]
    }
    let sum = rankOrderSum((0..<size).map { noise(rank: $0, count: n) })
    let sums = rankOrderSum((0..<size).map { noise(rank: $0, count: size * n, seed: 3) })
    for rank in 0..<size {
      let out = results[rank]
      #expect(bitDifference(out[0], sum) == nil && bitDifference(out[1], sum) == nil, "rank \(rank)")
      #expect(out[2] == (0..<size).flatMap { noise(rank: $0, count: n) })
      #expect(bitDifference(out[3], Array(sums[rank * n ..< (rank + 1) * n])) == nil)
      #expect(out[4] == noise(rank: 1, count: n, seed: 11))
    }
  }

  @Test("split orders by key, then by rank")
  func splitKeyOrder() throws {
    let results = try LocalCluster(size: 4, timeout: 30).run { comm in
      let sub = try comm.split(color: comm.rank % 2, key: -comm.rank)
      return [sub.rank, sub.size]
    }
    // Colors {0, 2} and {1, 3}; keys reversed, so the higher world rank comes first.
    #expect(results == [[1, 2], [1, 2], [0, 2], [0, 2]])
  }
}

@Suite("LocalBackend failures")
struct LocalFailureTests {
  @Test("a rank that never arrives: the others throw a timeout naming it, within the bound")
  func timeoutNamesMissingRank() throws {
    let bound = 0.3
    let cluster = try LocalCluster(size: 3, timeout: bound)
    let start = Date()
    let results = cluster.runCollectingResults { comm -> Double in
      if comm.rank == 2 {
        Thread.sleep(forTimeInterval: 1.5)  // arrives far too late
        return 0
      }
      let t0 = Date()
      do {
        var x: [Float] = [1]
        try comm.allReduce(&x)
      } catch let error as CommError {
        #expect(error.kind == .timeout)
        #expect(error.ranks == [2])
        #expect(error.message.contains("rank 2"), "\(error)")
        return Date().timeIntervalSince(t0)
      }
      Issue.record("rank \(comm.rank): allReduce returned without rank 2")
      return -1
    }
    for rank in 0..<2 {
      let waited = try results[rank].get()
      #expect(waited >= bound * 0.9 && waited < bound + 0.7, "rank \(rank) waited \(waited) s (bound \(bound))")
    }
    #expect(Date().timeIntervalSince(start) < 5)
  }

  /// Issue 13 item 13 / issue 11 "Faults": a phase of one rank longer than the timeout (rank 0
  /// writing a checkpoint) aborted the healthy job, blaming rank 0. Here rank 0 is busy 4× the
  /// timeout, rank 1 waits for it directly and rank 2 waits for rank 1 (a chain): all complete.
  @Test("a whileBusy phase 4x longer than the timeout: the waiting ranks, also through a chain, do not time out")
  func busyPhaseIsNotADeadRank() throws {
    let bound = 0.3
    let results = try LocalCluster(size: 3, timeout: bound).run { comm -> (Float, Double) in
      let low = try comm.split(color: comm.rank <= 1 ? 0 : 1, key: 0)   // {0, 1}, {2}
      let high = try comm.split(color: comm.rank >= 1 ? 0 : 1, key: 0)  // {1, 2}, {0}
      let t0 = Date()
      var x: [Float] = [Float(comm.rank + 1)]
      switch comm.rank {
      case 0:
        comm.whileBusy("checkpoint write") { Thread.sleep(forTimeInterval: 4 * bound) }
        try low.allReduce(&x)
      case 1:
        try low.allReduce(&x)   // waits for busy rank 0
        try high.allReduce(&x)
      default:
        try high.allReduce(&x)  // waits for rank 1, which waits for rank 0
      }
      return (x[0], Date().timeIntervalSince(t0))
    }
    #expect(results.map(\.0) == [3, 6, 6])
    #expect(results[2].1 >= 4 * bound * 0.9, "rank 2 waited \(results[2].1) s")
  }

  /// Issue 13: a rank hung inside a busy phase kept every other rank waiting for ever.
  @Test("a rank hung inside whileBusy: past the phase timeout the waiting ranks (allReduce, receive) fail naming it and the phase; a phase within it completes")
  func hungInsidePhase() throws {
    let bound = 0.2, phase = 0.8
    let start = Date()
    let results = try LocalCluster(size: 3, timeout: bound, phaseTimeout: phase).runCollectingResults { comm -> Double in
      switch comm.rank {
      case 0:
        comm.whileBusy("checkpoint write") { Thread.sleep(forTimeInterval: 4) }  // hung in the phase
        return 0
      case 1:
        var x: [Float] = [1]
        try comm.allReduce(&x)
      default:
        _ = try comm.receive(count: 1, from: 0)
      }
      Issue.record("rank \(comm.rank) returned without rank 0")
      return -1
    }
    // The first waiting rank to give up names rank 0 and its phase; the other names that failure.
    var named = 0
    for rank in 1..<3 {
      guard case .failure(let error) = results[rank], let e = error as? CommError else {
        Issue.record("rank \(rank): \(results[rank])"); continue
      }
      if e.kind == .timeout && e.ranks == [0] { named += 1 }
      #expect(e.message.contains("rank 0 has been in its checkpoint write") && e.message.contains("phase timeout of 0.8 s")
              && e.message.contains("--phase-timeout"), "\(e)")
    }
    #expect(named >= 1)
    let ended = Date().timeIntervalSince(start)
    #expect(ended >= phase && ended < phase + bound + 1.0, "the job ended after \(ended) s (phase timeout \(phase))")
    // The same phase within its bound completes.
    let sums = try LocalCluster(size: 2, timeout: bound, phaseTimeout: 3).run { comm -> Float in
      if comm.rank == 0 { comm.whileBusy("checkpoint write") { Thread.sleep(forTimeInterval: 1) } }
      var x: [Float] = [1]
      try comm.allReduce(&x)
      return x[0]
    }
    #expect(sums == [2, 2])
    #expect(throws: CommError.self) { try LocalCluster(size: 2, timeout: 1, phaseTimeout: 0) }
  }

  @Test("while one rank is busy, a hung rank is still named: at most the timeout after the busy phase ends")
  func hungRankNamedAfterBusyPhase() throws {
    let bound = 0.3, busy = 0.9
    let start = Date()
    let results = try LocalCluster(size: 3, timeout: bound).runCollectingResults { comm -> Double in
      if comm.rank == 2 {
        Thread.sleep(forTimeInterval: 4)  // hung: never joins in time
        return 0
      }
      if comm.rank == 0 { comm.whileBusy("checkpoint write") { Thread.sleep(forTimeInterval: busy) } }
      var x: [Float] = [1]
      do { try comm.allReduce(&x) } catch let e as CommError {
        #expect(e.kind == .timeout && e.ranks == [2] && e.message.contains("rank 2"), "\(e)")
        return Date().timeIntervalSince(start)
      }
      Issue.record("rank \(comm.rank): allReduce returned without rank 2")
      return -1
    }
    for rank in 0..<2 {
      let at = try results[rank].get()
      #expect(at >= busy && at < busy + bound + 0.7, "rank \(rank) gave up at \(at) s (busy \(busy), bound \(bound))")
    }
  }

  @Test("a rank that throws makes the others fail naming it")
  func throwingRank() throws {
    struct Boom: Error, CustomStringConvertible { var description: String { "boom from the test" } }
    let cluster = try LocalCluster(size: 4, timeout: 20)
    let start = Date()
    let results = cluster.runCollectingResults { comm -> Int in
      if comm.rank == 2 { throw Boom() }
      try comm.barrier()
      return 0
    }
    #expect(Date().timeIntervalSince(start) < 10, "others waited for the timeout instead of failing at once")
    for rank in [0, 1, 3] {
      #expect(throws: CommError.self) { try results[rank].get() }
      if case .failure(let error as CommError) = results[rank] {
        #expect(error.kind == .peerFailed)
        #expect(error.ranks == [2])
        #expect(error.message.contains("rank 2") && error.message.contains("boom"), "\(error)")
      }
    }
    // run() reports the rank that failed first, not the consequences.
    do {
      _ = try cluster.run { comm -> Int in
        if comm.rank == 2 { throw Boom() }
        try comm.barrier()
        return 0
      }
      Issue.record("run did not throw")
    } catch let failure as LocalCluster.RankFailure {
      #expect(failure.rank == 2)
      #expect(failure.error is Boom)
    }
  }

  @Test("a rank that finishes without joining is named at once")
  func exitedRank() throws {
    let results = try LocalCluster(size: 2, timeout: 20).runCollectingResults { comm -> Int in
      if comm.rank == 1 { return 0 }
      try comm.barrier()
      return 0
    }
    if case .failure(let error as CommError) = results[0] {
      #expect(error.kind == .peerExited && error.ranks == [1], "\(error)")
    } else {
      Issue.record("rank 0 did not fail: \(results[0])")
    }
  }

  @Test("mismatched calls and sizes are errors, not hangs")
  func mismatches() throws {
    let cluster = try LocalCluster(size: 2, timeout: 5)
    let differentOps = cluster.runCollectingResults { comm -> Int in
      if comm.rank == 0 { try comm.barrier() } else { var x: [Float] = [1]; try comm.allReduce(&x) }
      return 0
    }
    for result in differentOps {
      if case .failure(let error as CommError) = result {
        #expect(error.kind == .mismatch, "\(error)")
      } else {
        Issue.record("mismatched ops did not fail: \(result)")
      }
    }
    let differentCounts = cluster.runCollectingResults { comm -> Int in
      var x = [Float](repeating: 1, count: comm.rank + 1)
      try comm.allReduce(&x)
      return 0
    }
    for result in differentCounts {
      if case .failure(let error as CommError) = result {
        #expect(error.kind == .mismatch && error.message.contains("1 floats"), "\(error)")
      } else {
        Issue.record("mismatched counts did not fail: \(result)")
      }
    }
    let badArguments = cluster.runCollectingResults { comm -> Int in
      var x: [Float] = [1]
      #expect(throws: CommError.self) { try comm.broadcast(&x, root: 2) }
      #expect(throws: CommError.self) { try comm.send(x, to: -1, tag: 0) }
      #expect(throws: CommError.self) { try comm.split(color: -1, key: 0) }
      #expect(throws: CommError.self) { _ = try comm.reduceScatter([1, 2, 3]) }
      return 0
    }
    #expect(badArguments.allSatisfy { (try? $0.get()) == 0 })
  }

  @Test("receive with no sender times out naming the source")
  func receiveTimeout() throws {
    let results = try LocalCluster(size: 2, timeout: 0.2).runCollectingResults { comm -> Int in
      if comm.rank == 0 { _ = try comm.receive(count: 3, from: 1, tag: 9) }
      else { Thread.sleep(forTimeInterval: 0.6) }
      return 0
    }
    if case .failure(let error as CommError) = results[0] {
      #expect(error.kind == .timeout && error.ranks == [1] && error.message.contains("rank 1"), "\(error)")
    } else {
      Issue.record("receive did not time out: \(results[0])")
    }
  }

  @Test("cluster arguments are validated")
  func clusterArguments() {
    #expect(throws: CommError.self) { try LocalCluster(size: 0) }
    #expect(throws: CommError.self) { try LocalCluster(size: 2, timeout: 0) }
    #expect(throws: CommError.self) { try LocalCluster(size: 2, timeout: .infinity) }
    // Deadlines beyond a day overflowed NSCondition.wait(until:) (a trap): refused here.
    #expect(throws: CommError.self) { try LocalCluster(size: 2, timeout: 1e300) }
    #expect(throws: CommError.self) { try LocalCluster(size: 2, timeout: .nan) }
    #expect(throws: CommError.self) { try LocalCluster(size: 2, timeout: 1, phaseTimeout: 1e300) }
    #expect((try? LocalCluster(size: 2, timeout: LocalCluster.maxTimeout)) != nil)
  }
}

@Suite("Mesh parsing and validation")
struct MeshTests {
  @Test("valid mesh strings")
  func parse() throws {
    #expect(try MeshShape(parsing: "model=2,pod=3") == MeshShape(pod: 3, data: 1, model: 2))
    #expect(try MeshShape(parsing: " data = 4 ") == MeshShape(pod: 1, data: 4, model: 1))
    #expect(try MeshShape(parsing: "") == MeshShape())
    #expect(throws: MeshError.self) { try MeshShape(pod: 0) }
    #expect(try MeshShape(parsing: "pod=2,data=3,model=5").count == 30)
    #expect(try MeshShape(parsing: "pod=2,data=3,model=5").description == "pod=2,data=3,model=5")
  }

  @Test("bad mesh strings are clear errors", arguments: [
    ("pod=0", "positive integer"), ("pod=2,pod=3", "given twice"), ("gpu=2", "unknown axis"),
    ("pod2", "not axis=size"), ("data=x", "positive integer"), ("model=-1", "positive integer"),
    ("pod=1,,data=2", "not axis=size"), ("data=99999,model=99999", "more than"),
    ("pod=4294967296,data=4294967296,model=4294967296", "more than"),
  ])
  func badStrings(text: String, fragment: String) {
    do {
      _ = try MeshShape(parsing: text)
      Issue.record("\"\(text)\" parsed")
    } catch let error as MeshError {
      #expect(error.message.contains(fragment), "\"\(text)\": \(error)")
    } catch {
      Issue.record("\"\(text)\": unexpected \(error)")
    }
  }

  @Test("rank placement: model fastest, then data, then pod")
  func placement() throws {
    let shape = try MeshShape(pod: 2, data: 3, model: 4)
    var seen = Set<Int>()
    for p in 0..<2 { for d in 0..<3 { for m in 0..<4 {
      let r = shape.rank(pod: p, data: d, model: m)
      #expect(r == (p * 3 + d) * 4 + m)
      #expect(shape.coordinates(of: r) == (p, d, m))
      seen.insert(r)
    } } }
    #expect(seen == Set(0..<24))
  }

  @Test("validate names what the mesh does not divide")
  func validate() throws {
    let tiny = PalmConfig.tiny  // heads 4, d_ff 1024, d_model 256
    try MeshShape(pod: 2, data: 2, model: 4).validate(config: tiny, batch: 16)
    let cases: [(MeshShape, PalmConfig, Int, String)] = [
      (try MeshShape(model: 8), tiny, 16, "heads"),
      (try MeshShape(model: 3), tiny, 16, "heads"),
      (try MeshShape(model: 2), PalmConfig(dModel: 64, layers: 1, heads: 2, headDim: 32, dFF: 129,
                                           vocab: 256, seqLen: 8, batch: 4), 4, "d_ff"),
      (try MeshShape(model: 2), PalmConfig(dModel: 63, layers: 1, heads: 2, headDim: 32, dFF: 128,
                                           vocab: 256, seqLen: 8, batch: 4), 4, "d_model"),
      (try MeshShape(pod: 2, data: 3), tiny, 16, "batch"),
    ]
    for (shape, config, batch, what) in cases {
      do {
        try shape.validate(config: config, batch: batch)
        Issue.record("\(shape) accepted \(what)")
      } catch let error as MeshError {
        #expect(error.message.contains("divide \(what)"), "\(shape): \(error)")
      }
    }
    #expect(throws: MeshError.self) { try MeshShape(data: 2).validate(config: tiny, batch: 0) }
  }

  @Test("a mesh whose size differs from the number of ranks fails before any work")
  func sizeMismatch() throws {
    let results = try LocalCluster(size: 2, timeout: 5).run { comm -> String in
      do {
        _ = try Mesh(shape: MeshShape(data: 3), world: comm)
        return "no error"
      } catch let error as MeshError {
        return error.message
      }
    }
    #expect(results.allSatisfy { $0.contains("3 devices but there are 2 ranks") }, "\(results)")
  }
}

@Suite("CollectiveBench")
struct CollectiveBenchTests {
  @Test("all-gather, reduce-scatter and send/recv bandwidth: sizes rounded to whole blocks, correct results",
        arguments: [2, 3])
  func otherOperations(ranks: Int) throws {
    let results = try LocalCluster(size: ranks, timeout: 30).run { comm in
      try [CollectiveBench.Operation.allGather, .reduceScatter, .sendRecv].map {
        try CollectiveBench.bandwidth($0, comm: comm, sizes: [1024, 4100], repeats: 2)
      }
    }
    for perRank in results {
      for (op, r) in zip(["all-gather", "reduce-scatter", "send-recv"], perRank) {
        #expect(r.allSatisfy { $0.operation == op && $0.correct && $0.algbwGBps > 0 && $0.ranks == ranks }, "\(op): \(r)")
        // Gathered/scattered buffers hold whole per-rank blocks.
        if op != "send-recv" { #expect(r.allSatisfy { ($0.bytes / 4) % ranks == 0 }, "\(op): \(r.map(\.bytes))") }
      }
    }
    do {
      _ = try LocalCluster(size: 1).run { try CollectiveBench.bandwidth(.sendRecv, comm: $0, sizes: [1024]) }
      Issue.record("send-recv on one rank was accepted")
    } catch let failure as LocalCluster.RankFailure {
      #expect((failure.error as? CommError)?.kind == .badArgument, "\(failure)")
    }
  }

  @Test("allReduceBandwidth reports sizes, times and a correct result")
  func localBandwidth() throws {
    let results = try LocalCluster(size: 3, timeout: 30).run { comm in
      try CollectiveBench.allReduceBandwidth(comm: comm, sizes: [1024, 4100], repeats: 3)
    }
    for r in results {
      #expect(r.map(\.bytes) == [1024, 4100])
      #expect(r.allSatisfy { $0.correct && $0.ranks == 3 && $0.minSeconds <= $0.medianSeconds && $0.algbwGBps > 0 })
      #expect(r == results[0], "ranks disagree on the result")
    }
    do {
      _ = try LocalCluster(size: 1).run { try CollectiveBench.allReduceBandwidth(comm: $0, repeats: 0) }
      Issue.record("repeats: 0 was accepted")
    } catch let failure as LocalCluster.RankFailure {
      #expect((failure.error as? CommError)?.kind == .badArgument, "\(failure)")
    }
  }
}

// MARK: - MPI

/// The palm-mpi-check executable built next to this test bundle, if any.
private let mpiCheckBinary: URL? = {
  let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
  var dir = exe.deletingLastPathComponent()
  // On Linux the bundle is <products>/palmPackageTests.xctest (a file); elsewhere a directory tree.
  for _ in 0..<4 {
    let candidate = dir.appendingPathComponent("palm-mpi-check")
    if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
    dir = dir.deletingLastPathComponent()
  }
  return nil
}()

private let mpirun = ChildProcess.which("mpirun")

/// Runs mpirun with a clean MPI environment (the singleton test may have initialised MPI in this
/// process: its OMPI_/PMIX_ variables must not leak into the job) and a hard deadline; returns
/// (exit code, output).
private func runMPI(np: Int, _ extra: [String], deadline: Double = 120, mpirunOptions: [String] = []) throws -> (Int32, String) {
  guard let mpirun, let binary = mpiCheckBinary else { return (-1, "not available") }
  return try runProgram(mpirun, ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "\(np)"]
                                 + mpirunOptions + [binary.path] + extra, deadline: deadline)
}

@Suite("MPI backend", .serialized)
struct MPIBackendTests {
  @Test("singleton (size 1, no mpirun): collectives, split and errors")
  func singleton() throws {
    let world = try MPICommunicator.world(timeout: 30)
    #expect(world.size >= 1)
    guard world.size == 1 else { return }  // running under mpirun: nothing more to check here
    var x: [Float] = [1.5, -2, 3]
    try world.allReduce(&x)
    #expect(x == [1.5, -2, 3])
    #expect(try world.allGather([4, 5]) == [4, 5])
    #expect(try world.reduceScatter([6, 7]) == [6, 7])
    try world.broadcast(&x, root: 0)
    try world.barrier()
    let sub = try world.split(color: 3, key: 0)
    #expect(sub.size == 1 && sub.rank == 0 && sub.name == "world/split(3)")
    let mesh = try Mesh(shape: MeshShape(), world: world)
    #expect(mesh.modelComm.size == 1)
    #expect(throws: CommError.self) { try world.broadcast(&x, root: 1) }
    let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: 4)
    defer { buffer.deallocate() }
    buffer.initialize(repeating: 2)
    let request = try world.iAllReduce(buffer)
    try request.wait()
    #expect(Array(buffer) == [2, 2, 2, 2])
  }

  @Test("palm-mpi-check passes under mpirun -np 2 and -np 4",
        .enabled(if: mpirun != nil && mpiCheckBinary != nil,
                 "needs mpirun on PATH and palm-mpi-check built next to the tests (swift build --build-tests builds it)"),
        arguments: [2, 4])
  func mpirunCheck(np: Int) throws {
    let (status, output) = try runMPI(np: np, [])
    #expect(status == 0, "mpirun -np \(np) palm-mpi-check exited \(status):\n\(output)")
    #expect(output.contains("all checks passed on \(np) rank(s)"), "\(output)")
    #expect(!output.contains("FAIL"), "\(output)")
  }

  @Test("under mpirun a hung rank stops the job with a clear message",
        .enabled(if: mpirun != nil && mpiCheckBinary != nil, "needs mpirun and palm-mpi-check"))
  func mpirunHungRank() throws {
    let start = Date()
    let (status, output) = try runMPI(np: 2, ["--hang-rank", "1", "--timeout", "2"], deadline: 60)
    #expect(status != 0 && status != -2, "exit \(status):\n\(output)")
    #expect(output.contains("no answer from rank 1"), "\(output)")
    #expect(Date().timeIntervalSince(start) < 30)
  }

  @Test("under mpirun a killed rank stops the job, named by mpirun",
        .enabled(if: mpirun != nil && mpiCheckBinary != nil, "needs mpirun and palm-mpi-check"))
  func mpirunKilledRank() throws {
    let (status, output) = try runMPI(np: 2, ["--die-rank", "1", "--timeout", "10"], deadline: 60)
    #expect(status != 0 && status != -2, "exit \(status):\n\(output)")
    #expect(output.contains("process rank 1") && output.contains("signal 9"), "\(output)")
  }

  /// Shared memory (Open MPI's default between ranks of one machine) and TCP forced
  /// (`--mca btl self,tcp`: the transport of a job across machines, here over loopback).
  @Test("palm-mpi-check --sharded: every mesh of the one Trainer equals (1,1,1) under mpirun -np 2 and -np 4, shared memory and TCP",
        .enabled(if: mpirun != nil && mpiCheckBinary != nil, "needs mpirun and palm-mpi-check"),
        arguments: [(2, false), (4, false), (2, true)])
  func mpirunSharded(np: Int, tcp: Bool) throws {
    let (status, output) = try runMPI(np: np, ["--sharded"], deadline: 300,
                                      mpirunOptions: tcp ? ["--mca", "btl", "self,tcp"] : [])
    #expect(status == 0, "mpirun -np \(np) \(tcp ? "(tcp) " : "")palm-mpi-check --sharded exited \(status):\n\(output)")
    #expect(output.contains("sharded checks passed on \(np) rank(s)"), "\(output)")
    #expect(!output.contains("FAIL"), "\(output)")
  }
}
