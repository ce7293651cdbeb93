// palm-mpi-check: runs every collective of MPICommunicator with known inputs and checks the results.
//
// Run under mpirun (any -np; 2 and 4 are what the tests use) or alone (singleton, size 1):
//   mpirun --allow-run-as-root --oversubscribe --bind-to none -np 4 .build/debug/palm-mpi-check
// Prints "PASS <check>" (rank 0) or "FAIL <check>: <why>" (any rank); exits 0 only if every rank passed.
// Fault drills (exit non-zero on purpose): --hang-rank R (rank R stops calling MPI; the others must
// time out naming it), --die-rank R (rank R is killed by SIGKILL), --exit-rank R (rank R exits 0
// without MPI_Finalize), all with --timeout SECONDS.
// --bench runs the all-reduce bandwidth sweep (1 KiB ... 64 MiB) instead of the checks.

import Foundation
import PalmModel
import PalmParallel

// MARK: - Options

var timeout = 30.0
var hangRank: Int? = nil
var dieRank: Int? = nil
var benchOnly = false
var shardedOnly = false  // --sharded: the sharded-model equivalence check (ShardedCheck.swift)
var exitRank: Int? = nil
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
  switch argument {
  case "--timeout": timeout = Double(arguments.next() ?? "") ?? timeout
  case "--hang-rank": hangRank = Int(arguments.next() ?? "")
  case "--die-rank": dieRank = Int(arguments.next() ?? "")
  case "--bench": benchOnly = true
  case "--sharded": shardedOnly = true
  case "--exit-rank": exitRank = Int(arguments.next() ?? "")
  default:
    FileHandle.standardError.write("palm-mpi-check: unknown argument \(argument)\n".data(using: .utf8)!)
    exit(2)
  }
}

let world: MPICommunicator
do {
  world = try MPICommunicator.world(timeout: timeout)
} catch {
  print("FAIL init: \(error)")
  exit(1)
}
let rank = world.rank, size = world.size
var failures = 0

@MainActor func check(_ name: String, _ body: () throws -> String?) {
  defer { fflush(nil) }
  do {
    if let problem = try body() {
      failures += 1
      print("FAIL \(name) [rank \(rank)/\(size)]: \(problem)")
    } else if rank == 0 {
      print("PASS \(name) [np=\(size)]")
    }
  } catch {
    failures += 1
    print("FAIL \(name) [rank \(rank)/\(size)]: threw \(error)")
  }
}

/// Deterministic non-integer test data (an LCG), different for every rank and element.
func noise(rank: Int, count: Int, seed: UInt64 = 1) -> [Float] {
  var state = seed &* 6_364_136_223_846_793_005 &+ UInt64(rank + 1) &* 1_442_695_040_888_963_407
  return (0..<count).map { _ in
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return Float(Double(state >> 40) / Double(1 << 24) * 2 - 1) * 1.37
  }
}

/// The first index where two buffers differ, as text, or nil.
func firstDifference(_ a: [Float], _ b: [Float]) -> String? {
  guard a.count == b.count else { return "counts differ: \(a.count) vs \(b.count)" }
  for i in a.indices where a[i].bitPattern != b[i].bitPattern {
    return "index \(i): \(a[i]) vs \(b[i])"
  }
  return nil
}

// MARK: - Bandwidth sweep (--bench): 1 KiB ... 64 MiB, then exit

func printBench(_ results: [CollectiveBench.Result]) {
  for r in results where rank == 0 {
    print(String(format: "  allreduce %9d B  median %8.3f ms  min %8.3f ms  algbw %6.3f GB/s  busbw %6.3f GB/s  correct %@",
                 r.bytes, r.medianSeconds * 1e3, r.minSeconds * 1e3, r.algbwGBps, r.busbwGBps,
                 r.correct ? "yes" : "NO"))
  }
}

if shardedOnly { exit(runShardedCheck(world: world)) }

if benchOnly {
  do {
    let results = try CollectiveBench.allReduceBandwidth(comm: world, repeats: 7)
    printBench(results)
    MPIRuntime.finalize()
    exit(results.allSatisfy(\.correct) ? 0 : 1)
  } catch {
    print("FAIL bench [rank \(rank)]: \(error)")
    MPIRuntime.abort(code: 1)
  }
}

// MARK: - Fault drills

if let victim = dieRank ?? exitRank {
  if rank == victim && dieRank != nil {
    print("rank \(rank): killing myself with SIGKILL before allReduce")
    kill(getpid(), SIGKILL)
  } else if rank == victim {
    print("rank \(rank): exiting with status 0 before allReduce, without MPI_Finalize")
    fflush(nil)
    _exit(0)
  }
  var x: [Float] = [1]
  do {
    try world.allReduce(&x)
    print("rank \(rank): allReduce completed without rank \(victim)?!")
  } catch {
    print("rank \(rank): \(error)")
  }
  MPIRuntime.abort(code: 3)
}

