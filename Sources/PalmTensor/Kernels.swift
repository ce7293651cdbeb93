// Kernels: thin throwing Swift wrappers over the C kernels (one caseless namespace).

import CKernels

/// Matrix layout of a GEMM: which operand is stored transposed.
public enum GEMMLayout: String, CaseIterable, Sendable {
  /// C = A·B
  case nn
  /// C = A·Bᵀ
  case nt
  /// C = Aᵀ·B
  case tn

  @usableFromInline var c: pk_layout {
    switch self {
    case .nn: return PK_LAYOUT_NN
    case .nt: return PK_LAYOUT_NT
    case .tn: return PK_LAYOUT_TN
    }
  }
}

/// Precision of a GEMM's multiplications (the accumulation and C are fp32 in both).
public enum GEMMPrecision: String, CaseIterable, Codable, Sendable {
  /// fp32 operands (`pk_sgemm`).
  case fp32
  /// Operands rounded to bf16, round to nearest even, as they are packed (`pk_bgemm`): native on
  /// AVX512_BF16 (`ISA.bf16Native`), emulated with the same rounding and fp32 FMA elsewhere.
  case bf16

  /// The C kernels' precision argument (pk_attention_*: the products inside the fused kernel).
  public var kernel: pk_precision {
    switch self {
    case .fp32: return PK_PRECISION_FP32
    case .bf16: return PK_PRECISION_BF16
    }
  }
}

public enum Kernels {
  /// `C = alpha·op(A)·op(B) + beta·C` on raw row-major buffers (see pk_gemm.h).
  @inlinable
  public static func sgemm(
    _ layout: GEMMLayout, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>?, lda: Int, b: UnsafePointer<Float>?, ldb: Int,
    beta: Float = 0, c: UnsafeMutablePointer<Float>?, ldc: Int, reference: Bool = false
  ) throws {
    let f = reference ? pk_sgemm_reference : pk_sgemm
    try KernelError.check(
      f(layout.c, Int64(m), Int64(n), Int64(k), alpha, a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc)),
      "sgemm")
  }

  /// `sgemm` with A and B rounded to bf16 and fp32 accumulation (`pk_bgemm`, `GEMMPrecision.bf16`);
  /// `reference` runs the triple loop on the rounded operands.
  @inlinable
  public static func bgemm(
    _ layout: GEMMLayout, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>?, lda: Int, b: UnsafePointer<Float>?, ldb: Int,
    beta: Float = 0, c: UnsafeMutablePointer<Float>?, ldc: Int, reference: Bool = false
  ) throws {
    let f = reference ? pk_bgemm_reference : pk_bgemm
    try KernelError.check(
      f(layout.c, Int64(m), Int64(n), Int64(k), alpha, a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc)),
      "bgemm")
  }

  /// `x` rounded to the nearest bf16 (ties to even), as `bgemm` rounds its operands.
  public static func roundBF16(_ x: Float) -> Float { pk_round_bf16(x) }

  /// `sgemm` (fp32) or `bgemm` (bf16 operands, fp32 accumulation) with positional arguments in
  /// BLAS order, for the model's kernel-call sequences: `gemm(.bf16, .nt, m, n, k, alpha, a, lda, ...)`.
  @inlinable
  public static func gemm(_ precision: GEMMPrecision, _ layout: GEMMLayout, _ m: Int, _ n: Int, _ k: Int,
                          _ alpha: Float, _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>,
                          _ ldb: Int, _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) throws {
    switch precision {
    case .fp32: try sgemm(layout, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    case .bf16: try bgemm(layout, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }
  }

  /// Rotary multi-query causal attention, forward (pk_attention.h): `out` (B·T, H·Q) and `lse`
  /// (B, H, T) from the fused projection `qkv`; its tile products in `precision`.
  public static func attentionForward(
    _ precision: GEMMPrecision, out: UnsafeMutablePointer<Float>, ldo: Int, lse: UnsafeMutablePointer<Float>,
    qkv: UnsafePointer<Float>, ldqkv: Int, batch: Int, seqLen: Int, heads: Int, headDim: Int
  ) throws {
    try KernelError.check(
      pk_attention_forward(out, Int64(ldo), lse, qkv, Int64(ldqkv), Int64(batch), Int64(seqLen), Int64(heads),
                           Int64(headDim), precision.kernel),
      "attention_forward")
  }

  /// The attention backward (pk_attention.h): `dqkv` overwritten with d loss / d qkv from `dout`,
  /// in the precision the forward ran in.
  public static func attentionBackward(
    _ precision: GEMMPrecision, dqkv: UnsafeMutablePointer<Float>, lddqkv: Int, dout: UnsafePointer<Float>,
    lddout: Int, qkv: UnsafePointer<Float>, ldqkv: Int, out: UnsafePointer<Float>, ldo: Int,
    lse: UnsafePointer<Float>, batch: Int, seqLen: Int, heads: Int, headDim: Int
  ) throws {
    try KernelError.check(
      pk_attention_backward(dqkv, Int64(lddqkv), dout, Int64(lddout), qkv, Int64(ldqkv), out, Int64(ldo), lse,
                            Int64(batch), Int64(seqLen), Int64(heads), Int64(headDim), precision.kernel),
      "attention_backward")
  }

  /// `C = alpha·op(A)·op(B) + beta·C` on 2-D tensors; shapes are checked.
  public static func matmul(
    _ layout: GEMMLayout = .nn, _ a: Tensor, _ b: Tensor, into c: Tensor,
    alpha: Float = 1, beta: Float = 0
  ) throws {
    guard a.rank == 2, b.rank == 2, c.rank == 2 else { throw KernelError(status: PK_STATUS_BAD_SIZE, kernel: "matmul") }
    let (m, k) = layout == .tn ? (a.shape[1], a.shape[0]) : (a.shape[0], a.shape[1])
    let (kb, n) = layout == .nt ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
    guard k == kb, c.shape == [m, n] else { throw KernelError(status: PK_STATUS_BAD_SIZE, kernel: "matmul") }
    try sgemm(layout, m: m, n: n, k: k, alpha: alpha, a: a.pointer, lda: a.shape[1],
              b: b.pointer, ldb: b.shape[1], beta: beta, c: c.pointer, ldc: n)
  }
}
