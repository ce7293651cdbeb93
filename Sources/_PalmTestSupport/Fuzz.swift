// Fuzz: the seeded generator and value mutations the fuzz tests share (safetensors headers,
// checkpoint manifests), so every machine runs the same cases.
import Foundation

/// A 64-bit linear congruential generator (Knuth's MMIX constants), seeded: the same cases everywhere.
public struct FuzzRandom {
  private var state: UInt64
  public init(seed: UInt64) { state = seed }

  /// A value in 0..<bound (bound >= 1).
  public mutating func next(_ bound: Int) -> Int {
    state = state &* 6364136223846793005 &+ 1442695040888963407
    return Int((state >> 33) % UInt64(bound))
  }

  /// One of `values`.
  public mutating func pick<T>(_ values: [T]) -> T { values[next(values.count)] }
}

/// JSON values a hostile or damaged file may hold in place of a number: out of range, negative,
/// fractional, non-finite (as the strings palm's encoders write), huge, of the wrong type.
public var hostileJSONValues: [Any] {
  [
    -1, 0, 1, 0.5, -0.5, 1e300, -1e300, 1e-300, 9007199254740993.0, 9223372036854775807, Double(1 << 24), Double(1 << 24) + 1,
    "nan", "inf", "-inf", "x", NSNull(), [Any](), ["k": 1] as [String: Any],
  ]
}

