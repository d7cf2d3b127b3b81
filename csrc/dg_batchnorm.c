/*
 * dg_batchnorm.c -- batch normalisation (Ioffe & Szegedy 2015), training and
 * eval mode, forward and backward, with PyTorch's semantics
 * (https://pytorch.org/docs/stable/generated/torch.nn.BatchNorm2d.html):
 * the batch statistics normalise with the BIASED variance, the running
 * variance is updated with the UNBIASED one, and training mode needs more
 * than one value per channel (as torch raises otherwise).
 *
 * Dimension letters:
 *   N  = batch size
 *   C  = channels (features for a flat (N, C) batch)
 *   HW = spatial size H*W, 1 for a flat batch; tensors are (N, C, HW)
 *   M  = N*HW, the number of values per channel
 *
 * Numerics: the statistics and the backward sums are accumulated in double,
 * two-pass (mean first, then the centred sum of squares), so a large mean does
 * not cancel the variance away.
 *
 * Speed: channels are processed in blocks. At a fixed n a block of channels is
 * one contiguous run of memory, and a block stays in cache across the passes
 * over it. When HW <= DG_BN_RUN the per-channel values of a block are expanded
 * to one per position of the run, so every loop is a flat loop over the run,
 * however small HW is (HW = 1 for a flat (N, C) batch). Inner loops are
 * unrolled by four, loads before stores, a form GCC and Clang vectorise at
 * plain -O2 (SSE2) without assuming anything about aliasing.
 */
#include "distgan.h"
#include "dg_internal.h"

#include <math.h>
#include <stdint.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Most channels per block (per-channel arrays on the stack). */
#define DG_BN_MAX_BLOCK 256
/* Positions of a block's run expanded to per-position values (small-HW path). */
#define DG_BN_RUN 512
/* Images at least for bn_apply to expand (fewer: channel by channel). */
#define DG_BN_EXPAND_MIN_N 4
/* Floats of one channel block aimed at (256 KiB), so the passes hit cache. */
#define DG_BN_BLOCK_FLOATS ((size_t)1 << 16)

/* Channels per block for (N, C, HW) tensors; with HW <= DG_BN_RUN a block's
 * run at one n (cb*HW floats) fits the per-position arrays. */
static int bn_block(int N, int C, int HW) {
    size_t cb = (size_t)HW <= DG_BN_RUN ? DG_BN_RUN / (size_t)HW : DG_BN_MAX_BLOCK;
    size_t cache_cb = DG_BN_BLOCK_FLOATS / ((size_t)N * (size_t)HW);
    if (cb > cache_cb) cb = cache_cb;
    if (cb < 1) cb = 1;
    if (cb > DG_BN_MAX_BLOCK) cb = DG_BN_MAX_BLOCK;
    if (cb > (size_t)C) cb = (size_t)C;
    return (int)cb;
}

static dg_status bn_check_sizes(int N, int C, int HW) {
    if (N <= 0 || C <= 0 || HW <= 0) return DG_STATUS_ERR_SHAPE;
    size_t nc = (size_t)N * (size_t)C;
    if ((size_t)HW > (size_t)PTRDIFF_MAX / sizeof(float) / nc) return DG_STATUS_ERR_SHAPE;
    return DG_STATUS_OK;
}

/* Images ahead whose run of a block is prefetched (runs of the small-HW paths
 * are a few hundred floats, one image's tensor apart: too short for the
 * hardware prefetcher to be ahead of the first reads of each), in tensors of
 * more than DG_BN_PREFETCH_MIN floats (smaller ones, such as DCGAN's critic's
 * 1.6 MB, are still in L2 from the op before; PERFORMANCE.md, log 64). */
#define DG_BN_AHEAD 2
#define DG_BN_PREFETCH_MIN ((size_t)1 << 19)

/* Prefetches len floats from p, to read (bn_prefetch) or to write
 * (bn_prefetch_w). */
static inline void bn_prefetch(const float *p, size_t len) {
    for (size_t k = 0; k < len; k += 16) __builtin_prefetch(p + k, 0);
}
static inline void bn_prefetch_w(const float *p, size_t len) {
    for (size_t k = 0; k < len; k += 16) __builtin_prefetch(p + k, 1);
}

/* e[j*hw + i] = v[j]: per-channel values of a block, one per position. */
static void expand_d(double *e, const double *v, int cb, size_t hw) {
    for (int j = 0; j < cb; j++)
        for (size_t i = 0; i < hw; i++) e[(size_t)j * hw + i] = v[j];
}

static void expand_f(float *e, const float *v, int cb, size_t hw) {
    for (int j = 0; j < cb; j++)
        for (size_t i = 0; i < hw; i++) e[(size_t)j * hw + i] = v[j];
}

enum { BN_SUM, BN_SQDEV, BN_DOTDEV };

/* The element loops below are written once, as macros of ACT_x (the fused
 * activation of a value) or GRAD_x (dout at position k through its gradient; y,
 * the fused output, is read only with an activation), and expanded once per
 * activation by BN_PER_ACT, so that each expansion is straight-line selects that
 * the compiler vectorises (with the activation tested inside the loop, the
 * backward compiled to a branch per element, ~10x slower). Without one, the code
 * is the plain batch norm's, expression for expression. */
#define ACT_NONE(v) (v)
#define ACT_RELU(v) dg_act_value(v, DG_ACT_RELU, slope)
#define ACT_LEAKY(v) dg_act_value(v, DG_ACT_LEAKY_RELU, slope)
#define GRAD_NONE(k) (dy[k])
#define GRAD_RELU(k) dg_act_grad(dy[k], y[k], DG_ACT_RELU, slope)
#define GRAD_LEAKY(k) dg_act_grad(dy[k], y[k], DG_ACT_LEAKY_RELU, slope)
#define BN_PER_ACT(LOOP, NONE, RELU, LEAKY)                                             \
    if (act == DG_ACT_RELU) {                                                           \
        LOOP(RELU)                                                                      \
    } else if (act == DG_ACT_LEAKY_RELU) {                                              \
        LOOP(LEAKY)                                                                     \
    } else {                                                                            \
        LOOP(NONE)                                                                      \
    }

/* a[i] += x[i]                                   (BN_SUM)
 * a[i] += (x[i] - m[i])^2                        (BN_SQDEV)
 * a[i] += dy[i];  b[i] += dy[i] * (x[i] - m[i])  (BN_DOTDEV)
 * over len positions, in double; m is per position. With act (BN_DOTDEV only),
 * dy[i] is first taken through the activation's gradient at its output y[i]. */
