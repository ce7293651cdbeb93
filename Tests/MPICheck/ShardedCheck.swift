// ShardedCheck: palm-mpi-check --sharded — a few updates of the one Trainer on every pod × data ×
// model mesh that fits the number of MPI ranks, AdamW and Adafactor, each compared with the mesh
// (1,1,1) run computed in every process.
// Prints "PASS sharded <mesh> ..." (rank 0) or "FAIL sharded <mesh> [rank r]: <why>" (any rank),
// then "sharded checks passed on N rank(s)" when all ranks passed.

import Foundation
import PalmModel
import PalmParallel
import PalmTensor
import PalmTrain

/// The meshes with `size` devices that the debug config accepts (heads 4, d_ff 128, batch 4).
func shardedMeshes(size: Int) -> [MeshShape] {
  var shapes: [MeshShape] = []
  for pod in 1...size where size % pod == 0 {
    for data in 1...(size / pod) where (size / pod) % data == 0 {
      let model = size / (pod * data)
      if let s = try? MeshShape(pod: pod, data: data, model: model),
         (try? s.validate(config: ShardedEquivalence.debugConfig, batch: ShardedEquivalence.debugConfig.batch)) != nil {
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
  var failures = 0
  // AdamW at palm train's default peak lr (2e-3), Adafactor at its default (1e-2).
  for (label, optimizer, lr) in [("adamw", OptimizerSettings.adamW(AdamWSettings()), Float(2e-3)),
                                 ("adafactor", .adafactor(AdafactorSettings()), Float(1e-2))] {
    let run = ShardedEquivalence(steps: 3, lr: lr, remat: .full, optimizer: optimizer)
    do {
      let reference = try run.run()
      for shape in shardedMeshes(size: world.size) {
        do {
          let mesh = try Mesh(shape: shape, world: world)
          let r = try run.run(mesh: mesh)
          let dl = ShardedEquivalence.lossDifference(r.losses, reference.losses)
          let dp = ShardedEquivalence.parameterDifference(r.parameters, reference.parameters)
          if dl <= 1e-5 && dp.value <= 1e-5 {
            if rank == 0 {
              print(String(format: "PASS sharded %@ %@ [np=%d]: losses %@, max rel loss diff %.2e, max rel param diff %.2e (%@); exchange %d B, hidden %.0f%%",
                           shape.description, label, world.size, r.losses.map { String(format: "%.5f", $0) }.joined(separator: " "),
                           dl, dp.value, dp.tensor, r.exchangeBytes.last ?? 0, (r.exchangeHidden.last ?? 1) * 100))
            }
          } else {
            failures += 1
            print("FAIL sharded \(shape) \(label) [rank \(rank)]: loss diff \(dl), parameter diff \(dp.value) in \(dp.tensor)")
          }
        } catch {
          failures += 1
          print("FAIL sharded \(shape) \(label) [rank \(rank)]: threw \(error)")
        }
        fflush(nil)
      }
    } catch {
      failures += 1
      print("FAIL sharded reference [rank \(rank)]: threw \(error)")
    }
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
