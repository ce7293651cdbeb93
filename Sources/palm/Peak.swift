// palm peak: placeholder until the peak probe lands (CKernels/peak.c).
import ArgumentParser

struct Peak: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Measure this machine's FMA peak (the MFU denominator).")
  @OptionGroup var compute: ComputeOptions
  func run() throws { try compute.apply() }
}