static void acc_run(int kind, double *a, double *b, const float *x,
                    const float *dy, const double *m, size_t len, const float *y, int act,
                    float slope) {
    size_t k = 0;
    if (kind == BN_SUM) {
        for (; k + 4 <= len; k += 4) {
            a[k] += x[k];
            a[k + 1] += x[k + 1];
            a[k + 2] += x[k + 2];
            a[k + 3] += x[k + 3];
        }
        for (; k < len; k++) a[k] += x[k];
    } else if (kind == BN_SQDEV) {
        for (; k + 4 <= len; k += 4) {
            double d0 = x[k] - m[k], d1 = x[k + 1] - m[k + 1];
            double d2 = x[k + 2] - m[k + 2], d3 = x[k + 3] - m[k + 3];
            a[k] += d0 * d0;
            a[k + 1] += d1 * d1;
            a[k + 2] += d2 * d2;
            a[k + 3] += d3 * d3;
        }
        for (; k < len; k++) {
            double d = x[k] - m[k];
            a[k] += d * d;
        }
    } else {
#define DOTDEV_LOOP(G)                                                                  \
    for (; k + 4 <= len; k += 4) {                                                      \
        double g0 = G(k), g1 = G(k + 1), g2 = G(k + 2), g3 = G(k + 3);                  \
        double d0 = x[k] - m[k], d1 = x[k + 1] - m[k + 1];                              \
        double d2 = x[k + 2] - m[k + 2], d3 = x[k + 3] - m[k + 3];                      \
        a[k] += g0;                                                                     \
        a[k + 1] += g1;                                                                 \
        a[k + 2] += g2;                                                                 \
        a[k + 3] += g3;                                                                 \
        b[k] += g0 * d0;                                                                \
        b[k + 1] += g1 * d1;                                                            \
        b[k + 2] += g2 * d2;                                                            \
        b[k + 3] += g3 * d3;                                                            \
    }                                                                                   \
    for (; k < len; k++) {                                                              \
        double g = G(k);                                                                \
        a[k] += g;                                                                      \
        b[k] += g * (x[k] - m[k]);                                                      \
    }
        BN_PER_ACT(DOTDEV_LOOP, GRAD_NONE, GRAD_RELU, GRAD_LEAKY)
#undef DOTDEV_LOOP
    }
}

/* Per-channel sums in double over n and hw, for the channels [c0, c0 + cb)
 * of (N, C, HW) tensors, m[j] being a per-channel centre:
 *   BN_SUM     s1[j] = sum x
 *   BN_SQDEV   s1[j] = sum (x - m[j])^2
 *   BN_DOTDEV  s1[j] = sum dy,  s2[j] = sum dy * (x - m[j])
 * Accumulators are per position (of the block's run, or of a chunk of one
 * channel), added over n, then summed per channel. */
static void bn_sums(int kind, double *s1, double *s2, const float *x,
                    const float *dy, const double *m, int N, int C, int HW,
                    int c0, int cb, const float *y, int act, float slope) {
    size_t hw = (size_t)HW, chw = (size_t)C * hw;
    int pf = (size_t)N * chw > DG_BN_PREFETCH_MIN;
    double a[DG_BN_RUN], b[DG_BN_RUN], me[DG_BN_RUN];
    if (hw <= DG_BN_RUN) {
        size_t run = (size_t)cb * hw;
        for (size_t k = 0; k < run; k++) a[k] = b[k] = 0.0;
        /* with hw == 1 the per-channel centres already are per position */
        const double *mp = hw == 1 ? m : me;
        if (kind != BN_SUM && hw != 1) expand_d(me, m, cb, hw);
        for (int n = 0; n < N; n++) {
            size_t off = (size_t)n * chw + (size_t)c0 * hw;
            if (pf && n + DG_BN_AHEAD < N) {
                size_t ahead = off + DG_BN_AHEAD * chw;
                bn_prefetch(x + ahead, run);
                if (dy != NULL) bn_prefetch(dy + ahead, run);
                if (y != NULL) bn_prefetch(y + ahead, run);
            }
            acc_run(kind, a, b, x + off, dy != NULL ? dy + off : NULL, mp, run,
                    y != NULL ? y + off : NULL, act, slope);
        }
        for (int j = 0; j < cb; j++) {
            double t1 = 0.0, t2 = 0.0;
            for (size_t i = 0; i < hw; i++) {
                t1 += a[(size_t)j * hw + i];
                t2 += b[(size_t)j * hw + i];
            }
            s1[j] = t1;
            if (kind == BN_DOTDEV) s2[j] = t2;
        }
        return;
    }
    /* one channel at a time, in chunks of DG_BN_RUN positions */
    for (int j = 0; j < cb; j++) {
        for (size_t k = 0; k < DG_BN_RUN; k++) {
            a[k] = b[k] = 0.0;
            me[k] = kind != BN_SUM ? m[j] : 0.0;
        }
        for (int n = 0; n < N; n++) {
            size_t off = (size_t)n * chw + (size_t)(c0 + j) * hw;
            for (size_t i0 = 0; i0 < hw; i0 += DG_BN_RUN) {
                size_t len = hw - i0 < DG_BN_RUN ? hw - i0 : DG_BN_RUN;
                acc_run(kind, a, b, x + off + i0, dy != NULL ? dy + off + i0 : NULL, me, len,
                        y != NULL ? y + off + i0 : NULL, act, slope);
            }
        }
        double t1 = 0.0, t2 = 0.0;
        for (size_t k = 0; k < DG_BN_RUN; k++) {
            t1 += a[k];
            t2 += b[k];
        }
        s1[j] = t1;
        if (kind == BN_DOTDEV) s2[j] = t2;
    }
}

/* y[i] = act(((x[i] - mh[i]) - ml[i]) * s[i] + t[i]) over len positions.
 * Four loads before four stores: vectorised even if y and x are the same. */
