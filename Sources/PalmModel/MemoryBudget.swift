// MemoryBudget: whether planned buffers fit this machine's memory, checked before they are
// allocated, so a model or batch too large for the machine is one line ("needs 38.2 GiB, this
// machine has 23.4 GiB") instead of a failed allocation. PalmConfig.validate bounds the sizes
// against overflow first; this checks them against the machine.

import Foundation

/// This machine's memory and the one check of planned bytes against it.
public enum MemoryBudget {
  /// Bytes of memory this process may use: the physical memory, or the cgroup's limit
  /// (/sys/fs/cgroup/memory.max) when it is lower.
  public static var machineBytes: Int {
    var bytes = Int(clamping: ProcessInfo.processInfo.physicalMemory)
    if let text = try? String(contentsOfFile: "/sys/fs/cgroup/memory.max", encoding: .utf8),
       let limit = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), limit > 0 {
      bytes = min(bytes, limit)
    }
    return bytes
  }

  /// Planned bytes larger than the machine's memory.
  public struct Exceeded: Error, CustomStringConvertible {
    public let what: String
    public let needed: Int
    public let available: Int
    public var description: String {
      "\(what) needs \(MemoryBudget.text(needed)), this machine has \(MemoryBudget.text(available))"
    }
  }

  /// Throws `Exceeded` when `bytes` are more than `available` (default: `machineBytes`).
  /// - Parameter what: the subject of the message, e.g. "training palm-540b (parameters, gradients,
  ///   optimizer state, activations)".
  public static func check(_ bytes: Int, for what: String, available: Int = machineBytes) throws {
    if bytes > available { throw Exceeded(what: what, needed: bytes, available: available) }
  }

  /// Bytes in binary units with one decimal: "23.4 GiB", "1.2 TiB".
  public static func text(_ bytes: Int) -> String {
    var x = Double(bytes), unit = 0
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    while x >= 1024 && unit < units.count - 1 { x /= 1024; unit += 1 }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f ", x) + units[unit]
  }
}