if let victim = hangRank {
  if rank == victim {
    print("rank \(rank): hanging (no MPI calls) for \(3 * timeout + 30) s")
    Thread.sleep(forTimeInterval: 3 * timeout + 30)
    exit(4)
  }
  var x: [Float] = [1]
  do {
    try world.allReduce(&x)
    print("rank \(rank): allReduce completed without rank \(victim)?!")
  } catch {
    print("rank \(rank): \(error)")
  }
  MPIRuntime.abort(code: 3)
}

// MARK: - Collectives

check("world size and ranks") {
  world.worldRanks == Array(0..<size) && rank < size ? nil : "worldRanks \(world.worldRanks)"
}

for count in [1, 7, 1000, 300_001] {
  check("allReduce exact integers count=\(count)") {
    var x = (0..<count).map { Float(rank * 1000 + $0 % 4096) }
    try world.allReduce(&x)
    for i in 0..<count {
      let expected = Float((0..<size).reduce(0) { $0 + $1 * 1000 + i % 4096 })
      if x[i] != expected { return "index \(i): got \(x[i]), expected \(expected)" }
    }
    return nil
  }
}

for count in [5, 65_537] {
  check("allReduce deterministic (same bits on every rank, twice, allReduce = iAllReduce) count=\(count)") {
    let input = noise(rank: rank, count: count)
    var a = input, b = input, c = input
    try world.allReduce(&a)
    try world.allReduce(&b)
    let request = try c.withUnsafeMutableBufferPointer { try world.iAllReduce($0) }
    try request.wait()
    if let d = firstDifference(a, b) { return "two allReduce calls differ: \(d)" }
    if let d = firstDifference(a, c) { return "allReduce and iAllReduce differ: \(d)" }
    let everyone = try world.allGather(a)
    for r in 0..<size {
      if let d = firstDifference(a, Array(everyone[r * count ..< (r + 1) * count])) {
        return "rank \(r)'s result differs from mine: \(d)"
      }
    }
    // Against a float64 sum: |error| ≤ (size−1)·ε·Σ|x| per element.
    var worst = 0.0
    for i in 0..<count {
      var sum = 0.0, mag = 0.0
      for r in 0..<size {
        let v = Double(noise(rank: r, count: i + 1)[i])
        sum += v
        mag += abs(v)
      }
      let err = abs(Double(a[i]) - sum)
      worst = max(worst, err)
      if err > Double(max(size - 1, 1)) * 1.2e-7 * mag + 1e-30 { return "index \(i): \(a[i]) vs fp64 \(sum)" }
      if i >= 64 { break }  // the fp64 check is O(count²) with this generator; 64 elements suffice
    }
    return nil
  }
}

check("allGather") {
  let n = 3
  let out = try world.allGather((0..<n).map { Float(rank * 10 + $0) })
  let expected = (0..<size).flatMap { r in (0..<n).map { Float(r * 10 + $0) } }
  return out == expected ? nil : "got \(out.prefix(12)), expected \(expected.prefix(12))"
}

check("reduceScatter") {
  let n = 5
  let input = (0..<(n * size)).map { Float(rank + 100 * $0) }
  let out = try world.reduceScatter(input)
  let expected = (0..<n).map { j in Float((0..<size).reduce(0) { $0 + $1 + 100 * (rank * n + j) }) }
  return out == expected ? nil : "got \(out), expected \(expected)"
}

for root in Set([0, size - 1]).sorted() {
  check("broadcast root=\(root)") {
    var x = (0..<9).map { Float(rank == root ? 7 * $0 + 1 : -1) }
    try world.broadcast(&x, root: root)
    return x == (0..<9).map { Float(7 * $0 + 1) } ? nil : "got \(x)"
  }
}

check("send/receive ring") {
  let next = (rank + 1) % size, previous = (rank + size - 1) % size
  let message = (0..<100).map { Float(rank * 100 + $0) }
  var got: [Float] = []
  if rank % 2 == 0 {
    try world.send(message, to: next, tag: 5)
    got = try world.receive(count: 100, from: previous, tag: 5)
  } else {
    got = try world.receive(count: 100, from: previous, tag: 5)
    try world.send(message, to: next, tag: 5)
  }
  return got == (0..<100).map { Float(previous * 100 + $0) } ? nil : "got \(got.prefix(4)) from \(previous)"
}

check("barrier") {
  try world.barrier()
  return nil
}

check("iAllReduce overlapped with local work") {
  let count = 200_000
  let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
  defer { buffer.deallocate() }
  buffer.initialize(repeating: Float(rank + 1))
  let request = try world.iAllReduce(buffer)
  var local: Float = 0
  for i in 0..<50_000 { local += Float(i & 7) }  // "backward" work while the sum proceeds
  _ = try request.test()
  try request.wait()
  let expected = Float(size * (size + 1) / 2)
  for i in 0..<count where buffer[i] != expected { return "index \(i): \(buffer[i]) != \(expected) (\(local))" }
  return nil
}