static void apply_run(float *y, const float *x, const float *mh, const float *ml,
                      const float *s, const float *t, size_t len, int act, float slope) {
    size_t k = 0;
#define APPLY_LOOP(A)                                                                   \
    for (; k + 4 <= len; k += 4) {                                                      \
        float v0 = A(((x[k] - mh[k]) - ml[k]) * s[k] + t[k]);                           \
        float v1 = A(((x[k + 1] - mh[k + 1]) - ml[k + 1]) * s[k + 1] + t[k + 1]);       \
        float v2 = A(((x[k + 2] - mh[k + 2]) - ml[k + 2]) * s[k + 2] + t[k + 2]);       \
        float v3 = A(((x[k + 3] - mh[k + 3]) - ml[k + 3]) * s[k + 3] + t[k + 3]);       \
        y[k] = v0;                                                                      \
        y[k + 1] = v1;                                                                  \
        y[k + 2] = v2;                                                                  \
        y[k + 3] = v3;                                                                  \
    }                                                                                   \
    for (; k < len; k++) y[k] = A(((x[k] - mh[k]) - ml[k]) * s[k] + t[k]);
    BN_PER_ACT(APPLY_LOOP, ACT_NONE, ACT_RELU, ACT_LEAKY)
#undef APPLY_LOOP
}

/* y[i] = act(((x[i] - mh) - ml) * s + t) over len positions. */
static void apply_run1(float *y, const float *x, float mh, float ml, float s,
                       float t, size_t len, int act, float slope) {
    size_t k = 0;
#define APPLY1_LOOP(A)                                                                  \
    for (; k + 4 <= len; k += 4) {                                                      \
        float v0 = A(((x[k] - mh) - ml) * s + t);                                       \
        float v1 = A(((x[k + 1] - mh) - ml) * s + t);                                   \
        float v2 = A(((x[k + 2] - mh) - ml) * s + t);                                   \
        float v3 = A(((x[k + 3] - mh) - ml) * s + t);                                   \
        y[k] = v0;                                                                      \
        y[k + 1] = v1;                                                                  \
        y[k + 2] = v2;                                                                  \
        y[k + 3] = v3;                                                                  \
    }                                                                                   \
    for (; k < len; k++) y[k] = A(((x[k] - mh) - ml) * s + t);
    BN_PER_ACT(APPLY1_LOOP, ACT_NONE, ACT_RELU, ACT_LEAKY)
#undef APPLY1_LOOP
}

/* dx[i] += kd[i] * (g[i] - md[i]) - kx[i] * (x[i] - m[i]) over len positions, g = dy
 * through the fused activation's gradient (dy itself without one). */
static void dx_run(float *dx, const float *dy, const float *x, const float *kd,
                   const float *md, const float *kx, const float *m, size_t len,
                   const float *y, int act, float slope) {
    size_t k = 0;
#define DX_LOOP(G)                                                                      \
    for (; k + 4 <= len; k += 4) {                                                      \
        float v0 = dx[k] + (kd[k] * (G(k) - md[k]) - kx[k] * (x[k] - m[k]));            \
        float v1 = dx[k + 1] + (kd[k + 1] * (G(k + 1) - md[k + 1]) -                    \
                                kx[k + 1] * (x[k + 1] - m[k + 1]));                     \
        float v2 = dx[k + 2] + (kd[k + 2] * (G(k + 2) - md[k + 2]) -                    \
                                kx[k + 2] * (x[k + 2] - m[k + 2]));                     \
        float v3 = dx[k + 3] + (kd[k + 3] * (G(k + 3) - md[k + 3]) -                    \
                                kx[k + 3] * (x[k + 3] - m[k + 3]));                     \
        dx[k] = v0;                                                                     \
        dx[k + 1] = v1;                                                                 \
        dx[k + 2] = v2;                                                                 \
        dx[k + 3] = v3;                                                                 \
    }                                                                                   \
    for (; k < len; k++) dx[k] += kd[k] * (G(k) - md[k]) - kx[k] * (x[k] - m[k]);
    BN_PER_ACT(DX_LOOP, GRAD_NONE, GRAD_RELU, GRAD_LEAKY)
#undef DX_LOOP
}

/* dx[i] += kd * (g[i] - md) - kx * (x[i] - m) over len positions (g as in dx_run). */
static void dx_run1(float *dx, const float *dy, const float *x, float kd,
                    float md, float kx, float m, size_t len, const float *y, int act,
                    float slope) {
    size_t k = 0;
#define DX1_LOOP(G)                                                                     \
    for (; k + 4 <= len; k += 4) {                                                      \
        float v0 = dx[k] + (kd * (G(k) - md) - kx * (x[k] - m));                        \
        float v1 = dx[k + 1] + (kd * (G(k + 1) - md) - kx * (x[k + 1] - m));            \
        float v2 = dx[k + 2] + (kd * (G(k + 2) - md) - kx * (x[k + 2] - m));            \
        float v3 = dx[k + 3] + (kd * (G(k + 3) - md) - kx * (x[k + 3] - m));            \
        dx[k] = v0;                                                                     \
        dx[k + 1] = v1;                                                                 \
        dx[k + 2] = v2;                                                                 \
        dx[k + 3] = v3;                                                                 \
    }                                                                                   \
    for (; k < len; k++) dx[k] += kd * (G(k) - md) - kx * (x[k] - m);
    BN_PER_ACT(DX1_LOOP, GRAD_NONE, GRAD_RELU, GRAD_LEAKY)
#undef DX1_LOOP
}

/* y = ((x - mh[c]) - ml[c]) * s[c] + t[c] for the channels [c0, c0 + cb);
 * mh, ml, s, t are (cb). Small maps run a block's channels as one run of
 * per-position values, expanded once for all N images; fewer than
 * DG_BN_EXPAND_MIN_N images go channel by channel, the same arithmetic (a
 * sample's (1, 128, 14, 14) spent four writes per value expanding them: 10.8 ->
 * 5.3 us; PERFORMANCE.md log 69). */
