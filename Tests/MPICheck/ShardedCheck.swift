// ShardedCheck: palm-mpi-check --sharded — a few training steps of the sharded PaLM model
// (ShardedTrainer) on every pod × data × model mesh that fits the number of MPI ranks, each compared
// with a single-device run (Model + AdamW + clipping) computed in every process (issue #5 item 5).
// Prints "PASS sharded <mesh> ..." (rank 0) or "FAIL sharded <mesh> [rank r]: <why>" (any rank),
// then "sharded checks passed on N rank(s)" when all ranks passed.

import Foundation
import PalmModel
import PalmParallel
import PalmTensor

/// The meshes with `size` devices that the debug config accepts (heads 4, d_ff 128, batch 4).
func shardedMeshes(size: Int) -> [MeshShape] {
  var shapes: [MeshShape] = []
  for pod in 1...size where size % pod == 0 {
    for data in 1...(size / pod) where (size / pod) % data == 0 {
      let model = size / (pod * data)
      if let s = try? MeshShape(pod: pod, data: data, model: model),
         (try? s.validate(config: ShardedEquivalence.debugConfig, batch: 4)) != nil {
        shapes.append(s)
      }
    }
  }
  return shapes
}

/// Runs the checks, finalizes MPI and returns the exit status (0 only if every rank passed).
func runShardedCheck(world: MPICommunicator) -> Int32 {
  Threads.count = 1  // ranks share the machine's cores
  let rank = world.rank
  let run = ShardedEquivalence(steps: 3)
  var failures = 0
  do {
    let reference = try run.runSingleDevice()
    for shape in shardedMeshes(size: world.size) {
      do {
        let mesh = try Mesh(shape: shape, world: world)
        let r = try run.runSharded(mesh: mesh)
        let dl = ShardedEquivalence.lossDifference(r.losses, reference.losses)
        let dp = ShardedEquivalence.parameterDifference(r.parameters, reference.parameters)
        if dl <= 1e-5 && dp.value <= 1e-5 {
          if rank == 0 {
            let x = r.results.last!.exchange
            print(String(format: "PASS sharded %@ [np=%d]: losses %@, max rel loss diff %.2e, max rel param diff %.2e (%@); last step %.1f ms, exchange %d B in %d buckets, transfer %.2f ms, wait %.2f ms, hidden %.0f%%",
                         shape.description, world.size, r.losses.map { String(format: "%.5f", $0.total) }.joined(separator: " "),
                         dl, dp.value, dp.tensor, r.results.last!.seconds * 1e3, x.bytes, x.buckets,
                         x.transferSeconds * 1e3, x.waitSeconds * 1e3, x.hiddenFraction * 100))
          }
        } else {
          failures += 1
          print("FAIL sharded \(shape) [rank \(rank)]: loss diff \(dl), parameter diff \(dp.value) in \(dp.tensor)")
        }
      } catch {
        failures += 1
        print("FAIL sharded \(shape) [rank \(rank)]: threw \(error)")
      }
      fflush(nil)
    }
  } catch {
    failures += 1
    print("FAIL sharded reference [rank \(rank)]: threw \(error)")
  }
  var total: [Float] = [Float(failures)]
  do { try world.allReduce(&total) } catch {
    print("FAIL sharded summary [rank \(rank)]: \(error)")
    MPIRuntime.abort(code: 1)
  }
  if rank == 0 && total[0] == 0 { print("sharded checks passed on \(world.size) rank(s)") }
  fflush(nil)
  MPIRuntime.finalize()
  return total[0] == 0 ? 0 : 1
}