check("bad arguments are errors") {
  do {
    var out = [Float](repeating: 0, count: size + 1)
    try [Float(1)].withUnsafeBufferPointer { send in
      try out.withUnsafeMutableBufferPointer { try world.allGather(send, into: $0) }
    }
    return "allGather with a wrong receive size did not throw"
  } catch let error as CommError where error.kind == .badArgument {}
  do {
    var x: [Float] = [1]
    try world.broadcast(&x, root: size)
    return "broadcast with root = size did not throw"
  } catch let error as CommError where error.kind == .badArgument {}
  return nil
}

if size >= 2 {
  check("MPI error becomes a Swift error (truncated receive, on a scratch communicator)") {
    let scratch = try world.split(color: 0, key: rank)
    if rank == 1 {
      try scratch.send([Float](repeating: 1, count: 10), to: 0, tag: 3)
    } else if rank == 0 {
      do {
        _ = try scratch.receive(count: 5, from: 1, tag: 3)
        return "receiving 10 floats into 5 did not throw"
      } catch let error as CommError {
        guard case .mpi = error.kind else { return "wrong error kind: \(error)" }
        print("  (expected) \(error)")
      }
    }
    return nil
  }
}

// MARK: - Mesh

let shapes: [String] = switch size {
  case 1: ["pod=1"]
  case 2: ["data=2", "model=2", "pod=2"]
  case 4: ["data=2,model=2", "pod=2,data=2", "model=4", "pod=2,model=2"]
  case 8: ["pod=2,data=2,model=2"]
  default: ["data=\(size)"]
}
for text in shapes {
  check("mesh \(text)") {
    let shape = try MeshShape(parsing: text)
    let mesh = try Mesh(shape: shape, world: world)
    let c = shape.coordinates(of: rank)
    if shape.rank(pod: c.pod, data: c.data, model: c.model) != rank { return "placement is not invertible" }
    let axes: [(String, any Communicator, Int, Int)] = [
      ("pod", mesh.podComm, shape.pod, mesh.pod), ("data", mesh.dataComm, shape.data, mesh.data),
      ("model", mesh.modelComm, shape.model, mesh.model),
    ]
    for (axis, comm, axisSize, coordinate) in axes {
      if comm.size != axisSize || comm.rank != coordinate {
        return "\(axis)Comm has size \(comm.size) rank \(comm.rank), expected \(axisSize) and \(coordinate)"
      }
      // Sum of world ranks along the axis: the peers are exactly those differing in this axis only.
      var x: [Float] = [Float(rank)]
      try comm.allReduce(&x)
      var expected = 0
      for k in 0..<axisSize {
        switch axis {
        case "pod": expected += shape.rank(pod: k, data: c.data, model: c.model)
        case "data": expected += shape.rank(pod: c.pod, data: k, model: c.model)
        default: expected += shape.rank(pod: c.pod, data: c.data, model: k)
        }
      }
      if x[0] != Float(expected) { return "\(axis)Comm sum of world ranks is \(x[0]), expected \(expected)" }
    }
    if shape.model > 1 {
      if let peers = (mesh.modelComm as? MPICommunicator)?.worldRanks,
         peers != (0..<shape.model).map({ rank - c.model + $0 }) {
        return "model peers \(peers) are not adjacent ranks"
      }
    }
    return nil
  }
}

check("mesh size mismatch is an error before any communication") {
  do {
    _ = try Mesh(shape: MeshShape(pod: 1, data: size + 1, model: 1), world: world)
    return "no error"
  } catch let error as MeshError {
    return error.message.contains("\(size) ranks") ? nil : "unclear message: \(error)"
  }
}

// MARK: - Bandwidth (small sizes: a smoke test of the benchmark, not a measurement)

check("CollectiveBench.allReduceBandwidth") {
  let results = try CollectiveBench.allReduceBandwidth(comm: world, sizes: [1024, 1 << 20], repeats: 3)
  printBench(results)
  return results.allSatisfy(\.correct) && results.count == 2 ? nil : "a result was wrong"
}

// MARK: - Verdict: every rank learns the total number of failures.

var total: [Float] = [Float(failures)]
do {
  try world.allReduce(&total)
} catch {
  print("FAIL final allReduce [rank \(rank)]: \(error)")
  MPIRuntime.abort(code: 1)
}
if rank == 0 {
  print(total[0] == 0 ? "palm-mpi-check: all checks passed on \(size) rank(s)"
                      : "palm-mpi-check: \(Int(total[0])) failure(s) on \(size) rank(s)")
}
MPIRuntime.finalize()
exit(total[0] == 0 ? 0 : 1)