static void bn_apply(float *y, const float *x, const float *mh, const float *ml,
                     const float *s, const float *t, int N, int C, int HW,
                     int c0, int cb, int act, float slope) {
    size_t hw = (size_t)HW, chw = (size_t)C * hw;
    int pf = (size_t)N * chw > DG_BN_PREFETCH_MIN;
    if (hw <= DG_BN_RUN && (hw == 1 || N >= DG_BN_EXPAND_MIN_N)) {
        float emh[DG_BN_RUN], eml[DG_BN_RUN], es[DG_BN_RUN], et[DG_BN_RUN];
        size_t run = (size_t)cb * hw;
        if (hw == 1) {
            /* a flat (N, C) batch: the per-channel values are per position */
            for (int n = 0; n < N; n++) {
                size_t off = (size_t)n * chw + (size_t)c0;
                if (pf && n + DG_BN_AHEAD < N) {
                    bn_prefetch_w(y + off + DG_BN_AHEAD * chw, (size_t)cb);
                }
                apply_run(y + off, x + off, mh, ml, s, t, (size_t)cb, act, slope);
            }
            return;
        }
        expand_f(emh, mh, cb, hw);
        expand_f(eml, ml, cb, hw);
        expand_f(es, s, cb, hw);
        expand_f(et, t, cb, hw);
        for (int n = 0; n < N; n++) {
            size_t off = (size_t)n * chw + (size_t)c0 * hw;
            if (pf && n + DG_BN_AHEAD < N) bn_prefetch_w(y + off + DG_BN_AHEAD * chw, run);
            apply_run(y + off, x + off, emh, eml, es, et, run, act, slope);
        }
        return;
    }
    for (int n = 0; n < N; n++) {
        for (int j = 0; j < cb; j++) {
            size_t off = (size_t)n * chw + (size_t)(c0 + j) * hw;
            apply_run1(y + off, x + off, mh[j], ml[j], s[j], t[j], hw, act, slope);
        }
    }
}

/* dx += kd[c] * (dy - md[c]) - kx[c] * (x - m[c]) for the channels [c0, c0 + cb). */
static void bn_dx(float *dx, const float *dy, const float *x, const float *kd,
                  const float *md, const float *kx, const float *m, int N, int C,
                  int HW, int c0, int cb, const float *y, int act, float slope) {
    size_t hw = (size_t)HW, chw = (size_t)C * hw;
    int pf = (size_t)N * chw > DG_BN_PREFETCH_MIN;
    if (hw <= DG_BN_RUN) {
        float ekd[DG_BN_RUN], emd[DG_BN_RUN], ekx[DG_BN_RUN], em[DG_BN_RUN];
        size_t run = (size_t)cb * hw;
        if (hw == 1) {
            for (int n = 0; n < N; n++) {
                size_t off = (size_t)n * chw + (size_t)c0;
                if (pf && n + DG_BN_AHEAD < N) {
                    bn_prefetch_w(dx + off + DG_BN_AHEAD * chw, (size_t)cb);
                }
                dx_run(dx + off, dy + off, x + off, kd, md, kx, m, (size_t)cb, y != NULL ? y + off : NULL,
                       act, slope);
            }
            return;
        }
        expand_f(ekd, kd, cb, hw);
        expand_f(emd, md, cb, hw);
        expand_f(ekx, kx, cb, hw);
        expand_f(em, m, cb, hw);
        for (int n = 0; n < N; n++) {
            size_t off = (size_t)n * chw + (size_t)c0 * hw;
            if (pf && n + DG_BN_AHEAD < N) bn_prefetch_w(dx + off + DG_BN_AHEAD * chw, run);
            dx_run(dx + off, dy + off, x + off, ekd, emd, ekx, em, run, y != NULL ? y + off : NULL,
                   act, slope);
        }
        return;
    }
    for (int n = 0; n < N; n++) {
        for (int j = 0; j < cb; j++) {
            size_t off = (size_t)n * chw + (size_t)(c0 + j) * hw;
            dx_run1(dx + off, dy + off, x + off, kd[j], md[j], kx[j], m[j], hw,
                    y != NULL ? y + off : NULL, act, slope);
        }
    }
}

/* ------------------------------------------------------------------------- */
/* The four passes over a range of channels [cA, cB), and their tasks on the  */
/* thread pool: each task takes a contiguous range of channels (dg_split), so */
/* every per-channel sum is accumulated in the same order whatever the thread */
/* count, and tasks write disjoint channels.                                  */
/* ------------------------------------------------------------------------- */

/* Values (N*C*HW) per task at least before a pass is split over threads. */
#define DG_BN_GRAIN 32768.0

static int bn_tasks(int N, int C, int HW) {
    int nt = dg_threads_for((double)N * (double)C * (double)HW, DG_BN_GRAIN);
    return nt < C ? nt : C;
}

typedef struct {
    float *out;
    float *mean;
    float *rstd;
    float *running_mean;
    float *running_var;
    const float *inp;
    const float *gamma;
    const float *beta;
    int N;
    int C;
    int HW;
    float eps;
    float momentum;
    size_t M;
    int act;
    float slope;
} bn_fwd_job;

/* The channel loop of dg_batchnorm_forward (same arguments, M = N*HW) over the
 * channels [cA, cB). */
static void bn_fwd_range(float *out, float *mean, float *rstd, float *running_mean,
                         float *running_var, const float *inp, const float *gamma,
                         const float *beta, int N, int C, int HW, float eps, float momentum,
                         size_t M, int cA, int cB, int act, float slope) {
    int cbmax = bn_block(N, C, HW);
    double acc[DG_BN_MAX_BLOCK], mu[DG_BN_MAX_BLOCK];
    float mlo[DG_BN_MAX_BLOCK], scale[DG_BN_MAX_BLOCK], shift[DG_BN_MAX_BLOCK];
    for (int c0 = cA; c0 < cB; c0 += cbmax) {
        int cb = cB - c0 < cbmax ? cB - c0 : cbmax;
        // pass 1: mean[c] = sum x / M
        bn_sums(BN_SUM, acc, NULL, inp, NULL, NULL, N, C, HW, c0, cb, NULL, DG_ACT_NONE, 0.0f);
        for (int j = 0; j < cb; j++) mu[j] = acc[j] / (double)M;
        // pass 2: var[c] = sum (x - mean)^2 / M  (biased)
        bn_sums(BN_SQDEV, acc, NULL, inp, NULL, mu, N, C, HW, c0, cb, NULL, DG_ACT_NONE, 0.0f);
        for (int j = 0; j < cb; j++) {
            int c = c0 + j;
            double var = acc[j] / (double)M;
            mean[c] = (float)mu[j];
            rstd[c] = (float)(1.0 / sqrt(var + (double)eps));
            if (running_mean != NULL) {
                running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu[j]);
            }
            if (running_var != NULL) {
                double unbiased = var * ((double)M / (double)(M - 1));
                running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
            }
            /* the mean as float hi + lo: x - hi is exact when x is near the
             * mean, so a large mean does not round the centred value away */
            mlo[j] = (float)(mu[j] - (double)mean[c]);
            scale[j] = rstd[c] * (gamma != NULL ? gamma[c] : 1.0f);
            shift[j] = beta != NULL ? beta[c] : 0.0f;
        }
        // pass 3: out = (x - mean) * rstd * gamma + beta
        bn_apply(out, inp, mean + c0, mlo, scale, shift, N, C, HW, c0, cb, act, slope);
    }
}

