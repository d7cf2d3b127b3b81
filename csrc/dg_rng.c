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
#include <string.h>

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

/* Box-Muller's log and cosine, the core's own: fdlibm's algorithms (e_log.c,
 * e_rem_pio2.c, k_cos.c, k_sin.c, whose notice follows), each under 1 ulp, in
 * plain double operations (ISO C mode contracts none into an FMA), so that the
 * scalar functions (dg_bm_log, dg_bm_cos) and their 8-lane AVX-512 twins give
 * the same bits, and so does every machine, whatever its libm. fdlibm's
 * branches become one formula: e_log.c's k = 0 cases are its general formula at
 * k = 0, and k_cos.c's |x| < 0.3 branch is the other at qx = 0; e_log.c's
 * shortcut for |f| < 2^-20 and its second form for some f are dropped (the
 * general formula is within 1 ulp there too: the same results as glibc's for
 * u1 within 5,000 steps of 2^-32 below 1). The argument reduction
 * always takes fdlibm's second round (118 bits of pi/2); the third, for
 * cancellations beyond 49 bits, is not needed here: at 2 pi u2 = the double
 * nearest pi/2 the remainder is 6.1e-17 and still good to ~2^-60 of itself.
 * Against glibc's log and cos (csrc/tests/test_misc.c): within 1 ulp on 2^20
 * draws, and the same float z on 2^22. 100 normals took 1.04 us where libm one
 * at a time took 3.65 (6,400: 28 against 137), on Emerald Rapids.
 *
 * fdlibm's notice:
 * Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
 *
 * Developed at SunPro, a Sun Microsystems, Inc. business.
 * Permission to use, copy, modify, and distribute this
 * software is freely granted, provided that this notice
 * is preserved. */
#define LN2_HI 6.93147180369123816490e-01
#define LN2_LO 1.90821492927058770002e-10
#define LG1 6.666666666666735130e-01
#define LG2 3.999999999940941908e-01
#define LG3 2.857142874366239149e-01
#define LG4 2.222219843214978396e-01
#define LG5 1.818357216161805012e-01
#define LG6 1.531383769920937332e-01
#define LG7 1.479819860511658591e-01
#define INVPIO2 6.36619772367581382433e-01
#define PIO2_1 1.57079632673412561417e+00
#define PIO2_2 6.07710050630396597660e-11
#define PIO2_2T 2.02226624879595063154e-21
#define KS1 -1.66666666666666324348e-01
#define KS2 8.33333333332248946124e-03
#define KS3 -1.98412698298579493134e-04
#define KS4 2.75573137070700676789e-06
#define KS5 -2.50507602534068634195e-08
#define KS6 1.58969099521155010221e-10
#define KC1 4.16666666666666019037e-02
#define KC2 -1.38888888888741095749e-03
#define KC3 2.48015872894767294178e-05
#define KC4 -2.75573143513906633035e-07
#define KC5 2.08757232129817482790e-09
#define KC6 -1.13596475577881948265e-11

