/*
 * test_misc.c -- C tests of the activations, embedding, losses, Adam/EMA and
 * RNG of the distgan core (dg_act.c, dg_embed.c, dg_loss.c, dg_adam.c,
 * dg_rng.c).
 *
 * Each test_* function prints one line per check ("  ok  " or "FAIL ") and
 * returns its number of failures. csrc/tests/test_core.c includes this file and
 * calls them; built with -DTEST_MISC_MAIN it runs alone:
 *   cc -O2 -std=c11 -Wall -Wextra -DTEST_MISC_MAIN -Icsrc -o /tmp/test_misc \
 *      csrc/tests/test_misc.c csrc/dg_act.c csrc/dg_loss.c csrc/dg_adam.c \
 *      csrc/dg_rng.c csrc/dg_embed.c -lm && /tmp/test_misc
 *
 * Oracles: double-precision references written here from the textbook formulas
 * (deliberately the naive forms, different from the stable forms of the core,
 * on inputs where the naive forms are exact enough), central differences in
 * double on those references and in float on the core's own forward, the
 * closed-form distillation gradient, a hard-coded torch.optim.AdamW trajectory,
 * and Random123's known-answer vectors for Philox4x32-10.
 *
 * Everything file-level is prefixed tm_ / TM_ so that the file can be included
 * next to the other tests.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distgan.h"
#include "dg_internal.h"

/* ------------------------------------------------------------------------- */
/* Reporting and small helpers                                                */
/* ------------------------------------------------------------------------- */

/* Number of checks run, for the combined "N passed, N failed" line of test_core. */
int tm_checks_run = 0;

/* Prints one check line; returns 1 on failure. */
static int tm_check(int ok, const char *fmt, ...) {
    va_list ap;
    tm_checks_run++;
    va_start(ap, fmt);
    printf("%s", ok ? "  ok  " : "FAIL  ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    return ok ? 0 : 1;
}

/* A check of a measured error against a tolerance (NaN fails). */
static int tm_close(double err, double tol, const char *what) {
    return tm_check(err <= tol, "%s (err %.3g, tol %.3g)", what, err, tol);
}

/* splitmix64: the tests' own generator, so that loss tests do not depend on
 * the RNG under test. */
static uint64_t tm_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float tm_unif(uint64_t *s, float lo, float hi) {
    return lo + (hi - lo) * (float)((double)(tm_next(s) >> 40) / 16777216.0);
}

static void tm_fill(float *x, size_t n, uint64_t *s, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = tm_unif(s, lo, hi);
}

/* max_i |got_i - ref_i| / max(max_i |ref_i|, floor): an error relative to the
 * largest reference value, robust to reference entries near 0. */
static double tm_rel_err(const float *got, const double *ref, size_t n, double floor) {
    double num = 0.0, den = floor;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= num)) num = d; /* also catches NaN */
        if (fabs(ref[i]) > den) den = fabs(ref[i]);
    }
    return num / den;
}

static double tm_sigmoid_ref(double x) { return 1.0 / (1.0 + exp(-x)); }

/* ------------------------------------------------------------------------- */
/* Activations                                                                */
/* ------------------------------------------------------------------------- */

#define TM_ACT_N 64

int test_act(void) {
    int fails = 0;
    uint64_t seed = 1;
    float x[TM_ACT_N], y[TM_ACT_N], dy[TM_ACT_N], d1[TM_ACT_N], d2[TM_ACT_N], tmp[TM_ACT_N];
    double ref[TM_ACT_N];
    const size_t n = TM_ACT_N;
    const float slope = 0.2f;

    tm_fill(x, n, &seed, -4.0f, 4.0f);
    x[0] = 0.0f; /* the kinks, where PyTorch's conventions are tested */
    x[1] = -0.0f;
    x[2] = 1e-30f;
    x[3] = -1e-30f;
    tm_fill(dy, n, &seed, -1.0f, 1.0f);

    /* relu */
    dg_status st = dg_relu_forward(y, x, n);
    int exact = st == DG_STATUS_OK;
    for (size_t i = 0; i < n; i++) exact &= y[i] == (x[i] > 0.0f ? x[i] : 0.0f);
    fails += tm_check(exact, "act: relu forward equals max(x, 0) exactly");
    memset(d1, 0, sizeof d1);
    st = dg_relu_backward(d1, dy, x, n);
    exact = st == DG_STATUS_OK && d1[0] == 0.0f && d1[1] == 0.0f && d1[2] == dy[2] && d1[3] == 0.0f;
    for (size_t i = 4; i < n; i++) exact &= d1[i] == (x[i] > 0.0f ? dy[i] : 0.0f);
    fails += tm_check(exact, "act: relu backward is dout * [x > 0], relu'(0) = 0");
    memcpy(tmp, x, sizeof tmp);
    dg_relu_forward(tmp, tmp, n);
    fails += tm_check(memcmp(tmp, y, sizeof tmp) == 0, "act: relu forward in place (out aliases inp)");
    {
        float nan_in[2] = {NAN, -0.0f}, nan_out[2];
        dg_relu_forward(nan_out, nan_in, 2);
        fails += tm_check(isnan(nan_out[0]) && nan_out[1] == 0.0f, "act: relu propagates NaN as torch.relu");
    }

    /* leaky relu */
    st = dg_leaky_relu_forward(y, x, slope, n);
    exact = st == DG_STATUS_OK;
    for (size_t i = 0; i < n; i++) exact &= y[i] == (x[i] > 0.0f ? x[i] : x[i] * slope);
    fails += tm_check(exact, "act: leaky_relu forward exact");
    memset(d1, 0, sizeof d1);
    st = dg_leaky_relu_backward(d1, dy, x, slope, n);
    exact = st == DG_STATUS_OK && d1[0] == dy[0] * slope && d1[1] == dy[1] * slope;
    for (size_t i = 0; i < n; i++) exact &= d1[i] == (x[i] > 0.0f ? dy[i] : dy[i] * slope);
    fails += tm_check(exact, "act: leaky_relu backward, leaky'(0) = slope (torch: x > 0 ? dy : dy*slope)");
    memcpy(tmp, x, sizeof tmp);
    dg_leaky_relu_forward(tmp, tmp, slope, n);
    fails += tm_check(memcmp(tmp, y, sizeof tmp) == 0, "act: leaky_relu forward in place");

    /* tanh */
    dg_tanh_forward(y, x, n);
    for (size_t i = 0; i < n; i++) ref[i] = tanh((double)x[i]);
    fails += tm_close(tm_rel_err(y, ref, n, 1.0), 2e-7, "act: tanh forward vs double tanh");
    memset(d1, 0, sizeof d1);
    dg_tanh_backward(d1, dy, y, n);
    for (size_t i = 0; i < n; i++) ref[i] = dy[i] * (1.0 - (double)y[i] * y[i]);
    fails += tm_close(tm_rel_err(d1, ref, n, 1.0), 2e-7, "act: tanh backward = dout (1 - y^2)");
    memcpy(tmp, x, sizeof tmp);
    dg_tanh_forward(tmp, tmp, n);
    fails += tm_check(memcmp(tmp, y, sizeof tmp) == 0, "act: tanh forward in place");

    /* sigmoid, including the large |x| where the naive form overflows. Outputs
     * down to FLT_MIN (x ~ -87.3) keep full relative precision; below, in the
     * subnormals, the absolute error must stay within one subnormal step. */
    {
        float xs[12] = {-87.0f, -80.0f, -30.0f, -5.0f, -1.0f, -1e-3f, 0.0f, 1e-3f, 1.0f, 5.0f, 30.0f, 100.0f};
        float ys[12];
        dg_sigmoid_forward(ys, xs, 12);
        double worst = 0.0;
        for (int i = 0; i < 12; i++) {
            double r = tm_sigmoid_ref(xs[i]);
            double e = fabs(ys[i] - r) / r;
            if (!(e <= worst)) worst = e;
        }
        fails += tm_close(worst, 2e-7, "act: sigmoid relative error on [-87, 100] (tiny outputs keep precision)");
        float xsub[3] = {-90.0f, -100.0f, -103.0f}, ysub[3];
        dg_sigmoid_forward(ysub, xsub, 3);
        worst = 0.0;
        for (int i = 0; i < 3; i++) worst = fmax(worst, fabs(ysub[i] - tm_sigmoid_ref(xsub[i])));
        fails += tm_close(worst, 1.5e-45, "act: sigmoid absolute error in the subnormal range x in [-103, -90]");
        float big[4] = {1e4f, -1e4f, FLT_MAX, -FLT_MAX}, ob[4];
        dg_sigmoid_forward(ob, big, 4);
        fails += tm_check(ob[0] == 1.0f && ob[1] == 0.0f && ob[2] == 1.0f && ob[3] == 0.0f,
                          "act: sigmoid saturates to exactly 0/1 without NaN at +-1e4, +-FLT_MAX");
    }
    dg_sigmoid_forward(y, x, n);
    memset(d1, 0, sizeof d1);
    dg_sigmoid_backward(d1, dy, y, n);
    for (size_t i = 0; i < n; i++) ref[i] = dy[i] * (double)y[i] * (1.0 - y[i]);
    fails += tm_close(tm_rel_err(d1, ref, n, 1.0), 2e-7, "act: sigmoid backward = dout y (1 - y)");
    memcpy(tmp, x, sizeof tmp);
    dg_sigmoid_forward(tmp, tmp, n);
    fails += tm_check(memcmp(tmp, y, sizeof tmp) == 0, "act: sigmoid forward in place");

    /* Central differences in float of each forward against its backward, on
     * inputs kept away from the relu kink: grad_i ~ (f(x+h) - f(x-h)) / 2h. */
    {
        const float h = 1e-2f;
        float xp[TM_ACT_N], xm[TM_ACT_N], fp[TM_ACT_N], fm[TM_ACT_N], ones[TM_ACT_N], g[TM_ACT_N];
        double fd[TM_ACT_N];
        for (size_t i = 0; i < n; i++) {
            x[i] = fabsf(x[i]) < 0.1f ? x[i] + 0.3f : x[i];
            xp[i] = x[i] + h;
            xm[i] = x[i] - h;
            ones[i] = 1.0f;
        }
        for (int which = 0; which < 4; which++) {
            const char *name = which == 0 ? "relu" : which == 1 ? "leaky_relu" : which == 2 ? "tanh" : "sigmoid";
            memset(g, 0, sizeof g);
            if (which == 0) {
                dg_relu_forward(fp, xp, n); dg_relu_forward(fm, xm, n);
                dg_relu_backward(g, ones, x, n);
            } else if (which == 1) {
                dg_leaky_relu_forward(fp, xp, slope, n); dg_leaky_relu_forward(fm, xm, slope, n);
                dg_leaky_relu_backward(g, ones, x, slope, n);
            } else if (which == 2) {
                dg_tanh_forward(fp, xp, n); dg_tanh_forward(fm, xm, n);
                dg_tanh_forward(y, x, n);
                dg_tanh_backward(g, ones, y, n);
            } else {
                dg_sigmoid_forward(fp, xp, n); dg_sigmoid_forward(fm, xm, n);
                dg_sigmoid_forward(y, x, n);
                dg_sigmoid_backward(g, ones, y, n);
            }
            for (size_t i = 0; i < n; i++) fd[i] = ((double)fp[i] - fm[i]) / ((double)xp[i] - xm[i]);
            char what[96];
            snprintf(what, sizeof what, "act: %s backward vs float central differences", name);
            fails += tm_close(tm_rel_err(g, fd, n, 1.0), 1e-4, what);
        }
    }

    /* Accumulation: backward twice gives twice, and adds onto what is there. */
    {
        int ok = 1;
        for (int which = 0; which < 4; which++) {
            memset(d1, 0, sizeof d1);
            for (size_t i = 0; i < n; i++) d2[i] = 0.5f;
            for (int rep = 0; rep < 2; rep++) {
                float *d = rep == 0 ? d1 : d2;
                for (int k = 0; k < 2 - rep; k++) {
                    if (which == 0) dg_relu_backward(d, dy, x, n);
                    else if (which == 1) dg_leaky_relu_backward(d, dy, x, slope, n);
                    else if (which == 2) dg_tanh_backward(d, dy, y, n);
                    else dg_sigmoid_backward(d, dy, y, n);
                }
            }
            /* d1 = g + g (twice from 0), d2 = 0.5 + g (once onto 0.5) */
            for (size_t i = 0; i < n; i++) {
                float g = d2[i] - 0.5f;
                ok &= fabsf(d1[i] - 2.0f * g) <= 1e-6f * (1.0f + fabsf(d1[i]));
            }
        }
        fails += tm_check(ok, "act: backward accumulates (twice -> twice, onto nonzero dinp)");
    }

    /* Contract: NULL inputs are errors, NULL dinp means "not needed". */
    {
        int ok = dg_relu_forward(NULL, x, n) == DG_STATUS_ERR_NULL &&
                 dg_leaky_relu_forward(y, NULL, slope, n) == DG_STATUS_ERR_NULL &&
                 dg_tanh_backward(d1, NULL, y, n) == DG_STATUS_ERR_NULL &&
                 dg_sigmoid_backward(d1, dy, NULL, n) == DG_STATUS_ERR_NULL &&
                 dg_relu_backward(NULL, dy, x, n) == DG_STATUS_OK &&
                 dg_leaky_relu_backward(NULL, dy, x, slope, n) == DG_STATUS_OK &&
                 dg_tanh_backward(NULL, dy, y, n) == DG_STATUS_OK &&
                 dg_sigmoid_backward(NULL, dy, y, n) == DG_STATUS_OK &&
                 dg_relu_forward(y, x, 0) == DG_STATUS_OK;
        fails += tm_check(ok, "act: NULL input -> ERR_NULL, NULL dinp -> OK no-op, n = 0 -> OK");
    }
    return fails;
}