static void bn_fwd_task(void *ctx, int t, int nt) {
    const bn_fwd_job *j = (const bn_fwd_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->C, 1, t, nt, &lo, &hi);
    if (lo < hi) bn_fwd_range(j->out, j->mean, j->rstd, j->running_mean, j->running_var,
        j->inp, j->gamma, j->beta, j->N, j->C, j->HW, j->eps, j->momentum, j->M, (int)lo,
        (int)hi, j->act, j->slope);
}

/* bn_fwd_task built for AVX2 (dg_internal.h): the same values */
DG_AVX2_TASK(bn_fwd_task)

typedef struct {
    float *out;
    const float *inp;
    const float *running_mean;
    const float *running_var;
    const float *gamma;
    const float *beta;
    int N;
    int C;
    int HW;
    float eps;
    int act;
    float slope;
} bn_fwd_eval_job;

#if DG_HAVE_AVX2
/* dg_bn_eval_rstd of the 8 floats at v, to the
 * bit, without a square root or a division: y, 1/sqrt(x) from vrsqrt14pd
 * (relative error < 2^-14) and two Newton steps in double, is within 2^-50 of
 * 1/sqrt(x) (each step squares the error and times 1.5, plus a few roundings of
 * 2^-53), and the scalar formula's q (1/sqrt(x) rounded twice in double) within
 * 2^-52 of it, so q lies in [y (1 - 2^-48), y (1 + 2^-48)], within 32 units of
 * y's last place (y 2^-48 < 32 ulp(y)). Where y is more than 64 of them from every
 * midpoint between two floats (its 29 bits below a float's precision more than
 * 64 from 2^28), that whole interval rounds to the float y rounds to, and so does
 * q (rounding is monotone): one conversion and an integer test, where rounding
 * both ends of the interval took three conversions (0.99x of a one-image teacher
 * sample, PERFORMANCE.md log 117). *bad gets the lanes where y is not (about one
 * in 2^22), or whose x is outside [2^-120, 2^120] (a NaN, inf, zero, negative or
 * extreme variance): those take the scalar formula. */
DG_AVX512 static inline __m256 bn_rstd8(const float *v, __m512d ve, __mmask8 *bad) {
    const __m512d c15 = _mm512_set1_pd(1.5), c05 = _mm512_set1_pd(0.5);
    __m512d x = _mm512_add_pd(_mm512_cvtps_pd(_mm256_loadu_ps(v)), ve);
    __m512d hx = _mm512_mul_pd(c05, x), y = _mm512_rsqrt14_pd(x);
    y = _mm512_mul_pd(y, _mm512_fnmadd_pd(hx, _mm512_mul_pd(y, y), c15));
    y = _mm512_mul_pd(y, _mm512_fnmadd_pd(hx, _mm512_mul_pd(y, y), c15));
    /* the bits below a float's precision, less 2^28 - 64: in [0, 128] within 64
     * units of a midpoint (below it, the subtraction wraps to a large number) */
    __m512i low = _mm512_sub_epi64(_mm512_and_si512(_mm512_castpd_si512(y),
                                                    _mm512_set1_epi64(0x1fffffff)),
                                   _mm512_set1_epi64(0x10000000 - 64));
    __mmask8 ok = _mm512_cmp_pd_mask(x, _mm512_set1_pd(0x1p-120), _CMP_GE_OQ);
    ok = _mm512_mask_cmp_pd_mask(ok, x, _mm512_set1_pd(0x1p120), _CMP_LE_OQ);
    ok = _mm512_mask_cmp_epu64_mask(ok, low, _mm512_set1_epi64(128), _MM_CMPINT_NLE);
    *bad = (__mmask8)~ok;
    return _mm512_cvtpd_ps(y);
}

/* dg_batchnorm_act_forward_eval of one image of a flat batch (N = 1, HW = 1),
 * channels [cA, cA + 16 k) of [cA, cB): the same bits as bn_fwd_eval_range's
 * (((x - mean) - 0) * scale + shift, then act; subtracting +0 changes nothing,
 * not even -0 or a NaN), 16 channels at a time with their scales from
 * bn_rstd8; only a NaN's sign may differ, as it follows the order in which the
 * compiler puts a product's operands. A generator's head sampling one image
 * runs its wide batch norm this way (12544 channels: 30 -> 15 us alone,
 * PERFORMANCE.md log 101). With scale (dg_batchnorm_eval_scale's), each
 * channel's scale is read from it instead (var and gamma unread). Returns the
 * channels done. */
__attribute__((noinline)) DG_AVX512 static int bn_eval_one_avx512(
    float *out, const float *inp, const float *mean, const float *var, const float *gamma,
    const float *beta, float eps, int cA, int cB, int act, float slope, const float *scale) {
    const __m512d ve = _mm512_set1_pd((double)eps);
    const __m512 zero = _mm512_setzero_ps();
    int c = cA;
    for (; scale != NULL && c + 16 <= cB; c += 16) {
        __m512 sh = beta != NULL ? _mm512_loadu_ps(beta + c) : zero;
        __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(inp + c),
                                                             _mm512_loadu_ps(mean + c)),
                                               _mm512_loadu_ps(scale + c)),
                                 sh);
        _mm512_storeu_ps(out + c, dg_act16(v, act, slope));
    }
    for (; scale == NULL && c + 16 <= cB; c += 16) {
        __mmask8 b0, b1;
        __m256 r0 = bn_rstd8(var + c, ve, &b0), r1 = bn_rstd8(var + c + 8, ve, &b1);
        __m512 r = _mm512_castpd_ps(_mm512_insertf64x4(
            _mm512_castpd256_pd512(_mm256_castps_pd(r0)), _mm256_castps_pd(r1), 1));
        unsigned bad = (unsigned)b0 | (unsigned)b1 << 8;
        if (bad != 0) {
            float f[16];
            _mm512_storeu_ps(f, r);
            for (; bad != 0; bad &= bad - 1) {
                int k = __builtin_ctz(bad);
                f[k] = dg_bn_eval_rstd(var[c + k], eps);
            }
            r = _mm512_loadu_ps(f);
        }
        __m512 sc = gamma != NULL ? _mm512_mul_ps(r, _mm512_loadu_ps(gamma + c)) : r;
        __m512 sh = beta != NULL ? _mm512_loadu_ps(beta + c) : zero;
        __m512 v = _mm512_add_ps(
            _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(inp + c), _mm512_loadu_ps(mean + c)), sc),
            sh);
        _mm512_storeu_ps(out + c, dg_act16(v, act, slope));
    }
    return c - cA;
}
#endif

