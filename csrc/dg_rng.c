/*
 * dg_rng.c -- counter-based random numbers: Philox4x32-10.
 *
 * Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers: as easy as 1, 2,
 * 3" (SC'11, https://doi.org/10.1145/2063384.2063405); reference code and
 * known-answer vectors: Random123 (https://github.com/DEShawResearch/random123,
 * include/Random123/philox.h, tests/kat_vectors).
 *
 * A Philox draw is a pure function of (key, counter): no state is kept, so
 * element i of a draw depends only on (seed, offset + i). Any split of a draw
 * into pieces (threads, batches, resumed runs) gives the same numbers as one
 * call, provided each piece passes its own offset. The caller advances its
 * offset by n after each draw of n values.
 *
 * Mapping of the 64-bit values onto Philox's 128-bit counter and 64-bit key:
 *   counter = { lo32(offset + i), hi32(offset + i), 0, 0 }  (offset + i wraps mod 2^64)
 *   key     = { lo32(seed), hi32(seed) }
 * Each element uses one Philox block of its own and keeps only what it needs
 * (1 word for a uniform, 2 for a normal): this wastes bits but is what makes
 * element i independent of how a draw is split.
 */
#include <math.h>

#include "distgan.h"
#include "dg_internal.h"

/* Philox4x32 constants (Random123 philox.h: PHILOX_M4x32_0/1, PHILOX_W32_0/1).
 * The W are the golden ratio and sqrt(3) - 1 as 32-bit fractions. */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* 2^-24 and 2^-32, exact in float/double. */
#define TWO_POW_M24 (1.0f / 16777216.0f)
#define TWO_POW_M32 (1.0 / 4294967296.0)
#define TWO_PI 6.283185307179586476925286766559

/* out, ctr are (4), key is (2). out may alias ctr (inputs are copied first).
 * Ten rounds of
 *   (hi0, lo0) = M0 * c0; (hi1, lo1) = M1 * c2   (32 x 32 -> 64-bit products)
 *   c = { hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0 }
 * with the key bumped by (W0, W1) between rounds (Random123 philox4x32_R). */
void dg_philox4x32_10(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The Philox block of element `index` (= offset + i) under `seed`. */
static void block(uint32_t out[4], uint64_t seed, uint64_t index) {
    uint32_t ctr[4] = {(uint32_t)index, (uint32_t)(index >> 32), 0u, 0u};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    dg_philox4x32_10(out, ctr, key);
}

typedef struct {
    float *out;
    size_t n;
    uint64_t seed, offset;
} normal_job;

static void normal_task(void *ctx, int t, int nt) {
    const normal_job *j = (const normal_job *)ctx;
    size_t lo, hi;
    dg_split(j->n, 16, t, nt, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        uint32_t r[4];
        block(r, j->seed, j->offset + (uint64_t)i);
        double u1 = ((double)r[0] + 1.0) * TWO_POW_M32;
        double u2 = (double)r[1] * TWO_POW_M32;
        j->out[i] = (float)(sqrt(-2.0 * log(u1)) * cos(TWO_PI * u2));
    }
}

/* Elements per task at least before a normal draw is split over the thread
 * pool (one element, a Philox block and a double log, sqrt and cos, costs
 * ~60 ns); element i is the same whichever task computes it. */
#define DG_NORMAL_GRAIN 512.0

/* out is (n).
 * Box-Muller (Box & Muller 1958, https://doi.org/10.1214/aoms/1177706645):
 *   z = sqrt(-2 log u1) cos(2 pi u2),
 * u1 = (w0 + 1) / 2^32 in (0, 1] so log never sees 0 (the largest |z| is then
 * sqrt(64 ln 2) = 6.66), u2 = w1 / 2^32 in [0, 1). Evaluated in double and
 * rounded once. Only the cosine branch is used: pairing the sine branch with
 * element i + 1 would make element i + 1 depend on where a draw starts.
 * Large draws are split over the core's pool (normal_task). */
dg_status dg_rng_normal(float *out, size_t n, uint64_t seed, uint64_t offset) {
    if (out == NULL) return DG_STATUS_ERR_NULL;
    normal_job j = {out, n, seed, offset};
    dg_parallel(normal_task, &j, dg_threads_for((double)n, DG_NORMAL_GRAIN));
    return DG_STATUS_OK;
}

/* out is (n); lo, hi finite with lo < hi (else DG_STATUS_ERR_VALUE).
 * u = (w0 >> 8) / 2^24 takes the 24 top bits, the float mantissa width, so u
 * is exactly one of the 2^24 floats k / 2^24 in [0, 1). lo + (hi - lo) u is
 * evaluated in double (hi - lo cannot overflow there even for hi = -lo =
 * FLT_MAX) and rounded once to float; that rounding can land on hi when u is
 * close to 1, so such a value is replaced by the largest float below hi to
 * keep the interval half-open. */
dg_status dg_rng_uniform(float *out, size_t n, uint64_t seed, uint64_t offset,
                         float lo, float hi) {
    if (out == NULL) return DG_STATUS_ERR_NULL;
    if (!isfinite(lo) || !isfinite(hi) || !(lo < hi)) return DG_STATUS_ERR_VALUE;
    double dlo = lo, width = (double)hi - (double)lo;
    float below_hi = nextafterf(hi, lo);
    for (size_t i = 0; i < n; i++) {
        uint32_t r[4];
        block(r, seed, offset + (uint64_t)i);
        float u = (float)(r[0] >> 8) * TWO_POW_M24;
        float x = (float)(dlo + width * (double)u);
        out[i] = x < hi ? x : below_hi;
    }
    return DG_STATUS_OK;
}