/* ------------------------------------------------------------------------- */
/* Embedding                                                                  */
/* ------------------------------------------------------------------------- */

int test_embed(void) {
    int fails = 0;
    enum { EN = 6, EK = 4, ED = 5 };
    uint64_t seed = 2;
    float table[EK * ED], out[EN * ED], dout[EN * ED], dtable[EK * ED], dtable2[EK * ED];
    int64_t labels[EN] = {3, 0, 3, 1, 3, 0};
    tm_fill(table, EK * ED, &seed, -1.0f, 1.0f);
    tm_fill(dout, EN * ED, &seed, -1.0f, 1.0f);

    dg_status st = dg_embedding_forward(out, labels, table, EN, EK, ED);
    int ok = st == DG_STATUS_OK;
    for (int n = 0; n < EN; n++)
        for (int d = 0; d < ED; d++) ok &= out[n * ED + d] == table[labels[n] * ED + d];
    fails += tm_check(ok, "embed: forward copies table rows exactly");

    memset(dtable, 0, sizeof dtable);
    st = dg_embedding_backward(dtable, dout, labels, EN, EK, ED);
    double ref[EK * ED] = {0};
    for (int n = 0; n < EN; n++)
        for (int d = 0; d < ED; d++) ref[labels[n] * ED + d] += dout[n * ED + d];
    fails += tm_close(st == DG_STATUS_OK ? tm_rel_err(dtable, ref, EK * ED, 1.0) : 1.0, 1e-7,
                      "embed: backward sums repeated labels, untouched row 2 stays 0");
    memcpy(dtable2, dtable, sizeof dtable);
    dg_embedding_backward(dtable2, dout, labels, EN, EK, ED);
    for (int i = 0; i < EK * ED; i++) ref[i] = 2.0 * dtable[i];
    fails += tm_close(tm_rel_err(dtable2, ref, EK * ED, 1.0), 1e-6, "embed: backward twice -> twice");

    /* A bad label anywhere: error, and nothing written (checked before writing). */
    int64_t bad_hi[EN] = {0, 1, 2, 3, 0, EK};
    int64_t bad_lo[EN] = {0, -1, 2, 3, 0, 1};
    float sentinel_out[EN * ED], sentinel_dt[EK * ED];
    for (int i = 0; i < EN * ED; i++) out[i] = sentinel_out[i] = 7.0f;
    for (int i = 0; i < EK * ED; i++) dtable[i] = sentinel_dt[i] = 7.0f;
    ok = dg_embedding_forward(out, bad_hi, table, EN, EK, ED) == DG_STATUS_ERR_VALUE &&
         dg_embedding_forward(out, bad_lo, table, EN, EK, ED) == DG_STATUS_ERR_VALUE &&
         dg_embedding_backward(dtable, dout, bad_hi, EN, EK, ED) == DG_STATUS_ERR_VALUE &&
         dg_embedding_backward(dtable, dout, bad_lo, EN, EK, ED) == DG_STATUS_ERR_VALUE &&
         dg_embedding_backward(NULL, dout, bad_lo, EN, EK, ED) == DG_STATUS_ERR_VALUE;
    ok &= memcmp(out, sentinel_out, sizeof out) == 0 && memcmp(dtable, sentinel_dt, sizeof dtable) == 0;
    fails += tm_check(ok, "embed: label -1 or K -> ERR_VALUE, out/dtable untouched");

    ok = dg_embedding_forward(NULL, labels, table, EN, EK, ED) == DG_STATUS_ERR_NULL &&
         dg_embedding_forward(out, NULL, table, EN, EK, ED) == DG_STATUS_ERR_NULL &&
         dg_embedding_backward(dtable, NULL, labels, EN, EK, ED) == DG_STATUS_ERR_NULL &&
         dg_embedding_forward(out, labels, table, -1, EK, ED) == DG_STATUS_ERR_SHAPE &&
         dg_embedding_forward(out, labels, table, EN, 0, ED) == DG_STATUS_ERR_SHAPE &&
         dg_embedding_backward(dtable, dout, labels, EN, EK, 0) == DG_STATUS_ERR_SHAPE &&
         dg_embedding_forward(out, labels, table, 0, EK, ED) == DG_STATUS_OK &&
         dg_embedding_backward(NULL, dout, labels, EN, EK, ED) == DG_STATUS_OK;
    fails += tm_check(ok, "embed: NULL -> ERR_NULL, bad sizes -> ERR_SHAPE, N = 0 and NULL dtable -> OK");
    return fails;
}