/* The channel loop of dg_batchnorm_forward_eval (same arguments, M = N*HW) over the
 * channels [cA, cB); with sc (dg_batchnorm_eval_scale's), each channel's scale read
 * from it (running_var and gamma unread). */
static void bn_fwd_eval_range(float *out, const float *inp, const float *running_mean,
                              const float *running_var, const float *gamma,
                              const float *beta, int N, int C, int HW, float eps, int cA,
                              int cB, int act, float slope, const float *sc) {
    int cbmax = bn_block(N, C, HW);
    float zero[DG_BN_MAX_BLOCK], scale[DG_BN_MAX_BLOCK], shift[DG_BN_MAX_BLOCK];
#if DG_HAVE_AVX2
    if (N == 1 && HW == 1 && dg_avx512())   /* the rest (cB - cA < 16 channels) below */
        cA += bn_eval_one_avx512(out, inp, running_mean, running_var, gamma, beta, eps, cA,
                                 cB, act, slope, sc);
#endif
    for (int c0 = cA; c0 < cB; c0 += cbmax) {
        int cb = cB - c0 < cbmax ? cB - c0 : cbmax;
        int j = 0;
#if defined(__SSE2__)
        /* two channels at a time: sqrtpd, divpd and cvtpd2ps round exactly as
         * sqrt, / and the float cast of the scalar loop, so the same bits; a
         * batch of one through a wide flat batch norm is bound by this loop */
        const __m128d veps = _mm_set1_pd((double)eps), one = _mm_set1_pd(1.0);
        for (; sc == NULL && j + 2 <= cb; j += 2) {
            int c = c0 + j;
            __m128d v = _mm_add_pd(
                _mm_set_pd((double)running_var[c + 1], (double)running_var[c]), veps);
            float r[4];
            _mm_storeu_ps(r, _mm_cvtpd_ps(_mm_div_pd(one, _mm_sqrt_pd(v))));
            for (int e = 0; e < 2; e++) {
                zero[j + e] = 0.0f;
                scale[j + e] = r[e] * (gamma != NULL ? gamma[c + e] : 1.0f);
                shift[j + e] = beta != NULL ? beta[c + e] : 0.0f;
            }
        }
#endif
        for (; j < cb; j++) {
            int c = c0 + j;
            zero[j] = 0.0f;
            scale[j] = sc != NULL ? sc[c]
                                  : dg_bn_eval_rstd(running_var[c], eps) *
                                        (gamma != NULL ? gamma[c] : 1.0f);
            shift[j] = beta != NULL ? beta[c] : 0.0f;
        }
        // out = (x - running_mean) / sqrt(running_var + eps) * gamma + beta
        bn_apply(out, inp, running_mean + c0, zero, scale, shift, N, C, HW, c0, cb, act, slope);
    }
}

static void bn_fwd_eval_task(void *ctx, int t, int nt) {
    const bn_fwd_eval_job *j = (const bn_fwd_eval_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->C, 1, t, nt, &lo, &hi);
    if (lo < hi) bn_fwd_eval_range(j->out, j->inp, j->running_mean, j->running_var,
        j->gamma, j->beta, j->N, j->C, j->HW, j->eps, (int)lo, (int)hi, j->act, j->slope,
        NULL);
}

/* bn_fwd_eval_task built for AVX2 (dg_internal.h): the same values */
DG_AVX2_TASK(bn_fwd_eval_task)

typedef struct {
    float *dinp;
    float *dgamma;
    float *dbeta;
    const float *dout;
    const float *inp;
    const float *mean;
    const float *rstd;
    const float *gamma;
    int N;
    int C;
    int HW;
    size_t M;
    const float *y;   /* the fused forward's output, when act */
    int act;
    float slope;
} bn_bwd_job;

/* The channel loop of dg_batchnorm_backward (same arguments, M = N*HW) over the
 * channels [cA, cB). */
static void bn_bwd_range(float *dinp, float *dgamma, float *dbeta, const float *dout,
                         const float *inp, const float *mean, const float *rstd,
                         const float *gamma, int N, int C, int HW, size_t M, int cA,
                         int cB, const float *y, int act, float slope) {
    int cbmax = bn_block(N, C, HW);
    double sdy[DG_BN_MAX_BLOCK], sdyx[DG_BN_MAX_BLOCK], cm[DG_BN_MAX_BLOCK];
    float kd[DG_BN_MAX_BLOCK], md[DG_BN_MAX_BLOCK], kx[DG_BN_MAX_BLOCK];
    for (int c0 = cA; c0 < cB; c0 += cbmax) {
        int cb = cB - c0 < cbmax ? cB - c0 : cbmax;
        // forward: xhat = (x - mean) * rstd;  out = xhat * gamma + beta
        // sdy[c] = sum dout, sdyx[c] = sum dout * xhat
        for (int j = 0; j < cb; j++) cm[j] = (double)mean[c0 + j];
        bn_sums(BN_DOTDEV, sdy, sdyx, inp, dout, cm, N, C, HW, c0, cb, y, act, slope);
        for (int j = 0; j < cb; j++) {
            int c = c0 + j;
            sdyx[j] *= (double)rstd[c];
            // dbeta[c] += sum dout;  dgamma[c] += sum dout * xhat
            if (dbeta != NULL) dbeta[c] = (float)(dbeta[c] + sdy[j]);
            if (dgamma != NULL) dgamma[c] = (float)(dgamma[c] + sdyx[j]);
            // dinp = k * (dout - mean(dout)) - k * rstd * mean(dout * xhat) * (x - mean),
            // k = rstd * gamma
            double k = (double)rstd[c] * (gamma != NULL ? gamma[c] : 1.0f);
            kd[j] = (float)k;
            md[j] = (float)(sdy[j] / (double)M);
            kx[j] = (float)(k * rstd[c] * (sdyx[j] / (double)M));
        }
        if (dinp == NULL) continue;
        // forward: out = (x - mean(x)) * rstd(x) * gamma + beta, with the batch
        // statistics depending on x:
        // dinp += rstd * gamma * (dout - mean(dout) - xhat * mean(dout * xhat))
        bn_dx(dinp, dout, inp, kd, md, kx, mean + c0, N, C, HW, c0, cb, y, act, slope);
    }
}

