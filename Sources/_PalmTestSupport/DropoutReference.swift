// DropoutReference: the dropout mask of pk_dropout.h written again in plain Swift, one element at a
// time (splitmix64 counter hash, two 32-bit draws per 64-bit hash), for the kernel and model tests.

/// Plain-Swift dropout masks, element by element.
public enum DropoutReference {
  static let golden: UInt64 = 0x9E37_79B9_7F4A_7C15

  static func mix(_ z0: UInt64) -> UInt64 {
    var z = z0
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// pk_dropout_key.
  public static func key(seed: UInt64, stream: UInt64) -> UInt64 { mix(seed ^ mix(stream &+ golden)) }

  /// Whether counter `c` is kept at rate `p`.
  public static func keep(key: UInt64, counter c: UInt64, p: Float) -> Bool {
    let h = mix(key &+ ((c >> 1) &+ 1) &* golden)
    let u = c & 1 == 0 ? UInt32(truncatingIfNeeded: h) : UInt32(truncatingIfNeeded: h >> 32)
    let t = UInt32((Double(p) * 4_294_967_296.0).rounded())
    return u >= t
  }

  /// The float scale of kept elements, 1/(1 − p) rounded to Float.
  public static func scale(_ p: Float) -> Float { Float(1.0 / (1.0 - Double(p))) }

  /// Multipliers (0 or `scale(p)`) of counters offset ..< offset + count.
  public static func multipliers(count: Int, p: Float, seed: UInt64, stream: UInt64, offset: Int = 0) -> [Float] {
    if p == 0 { return [Float](repeating: 1, count: count) }
    let k = key(seed: seed, stream: stream), s = scale(p)
    return (0..<count).map { keep(key: k, counter: UInt64(offset + $0), p: p) ? s : 0 }
  }
}
