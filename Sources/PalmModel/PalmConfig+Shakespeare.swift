// PalmConfig.shakespeare: the preset `palm train --config shakespeare` uses on a 2-core CPU.
//
// Why this shape (byte-level tinyshakespeare, ~1.1 MB, 10 minutes on 2 cores): nanoGPT's reference
// character-level Shakespeare model is 6 layers × 384 wide at T 256; depth matters more than width
// for character models at this scale, but 384 wide costs ~2.2× the FLOPs/token of 256 wide, and in
// 600 s at ~10k tokens/s we see only ~6M tokens (~6 epochs), so we keep 6 layers and narrow to d 256
// (4 heads × 64, PaLM's d_ff = 4·d), T 256, batch 16 (4096 tokens/step: many small steps learn
// faster than few large ones early on). Not tuned by a sweep yet (see the trainer's report).

extension PalmConfig {
  /// d 256, 6 layers, 4 heads × 64, d_ff 1024, T 256, batch 16, bytes (vocab 256).
  public static let shakespeare = PalmConfig(name: "shakespeare", dModel: 256, layers: 6, heads: 4, headDim: 64,
                                             dFF: 1024, vocab: 256, seqLen: 256, batch: 16)
}