static void bn_bwd_task(void *ctx, int t, int nt) {
    const bn_bwd_job *j = (const bn_bwd_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->C, 1, t, nt, &lo, &hi);
    if (lo < hi) bn_bwd_range(j->dinp, j->dgamma, j->dbeta, j->dout, j->inp, j->mean,
        j->rstd, j->gamma, j->N, j->C, j->HW, j->M, (int)lo, (int)hi, j->y, j->act, j->slope);
}

/* bn_bwd_task built for AVX2 (dg_internal.h): the same values */
DG_AVX2_TASK(bn_bwd_task)

typedef struct {
    float *dinp;
    float *dgamma;
    float *dbeta;
    const float *dout;
    const float *inp;
    const float *running_mean;
    const float *running_var;
    const float *gamma;
    int N;
    int C;
    int HW;
    float eps;
    const float *y;   /* the fused forward's output, when act */
    int act;
    float slope;
} bn_bwd_eval_job;

/* The channel loop of dg_batchnorm_backward_eval (same arguments, M = N*HW) over the
 * channels [cA, cB). */
static void bn_bwd_eval_range(float *dinp, float *dgamma, float *dbeta, const float *dout,
                              const float *inp, const float *running_mean,
                              const float *running_var, const float *gamma, int N, int C,
                              int HW, float eps, int cA, int cB, const float *y, int act,
                              float slope) {
    int cbmax = bn_block(N, C, HW);
    double sdy[DG_BN_MAX_BLOCK], sdyx[DG_BN_MAX_BLOCK], r[DG_BN_MAX_BLOCK], cm[DG_BN_MAX_BLOCK];
    float kd[DG_BN_MAX_BLOCK], zero[DG_BN_MAX_BLOCK];
    for (int c0 = cA; c0 < cB; c0 += cbmax) {
        int cb = cB - c0 < cbmax ? cB - c0 : cbmax;
        // forward: out = (x - running_mean) * r * gamma + beta, r = 1/sqrt(running_var + eps)
        for (int j = 0; j < cb; j++) {
            int c = c0 + j;
            r[j] = 1.0 / sqrt((double)running_var[c] + (double)eps);
            cm[j] = (double)running_mean[c];
            kd[j] = (float)r[j] * (gamma != NULL ? gamma[c] : 1.0f);
            zero[j] = 0.0f;
        }
        if (dgamma != NULL || dbeta != NULL) {
            // dbeta[c] += sum dout;  dgamma[c] += sum dout * (x - running_mean) * r
            // (dout through the fused activation's gradient first, when act)
            bn_sums(BN_DOTDEV, sdy, sdyx, inp, dout, cm, N, C, HW, c0, cb, y, act, slope);
            for (int j = 0; j < cb; j++) {
                int c = c0 + j;
                if (dbeta != NULL) dbeta[c] = (float)(dbeta[c] + sdy[j]);
                if (dgamma != NULL) dgamma[c] = (float)(dgamma[c] + sdyx[j] * r[j]);
            }
        }
        // dinp += dout * gamma * r  (the statistics are constants)
        if (dinp != NULL)
            bn_dx(dinp, dout, inp, kd, zero, zero, zero, N, C, HW, c0, cb, y, act, slope);
    }
}

static void bn_bwd_eval_task(void *ctx, int t, int nt) {
    const bn_bwd_eval_job *j = (const bn_bwd_eval_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->C, 1, t, nt, &lo, &hi);
    if (lo < hi) bn_bwd_eval_range(j->dinp, j->dgamma, j->dbeta, j->dout, j->inp,
        j->running_mean, j->running_var, j->gamma, j->N, j->C, j->HW, j->eps, (int)lo,
        (int)hi, j->y, j->act, j->slope);
}

/* bn_bwd_eval_task built for AVX2 (dg_internal.h): the same values */
DG_AVX2_TASK(bn_bwd_eval_task)


dg_status dg_batchnorm_act_forward(float *out, float *mean, float *rstd,
                                   float *running_mean, float *running_var,
                                   const float *inp, const float *gamma,
                                   const float *beta, int N, int C, int HW,
                                   float eps, float momentum, int act, float slope) {
    // out is (N, C, HW), mean and rstd (caches) are (C),
    // running_mean and running_var are (C) or NULL, inp is (N, C, HW),
    // gamma and beta are (C) or NULL
    dg_status st = bn_check_sizes(N, C, HW);
    if (st != DG_STATUS_OK) return st;
    size_t M = (size_t)N * (size_t)HW;
    if (M < 2) return DG_STATUS_ERR_SHAPE;
    if (out == NULL || mean == NULL || rstd == NULL || inp == NULL) return DG_STATUS_ERR_NULL;
    if (dg_bad_eps(eps) || dg_bad_act(act, slope)) return DG_STATUS_ERR_VALUE;
    if ((running_mean != NULL || running_var != NULL) &&
        !(momentum >= 0.0f && momentum <= 1.0f)) {
        return DG_STATUS_ERR_VALUE;
    }
    bn_fwd_job j = {out, mean, rstd, running_mean, running_var, inp, gamma, beta, N, C, HW,
                    eps, momentum, M, act, slope};
    dg_parallel(DG_FOR_CPU(bn_fwd_task), &j, bn_tasks(N, C, HW));
    return DG_STATUS_OK;
}

dg_status dg_batchnorm_forward(float *out, float *mean, float *rstd,
                               float *running_mean, float *running_var,
                               const float *inp, const float *gamma,
                               const float *beta, int N, int C, int HW,
                               float eps, float momentum) {
    return dg_batchnorm_act_forward(out, mean, rstd, running_mean, running_var, inp, gamma,
                                    beta, N, C, HW, eps, momentum, DG_ACT_NONE, 0.0f);
}

