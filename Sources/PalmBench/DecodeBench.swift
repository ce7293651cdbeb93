// DecodeBench: decoding speed (KVCacheDecoder.step, one token at a time) against its bound.
//
// A decoded token reads every weight once (w_in, w_out, the LayerNorm scales of each layer and
// the shared embedding for the head: 4 bytes a parameter) plus the KV cache so far; nothing else
// is big. At `bandwidth` GB/s that bounds the rate at bandwidth / bytes-per-token. The bound is
// against the STREAM triad bandwidth (DRAM for arrays beyond the last-level cache): weights that
// fit in the L3 can beat it, and the result says when they do.

import CKernels
import Foundation
import PalmModel
import PalmTensor
import PalmTrain

/// Decoding throughput and the weight-bandwidth bound.
public enum DecodeBench {
  /// What a decoding run measured.
  public struct Result: Codable, Sendable, Equatable {
    public var config: String
    public var threads: Int
    /// Tokens decoded (after a prefill of one token).
    public var tokens: Int
    public var tokensPerSecond: Double
    /// Bytes read per decoded token: the weights plus the mean KV cache over the run.
    public var bytesPerToken: Double
    /// The STREAM triad bandwidth (GB/s) the bound divides by.
    public var bandwidthGBs: Double
    /// bandwidth / bytesPerToken.
    public var boundTokensPerSecond: Double
    /// tokensPerSecond / boundTokensPerSecond.
    public var fractionOfBound: Double
    /// The weights are smaller than this CPU's last-level cache (when it is known): the DRAM bound
    /// then understates what is possible.
    public var weightsFitInCache: Bool?

    enum CodingKeys: String, CodingKey {
      case config, threads, tokens, tokensPerSecond = "tokens_per_s", bytesPerToken = "bytes_per_token"
      case bandwidthGBs = "bandwidth_gbs", boundTokensPerSecond = "bound_tokens_per_s"
      case fractionOfBound = "fraction_of_bound", weightsFitInCache = "weights_fit_in_cache"
    }
  }

  /// Bytes a token reads when the cache holds `position` tokens: 4 per parameter + the K and V
  /// rows of every layer (2·L·position·Q floats).
  public static func bytesPerToken(_ c: PalmConfig, position: Double) -> Double {
    4 * Double(c.parameterCount) + 8 * Double(c.layers * c.headDim) * position
  }

  /// The result of decoding `tokens` tokens in `seconds` from cache position 0 up.
  public static func result(config c: PalmConfig, threads: Int, tokens: Int, seconds: Double,
                            bandwidthGBs: Double) -> Result {
    let bytes = bytesPerToken(c, position: Double(tokens) / 2)
    let tps = Double(tokens) / max(seconds, 1e-12)
    let bound = bandwidthGBs * 1e9 / bytes
    let llc = lastLevelCacheBytes()
    return Result(config: c.name, threads: threads, tokens: tokens, tokensPerSecond: tps, bytesPerToken: bytes,
                  bandwidthGBs: bandwidthGBs, boundTokensPerSecond: bound, fractionOfBound: tps / bound,
                  weightsFitInCache: llc.map { 4 * c.parameterCount < $0 })
  }

  /// Decodes `tokens` greedy tokens (capped at the sequence length) from a PaLM-initialized model
  /// of `config` on `threads` threads, against the triad bandwidth measured at the same count.
  public static func run(config: PalmConfig, threads: Int, tokens: Int = 64, seed: UInt64 = 1) throws -> Result {
    let saved = Threads.count
    defer { Threads.count = saved }
    Threads.count = threads
    let params = try Parameters(config: config)
    params.initialize(seed: seed)
    let decoder = try KVCacheDecoder(parameters: params)
    let n = max(1, min(tokens, config.seqLen - 1))
    var logits = try decoder.step(token: 0)  // warms the weights into whatever cache holds them
    var picker = TokenPicker(temperature: 0)
    let t0 = pk_now_seconds()
    for _ in 0..<n { logits = try decoder.step(token: picker.pick(logits)) }
    let dt = pk_now_seconds() - t0
    let bw = try KernelBench.bandwidth(threads: threads)
    return result(config: config, threads: threads, tokens: n, seconds: dt, bandwidthGBs: bw)
  }

  /// This machine's last-level cache size in bytes (sysfs cache index 3, else nil).
  public static func lastLevelCacheBytes() -> Int? {
    for index in [3, 2] {
      let path = "/sys/devices/system/cpu/cpu0/cache/index\(index)/size"
      guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
      let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
      let scale = t.hasSuffix("K") ? 1024 : t.hasSuffix("M") ? 1 << 20 : 1
      if let v = Int(t.trimmingCharacters(in: CharacterSet.decimalDigits.inverted)) { return v * scale }
    }
    return nil
  }

  /// "312.4 tokens/s = 63% of the weight-bandwidth bound 496 tokens/s (23.3 MB a token / 11.6 GB/s
  /// STREAM triad; the weights fit in the 32 MiB L3: the bound is DRAM's)".
  public static func summary(_ r: Result) -> String {
    String(format: "%.1f tokens/s = %.0f%% of the weight-bandwidth bound %.0f tokens/s (%.1f MB a token / %.1f GB/s STREAM triad)",
           r.tokensPerSecond, 100 * r.fractionOfBound, r.boundTokensPerSecond, r.bytesPerToken / 1e6, r.bandwidthGBs)
      + (r.weightsFitInCache == true ? "; the weights fit in the last-level cache, so the DRAM bound can be beaten" : "")
  }
}
