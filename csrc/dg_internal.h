/*
 * dg_internal.h -- private declarations shared between the C core's own files
 * and its C tests. Not part of the public API (that is distgan.h): nothing here
 * is exported to Python, and it may change without notice.
 */
#ifndef DG_INTERNAL_H
#define DG_INTERNAL_H

#include <stdint.h>

/* One Philox4x32-10 block (Salmon et al. 2011, "Parallel random numbers: as
 * easy as 1, 2, 3", SC'11; the reference implementation is Random123's
 * philox4x32_R with R = 10). Defined in dg_rng.c, exposed so that the tests can
 * check it against Random123's known-answer vectors.
 * out is (4), ctr is (4), key is (2); out may alias ctr. */
void dg_philox4x32_10(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]);

#endif /* DG_INTERNAL_H */