/* ------------------------------------------------------------------------- */
/* Losses                                                                     */
/* ------------------------------------------------------------------------- */

enum {
    TM_BCE, TM_HINGE, TM_HINGE_GEN, TM_LS, TM_L1_X, TM_L1_Y, TM_MSE_X, TM_MSE_Y,
    TM_CE, TM_KL_BIN, TM_KL_CAT
};

#define TM_LOSS_MAX 64

/* One loss as a function of one float vector v (the differentiated input). */
typedef struct {
    const char *name;
    int kind;
    size_t n;              /* elements of v: n, or N*K */
    int N, K;              /* for CE and KL */
    const float *other;    /* y (BCE, L1, MSE) or teacher logits (KL); NULL otherwise */
    const int64_t *labels; /* CE labels */
    float param;           /* hinge sign, least-squares target, or T */
} tm_loss;

static dg_status tm_loss_forward(const tm_loss *L, const float *v, float *loss) {
    switch (L->kind) {
    case TM_BCE: return dg_bce_logits_forward(loss, v, L->other, L->n);
    case TM_HINGE: return dg_hinge_forward(loss, v, L->param, L->n);
    case TM_HINGE_GEN: return dg_hinge_gen_forward(loss, v, L->n);
    case TM_LS: return dg_least_squares_forward(loss, v, L->param, L->n);
    case TM_L1_X: return dg_l1_forward(loss, v, L->other, L->n);
    case TM_L1_Y: return dg_l1_forward(loss, L->other, v, L->n);
    case TM_MSE_X: return dg_mse_forward(loss, v, L->other, L->n);
    case TM_MSE_Y: return dg_mse_forward(loss, L->other, v, L->n);
    case TM_CE: return dg_cross_entropy_forward(loss, v, L->labels, L->N, L->K);
    case TM_KL_BIN: return dg_distill_kl_forward(loss, v, L->other, L->param, 1, L->N, 1);
    default: return dg_distill_kl_forward(loss, v, L->other, L->param, 0, L->N, L->K);
    }
}

static dg_status tm_loss_backward(const tm_loss *L, float *dv, const float *v, float dloss) {
    switch (L->kind) {
    case TM_BCE: return dg_bce_logits_backward(dv, v, L->other, dloss, L->n);
    case TM_HINGE: return dg_hinge_backward(dv, v, L->param, dloss, L->n);
    case TM_HINGE_GEN: return dg_hinge_gen_backward(dv, dloss, L->n);
    case TM_LS: return dg_least_squares_backward(dv, v, L->param, dloss, L->n);
    case TM_L1_X: return dg_l1_backward(dv, NULL, v, L->other, dloss, L->n);
    case TM_L1_Y: return dg_l1_backward(NULL, dv, L->other, v, dloss, L->n);
    case TM_MSE_X: return dg_mse_backward(dv, NULL, v, L->other, dloss, L->n);
    case TM_MSE_Y: return dg_mse_backward(NULL, dv, L->other, v, dloss, L->n);
    case TM_CE: return dg_cross_entropy_backward(dv, v, L->labels, dloss, L->N, L->K);
    case TM_KL_BIN: return dg_distill_kl_backward(dv, v, L->other, L->param, 1, dloss, L->N, 1);
    default: return dg_distill_kl_backward(dv, v, L->other, L->param, 0, dloss, L->N, L->K);
    }
}

/* The double reference, in the naive textbook forms (inputs are moderate). */
static double tm_loss_ref(const tm_loss *L, const double *v) {
    double acc = 0.0;
    size_t n = L->n;
    switch (L->kind) {
    case TM_BCE:
        for (size_t i = 0; i < n; i++) {
            double s = tm_sigmoid_ref(v[i]), y = L->other[i];
            acc += -y * log(s) - (1.0 - y) * log(1.0 - s);
        }
        return acc / n;
    case TM_HINGE:
        for (size_t i = 0; i < n; i++) acc += fmax(0.0, 1.0 - L->param * v[i]);
        return acc / n;
    case TM_HINGE_GEN:
        for (size_t i = 0; i < n; i++) acc -= v[i];
        return acc / n;
    case TM_LS:
        for (size_t i = 0; i < n; i++) acc += 0.5 * (v[i] - L->param) * (v[i] - L->param);
        return acc / n;
    case TM_L1_X: case TM_L1_Y:
        for (size_t i = 0; i < n; i++) acc += fabs(v[i] - L->other[i]);
        return acc / n;
    case TM_MSE_X: case TM_MSE_Y:
        for (size_t i = 0; i < n; i++) acc += (v[i] - L->other[i]) * (v[i] - L->other[i]);
        return acc / n;
    case TM_CE:
        for (int r = 0; r < L->N; r++) {
            double z = 0.0;
            for (int k = 0; k < L->K; k++) z += exp(v[r * L->K + k]);
            acc += -log(exp(v[r * L->K + L->labels[r]]) / z);
        }
        return acc / L->N;
    case TM_KL_BIN: {
        double T = L->param;
        for (int r = 0; r < L->N; r++) {
            double p = tm_sigmoid_ref(L->other[r] / T), q = tm_sigmoid_ref(v[r] / T);
            acc += p * log(p / q) + (1.0 - p) * log((1.0 - p) / (1.0 - q));
        }
        return T * T * acc / L->N;
    }
    default: {
        double T = L->param;
        for (int r = 0; r < L->N; r++) {
            double zp = 0.0, zq = 0.0;
            for (int k = 0; k < L->K; k++) {
                zp += exp(L->other[r * L->K + k] / T);
                zq += exp(v[r * L->K + k] / T);
            }
            for (int k = 0; k < L->K; k++) {
                double P = exp(L->other[r * L->K + k] / T) / zp, Q = exp(v[r * L->K + k] / T) / zq;
                acc += P * log(P / Q);
            }
        }
        return T * T * acc / L->N;
    }
    }
}

/* Every check that applies to all losses, on input v (kept off any kink). */
static int tm_check_loss(const tm_loss *L, const float *v) {
    int fails = 0;
    size_t n = L->n;
    char what[128];
    float loss = -1.0f, g[TM_LOSS_MAX], g2[TM_LOSS_MAX], vp[TM_LOSS_MAX], vcopy[TM_LOSS_MAX];
    double vd[TM_LOSS_MAX], ref_g[TM_LOSS_MAX];
    memcpy(vcopy, v, n * sizeof(float));
    for (size_t i = 0; i < n; i++) vd[i] = v[i];

    /* 1. forward vs the double reference */
    dg_status st = tm_loss_forward(L, v, &loss);
    double ref = tm_loss_ref(L, vd);
    snprintf(what, sizeof what, "loss %s: forward vs double reference (%.6g)", L->name, ref);
    fails += tm_close(st == DG_STATUS_OK ? fabs(loss - ref) / fmax(1.0, fabs(ref)) : 1.0, 3e-7, what);

    /* 2. backward (dloss = 1) vs central differences in double on the reference */
    memset(g, 0, sizeof g);
    st = tm_loss_backward(L, g, v, 1.0f);
    for (size_t i = 0; i < n; i++) {
        double h = 1e-6 * fmax(1.0, fabs(vd[i])), keep = vd[i];
        vd[i] = keep + h;
        double fp = tm_loss_ref(L, vd);
        vd[i] = keep - h;
        double fm = tm_loss_ref(L, vd);
        vd[i] = keep;
        ref_g[i] = (fp - fm) / (2.0 * h);
    }
    snprintf(what, sizeof what, "loss %s: backward vs double central differences of the reference", L->name);
    fails += tm_close(st == DG_STATUS_OK ? tm_rel_err(g, ref_g, n, 1e-12) : 1.0, 1e-6, what);

    /* 3. backward vs central differences in float of the core's own forward */
    for (size_t i = 0; i < n; i++) {
        const float h = 1e-2f;
        float fp, fm;
        memcpy(vp, v, n * sizeof(float));
        vp[i] = v[i] + h;
        tm_loss_forward(L, vp, &fp);
        vp[i] = v[i] - h;
        tm_loss_forward(L, vp, &fm);
        ref_g[i] = ((double)fp - fm) / (2.0 * h);
    }
    snprintf(what, sizeof what, "loss %s: backward vs float central differences of the core forward", L->name);
    fails += tm_close(tm_rel_err(g, ref_g, n, 1e-12), 2e-3, what);

    /* 4. dloss scales, and backward accumulates: twice with dloss = 0.75 gives 1.5 g */
    memset(g2, 0, sizeof g2);
    tm_loss_backward(L, g2, v, 0.75f);
    tm_loss_backward(L, g2, v, 0.75f);
    for (size_t i = 0; i < n; i++) ref_g[i] = 1.5 * g[i];
    snprintf(what, sizeof what, "loss %s: backward scales by dloss and accumulates (twice -> twice)", L->name);
    fails += tm_close(tm_rel_err(g2, ref_g, n, 1e-12), 1e-6, what);

    /* 5. inputs come out unchanged, NULL gradient is a no-op */
    st = tm_loss_backward(L, NULL, v, 1.0f);
    snprintf(what, sizeof what, "loss %s: inputs unchanged, NULL gradient -> OK", L->name);
    fails += tm_check(st == DG_STATUS_OK && memcmp(vcopy, v, n * sizeof(float)) == 0, "%s", what);
    return fails;
}