static uint64_t d2u(double x) {
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static double u2d(uint64_t u) {
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* log(x) for a normal x > 0 (fdlibm e_log.c): x = 2^k m, m in [sqrt(2)/2,
 * sqrt(2)), f = m - 1, s = f / (2 + f), log(1 + f) = f - (hfsq - s (hfsq + R)). */
double dg_bm_log(double x) {
    uint64_t u = d2u(x);
    int64_t hx = (int64_t)(u >> 32);
    int64_t k = (hx >> 20) - 1023;
    hx &= 0x000fffff;
    int64_t i = (hx + 0x95f64) & 0x100000;
    double m = u2d(((uint64_t)(hx | (i ^ 0x3ff00000)) << 32) | (u & 0xffffffffu));
    k += i >> 20;
    double f = m - 1.0, s = f / (2.0 + f), dk = (double)k;
    double z = s * s, w = z * z;
    double t1 = w * (LG2 + w * (LG4 + w * LG6));
    double t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    double R = t2 + t1, hfsq = 0.5 * f * f;
    return dk * LN2_HI - ((hfsq - (s * (hfsq + R) + dk * LN2_LO)) - f);
}

/* sin and cos of y0 + y1, |y0 + y1| <= pi/4 (fdlibm k_sin.c, k_cos.c). */
static double bm_ksin(double x, double y) {
    double z = x * x, v = z * x;
    double r = KS2 + z * (KS3 + z * (KS4 + z * (KS5 + z * KS6)));
    return x - ((z * (0.5 * y - v * r) - y) - v * KS1);
}

static double bm_kcos(double x, double y) {
    uint64_t ax = d2u(x) & 0x7fffffffffffffffull;
    uint32_t ix = (uint32_t)(ax >> 32);
    double z = x * x;
    double r = z * (KC1 + z * (KC2 + z * (KC3 + z * (KC4 + z * (KC5 + z * KC6)))));
    double qx = ix < 0x3FD33333u ? 0.0
                : ix > 0x3fe90000u ? 0.28125
                                   : u2d((uint64_t)(ix - 0x00200000u) << 32);
    double hz = 0.5 * z - qx, a = 1.0 - qx;
    return a - (hz - (z * r - x * y));
}

/* cos(x) for 0 <= x < 2 pi: x - n pi/2 = y0 + y1 to 118 bits (fdlibm
 * e_rem_pio2.c's medium case, both rounds), then the kernel of quadrant n. */
double dg_bm_cos(double x) {
    double fn = (double)(int)(x * INVPIO2 + 0.5);
    double r = x - fn * PIO2_1, w = fn * PIO2_2;
    double t = r;
    r = t - w;
    w = fn * PIO2_2T - ((t - r) - w);
    double y0 = r - w, y1 = (r - y0) - w;
    switch ((int)fn & 3) {
    case 0: return bm_kcos(y0, y1);
    case 1: return -bm_ksin(y0, y1);
    case 2: return -bm_kcos(y0, y1);
    default: return bm_ksin(y0, y1);
    }
}

/* Element `index`'s normal (dg_rng_normal). */
static float normal1(uint64_t seed, uint64_t index) {
    uint32_t r[4];
    block(r, seed, index);
    double u1 = ((double)r[0] + 1.0) * TWO_POW_M32;
    double u2 = (double)r[1] * TWO_POW_M32;
    return (float)(sqrt(-2.0 * dg_bm_log(u1)) * dg_bm_cos(TWO_PI * u2));
}

#if DG_HAVE_AVX2
/* The functions above on 8 lanes, operation for operation. */
DG_AVX512 static __m512d bm_log8(__m512d x) {
    const __m512i lo32 = _mm512_set1_epi64(0xffffffff);
    __m512i u = _mm512_castpd_si512(x);
    __m512i hx = _mm512_srli_epi64(u, 32);
    __m512i k = _mm512_sub_epi64(_mm512_srli_epi64(hx, 20), _mm512_set1_epi64(1023));
    hx = _mm512_and_si512(hx, _mm512_set1_epi64(0x000fffff));
    __m512i i = _mm512_and_si512(_mm512_add_epi64(hx, _mm512_set1_epi64(0x95f64)),
                                 _mm512_set1_epi64(0x100000));
    __m512i mh = _mm512_or_si512(hx, _mm512_xor_si512(i, _mm512_set1_epi64(0x3ff00000)));
    __m512d m = _mm512_castsi512_pd(
        _mm512_or_si512(_mm512_slli_epi64(mh, 32), _mm512_and_si512(u, lo32)));
    k = _mm512_add_epi64(k, _mm512_srli_epi64(i, 20));
    const __m512d one = _mm512_set1_pd(1.0), two = _mm512_set1_pd(2.0);
    __m512d f = _mm512_sub_pd(m, one), s = _mm512_div_pd(f, _mm512_add_pd(two, f));
    __m512d dk = _mm512_cvtepi32_pd(_mm512_cvtepi64_epi32(k));
    __m512d z = _mm512_mul_pd(s, s), w = _mm512_mul_pd(z, z);
#define C8(v) _mm512_set1_pd(v)
    __m512d t1 = _mm512_mul_pd(
        w, _mm512_add_pd(C8(LG2), _mm512_mul_pd(
                                      w, _mm512_add_pd(C8(LG4), _mm512_mul_pd(w, C8(LG6))))));
    __m512d t2 = _mm512_mul_pd(
        z, _mm512_add_pd(
               C8(LG1),
               _mm512_mul_pd(w, _mm512_add_pd(
                                    C8(LG3), _mm512_mul_pd(w, _mm512_add_pd(
                                                                  C8(LG5), _mm512_mul_pd(
                                                                               w, C8(LG7))))))));
    __m512d R = _mm512_add_pd(t2, t1);
    __m512d hfsq = _mm512_mul_pd(_mm512_mul_pd(C8(0.5), f), f);
    __m512d in = _mm512_add_pd(_mm512_mul_pd(s, _mm512_add_pd(hfsq, R)),
                               _mm512_mul_pd(dk, C8(LN2_LO)));
    return _mm512_sub_pd(_mm512_mul_pd(dk, C8(LN2_HI)),
                         _mm512_sub_pd(_mm512_sub_pd(hfsq, in), f));
}

DG_AVX512 static __m512d bm_ksin8(__m512d x, __m512d y) {
    __m512d z = _mm512_mul_pd(x, x), v = _mm512_mul_pd(z, x);
    __m512d r = _mm512_add_pd(
        C8(KS2),
        _mm512_mul_pd(
            z, _mm512_add_pd(
                   C8(KS3),
                   _mm512_mul_pd(z, _mm512_add_pd(
                                        C8(KS4), _mm512_mul_pd(z, _mm512_add_pd(
                                                                      C8(KS5), _mm512_mul_pd(
                                                                                   z, C8(KS6)))))))));
    __m512d in = _mm512_sub_pd(
        _mm512_mul_pd(z, _mm512_sub_pd(_mm512_mul_pd(C8(0.5), y), _mm512_mul_pd(v, r))), y);
    return _mm512_sub_pd(x, _mm512_sub_pd(in, _mm512_mul_pd(v, C8(KS1))));
}

DG_AVX512 static __m512d bm_kcos8(__m512d x, __m512d y) {
    __m512i ix = _mm512_srli_epi64(
        _mm512_and_si512(_mm512_castpd_si512(x), _mm512_set1_epi64(0x7fffffffffffffffll)), 32);
    __m512d z = _mm512_mul_pd(x, x);
    __m512d p = _mm512_add_pd(C8(KC5), _mm512_mul_pd(z, C8(KC6)));
    p = _mm512_add_pd(C8(KC4), _mm512_mul_pd(z, p));
    p = _mm512_add_pd(C8(KC3), _mm512_mul_pd(z, p));
    p = _mm512_add_pd(C8(KC2), _mm512_mul_pd(z, p));
    p = _mm512_add_pd(C8(KC1), _mm512_mul_pd(z, p));
    __m512d r = _mm512_mul_pd(z, p);
    __m512d qx = _mm512_castsi512_pd(
        _mm512_slli_epi64(_mm512_sub_epi64(ix, _mm512_set1_epi64(0x00200000)), 32));
    qx = _mm512_mask_mov_pd(qx, _mm512_cmpgt_epu64_mask(ix, _mm512_set1_epi64(0x3fe90000)),
                            C8(0.28125));
    qx = _mm512_mask_mov_pd(qx, _mm512_cmplt_epu64_mask(ix, _mm512_set1_epi64(0x3FD33333)),
                            _mm512_setzero_pd());
    __m512d hz = _mm512_sub_pd(_mm512_mul_pd(C8(0.5), z), qx);
    __m512d a = _mm512_sub_pd(C8(1.0), qx);
    return _mm512_sub_pd(
        a, _mm512_sub_pd(hz, _mm512_sub_pd(_mm512_mul_pd(z, r), _mm512_mul_pd(x, y))));
}

DG_AVX512 static __m512d bm_cos8(__m512d x) {
    __m256i n = _mm512_cvttpd_epi32(_mm512_add_pd(_mm512_mul_pd(x, C8(INVPIO2)), C8(0.5)));
    __m512d fn = _mm512_cvtepi32_pd(n);
    __m512d r = _mm512_sub_pd(x, _mm512_mul_pd(fn, C8(PIO2_1)));
    __m512d w = _mm512_mul_pd(fn, C8(PIO2_2));
    __m512d t = r;
    r = _mm512_sub_pd(t, w);
    w = _mm512_sub_pd(_mm512_mul_pd(fn, C8(PIO2_2T)), _mm512_sub_pd(_mm512_sub_pd(t, r), w));
    __m512d y0 = _mm512_sub_pd(r, w), y1 = _mm512_sub_pd(_mm512_sub_pd(r, y0), w);
    __m512d c = bm_kcos8(y0, y1), sn = bm_ksin8(y0, y1);
    __m512i q = _mm512_cvtepi32_epi64(n);
    __mmask8 odd = _mm512_test_epi64_mask(q, _mm512_set1_epi64(1));
    __mmask8 neg = _mm512_test_epi64_mask(_mm512_add_epi64(q, _mm512_set1_epi64(1)),
                                          _mm512_set1_epi64(2));   /* n & 3 in {1, 2} */
    __m512d v = _mm512_mask_mov_pd(c, odd, sn);
    /* negation flips the sign bit, as the scalar unary minus */
    return _mm512_castsi512_pd(_mm512_mask_xor_epi64(
        _mm512_castpd_si512(v), neg, _mm512_castpd_si512(v),
        _mm512_set1_epi64((long long)0x8000000000000000ull)));
}
#undef C8

/* dg_bm_log8_cos8's AVX-512 part: n a multiple of 8 */
DG_AVX512 static void bm_log8_cos8(double *lg, double *cs, const double *u1, const double *x,
                                   size_t n) {
    for (size_t i = 0; i < n; i += 8) {
        _mm512_storeu_pd(lg + i, bm_log8(_mm512_loadu_pd(u1 + i)));
        _mm512_storeu_pd(cs + i, bm_cos8(_mm512_loadu_pd(x + i)));
    }
}

/* Elements [lo, hi) of a normal draw, 8 at a time (the last 8 masked) */
DG_AVX512 static void normal_avx512(float *out, uint64_t seed, uint64_t offset, size_t lo,
                                    size_t hi) {
    const __m512i lo32 = _mm512_set1_epi64(0xffffffff);
    const __m512i m0 = _mm512_set1_epi64(PHILOX_M0), m1 = _mm512_set1_epi64(PHILOX_M1);
    const __m512i iota = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    for (size_t i = lo; i < hi; i += 8) {
        __m512i idx = _mm512_add_epi64(_mm512_set1_epi64((long long)(offset + (uint64_t)i)), iota);
        __m512i c0 = _mm512_and_si512(idx, lo32), c1 = _mm512_srli_epi64(idx, 32);
        __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
        uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
        for (int round = 0; round < 10; round++) {
            if (round > 0) {
                k0 += PHILOX_W0;
                k1 += PHILOX_W1;
            }
            __m512i p0 = _mm512_mul_epu32(c0, m0), p1 = _mm512_mul_epu32(c2, m1);
            c0 = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p1, 32), c1),
                                  _mm512_set1_epi64(k0));
            c1 = _mm512_and_si512(p1, lo32);
            c2 = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p0, 32), c3),
                                  _mm512_set1_epi64(k1));
            c3 = _mm512_and_si512(p0, lo32);
        }
        __m512d u1 = _mm512_mul_pd(
            _mm512_add_pd(_mm512_cvtepu32_pd(_mm512_cvtepi64_epi32(c0)), _mm512_set1_pd(1.0)),
            _mm512_set1_pd(TWO_POW_M32));
        __m512d u2 = _mm512_mul_pd(_mm512_cvtepu32_pd(_mm512_cvtepi64_epi32(c1)),
                                   _mm512_set1_pd(TWO_POW_M32));
        __m512d rad = _mm512_sqrt_pd(_mm512_mul_pd(_mm512_set1_pd(-2.0), bm_log8(u1)));
        __m512d z = _mm512_mul_pd(rad, bm_cos8(_mm512_mul_pd(_mm512_set1_pd(TWO_PI), u2)));
        __m256 zf = _mm512_cvtpd_ps(z);
        if (hi - i >= 8)
            _mm256_storeu_ps(out + i, zf);
        else
            _mm512_mask_storeu_ps(out + i, (__mmask16)((1u << (hi - i)) - 1),
                                  _mm512_castps256_ps512(zf));
    }
}
#endif

