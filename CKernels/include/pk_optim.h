/* pk_optim.h: optimizer update kernels (AdamW, PaLM's unfactored Adafactor), the global gradient
 * norm and an in-place scale. Element-wise updates over one parameter tensor of n floats; the
 * tensor's moments are buffers of the same n floats. Not a scheduler: the learning rate and the step
 * count are inputs (see Sources/PalmTrain/Schedule.swift).
 *
 * Threading: OpenMP, schedule(static) over blocks of at least PK_OPTIM_SERIAL_BELOW floats whose
 * size depends on n only. Reductions (sums of squares) keep one fp64 partial per block and add them
 * in block order, so results are bit-identical for any thread count (for a given ISA path). Tensors
 * of one block (n <= PK_OPTIM_SERIAL_BELOW) run on the calling thread only.
 * Dispatch: pk_isa_active() >= PK_ISA_AVX512 uses the AVX-512 path; every other ISA uses the
 * portable scalar path (always built; PALM_ISA=scalar or pk_isa_force selects it). */
#ifndef PK_OPTIM_H
#define PK_OPTIM_H
#include "pk_core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PK_OPTIM_SERIAL_BELOW 32768

/* AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization", Algorithm 2; the same
 * arithmetic as torch.optim.AdamW), for step t >= 1 (the number of this update, 1 for the first):
 *   m     = beta1 * m + (1 - beta1) * g
 *   v     = beta2 * v + (1 - beta2) * g^2
 *   m_hat = m / (1 - beta1^t)          v_hat = v / (1 - beta2^t)
 *   p     = p - lr * weight_decay * p - lr * m_hat / (sqrt(v_hat) + eps)
 * (the decay uses the parameter before this step's update, as PyTorch does.)
 * Overwrites param, m, v. Errors: n < 0 or step < 1 -> BAD_SIZE; a NULL buffer with n > 0 ->
 * NULL_POINTER; beta outside [0, 1), eps < 0, a non-finite lr -> BAD_ARGUMENT. */
pk_status pk_adamw_update(float *param /* (n) in/out */, float *m /* (n) in/out */,
                          float *v /* (n) in/out */, const float *grad /* (n) */, int64_t n,
                          float lr, float beta1, float beta2, float eps, float weight_decay,
                          int64_t step);

/* Adafactor without factorization, as PaLM trained with it (PaLM §5: "Adafactor without
 * factorization ... effectively Adam with parameter scaling", beta1 = 0.9, beta2 = 1 - k^-0.8,
 * dynamic weight decay lr^2). The arithmetic and its order follow T5X's Adafactor
 * (google-research/t5x, t5x/adafactor.py, apply_param_gradient, factored=False,
 * multiply_by_parameter_scale=True, clipping_threshold=d, weight_decay_rate_lr_exponent=2):
 *   beta2   = 1 - step^(-decay_exponent)                 (step k >= 1; k = 1 gives beta2 = 0)
 *   scale   = lr * max(eps2, RMS(p))                     RMS(x) = sqrt(mean(x^2)) over the tensor,
 *                                                        taken on p before this update
 *   v       = beta2 * v + (1 - beta2) * (g^2 + eps1)
 *   y       = g / sqrt(v)
 *   y       = y / max(1, RMS(y) / clip_threshold)        update clipping (Shazeer & Stern 2018 §6, d)
 *   m       = beta1 * m + (1 - beta1) * scale * y        momentum of the scaled update (as T5X)
 *   p       = (1 - weight_decay) * p - m
 * The caller passes weight_decay already computed: PaLM's dynamic decay is weight_decay = lr^2.
 * Typical constants: eps1 = 1e-30, eps2 = 1e-3, clip_threshold = 1, decay_exponent = 0.8.
 * beta1 = 0 turns momentum off (m then holds the last update). clip_threshold <= 0 disables clipping.
 * Overwrites param, m, v. Errors as pk_adamw_update. */
pk_status pk_adafactor_update(float *param /* (n) in/out */, float *m /* (n) in/out */,
                              float *v /* (n) in/out */, const float *grad /* (n) */, int64_t n,
                              float lr, float beta1, float decay_exponent, float eps1, float eps2,
                              float clip_threshold, float weight_decay, int64_t step);

/* pk_adafactor_update in its two sweeps, for a tensor whose elements are spread over ranks (a mesh
 * shard holds part of it): pk_adafactor_sums updates v and returns the sums of p^2 (before the
 * update) and of y^2 over its n elements; the caller adds them over every part of the tensor and
 * passes RMS(p) = sqrt(sum p^2 / count) and RMS(y) likewise to pk_adafactor_apply, which updates
 * m and p. pk_adafactor_update(...) == sums, then apply with the tensor's own RMS values. */
pk_status pk_adafactor_sums(double *ssq_param, double *ssq_update, const float *param /* (n) */,
                            float *v /* (n) in/out */, const float *grad /* (n) */, int64_t n,
                            float decay_exponent, float eps1, int64_t step);
pk_status pk_adafactor_apply(float *param /* (n) in/out */, float *m /* (n) in/out */, const float *v /* (n) */,
                             const float *grad /* (n) */, int64_t n, float lr, float beta1, float eps2,
                             float clip_threshold, float weight_decay, double rms_param, double rms_update);

/* *out = sum of x[i]^2 over i < n, accumulated in fp64 (per-block partials in block order). */
pk_status pk_sum_squares(double *out, const float *x /* (n) */, int64_t n);

/* *out = sum over tensors t (in order) of pk_sum_squares(tensors[t], counts[t]): the squared global
 * norm of a list of gradients (Pascanu et al. 2013; tf.clip_by_global_norm). sqrt(*out) is the norm. */
pk_status pk_global_norm_squared(double *out, const float *const *tensors /* (count) pointers */,
                                 const int64_t *counts /* (count) */, int64_t count);

/* x[i] *= s, in place. */
pk_status pk_scale_inplace(float *x /* (n) in/out */, int64_t n, float s);

#ifdef __cplusplus
}
#endif
#endif