int test_loss(void) {
    int fails = 0;
    uint64_t seed = 3;
    enum { LN = 12, CN = 4, CK = 6 };
    float x[LN], y01[LN], ysoft[LN], yl1[LN], xh[LN], s[CN * CK], t[CN * CK], sb[8], tb[8];
    int64_t labels[CN] = {2, 0, 5, 2};

    tm_fill(x, LN, &seed, -3.0f, 3.0f);
    for (int i = 0; i < LN; i++) y01[i] = (float)(i % 2);
    tm_fill(ysoft, LN, &seed, 0.0f, 1.0f);
    /* L1 targets at least 0.1 away from x: no kink within the float FD step */
    for (int i = 0; i < LN; i++) yl1[i] = x[i] + (i % 2 ? 1.0f : -1.0f) * tm_unif(&seed, 0.1f, 1.0f);
    /* hinge inputs at least 0.05 away from the kinks x = +-1 */
    tm_fill(xh, LN, &seed, -2.5f, 2.5f);
    for (int i = 0; i < LN; i++)
        if (fabsf(fabsf(xh[i]) - 1.0f) < 0.05f) xh[i] += 0.2f;
    tm_fill(s, CN * CK, &seed, -3.0f, 3.0f);
    tm_fill(t, CN * CK, &seed, -3.0f, 3.0f);
    tm_fill(sb, 8, &seed, -4.0f, 4.0f);
    tm_fill(tb, 8, &seed, -4.0f, 4.0f);

    const tm_loss cases[] = {
        {"bce_logits (hard targets)", TM_BCE, LN, 0, 0, y01, NULL, 0.0f},
        {"bce_logits (soft targets)", TM_BCE, LN, 0, 0, ysoft, NULL, 0.0f},
        {"hinge(+1)", TM_HINGE, LN, 0, 0, NULL, NULL, 1.0f},
        {"hinge(-1)", TM_HINGE, LN, 0, 0, NULL, NULL, -1.0f},
        {"hinge_gen", TM_HINGE_GEN, LN, 0, 0, NULL, NULL, 0.0f},
        {"least_squares(target 1)", TM_LS, LN, 0, 0, NULL, NULL, 1.0f},
        {"least_squares(target 0)", TM_LS, LN, 0, 0, NULL, NULL, 0.0f},
        {"l1 d/dx", TM_L1_X, LN, 0, 0, yl1, NULL, 0.0f},
        {"l1 d/dy", TM_L1_Y, LN, 0, 0, x, NULL, 0.0f},
        {"mse d/dx", TM_MSE_X, LN, 0, 0, ysoft, NULL, 0.0f},
        {"mse d/dy", TM_MSE_Y, LN, 0, 0, x, NULL, 0.0f},
        {"cross_entropy", TM_CE, CN * CK, CN, CK, NULL, labels, 0.0f},
        {"distill_kl binary T=2", TM_KL_BIN, 8, 8, 1, tb, NULL, 2.0f},
        {"distill_kl binary T=0.5", TM_KL_BIN, 8, 8, 1, tb, NULL, 0.5f},
        {"distill_kl categorical T=3", TM_KL_CAT, CN * CK, CN, CK, t, NULL, 3.0f},
        {"distill_kl categorical T=1", TM_KL_CAT, CN * CK, CN, CK, t, NULL, 1.0f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const tm_loss *L = &cases[c];
        const float *v = L->kind == TM_HINGE ? xh
                       : L->kind == TM_L1_Y ? yl1
                       : L->kind == TM_CE || L->kind == TM_KL_CAT ? s
                       : L->kind == TM_KL_BIN ? sb
                       : L->kind == TM_MSE_Y ? ysoft
                       : x;
        fails += tm_check_loss(L, v);
    }

    /* The closed-form distillation gradient of distgan.h: ds = dloss T (q - p) / N. */
    {
        const float T = 2.5f, dloss = 0.5f;
        float ds[CN * CK];
        double ref[CN * CK];
        memset(ds, 0, sizeof ds);
        dg_distill_kl_backward(ds, sb, tb, T, 1, dloss, 8, 1);
        for (int i = 0; i < 8; i++)
            ref[i] = dloss * T * (tm_sigmoid_ref(sb[i] / (double)T) - tm_sigmoid_ref(tb[i] / (double)T)) / 8.0;
        fails += tm_close(tm_rel_err(ds, ref, 8, 1e-12), 1e-6, "loss distill_kl binary: ds = dloss T (q - p) / N");
        memset(ds, 0, sizeof ds);
        dg_distill_kl_backward(ds, s, t, T, 0, dloss, CN, CK);
        for (int r = 0; r < CN; r++) {
            double zp = 0.0, zq = 0.0;
            for (int k = 0; k < CK; k++) {
                zp += exp(t[r * CK + k] / (double)T);
                zq += exp(s[r * CK + k] / (double)T);
            }
            for (int k = 0; k < CK; k++)
                ref[r * CK + k] = dloss * T *
                    (exp(s[r * CK + k] / (double)T) / zq - exp(t[r * CK + k] / (double)T) / zp) / CN;
        }
        fails += tm_close(tm_rel_err(ds, ref, CN * CK, 1e-12), 1e-6,
                          "loss distill_kl categorical: ds = dloss T (Q - P) / N");
    }

    /* Identical student and teacher: KL exactly 0 and zero gradient, even saturated. */
    {
        float l = 1.0f, big[4] = {1e4f, -1e4f, 30.0f, -2.0f}, d[4] = {0};
        int ok = dg_distill_kl_forward(&l, big, big, 1.0f, 1, 4, 1) == DG_STATUS_OK && l == 0.0f;
        dg_distill_kl_backward(d, big, big, 1.0f, 1, 1.0f, 4, 1);
        ok &= d[0] == 0.0f && d[1] == 0.0f && d[2] == 0.0f && d[3] == 0.0f;
        l = 1.0f;
        ok &= dg_distill_kl_forward(&l, big, big, 0.5f, 0, 1, 4) == DG_STATUS_OK && l == 0.0f;
        dg_distill_kl_backward(d, big, big, 0.5f, 0, 1.0f, 1, 4);
        ok &= d[0] == 0.0f && d[1] == 0.0f && d[2] == 0.0f && d[3] == 0.0f;
        fails += tm_check(ok, "loss distill_kl: student == teacher -> loss 0, gradient 0 (logits up to 1e4)");
    }

    /* Saturated binary KL: t = 60, s = 50, T = 1. p = 1 - e^-60 rounds to 1 in
     * double, so any log(1 - p) or log(p / q) form gives 0 or NaN. Asymptotics
     * (eps_a = e^-a): KL = e^-b - e^-a + e^-a (b - a) + O(eps^2) and
     * q - p = e^-a - e^-b + O(eps^2). */
    {
        float l = -1.0f, sv = 50.0f, tv = 60.0f, d = 0.0f;
        double ea = exp(-60.0), eb = exp(-50.0);
        double kl = eb - ea + ea * (50.0 - 60.0), qp = ea - eb;
        dg_distill_kl_forward(&l, &sv, &tv, 1.0f, 1, 1, 1);
        dg_distill_kl_backward(&d, &sv, &tv, 1.0f, 1, 1.0f, 1, 1);
        fails += tm_close(fabs(l - kl) / kl, 1e-6, "loss distill_kl binary saturated (t=60, s=50): KL ~ 1.9e-22 exact");
        fails += tm_close(fabs(d - qp) / fabs(qp), 1e-6, "loss distill_kl binary saturated: gradient q - p ~ -1.9e-22 exact");
    }

    /* Stability at huge logits: finite, and equal to the asymptotic values. */
    {
        float l = -1.0f, xb[2] = {1e4f, -1e4f}, yb[2] = {0.0f, 1.0f}, yg[2] = {1.0f, 0.0f};
        int ok = dg_bce_logits_forward(&l, xb, yb, 2) == DG_STATUS_OK && l == 1e4f;
        ok &= dg_bce_logits_forward(&l, xb, yg, 2) == DG_STATUS_OK && l == 0.0f;
        float d[2] = {0.0f, 0.0f};
        dg_bce_logits_backward(d, xb, yb, 1.0f, 2);
        ok &= d[0] == 0.5f && d[1] == -0.5f;
        fails += tm_check(ok, "loss bce_logits at x = +-1e4: loss 1e4 / 0 exactly, gradient +-1/n, no NaN");
        float xc[3] = {1000.0f, 0.0f, -1000.0f};
        int64_t lab0 = 0, lab1 = 1;
        ok = dg_cross_entropy_forward(&l, xc, &lab0, 1, 3) == DG_STATUS_OK && l == 0.0f;
        ok &= dg_cross_entropy_forward(&l, xc, &lab1, 1, 3) == DG_STATUS_OK && l == 1000.0f;
        float dc[3] = {0.0f, 0.0f, 0.0f};
        dg_cross_entropy_backward(dc, xc, &lab1, 1.0f, 1, 3);
        ok &= dc[0] == 1.0f && dc[1] == -1.0f && dc[2] == 0.0f;
        fails += tm_check(ok, "loss cross_entropy at logits +-1000: exact loss and gradient (max subtracted)");
        float sk[2] = {1e4f, -1e4f}, tk[2] = {-1e4f, 1e4f};
        /* binary: p = 0, q = 1 (and back) -> KL_n = softplus(1e4) = 1e4 each;
         * categorical, one row of K = 2: P = (0, 1), Q = (1, 0) -> KL = 2e4 */
        ok = dg_distill_kl_forward(&l, sk, tk, 1.0f, 1, 2, 1) == DG_STATUS_OK && l == 1e4f;
        ok &= dg_distill_kl_forward(&l, sk, tk, 1.0f, 0, 1, 2) == DG_STATUS_OK && l == 2e4f;
        float dk[2] = {0.0f, 0.0f};
        dg_distill_kl_backward(dk, sk, tk, 1.0f, 1, 1.0f, 2, 1);
        ok &= dk[0] == 0.5f && dk[1] == -0.5f;
        fails += tm_check(ok, "loss distill_kl at logits +-1e4: exact finite loss (1e4 binary, 2e4 categorical), gradient +-T/N");
    }

    /* Empty input: loss defined as 0, backward a no-op. */
    {
        float l, d[1] = {5.0f}, xe[1] = {1.0f};
        int64_t le[1] = {0};
        int ok = 1;
        l = 9.0f; ok &= dg_bce_logits_forward(&l, xe, xe, 0) == DG_STATUS_OK && l == 0.0f;
        l = 9.0f; ok &= dg_hinge_forward(&l, xe, 1.0f, 0) == DG_STATUS_OK && l == 0.0f;
        l = 9.0f; ok &= dg_hinge_gen_forward(&l, xe, 0) == DG_STATUS_OK && l == 0.0f;
        l = 9.0f; ok &= dg_least_squares_forward(&l, xe, 1.0f, 0) == DG_STATUS_OK && l == 0.0f;
        l = 9.0f; ok &= dg_l1_forward(&l, xe, xe, 0) == DG_STATUS_OK && l == 0.0f;
        l = 9.0f; ok &= dg_mse_forward(&l, xe, xe, 0) == DG_STATUS_OK && l == 0.0f;
        l = 9.0f; ok &= dg_cross_entropy_forward(&l, xe, le, 0, 3) == DG_STATUS_OK && l == 0.0f;
        l = 9.0f; ok &= dg_distill_kl_forward(&l, xe, xe, 2.0f, 1, 0, 1) == DG_STATUS_OK && l == 0.0f;
        ok &= dg_bce_logits_backward(d, xe, xe, 1.0f, 0) == DG_STATUS_OK;
        ok &= dg_hinge_backward(d, xe, -1.0f, 1.0f, 0) == DG_STATUS_OK;
        ok &= dg_hinge_gen_backward(d, 1.0f, 0) == DG_STATUS_OK;
        ok &= dg_least_squares_backward(d, xe, 0.0f, 1.0f, 0) == DG_STATUS_OK;
        ok &= dg_l1_backward(d, d, xe, xe, 1.0f, 0) == DG_STATUS_OK;
        ok &= dg_mse_backward(d, d, xe, xe, 1.0f, 0) == DG_STATUS_OK;
        ok &= dg_cross_entropy_backward(d, xe, le, 1.0f, 0, 3) == DG_STATUS_OK;
        ok &= dg_distill_kl_backward(d, xe, xe, 2.0f, 0, 1.0f, 0, 3) == DG_STATUS_OK;
        fails += tm_check(ok && d[0] == 5.0f, "loss: n = 0 / N = 0 -> loss 0, backward leaves gradients untouched");
    }

    /* Sign of L1 at zero is 0, as torch.sign. */
    {
        float a[3] = {1.0f, 2.0f, 3.0f}, b[3] = {1.0f, 1.0f, 4.0f}, da[3] = {0}, db[3] = {0};
        dg_l1_backward(da, db, a, b, 3.0f, 3);
        fails += tm_check(da[0] == 0.0f && da[1] == 1.0f && da[2] == -1.0f && db[0] == 0.0f &&
                          db[1] == -1.0f && db[2] == 1.0f,
                          "loss l1: sign(0) = 0, dx = sign/n, dy = -sign/n");
    }

    /* Hinge at its kink 1 - sign x = 0: no gradient (relu'(0) = 0, as PyTorch). */
    {
        float xk[3] = {1.0f, -1.0f, 0.5f}, dk[3] = {0}, dm[3] = {0};
        dg_hinge_backward(dk, xk, 1.0f, 3.0f, 3);
        dg_hinge_backward(dm, xk, -1.0f, 3.0f, 3);
        fails += tm_check(dk[0] == 0.0f && dk[1] == -1.0f && dk[2] == -1.0f &&
                          dm[0] == 1.0f && dm[1] == 0.0f && dm[2] == 1.0f,
                          "loss hinge: zero gradient at the kink, -sign/n elsewhere");
    }

    /* Error statuses: checked before anything is written. */
    {
        float l = 3.0f, d[CN * CK];
        int64_t bad1[CN] = {0, 1, CK, 2}, bad2[CN] = {0, -1, 1, 2};
        for (int i = 0; i < CN * CK; i++) d[i] = 3.0f;
        int ok = 1;
        ok &= dg_cross_entropy_forward(&l, s, bad1, CN, CK) == DG_STATUS_ERR_VALUE;
        ok &= dg_cross_entropy_forward(&l, s, bad2, CN, CK) == DG_STATUS_ERR_VALUE;
        ok &= dg_cross_entropy_backward(d, s, bad1, 1.0f, CN, CK) == DG_STATUS_ERR_VALUE;
        ok &= dg_cross_entropy_backward(d, s, bad2, 1.0f, CN, CK) == DG_STATUS_ERR_VALUE;
        fails += tm_check(ok, "loss cross_entropy: label K or -1 -> ERR_VALUE");
        ok = 1;
        const float badT[4] = {0.0f, -1.0f, NAN, INFINITY};
        for (int i = 0; i < 4; i++) {
            ok &= dg_distill_kl_forward(&l, sb, tb, badT[i], 1, 8, 1) == DG_STATUS_ERR_VALUE;
            ok &= dg_distill_kl_forward(&l, s, t, badT[i], 0, CN, CK) == DG_STATUS_ERR_VALUE;
            ok &= dg_distill_kl_backward(d, sb, tb, badT[i], 1, 1.0f, 8, 1) == DG_STATUS_ERR_VALUE;
            ok &= dg_distill_kl_backward(d, s, t, badT[i], 0, 1.0f, CN, CK) == DG_STATUS_ERR_VALUE;
        }
        fails += tm_check(ok, "loss distill_kl: T = 0, -1, NaN, inf -> ERR_VALUE");
        ok = dg_hinge_forward(&l, x, 0.5f, LN) == DG_STATUS_ERR_VALUE &&
             dg_hinge_backward(d, x, 0.0f, 1.0f, LN) == DG_STATUS_ERR_VALUE;
        fails += tm_check(ok, "loss hinge: sign not +-1 -> ERR_VALUE");
        ok = dg_cross_entropy_forward(&l, s, labels, -1, CK) == DG_STATUS_ERR_SHAPE &&
             dg_cross_entropy_forward(&l, s, labels, CN, 0) == DG_STATUS_ERR_SHAPE &&
             dg_distill_kl_forward(&l, s, t, 1.0f, 1, CN, CK) == DG_STATUS_ERR_SHAPE &&
             dg_distill_kl_backward(d, s, t, 1.0f, 0, 1.0f, CN, 0) == DG_STATUS_ERR_SHAPE;
        fails += tm_check(ok, "loss: N < 0, K <= 0, binary KL with K != 1 -> ERR_SHAPE");
        ok = dg_bce_logits_forward(NULL, x, y01, LN) == DG_STATUS_ERR_NULL &&
             dg_bce_logits_forward(&l, x, NULL, LN) == DG_STATUS_ERR_NULL &&
             dg_mse_backward(d, NULL, x, NULL, 1.0f, LN) == DG_STATUS_ERR_NULL &&
             dg_cross_entropy_forward(&l, s, NULL, CN, CK) == DG_STATUS_ERR_NULL &&
             dg_distill_kl_forward(&l, s, NULL, 1.0f, 0, CN, CK) == DG_STATUS_ERR_NULL &&
             dg_distill_kl_backward(d, NULL, t, 1.0f, 0, 1.0f, CN, CK) == DG_STATUS_ERR_NULL;
        fails += tm_check(ok, "loss: NULL input -> ERR_NULL");
        ok = l == 3.0f;
        for (int i = 0; i < CN * CK; i++) ok &= d[i] == 3.0f;
        fails += tm_check(ok, "loss: failed calls wrote nothing");
    }
    return fails;
}

/* ------------------------------------------------------------------------- */
/* Adam and EMA                                                               */
/* ------------------------------------------------------------------------- */

/* The step's gradient of the trajectory tests: small dyadic values, exact in float. */
static float tm_adam_grad(int step, int i) {
    return (float)(((i * 7 + step * 3) % 11) - 5) * 0.125f;
}

int test_adam(void) {
    int fails = 0;
    enum { AN = 6, STEPS = 10 };
    const float lr = 1e-2f, beta1 = 0.5f, beta2 = 0.999f, eps = 1e-8f, wd = 0.1f;
    const float p0[AN] = {0.5f, -1.25f, 2.0f, -0.75f, 0.125f, 3.0f};
    float p[AN], m[AN] = {0}, v[AN] = {0}, g[AN];
    double pr[AN], mr[AN], vr[AN] = {0};
    memcpy(p, p0, sizeof p);
    for (int i = 0; i < AN; i++) {
        pr[i] = p0[i];
        mr[i] = 0.0;
    }
    int ok = 1;
    for (int step = 1; step <= STEPS; step++) {
        for (int i = 0; i < AN; i++) g[i] = tm_adam_grad(step, i);
        ok &= dg_adam_step(p, m, v, g, AN, step, lr, beta1, beta2, eps, wd) == DG_STATUS_OK;
        /* Double reference of the formula in distgan.h (AdamW). */
        double bc1 = 1.0 - pow(beta1, step), bc2 = 1.0 - pow(beta2, step);
        for (int i = 0; i < AN; i++) {
            pr[i] *= 1.0 - (double)lr * wd;
            mr[i] = beta1 * mr[i] + (1.0 - beta1) * g[i];
            vr[i] = beta2 * vr[i] + (1.0 - beta2) * (double)g[i] * g[i];
            pr[i] -= (lr / bc1) * mr[i] / (sqrt(vr[i]) / sqrt(bc2) + eps);
        }
    }
    fails += tm_check(ok, "adam: 10 steps return OK");
    fails += tm_close(tm_rel_err(p, pr, AN, 1.0), 2e-6, "adam: 10 AdamW steps vs double reference, param");
    fails += tm_close(tm_rel_err(m, mr, AN, 1e-12), 1e-6, "adam: 10 AdamW steps vs double reference, m");
    fails += tm_close(tm_rel_err(v, vr, AN, 1e-12), 1e-6, "adam: 10 AdamW steps vs double reference, v");

    /* The same 10 steps through torch.optim.AdamW (torch 2.13.0, CPU, foreach=False,
     * lr/betas/eps/weight_decay passed as the doubles of these float32 values):
     *   tp = torch.tensor(p0, requires_grad=True)
     *   opt = torch.optim.AdamW([tp], lr, (beta1, beta2), eps, wd, foreach=False)
     *   for s in 1..10: tp.grad = [((7i + 3s) % 11 - 5) * 0.125 for i in 0..5]; opt.step() */
    {
        const double torch_p[AN] = {0.48830542, -1.23785889, 1.95684338, -0.718931556, 0.117602944, 2.96556544};
        const double torch_m[AN] = {0.18359375, -0.131958008, -0.220581055, 0.0587158203, -0.235351562, 0.342041016};
        const double torch_v[AN] = {0.00132240274, 0.00164776924, 0.00164982327, 0.00132188923, 0.00169520348, 0.00157196401};
        double e = fmax(tm_rel_err(p, torch_p, AN, 1.0), fmax(tm_rel_err(m, torch_m, AN, 1e-12), tm_rel_err(v, torch_v, AN, 1e-12)));
        fails += tm_close(e, 1e-6, "adam: 10 steps match torch.optim.AdamW (param, m, v)");
    }

    /* First step from zero moments: m/sqrt(v) = sign(g), so each parameter moves by lr. */
    {
        float q[3] = {1.0f, 1.0f, 1.0f}, m0[3] = {0}, v0[3] = {0}, gq[3] = {3.0f, -0.01f, 1e-3f};
        dg_adam_step(q, m0, v0, gq, 3, 1, 0.1f, 0.9f, 0.999f, 1e-12f, 0.0f);
        double ref[3] = {0.9, 1.1, 0.9};
        fails += tm_close(tm_rel_err(q, ref, 3, 1.0), 1e-6, "adam: bias-corrected first step moves each param by lr");
    }

    /* Errors: nothing written. */
    {
        float q[2] = {1.0f, 2.0f}, mq[2] = {0}, vq[2] = {0}, gq[2] = {1.0f, 1.0f};
        ok = dg_adam_step(q, mq, vq, gq, 2, 0, lr, beta1, beta2, eps, 0.0f) == DG_STATUS_ERR_VALUE &&
             dg_adam_step(q, mq, vq, gq, 2, -3, lr, beta1, beta2, eps, 0.0f) == DG_STATUS_ERR_VALUE &&
             dg_adam_step(q, mq, vq, gq, 2, 1, -1e-3f, beta1, beta2, eps, 0.0f) == DG_STATUS_ERR_VALUE &&
             dg_adam_step(q, mq, vq, gq, 2, 1, NAN, beta1, beta2, eps, 0.0f) == DG_STATUS_ERR_VALUE &&
             dg_adam_step(q, mq, vq, gq, 2, 1, lr, 1.0f, beta2, eps, 0.0f) == DG_STATUS_ERR_VALUE &&
             dg_adam_step(q, mq, vq, gq, 2, 1, lr, -0.1f, beta2, eps, 0.0f) == DG_STATUS_ERR_VALUE &&
             dg_adam_step(q, mq, vq, gq, 2, 1, lr, beta1, 1.0f, eps, 0.0f) == DG_STATUS_ERR_VALUE &&
             dg_adam_step(q, mq, vq, gq, 2, 1, lr, beta1, NAN, eps, 0.0f) == DG_STATUS_ERR_VALUE &&
             dg_adam_step(q, mq, vq, gq, 2, 1, lr, beta1, beta2, -1e-8f, 0.0f) == DG_STATUS_ERR_VALUE &&
             dg_adam_step(q, mq, vq, gq, 2, 1, lr, beta1, beta2, eps, -0.1f) == DG_STATUS_ERR_VALUE &&
             dg_adam_step(NULL, mq, vq, gq, 2, 1, lr, beta1, beta2, eps, 0.0f) == DG_STATUS_ERR_NULL &&
             dg_adam_step(q, mq, vq, NULL, 2, 1, lr, beta1, beta2, eps, 0.0f) == DG_STATUS_ERR_NULL;
        ok &= q[0] == 1.0f && q[1] == 2.0f && mq[0] == 0.0f && vq[1] == 0.0f;
        ok &= dg_adam_step(q, mq, vq, gq, 0, 1, lr, beta1, beta2, eps, 0.0f) == DG_STATUS_OK;
        ok &= dg_adam_step(q, mq, vq, gq, 2, 1, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f) == DG_STATUS_OK && q[0] == 1.0f;
        fails += tm_check(ok, "adam: step < 1, lr < 0, beta outside [0,1), eps < 0, wd < 0, NaN -> ERR_VALUE; NULL -> ERR_NULL");
    }

    /* EMA */
    {
        float ema[AN], ema2[AN], ema3[AN];
        double ref[AN];
        for (int i = 0; i < AN; i++) ema[i] = ema2[i] = ema3[i] = 1.0f;
        ok = dg_ema_update(ema, p0, AN, 0.999f) == DG_STATUS_OK;
        for (int i = 0; i < AN; i++) ref[i] = 0.999 * 1.0 + (1.0 - 0.999) * p0[i];
        fails += tm_close(ok ? tm_rel_err(ema, ref, AN, 1.0) : 1.0, 1e-6, "ema: decay * ema + (1 - decay) * param");
        ok = dg_ema_update(ema2, p0, AN, 1.0f) == DG_STATUS_OK && dg_ema_update(ema3, p0, AN, 0.0f) == DG_STATUS_OK;
        for (int i = 0; i < AN; i++) ok &= ema2[i] == 1.0f && ema3[i] == p0[i];
        ok &= dg_ema_update(ema, p0, AN, 1.5f) == DG_STATUS_ERR_VALUE &&
              dg_ema_update(ema, p0, AN, -0.5f) == DG_STATUS_ERR_VALUE &&
              dg_ema_update(ema, p0, AN, NAN) == DG_STATUS_ERR_VALUE &&
              dg_ema_update(NULL, p0, AN, 0.5f) == DG_STATUS_ERR_NULL;
        fails += tm_check(ok, "ema: decay 1 keeps, decay 0 copies, decay outside [0,1] -> ERR_VALUE");
    }
    return fails;
}

/* ------------------------------------------------------------------------- */
/* RNG                                                                        */
/* ------------------------------------------------------------------------- */

/* The test's own mapping of a Philox block to a uniform and a normal, written
 * from the descriptions in dg_rng.c, to check the core's mapping. */
static void tm_block(uint32_t out[4], uint64_t seed, uint64_t index) {
    uint32_t ctr[4] = {(uint32_t)(index & 0xffffffffu), (uint32_t)(index >> 32), 0, 0};
    uint32_t key[2] = {(uint32_t)(seed & 0xffffffffu), (uint32_t)(seed >> 32)};
    dg_philox4x32_10(out, ctr, key);
}

int test_rng(void) {
    int fails = 0;

    /* Known answers: Random123 tests/kat_vectors, "philox4x32 10" lines. */
    {
        const uint32_t ctr[3][4] = {{0, 0, 0, 0},
                                    {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                                    {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}};
        const uint32_t key[3][2] = {{0, 0}, {0xffffffffu, 0xffffffffu}, {0xa4093822u, 0x299f31d0u}};
        const uint32_t want[3][4] = {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u},
                                     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu},
                                     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}};
        for (int c = 0; c < 3; c++) {
            uint32_t out[4];
            dg_philox4x32_10(out, ctr[c], key[c]);
            fails += tm_check(memcmp(out, want[c], sizeof out) == 0,
                              "rng: philox4x32-10 known answer %d -> %08x %08x %08x %08x", c,
                              (unsigned)out[0], (unsigned)out[1], (unsigned)out[2], (unsigned)out[3]);
        }
        uint32_t io[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u};
        dg_philox4x32_10(io, io, key[2]);
        fails += tm_check(memcmp(io, want[2], sizeof io) == 0, "rng: philox with out aliasing ctr");
    }

    enum { RN = 1001 };
    float a[RN], b[RN];
    const uint64_t seed = 0x0123456789abcdefull;

    /* Element i is the documented function of the block at counter offset + i,
     * including across the 2^32 boundary of the counter's low word. */
    {
        const uint64_t offset = 0xfffffe00ull; /* the draw crosses 2^32 */
        int ok = dg_rng_uniform(a, RN, seed, offset, -2.0f, 3.0f) == DG_STATUS_OK &&
                 dg_rng_normal(b, RN, seed, offset) == DG_STATUS_OK;
        double eu = 0.0, en = 0.0;
        for (int i = 0; i < RN; i++) {
            uint32_t r[4];
            tm_block(r, seed, offset + (uint64_t)i);
            double u = (double)(r[0] >> 8) / 16777216.0;
            double ref_u = -2.0 + 5.0 * u;
            double u1 = ((double)r[0] + 1.0) / 4294967296.0, u2 = (double)r[1] / 4294967296.0;
            double ref_n = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
            eu = fmax(eu, fabs(a[i] - ref_u));
            en = fmax(en, fabs(b[i] - ref_n));
        }
        fails += tm_check(ok, "rng: draws return OK");
        fails += tm_close(eu, 5e-7, "rng: uniform element i = lo + (hi - lo) * (w0 >> 8) / 2^24 of block (seed, offset + i)");
        fails += tm_close(en, 1e-6, "rng: normal element i = Box-Muller cos branch of block (seed, offset + i)");
    }

    /* Split independence: one draw of n = two draws of n/2 and n - n/2 at the
     * right offsets, bit for bit; and a repeat gives the same numbers. */
    {
        const uint64_t offsets[2] = {12345, 0xffffff00ull};
        for (int o = 0; o < 2; o++) {
            float c[RN];
            size_t h = RN / 2;
            dg_rng_normal(a, RN, seed, offsets[o]);
            dg_rng_normal(c, h, seed, offsets[o]);
            dg_rng_normal(c + h, RN - h, seed, offsets[o] + h);
            dg_rng_normal(b, RN, seed, offsets[o]);
            fails += tm_check(memcmp(a, c, sizeof a) == 0 && memcmp(a, b, sizeof a) == 0,
                              "rng: normal split n = n/2 + (n - n/2) is bit-identical (offset %llu)",
                              (unsigned long long)offsets[o]);
            dg_rng_uniform(a, RN, seed, offsets[o], 0.0f, 1.0f);
            dg_rng_uniform(c, h, seed, offsets[o], 0.0f, 1.0f);
            dg_rng_uniform(c + h, RN - h, seed, offsets[o] + h, 0.0f, 1.0f);
            fails += tm_check(memcmp(a, c, sizeof a) == 0,
                              "rng: uniform split n = n/2 + (n - n/2) is bit-identical (offset %llu)",
                              (unsigned long long)offsets[o]);
        }
    }

    /* Both 32-bit halves of seed and offset matter. */
    {
        float c[8], d[8], e[8], f[8];
        dg_rng_normal(c, 8, 1, 0);
        dg_rng_normal(d, 8, 1 + (1ull << 32), 0);
        dg_rng_normal(e, 8, 1, 1ull << 32);
        dg_rng_normal(f, 8, 2, 0);
        fails += tm_check(memcmp(c, d, sizeof c) != 0 && memcmp(c, e, sizeof c) != 0 && memcmp(c, f, sizeof c) != 0,
                          "rng: high and low words of seed and offset all change the stream");
    }

    /* The normals against libm's log and cos: element i's z by the documented
     * formula, evaluated in double with libm and rounded once, is the same float
     * as the core's (its own log and cos, fdlibm's algorithms, each under 1 ulp
     * of double) on 2^22 draws; two double results within a few ulps round to
     * different floats only when they straddle a float's rounding boundary, about
     * once in 2^28 draws, so a log or cos off by ~1e-14 would show here as ~100
     * differences. */
    {
        const size_t n = (size_t)1 << 22;
        float *z = malloc(n * sizeof(float));
        if (z == NULL) return fails + tm_check(0, "rng: could not allocate the libm buffer");
        const uint64_t off = 0xfffff000ull;   /* across 2^32 */
        dg_rng_normal(z, n, seed, off);
        size_t differ = 0, far = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t r[4];
            tm_block(r, seed, off + (uint64_t)i);
            double u1 = ((double)r[0] + 1.0) / 4294967296.0, u2 = (double)r[1] / 4294967296.0;
            float ref = (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925286766559 * u2));
            if (ref != z[i]) {
                differ++;
                far += fabsf(ref - z[i]) > fabsf(nextafterf(ref, 2.0f * ref) - ref);
            }
        }
        fails += tm_check(differ == 0 && far == 0,
                          "rng: 2^22 normals the same floats as with libm's log and cos "
                          "(%zu differ, %zu by more than 1 ulp)", differ, far);
        free(z);
    }

    /* The log and cos themselves against libm's, in units of the last place of
     * libm's result: within 1 ulp (each is under 1 ulp of the true value, glibc's
     * under 0.52 for log and 1 for cos) on 2^20 draws of u1 = (w + 1) / 2^32 and
     * x = 2 pi w / 2^32, with the points where cos is nearly 0 among them (the
     * doubles next to pi/2 and 3 pi/2, reached by w = 2^30 and 3 * 2^30) */
    {
        enum { NB = 1 << 20 };
        double *u1s = malloc(4 * NB * sizeof(double)), *xs = u1s + NB, *lg = xs + NB, *cs = lg + NB;
        if (u1s == NULL) return fails + tm_check(0, "rng: could not allocate the log/cos buffer");
        double worst_log = 0.0, worst_cos = 0.0;
        for (uint32_t i = 0; i < NB; i++) {
            uint32_t r[4];
            tm_block(r, seed, (uint64_t)i);
            if (i < 4) r[1] = (uint32_t)(i + 1) << 30;   /* pi/2, pi, 3 pi/2, 2 pi -> 0 */
            double u1 = u1s[i] = ((double)r[0] + 1.0) / 4294967296.0;
            double x = xs[i] = 6.283185307179586476925286766559 * ((double)r[1] / 4294967296.0);
            double l = log(u1), c = cos(x);
            if (l != 0.0)
                worst_log = fmax(worst_log, fabs(dg_bm_log(u1) - l) / (nextafter(fabs(l), INFINITY) - fabs(l)));
            else
                worst_log = fmax(worst_log, dg_bm_log(u1) != 0.0 ? 99.0 : 0.0);
            worst_cos = fmax(worst_cos, fabs(dg_bm_cos(x) - c) / (nextafter(fabs(c), INFINITY) - fabs(c)));
        }
        fails += tm_check(worst_log <= 1.0 && worst_cos <= 1.0,
                          "rng: Box-Muller's log and cos within 1 ulp of libm's on 2^20 draws "
                          "(worst %.2f and %.2f ulp)", worst_log, worst_cos);
        /* and their 8-lane twins the same bits as they */
        dg_bm_log8_cos8(lg, cs, u1s, xs, NB);
        size_t differ = 0;
        for (size_t i = 0; i < NB; i++)
            differ += memcmp(&lg[i], &(double){dg_bm_log(u1s[i])}, sizeof(double)) != 0 ||
                      memcmp(&cs[i], &(double){dg_bm_cos(xs[i])}, sizeof(double)) != 0;
        fails += tm_check(differ == 0, "rng: Box-Muller's log and cos on 8 lanes (%s) the same "
                          "bits as one at a time on 2^20 draws (%zu differ)",
                          dg_avx512() ? "AVX-512" : "no AVX-512 here", differ);
        free(u1s);
    }

    /* SIMD on and off (8 lanes and one element at a time) the same bits, for
     * draws of every length 1 .. 40 at an offset that is not a multiple of 8 */
    {
        enum { BIG = 1 << 20 };
        float s8[40], s1[40], *b8 = malloc(2 * BIG * sizeof(float));
        if (b8 == NULL) return fails + tm_check(0, "rng: could not allocate the SIMD buffer");
        int same = 1;
        for (size_t len = 1; len <= 40; len++) {
            dg_rng_normal(s8, len, seed, 1000003 + len);
            dg_set_simd(0);
            dg_rng_normal(s1, len, seed, 1000003 + len);
            dg_set_simd(1);
            same &= memcmp(s8, s1, len * sizeof(float)) == 0;
        }
        dg_rng_normal(b8, BIG, seed, 77);
        dg_set_simd(0);
        dg_rng_normal(b8 + BIG, BIG, seed, 77);
        dg_set_simd(1);
        same &= memcmp(b8, b8 + BIG, BIG * sizeof(float)) == 0;
        free(b8);
        fails += tm_check(same, "rng: normals with SIMD on and off the same bits, lengths 1..40 and 2^20");
    }

    /* Moments of 1e6 normals and uniforms. With n = 1e6 the standard errors are
     * 1e-3 (mean), 1.4e-3 (variance), 2.4e-3 (skewness), 4.9e-3 (kurtosis),
     * 4.7e-4 (P(|z| < 1)); tolerances are about 5 standard errors. */
    {
        const size_t n = 1000000;
        float *z = malloc(n * sizeof(float));
        if (z == NULL) return fails + tm_check(0, "rng: could not allocate the moment buffer");
        dg_rng_normal(z, n, 42, 0);
        double s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0, in1 = 0.0, zmax = 0.0;
        int finite = 1;
        for (size_t i = 0; i < n; i++) {
            double v = z[i];
            finite &= isfinite(v) != 0;
            s1 += v; s2 += v * v; s3 += v * v * v; s4 += v * v * v * v;
            in1 += fabs(v) < 1.0;
            zmax = fmax(zmax, fabs(v));
        }
        double mean = s1 / n, var = s2 / n - mean * mean;
        double skew = s3 / n / pow(var, 1.5), kurt = s4 / n / (var * var);
        fails += tm_check(finite && zmax < 6.7, "rng: 1e6 normals finite, max |z| = %.3f < 6.7", zmax);
        fails += tm_close(fabs(mean), 5e-3, "rng: 1e6 normals, |mean|");
        fails += tm_close(fabs(var - 1.0), 7e-3, "rng: 1e6 normals, |var - 1|");
        fails += tm_close(fabs(skew), 1.2e-2, "rng: 1e6 normals, |skewness|");
        fails += tm_close(fabs(kurt - 3.0), 2.5e-2, "rng: 1e6 normals, |kurtosis - 3|");
        fails += tm_close(fabs(in1 / n - 0.6826894921370859), 2.5e-3, "rng: 1e6 normals, |P(|z| < 1) - 0.6827|");

        dg_rng_uniform(z, n, 7, 0, -1.0f, 3.0f);
        s1 = s2 = 0.0;
        int inside = 1;
        for (size_t i = 0; i < n; i++) {
            double v = z[i];
            inside &= v >= -1.0 && v < 3.0;
            s1 += v;
            s2 += v * v;
        }
        mean = s1 / n;
        var = s2 / n - mean * mean;
        fails += tm_check(inside, "rng: 1e6 uniforms all in [-1, 3)");
        fails += tm_close(fabs(mean - 1.0), 6e-3, "rng: 1e6 uniforms on [-1, 3), |mean - 1|");
        fails += tm_close(fabs(var - 16.0 / 12.0), 6e-3, "rng: 1e6 uniforms, |var - 4/3|");

        /* One-ulp interval: lo + (hi - lo) u rounds to hi for about half of the
         * u, so this exercises the guard that keeps the interval half-open. */
        const float lo = 1.0f, hi = nextafterf(1.0f, 2.0f);
        dg_rng_uniform(z, 100000, 9, 0, lo, hi);
        inside = 1;
        for (size_t i = 0; i < 100000; i++) inside &= z[i] == lo;
        fails += tm_check(inside, "rng: uniform on [1, 1 + ulp) never returns hi (rounding guard)");
        dg_rng_uniform(z, 100000, 9, 0, -FLT_MAX, FLT_MAX);
        inside = 1;
        for (size_t i = 0; i < 100000; i++) inside &= isfinite(z[i]) && z[i] < FLT_MAX;
        fails += tm_check(inside, "rng: uniform on [-FLT_MAX, FLT_MAX) finite, below hi");
        free(z);
    }

    /* Errors. */
    {
        float c[4] = {5.0f, 5.0f, 5.0f, 5.0f};
        int ok = dg_rng_uniform(c, 4, 1, 0, 1.0f, 1.0f) == DG_STATUS_ERR_VALUE &&
                 dg_rng_uniform(c, 4, 1, 0, 2.0f, 1.0f) == DG_STATUS_ERR_VALUE &&
                 dg_rng_uniform(c, 4, 1, 0, NAN, 1.0f) == DG_STATUS_ERR_VALUE &&
                 dg_rng_uniform(c, 4, 1, 0, 0.0f, INFINITY) == DG_STATUS_ERR_VALUE &&
                 dg_rng_uniform(NULL, 4, 1, 0, 0.0f, 1.0f) == DG_STATUS_ERR_NULL &&
                 dg_rng_normal(NULL, 4, 1, 0) == DG_STATUS_ERR_NULL;
        ok &= c[0] == 5.0f && c[3] == 5.0f;
        ok &= dg_rng_normal(c, 0, 1, 0) == DG_STATUS_OK && dg_rng_uniform(c, 0, 1, 0, 0.0f, 1.0f) == DG_STATUS_OK;
        fails += tm_check(ok, "rng: lo >= hi, non-finite bounds -> ERR_VALUE; NULL -> ERR_NULL; n = 0 -> OK");
    }
    return fails;
}

#ifdef TEST_MISC_MAIN
int main(void) {
    int fails = 0;
    fails += test_act();
    fails += test_embed();
    fails += test_loss();
    fails += test_adam();
    fails += test_rng();
    printf("test_misc: %d failure%s\n", fails, fails == 1 ? "" : "s");
    return fails == 0 ? 0 : 1;
}
#endif