/* lg = log(u1), cs = cos(x), 8 lanes at a time when dg_avx512() (the 8-lane
 * twins of dg_bm_log and dg_bm_cos), else one at a time; n a multiple of 8. For
 * the tests, which check the two give the same bits. */
void dg_bm_log8_cos8(double *lg, double *cs, const double *u1, const double *x, size_t n) {
#if DG_HAVE_AVX2
    if (dg_avx512()) {
        bm_log8_cos8(lg, cs, u1, x, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) {
        lg[i] = dg_bm_log(u1[i]);
        cs[i] = dg_bm_cos(x[i]);
    }
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
    if (lo >= hi) return;
#if DG_HAVE_AVX2
    if (dg_avx512()) {
        normal_avx512(j->out, j->seed, j->offset, lo, hi);
        return;
    }
#endif
    for (size_t i = lo; i < hi; i++) j->out[i] = normal1(j->seed, j->offset + (uint64_t)i);
}

/* Elements per task at least before a normal draw is split over the thread
 * pool (one element, a Philox block and Box-Muller's log, sqrt and cos in
 * double, costs ~35 ns one at a time, ~4 ns 8 at a time); element i is the same
 * whichever task computes it. */
#define DG_NORMAL_GRAIN 512.0

/* out is (n).
 * Box-Muller (Box & Muller 1958, https://doi.org/10.1214/aoms/1177706645):
 *   z = sqrt(-2 log u1) cos(2 pi u2),
 * u1 = (w0 + 1) / 2^32 in (0, 1] so log never sees 0 (the largest |z| is then
 * sqrt(64 ln 2) = 6.66), u2 = w1 / 2^32 in [0, 1). Evaluated in double (log and
 * cos: dg_bm_log, dg_bm_cos) and rounded once. Only the cosine branch is used: pairing
 * the sine branch with element i + 1 would make element i + 1 depend on where a
 * draw starts. Large draws are split over the core's pool (normal_task). */
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
