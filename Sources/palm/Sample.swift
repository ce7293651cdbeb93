// palm sample: generate bytes from a checkpoint with a KV-cache decoder (PalmModel/Sampler.swift),
// streamed to stdout; tokens/s on stderr. Greedy (reproducible) at --temperature 0.
import ArgumentParser
import Foundation
import PalmBench
import PalmModel
import PalmTensor
import PalmTrain

struct Sample: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Generate text from a trained checkpoint (incremental decoding with a KV cache).",
    discussion: """
      --checkpoint is a step directory (.../step_00001000) or a checkpoint directory (its newest complete step is used). When the context reaches the model's sequence length, the last half is kept and re-read from position 0 (the model was trained on windows starting at 0).
      """)

  @OptionGroup var checkpoint: CheckpointOption
  @Option(help: "Text to continue (default: a newline).")
  var prompt: String?
  @Option(help: "Bytes to generate.")
  var maxTokens: Int = 500
  @Option(help: "Softmax temperature; 0 = greedy (reproducible).")
  var temperature: Float = 0.8
  @Option(help: "Sample among the K most likely tokens (default 0 = all; needs --temperature > 0).")
  var topK: Int?
  @Option(help: "Seed of the sampling generator (default 0; needs --temperature > 0).")
  var seed: UInt64?
  @OptionGroup var compute: ComputeOptions

  func validate() throws {
    if maxTokens < 0 { throw ValidationError("--max-tokens must be >= 0") }
    if temperature < 0 || !temperature.isFinite { throw ValidationError("--temperature must be >= 0") }
    if let k = topK, k < 0 { throw ValidationError("--top-k must be >= 0") }
    if temperature == 0 && (topK != nil || seed != nil) {
      throw ValidationError("--temperature 0 is greedy: it takes the most likely token, so --top-k and --seed would change nothing (give --temperature > 0 to sample)")
    }
  }

  func run() throws {
    try compute.apply()
    let ck = try checkpoint.load()
    let cfg = ck.manifest.config
    if ck.manifest.tokenizer == nil && cfg.vocab > 256 {  // with a tokenizer.model, ck.tokenizer() checks the vocab
      throw CLIError("\(ck.path) has a vocabulary of \(cfg.vocab) tokens and no tokenizer.model; palm sample then decodes bytes, so it needs a model of vocab <= 256")
    }
    // The weights and the KV cache (the config's sizes are bounded by validation: no overflow).
    let bytes = (cfg.parameterCount + cfg.layers * 2 * cfg.headDim * cfg.seqLen + cfg.vocab) * 4
    do { try MemoryBudget.check(bytes, for: "sampling from \(ck.path) (weights and KV cache)") } catch {
      throw CLIError("\(error)")
    }
    let params: Parameters
    do {
      params = try Parameters(config: cfg)
      try ck.restore(config: cfg, parameters: params.named)
    } catch { throw CLIError("\(error)") }
    let tokenizer: Tokenizer  // the checkpoint's: bytes, or its tokenizer.model
    do { tokenizer = try ck.tokenizer() } catch { throw CLIError("\(error)") }
    let decoder = try KVCacheDecoder(parameters: params)
    var picker = TokenPicker(temperature: temperature, topK: topK ?? 0, seed: seed ?? 0)
    let prompt = (self.prompt ?? "").isEmpty ? "\n" : self.prompt!
    var context: [Int32]
    do { context = try tokenizer.encode(bytes: Array(prompt.utf8)) } catch { throw CLIError("\(error)") }
    let promptTokens = context.count
    let out = FileHandle.standardOutput
    let t0 = Date()
    var logits: [Float] = []
    do { for t in context.suffix(cfg.seqLen) { logits = try decoder.step(token: t) } } catch { throw CLIError("the prompt: \(error)") }
    let prefillSeconds = Date().timeIntervalSince(t0)
    // Checked before anything is printed: a prompt the model cannot read, or weights that hold NaN.
    guard logits.allSatisfy(\.isFinite) else {
      throw CLIError("\(ck.path): the logits are not finite (the checkpoint's weights hold NaN or Inf); sample from an earlier checkpoint")
    }
    out.write(Data(prompt.utf8))
    let t1 = Date()
    var steps = 0  // decoder steps, the re-reads of a full window included
    for _ in 0..<maxTokens {
      let next = picker.pick(logits)
      out.write(Data(try tokenizer.decode([next])))
      context.append(next)
      if decoder.position >= decoder.capacity {
        decoder.reset()
        for t in context.suffix(max(1, decoder.capacity / 2)) { logits = try decoder.step(token: t); steps += 1 }
      } else {
        logits = try decoder.step(token: next)
        steps += 1
      }
    }
    let dt = Date().timeIntervalSince(t1)
    out.write(Data("\n".utf8))
    FileHandle.standardError.write(Data(String(
      format: "sampled %d tokens in %.2f s: %.1f tokens/s (prefill %d tokens in %.3f s), step %d of %@\n",
      maxTokens, dt, Double(maxTokens) / max(dt, 1e-9), min(promptTokens, cfg.seqLen), prefillSeconds,
      ck.manifest.step, ck.path).utf8))
    if steps > 0, let bw = try? KernelBench.bandwidth(threads: Threads.count, repeats: 3) {
      let r = DecodeBench.result(config: cfg, threads: Threads.count, tokens: steps, seconds: dt, bandwidthGBs: bw)
      FileHandle.standardError.write(Data("decoding: \(DecodeBench.summary(r))\n".utf8))
    }
  }
}
