// Mesh: the device mesh pod × data × model and one communicator per axis.
//
// Rank placement is row-major with the model axis fastest, rank = (pod·D + data)·M + model, so the
// model-parallel peers of a rank (which exchange activations every layer) are adjacent ranks, i.e.
// the same machine when ranks are packed by node. Axis communicators come from `split`.
// Reference: PaLM §4 (2-pod data parallelism, 12-way model × 256-way FSDP inside a pod); MaxText
// `ici_*/dcn_*_parallelism`; paxml `ICI_MESH_SHAPE`/`DCN_MESH_SHAPE` over ['replica', 'data', 'mdl'].

import Foundation

/// The sizes of the three mesh axes.
///
/// | palm axis | role | MaxText | paxml |
/// |---|---|---|---|
/// | `pod` (P) | pure data parallelism across pods/hosts, gradients all-reduced | `dcn_data_parallelism` | `replica` (DCN_MESH_SHAPE[0]) |
/// | `data` (D) | data parallelism with sharded parameters/optimizer state (FSDP/ZeRO) | `ici_fsdp_parallelism` | `data` |
/// | `model` (M) | tensor (Megatron) parallelism over heads and d_ff | `ici_tensor_parallelism` | `mdl` |
///
/// Parsed from strings like `"pod=2,data=4,model=2"`: axes in any order, missing axes are 1.
public struct MeshShape: Equatable, Hashable, Sendable, CustomStringConvertible {
  public var pod: Int
  public var data: Int
  public var model: Int

  public init(pod: Int = 1, data: Int = 1, model: Int = 1) throws {
    for (axis, value) in [("pod", pod), ("data", data), ("model", model)] where value < 1 {
      throw MeshError("mesh axis \(axis) must be at least 1 (got \(value))")
    }
    let (podData, overflow1) = pod.multipliedReportingOverflow(by: data)
    let (devices, overflow2) = podData.multipliedReportingOverflow(by: model)
    guard !overflow1 && !overflow2 && devices <= 1 << 20 else {
      throw MeshError("mesh pod=\(pod),data=\(data),model=\(model) has more than \(1 << 20) devices")
    }
    self.pod = pod
    self.data = data
    self.model = model
  }

  /// Parses `pod=P,data=D,model=M` (order-free, whitespace allowed, missing axes = 1).
  public init(parsing text: String) throws {
    var values: [String: Int] = [:]
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    if !trimmed.isEmpty {
      for part in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
        let pieces = part.split(separator: "=", omittingEmptySubsequences: false)
        guard pieces.count == 2 else {
          throw MeshError("bad mesh \"\(text)\": \"\(part)\" is not axis=size (expected e.g. pod=1,data=2,model=2)")
        }
        let axis = pieces[0].trimmingCharacters(in: .whitespaces).lowercased()
        let valueText = pieces[1].trimmingCharacters(in: .whitespaces)
        guard ["pod", "data", "model"].contains(axis) else {
          throw MeshError("bad mesh \"\(text)\": unknown axis \"\(axis)\" (axes are pod, data, model)")
        }
        guard values[axis] == nil else {
          throw MeshError("bad mesh \"\(text)\": axis \(axis) given twice")
        }
        guard let value = Int(valueText), value >= 1 else {
          throw MeshError("bad mesh \"\(text)\": size of \(axis) must be a positive integer (got \"\(valueText)\")")
        }
        values[axis] = value
      }
    }
    try self.init(pod: values["pod"] ?? 1, data: values["data"] ?? 1, model: values["model"] ?? 1)
  }

  /// Number of devices (ranks): P·D·M.
  public var count: Int { pod * data * model }

  public var description: String { "pod=\(pod),data=\(data),model=\(model)" }

  /// The rank at coordinates (pod, data, model): `(pod·D + data)·M + model`.
  public func rank(pod p: Int, data d: Int, model m: Int) -> Int { (p * data + d) * model + m }

  /// The coordinates of `rank` (inverse of `rank(pod:data:model:)`).
  public func coordinates(of rank: Int) -> (pod: Int, data: Int, model: Int) {
    (rank / (data * model), (rank / model) % data, rank % model)
  }

  /// Checks that the mesh can shard `config` and a global batch of `batch` sequences: the model
  /// axis must divide heads, d_ff and d_model (Megatron splits heads and d_ff; the model-parallel
  /// reduce-scatter of the block output splits d_model), and pod·data must divide the batch.
  /// Throws a `MeshError` naming the first quantity that does not divide.
  public func validate(config: PalmConfig, batch: Int) throws {
    guard batch >= 1 else { throw MeshError("batch must be at least 1 (got \(batch))") }
    let checks: [(String, Int, String, Int)] = [
      ("heads", config.heads, "model", model),
      ("d_ff", config.dFF, "model", model),
      ("d_model", config.dModel, "model", model),
      ("batch", batch, "pod×data", pod * data),
    ]
    for (what, value, axis, size) in checks where value % size != 0 {
      let way = what == "batch"
        ? "use --batch \(max(1, batch / size) * size) (a multiple of \(size)) or a mesh whose pod×data divides \(batch)"
        : "use a model axis that divides \(value)"
      throw MeshError("mesh \(self) does not divide \(what): \(what) = \(value) is not a multiple of \(axis) = \(size); \(way)")
    }
  }
}

