/* decode.c: one-token multi-query attention over a KV cache (pk_decode.h), for palm sample.
 * Same rotary convention and score scaling as attention.c; softmax accumulated in double.
 * Reference: llama2.c run.c (per-token attention over the cache), pk_attention.h for the math. */
#include "pk_decode.h"
#include "pk_kernel.h"

#include <math.h>
#include <stddef.h>

#include "pk_attention.h"

pk_status pk_decode_attention(float *out, float *kcache, float *vcache, const float *qkv,
                              int64_t pos, int64_t smax, int64_t H, int64_t Q) {
  if (pos < 0 || smax < 1 || pos >= smax || H < 1 || Q < 2) return PK_STATUS_BAD_SIZE;
  if (Q % 2 != 0) return PK_STATUS_BAD_ARGUMENT;
  if (!out || !kcache || !vcache || !qkv) return PK_STATUS_NULL_POINTER;
  const float *k = qkv + H * Q, *v = qkv + H * Q + Q;
  int64_t n = pos + 1;
  static _Thread_local pk_scratch tl_buf;  /* grow-only: one allocation per sampling thread */
  float *buf = pk_scratch_reserve(&tl_buf, (size_t)(n + 2 * Q));
  if (!buf) return PK_STATUS_NO_MEMORY;
  float *scores = buf, *q = buf + n, *cs = buf + n + Q;
  pk_rope_row(cs, pos, Q);  /* the angles of this position, once for K and every head */
  pk_rope_apply(kcache + pos * Q, k, cs, Q, 1.0f);
  for (int64_t i = 0; i < Q; i++) vcache[pos * Q + i] = v[i];
  const float scale = 1.0f / sqrtf((float)Q);
  for (int64_t h = 0; h < H; h++) {
    pk_rope_apply(q, qkv + h * Q, cs, Q, scale);
    float mx = -INFINITY;
    for (int64_t s = 0; s < n; s++) {
      const float *kr = kcache + s * Q;
      float acc = 0.0f;
      for (int64_t i = 0; i < Q; i++) acc += q[i] * kr[i];
      scores[s] = acc;
      if (acc > mx) mx = acc;
    }
    double sum = 0.0;
    for (int64_t s = 0; s < n; s++) {
      float e = expf(scores[s] - mx);
      scores[s] = e;
      sum += e;
    }
    float inv = (float)(1.0 / sum);
    float *o = out + h * Q;
    for (int64_t i = 0; i < Q; i++) o[i] = 0.0f;
    for (int64_t s = 0; s < n; s++) {
      float p = scores[s] * inv;
      const float *vr = vcache + s * Q;
      for (int64_t i = 0; i < Q; i++) o[i] += p * vr[i];
    }
  }
  return PK_STATUS_OK;
}
