/* pk_hash.h: SHA-256 (FIPS 180-4) for checkpoint file checksums, so `sha256sum` can verify what
 * manifest.json records. Streaming: init, update any number of times, final. Not constant-time and
 * not for secrets; plain portable C (about 0.3-0.5 GB/s), enough for checkpoint files. */
#ifndef PK_HASH_H
#define PK_HASH_H
#include "pk_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  uint32_t state[8];
  uint64_t bytes;      /* total bytes hashed so far */
  uint8_t block[64];   /* pending partial block */
  uint32_t used;       /* bytes pending in block */
} pk_sha256_ctx;

void pk_sha256_init(pk_sha256_ctx *ctx);
/* Adds n bytes; NULL data with n > 0 -> PK_STATUS_NULL_POINTER. */
pk_status pk_sha256_update(pk_sha256_ctx *ctx, const void *data, size_t n);
/* Writes the 32-byte digest; ctx must be re-initialised before reuse. */
void pk_sha256_final(pk_sha256_ctx *ctx, uint8_t digest[32]);

#ifdef __cplusplus
}
#endif
#endif