dg_status dg_batchnorm_act_forward_eval(float *out, const float *inp,
                                        const float *running_mean,
                                        const float *running_var,
                                        const float *gamma, const float *beta,
                                        int N, int C, int HW, float eps, int act,
                                        float slope) {
    // out is (N, C, HW), inp is (N, C, HW), running_mean and running_var are (C),
    // gamma and beta are (C) or NULL
    dg_status st = bn_check_sizes(N, C, HW);
    if (st != DG_STATUS_OK) return st;
    if (out == NULL || inp == NULL || running_mean == NULL || running_var == NULL) {
        return DG_STATUS_ERR_NULL;
    }
    if (dg_bad_eps(eps) || dg_bad_act(act, slope)) return DG_STATUS_ERR_VALUE;
    bn_fwd_eval_job j = {out, inp, running_mean, running_var, gamma, beta, N, C, HW, eps,
                         act, slope};
    dg_parallel(DG_FOR_CPU(bn_fwd_eval_task), &j, bn_tasks(N, C, HW));
    return DG_STATUS_OK;
}

dg_status dg_batchnorm_eval_scale(float *scale, const float *running_var, const float *gamma,
                                  int C, float eps) {
    // scale and running_var are (C), gamma is (C) or NULL
    if (C <= 0) return DG_STATUS_ERR_SHAPE;
    if (scale == NULL || running_var == NULL) return DG_STATUS_ERR_NULL;
    if (dg_bad_eps(eps)) return DG_STATUS_ERR_VALUE;
    for (int c = 0; c < C; c++)   /* bn_fwd_eval_range's scalar scale, to the bit */
        scale[c] = dg_bn_eval_rstd(running_var[c], eps) * (gamma != NULL ? gamma[c] : 1.0f);
    return DG_STATUS_OK;
}

void dg_bn_eval_one_scaled(float *out, const float *inp, const float *mean,
                           const float *scale, const float *beta, int F, int act,
                           float slope) {
    /* no variance, gamma or eps: the scales stand for them */
    bn_fwd_eval_range(out, inp, mean, NULL, NULL, beta, 1, F, 1, 1.0f, 0, F, act, slope,
                      scale);
}

dg_status dg_batchnorm_forward_eval(float *out, const float *inp,
                                    const float *running_mean,
                                    const float *running_var,
                                    const float *gamma, const float *beta,
                                    int N, int C, int HW, float eps) {
    return dg_batchnorm_act_forward_eval(out, inp, running_mean, running_var, gamma, beta, N,
                                         C, HW, eps, DG_ACT_NONE, 0.0f);
}

dg_status dg_batchnorm_act_backward(float *dinp, float *dgamma, float *dbeta,
                                    const float *dout, const float *out, const float *inp,
                                    const float *mean, const float *rstd,
                                    const float *gamma, int N, int C, int HW, int act,
                                    float slope) {
    // dinp is (N, C, HW), dgamma and dbeta are (C); any may be NULL
    // dout, out (the fused forward's output; may be NULL without act) and inp are
    // (N, C, HW), mean and rstd (forward caches) are (C), gamma is (C) or NULL
    dg_status st = bn_check_sizes(N, C, HW);
    if (st != DG_STATUS_OK) return st;
    if (dout == NULL || inp == NULL || mean == NULL || rstd == NULL) return DG_STATUS_ERR_NULL;
    if (act != DG_ACT_NONE && out == NULL) return DG_STATUS_ERR_NULL;
    if (dg_bad_act(act, slope)) return DG_STATUS_ERR_VALUE;
    if (dinp == NULL && dgamma == NULL && dbeta == NULL) return DG_STATUS_OK;
    size_t M = (size_t)N * (size_t)HW;
    bn_bwd_job j = {dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma, N, C, HW, M,
                    act != DG_ACT_NONE ? out : NULL, act, slope};
    dg_parallel(DG_FOR_CPU(bn_bwd_task), &j, bn_tasks(N, C, HW));
    return DG_STATUS_OK;
}

dg_status dg_batchnorm_backward(float *dinp, float *dgamma, float *dbeta,
                                const float *dout, const float *inp,
                                const float *mean, const float *rstd,
                                const float *gamma, int N, int C, int HW) {
    return dg_batchnorm_act_backward(dinp, dgamma, dbeta, dout, NULL, inp, mean, rstd, gamma,
                                     N, C, HW, DG_ACT_NONE, 0.0f);
}

dg_status dg_batchnorm_act_backward_eval(float *dinp, float *dgamma, float *dbeta,
                                         const float *dout, const float *out,
                                         const float *inp, const float *running_mean,
                                         const float *running_var, const float *gamma,
                                         int N, int C, int HW, float eps, int act,
                                         float slope) {
    // dinp is (N, C, HW), dgamma and dbeta are (C); any may be NULL
    // dout, out (as in dg_batchnorm_act_backward) and inp are (N, C, HW),
    // running_mean and running_var are (C), gamma is (C) or NULL
    dg_status st = bn_check_sizes(N, C, HW);
    if (st != DG_STATUS_OK) return st;
    if (dout == NULL || inp == NULL || running_mean == NULL || running_var == NULL) {
        return DG_STATUS_ERR_NULL;
    }
    if (act != DG_ACT_NONE && out == NULL) return DG_STATUS_ERR_NULL;
    if (dg_bad_eps(eps) || dg_bad_act(act, slope)) return DG_STATUS_ERR_VALUE;
    if (dinp == NULL && dgamma == NULL && dbeta == NULL) return DG_STATUS_OK;
    bn_bwd_eval_job j = {dinp, dgamma, dbeta, dout, inp, running_mean, running_var, gamma,
                         N, C, HW, eps, act != DG_ACT_NONE ? out : NULL, act, slope};
    dg_parallel(DG_FOR_CPU(bn_bwd_eval_task), &j, bn_tasks(N, C, HW));
    return DG_STATUS_OK;
}

dg_status dg_batchnorm_backward_eval(float *dinp, float *dgamma, float *dbeta,
                                     const float *dout, const float *inp,
                                     const float *running_mean,
                                     const float *running_var,
                                     const float *gamma, int N, int C, int HW,
                                     float eps) {
    return dg_batchnorm_act_backward_eval(dinp, dgamma, dbeta, dout, NULL, inp, running_mean,
                                          running_var, gamma, N, C, HW, eps, DG_ACT_NONE,
                                          0.0f);
}
