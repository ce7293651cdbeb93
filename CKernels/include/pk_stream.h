/* pk_stream.h: memory bandwidth by streaming kernels (McCalpin's STREAM, "copy" and "triad"), the
 * memory roof of the roofline model (Williams, Waterman & Patterson 2009) used by `palm bench kernels`.
 *
 *   copy:  c[i] = a[i]                 bytes moved per element: 8  (read a, write c)
 *   triad: a[i] = b[i] + s · c[i]      bytes moved per element: 12 (read b, c, write a)
 * Counted as STREAM counts them: write-allocate traffic (reading the destination line before a
 * write) is not counted. Threads: OpenMP, schedule(static) over elements, `pk_threads_get()`
 * threads; each thread first-touches the part of the arrays it later streams. Arrays should be far
 * larger than the last-level cache (e.g. 64 MiB each) or the figure is a cache bandwidth. */
#ifndef PK_STREAM_H
#define PK_STREAM_H

#include "pk_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Which streaming kernel pk_stream_bandwidth times. */
typedef enum {
  PK_STREAM_COPY = 0,
  PK_STREAM_TRIAD = 1,
} pk_stream_kind;

/* *best_gbs (OVERWRITTEN) = the best bandwidth over `repeats` timed passes, in GB/s (1e9 bytes/s),
 * of `kind` over arrays of n floats each (allocated, first-touched, one untimed pass, then timed).
 * n >= 1, repeats >= 1 (else BAD_SIZE); NULL best_gbs -> NULL_POINTER; an unknown kind ->
 * BAD_ARGUMENT; allocation failure -> NO_MEMORY. */
pk_status pk_stream_bandwidth(double *best_gbs, pk_stream_kind kind, int64_t n, int repeats);

#ifdef __cplusplus
}
#endif

#endif