/// A problem with a mesh description or with fitting a model onto it.
public struct MeshError: Error, CustomStringConvertible, Sendable, Equatable {
  public let message: String
  public init(_ message: String) { self.message = message }
  public var description: String { message }
}

/// A device mesh over a communicator: this rank's coordinates and one communicator per axis.
///
/// ```swift
/// let mesh = try Mesh(shape: MeshShape(parsing: "data=2,model=2"), world: comm)
/// try mesh.modelComm.allReduce(&partialActivations)   // among the M ranks sharing (pod, data)
/// try mesh.dataComm.allReduce(&gradients)             // among the D ranks sharing (pod, model)
/// ```
public final class Mesh: Sendable {
  public let shape: MeshShape
  public let world: any Communicator
  /// The ranks that share (data, model) and differ in pod; size P, rank = pod.
  public let podComm: any Communicator
  /// The ranks that share (pod, model) and differ in data; size D, rank = data.
  public let dataComm: any Communicator
  /// The ranks that share (pod, data) and differ in model; size M, rank = model.
  public let modelComm: any Communicator
  public let pod: Int
  public let data: Int
  public let model: Int

  /// Builds the axis communicators (three collective splits of `world`). Throws before any
  /// communication if the mesh size differs from the number of ranks.
  public init(shape: MeshShape, world: any Communicator) throws {
    guard shape.count == world.size else {
      throw MeshError("mesh \(shape) has \(shape.count) devices but there are \(world.size) ranks")
    }
    self.shape = shape
    self.world = world
    (pod, data, model) = shape.coordinates(of: world.rank)
    podComm = try world.split(color: data * shape.model + model, key: pod)
    dataComm = try world.split(color: pod * shape.model + model, key: data)
    modelComm = try world.split(color: pod * shape.data + data, key: model)
  }

  /// The mesh (1,1,1) of one device: every axis a `SoloCommunicator`, so every collective of the
  /// model and the trainer returns at once (and the model skips them: it checks the axis sizes).
  public static func single() -> Mesh {
    // A solo world's splits cannot fail.
    try! Mesh(shape: MeshShape(), world: SoloCommunicator(name: "world"))
  }

  /// True for the mesh of one device.
  public var isSingle: Bool { shape.count == 1 }

  /// `shape.validate(config:batch:)`: throws a `MeshError` naming what the mesh does not divide.
  public func validate(config: PalmConfig, batch: Int) throws {
    try shape.validate(config: config, batch: batch)
  }
}
