/*
 * dg_loss.c -- the losses of GAN training and of distillation, forward and
 * backward: BCE with logits (non-saturating GAN), hinge, least squares, L1,
 * MSE, softmax cross-entropy, and the tempered KL of distillation (binary and
 * categorical).
 *
 * Contract (distgan.h):
 *  - forward writes the scalar MEAN loss to *loss: BCE, hinge, hinge_gen, least
 *    squares, L1 and MSE average over all n elements; cross-entropy and the
 *    distillation KL average over the batch N (summing over the K classes);
 *  - backward ACCUMULATES dloss * d(loss)/d(x) into the gradient buffer, where
 *    dloss is the upstream scalar gradient (1 for a loss at the top); a NULL
 *    gradient buffer means "not needed" and the call only validates;
 *  - empty input (n == 0, or N == 0): the loss is DEFINED as 0 (PyTorch would
 *    give NaN for the mean of nothing) and backward does nothing, so an empty
 *    batch cannot poison a running loss;
 *  - checks run before anything is written: NULL required pointer ->
 *    DG_STATUS_ERR_NULL; bad size -> DG_STATUS_ERR_SHAPE; bad scalar (hinge sign
 *    not +-1, T <= 0 or non-finite) or label out of range -> DG_STATUS_ERR_VALUE.
 *    NaN in the data is not an error: it propagates to the loss, where the
 *    training loop detects it.
 *
 * Numerics: every per-element term is evaluated in double and sums are
 * accumulated in double (a float running sum over 1e6 terms loses ~3 digits);
 * the result is rounded to float once. Gradients are computed in double per
 * element and rounded once before the float +=.
 *
 * Letters: n = number of elements, N = batch size, K = number of classes.
 */
#include <math.h>
#include <stdint.h>

#include "distgan.h"

/* ------------------------------------------------------------------------- */
/* Stable scalar helpers (double)                                             */
/* ------------------------------------------------------------------------- */

/* softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|): e^-|x| <= 1 never
 * overflows, and log1p keeps the tiny tail for large |x| (log(1 + 1e-30) would
 * round to 0). NaN propagates through the log1p term. */
static double softplus(double x) {
    return (x > 0.0 ? x : 0.0) + log1p(exp(-fabs(x)));
}

/* sigmoid(x) with exp only of -|x| (no overflow for any finite x). */
static double sigmoid(double x) {
    if (x >= 0.0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* Row statistics of logits divided by T: returns max_k x_k and sets *lse to
 * log sum_k exp((x_k - max) / T), so that
 *   log softmax(x / T)_k = (x_k - max) / T - *lse.
 * The max is subtracted only for stability (exp never sees a positive
 * argument, and the largest term is exactly 1 so the sum cannot underflow).
 * x is (K). Dividing by T > 0 preserves the arg max. */
static double row_log_softmax_stats(const float *x, int K, double T, double *lse) {
    double m = x[0];
    for (int k = 1; k < K; k++) {
        if ((double)x[k] > m) m = x[k];
    }
    double sum = 0.0;
    for (int k = 0; k < K; k++) sum += exp(((double)x[k] - m) / T);
    *lse = log(sum);
    return m;
}

/* Shared checks of the (N, K) losses: sizes (N*K must fit a size_t) and labels
 * (labels may be NULL when the loss has none). */
static dg_status check_nk(const int64_t *labels, int N, int K) {
    if (N < 0 || K <= 0) return DG_STATUS_ERR_SHAPE;
    if ((size_t)N > SIZE_MAX / (size_t)K) return DG_STATUS_ERR_SHAPE;
    if (labels != NULL) {
        for (int n = 0; n < N; n++) {
            if (labels[n] < 0 || labels[n] >= (int64_t)K) return DG_STATUS_ERR_VALUE;
        }
    }
    return DG_STATUS_OK;
}

/* ------------------------------------------------------------------------- */
/* BCE with logits                                                            */
/* https://pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html  */
/* ------------------------------------------------------------------------- */

/* x (logits) and y (targets, usually 0 or 1, may be soft) are (n).
 * -y log s(x) - (1-y) log(1 - s(x)) = softplus(x) - y x, using
 * log s(x) = -softplus(-x), log(1 - s(x)) = -softplus(x) and
 * softplus(x) - softplus(-x) = x. Finite for every finite x. */
dg_status dg_bce_logits_forward(float *loss, const float *x, const float *y, size_t n) {
    if (loss == NULL || x == NULL || y == NULL) return DG_STATUS_ERR_NULL;
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        double xi = x[i];
        acc += softplus(xi) - (double)y[i] * xi;
    }
    *loss = n == 0 ? 0.0f : (float)(acc / (double)n);
    return DG_STATUS_OK;
}

/* dx, x, y are (n); dx may be NULL. */
dg_status dg_bce_logits_backward(float *dx, const float *x, const float *y,
                                 float dloss, size_t n) {
    if (x == NULL || y == NULL) return DG_STATUS_ERR_NULL;
    if (dx == NULL || n == 0) return DG_STATUS_OK;
    double scale = (double)dloss / (double)n;
    for (size_t i = 0; i < n; i++) {
        /* forward: acc += softplus(xi) - y[i] * xi;  softplus' = sigmoid */
        dx[i] += (float)(scale * (sigmoid(x[i]) - (double)y[i]));
    }
    return DG_STATUS_OK;
}

/* ------------------------------------------------------------------------- */
/* Hinge (Lim & Ye 2017, "Geometric GAN", https://arxiv.org/abs/1705.02894;   */
/* Miyato et al. 2018, https://arxiv.org/abs/1802.05957)                       */
/* ------------------------------------------------------------------------- */

/* x is (n), sign is +1 (real samples) or -1 (fakes): mean relu(1 - sign x). */
dg_status dg_hinge_forward(float *loss, const float *x, float sign, size_t n) {
    if (loss == NULL || x == NULL) return DG_STATUS_ERR_NULL;
    if (sign != 1.0f && sign != -1.0f) return DG_STATUS_ERR_VALUE;
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        double margin = 1.0 - (double)sign * (double)x[i];
        acc += margin > 0.0 ? margin : 0.0;
    }
    *loss = n == 0 ? 0.0f : (float)(acc / (double)n);
    return DG_STATUS_OK;
}

/* dx, x are (n); dx may be NULL. */
dg_status dg_hinge_backward(float *dx, const float *x, float sign, float dloss, size_t n) {
    if (x == NULL) return DG_STATUS_ERR_NULL;
    if (sign != 1.0f && sign != -1.0f) return DG_STATUS_ERR_VALUE;
    if (dx == NULL || n == 0) return DG_STATUS_OK;
    float g = (float)(-(double)sign * (double)dloss / (double)n);
    for (size_t i = 0; i < n; i++) {
        /* forward: acc += margin > 0 ? margin : 0, margin = 1 - sign * x[i];
         * relu'(0) = 0 as in PyTorch, so the kink margin == 0 gets no gradient */
        double margin = 1.0 - (double)sign * (double)x[i];
        if (margin > 0.0) dx[i] += g;
    }
    return DG_STATUS_OK;
}

/* Generator hinge form: -mean x. x is (n). */
dg_status dg_hinge_gen_forward(float *loss, const float *x, size_t n) {
    if (loss == NULL || x == NULL) return DG_STATUS_ERR_NULL;
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) acc += (double)x[i];
    *loss = n == 0 ? 0.0f : (float)(-acc / (double)n);
    return DG_STATUS_OK;
}

/* dx is (n) or NULL. The gradient does not depend on x. */
dg_status dg_hinge_gen_backward(float *dx, float dloss, size_t n) {
    if (dx == NULL || n == 0) return DG_STATUS_OK;
    /* forward: loss = -acc / n, acc = sum x[i]  =>  d/dx[i] = -1/n */
    float g = (float)(-(double)dloss / (double)n);
    for (size_t i = 0; i < n; i++) dx[i] += g;
    return DG_STATUS_OK;
}

/* ------------------------------------------------------------------------- */
/* Least squares (LSGAN, Mao et al. 2017, https://arxiv.org/abs/1611.04076)   */
/* ------------------------------------------------------------------------- */

/* x is (n): 0.5 * mean (x - target)^2. */
dg_status dg_least_squares_forward(float *loss, const float *x, float target, size_t n) {
    if (loss == NULL || x == NULL) return DG_STATUS_ERR_NULL;
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)x[i] - (double)target;
        acc += d * d;
    }
    *loss = n == 0 ? 0.0f : (float)(0.5 * acc / (double)n);
    return DG_STATUS_OK;
}

/* dx, x are (n); dx may be NULL. */
dg_status dg_least_squares_backward(float *dx, const float *x, float target,
                                    float dloss, size_t n) {
    if (x == NULL) return DG_STATUS_ERR_NULL;
    if (dx == NULL || n == 0) return DG_STATUS_OK;
    double scale = (double)dloss / (double)n;
    for (size_t i = 0; i < n; i++) {
        /* forward: loss = 0.5 * sum d^2 / n, d = x[i] - target  =>  d/dx[i] = d / n */
        dx[i] += (float)(scale * ((double)x[i] - (double)target));
    }
    return DG_STATUS_OK;
}

/* ------------------------------------------------------------------------- */
/* L1 and MSE between two tensors                                             */
/* https://pytorch.org/docs/stable/generated/torch.nn.L1Loss.html             */
/* https://pytorch.org/docs/stable/generated/torch.nn.MSELoss.html            */
/* ------------------------------------------------------------------------- */

/* x, y are (n): mean |x - y|. */
dg_status dg_l1_forward(float *loss, const float *x, const float *y, size_t n) {
    if (loss == NULL || x == NULL || y == NULL) return DG_STATUS_ERR_NULL;
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) acc += fabs((double)x[i] - (double)y[i]);
    *loss = n == 0 ? 0.0f : (float)(acc / (double)n);
    return DG_STATUS_OK;
}

/* dx, dy, x, y are (n); dx and dy may each be NULL. */
dg_status dg_l1_backward(float *dx, float *dy, const float *x, const float *y,
                         float dloss, size_t n) {
    if (x == NULL || y == NULL) return DG_STATUS_ERR_NULL;
    if ((dx == NULL && dy == NULL) || n == 0) return DG_STATUS_OK;
    float g = (float)((double)dloss / (double)n);
    for (size_t i = 0; i < n; i++) {
        /* forward: acc += |x[i] - y[i]|;  d/dx = sign(x - y), d/dy = -sign(x - y),
         * with sign(0) = 0 (and sign(NaN) = 0) exactly as torch.sign */
        double d = (double)x[i] - (double)y[i];
        float sg = d > 0.0 ? g : (d < 0.0 ? -g : 0.0f);
        if (dx != NULL) dx[i] += sg;
        if (dy != NULL) dy[i] -= sg;
    }
    return DG_STATUS_OK;
}

/* x, y are (n): mean (x - y)^2. */
dg_status dg_mse_forward(float *loss, const float *x, const float *y, size_t n) {
    if (loss == NULL || x == NULL || y == NULL) return DG_STATUS_ERR_NULL;
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)x[i] - (double)y[i];
        acc += d * d;
    }
    *loss = n == 0 ? 0.0f : (float)(acc / (double)n);
    return DG_STATUS_OK;
}

/* dx, dy, x, y are (n); dx and dy may each be NULL. */
dg_status dg_mse_backward(float *dx, float *dy, const float *x, const float *y,
                          float dloss, size_t n) {
    if (x == NULL || y == NULL) return DG_STATUS_ERR_NULL;
    if ((dx == NULL && dy == NULL) || n == 0) return DG_STATUS_OK;
    double scale = 2.0 * (double)dloss / (double)n;
    for (size_t i = 0; i < n; i++) {
        /* forward: acc += d * d, d = x[i] - y[i]  =>  d/dx = 2d/n, d/dy = -2d/n */
        float g = (float)(scale * ((double)x[i] - (double)y[i]));
        if (dx != NULL) dx[i] += g;
        if (dy != NULL) dy[i] -= g;
    }
    return DG_STATUS_OK;
}

/* ------------------------------------------------------------------------- */
/* Softmax cross-entropy                                                      */
/* https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html   */
/* (fused softmax backward as llm.c crossentropy_softmax_backward)            */
/* ------------------------------------------------------------------------- */

/* x (logits) is (N, K), labels is (N):
 * loss = mean_n [ logsumexp(x_n) - x_n[label_n] ] = mean_n -log softmax(x_n)[label_n]. */
dg_status dg_cross_entropy_forward(float *loss, const float *x,
                                   const int64_t *labels, int N, int K) {
    if (loss == NULL || x == NULL || labels == NULL) return DG_STATUS_ERR_NULL;
    dg_status st = check_nk(labels, N, K);
    if (st != DG_STATUS_OK) return st;
    double acc = 0.0;
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * (size_t)K;
        double lse;
        double m = row_log_softmax_stats(xn, K, 1.0, &lse);
        acc += lse - ((double)xn[labels[n]] - m);
    }
    *loss = N == 0 ? 0.0f : (float)(acc / (double)N);
    return DG_STATUS_OK;
}

/* dx, x are (N, K), labels is (N); dx may be NULL. All labels are checked before
 * dx is touched. */
dg_status dg_cross_entropy_backward(float *dx, const float *x,
                                    const int64_t *labels, float dloss, int N,
                                    int K) {
    if (x == NULL || labels == NULL) return DG_STATUS_ERR_NULL;
    dg_status st = check_nk(labels, N, K);
    if (st != DG_STATUS_OK || dx == NULL || N == 0) return st;
    double scale = (double)dloss / (double)N;
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * (size_t)K;
        float *dxn = dx + (size_t)n * (size_t)K;
        double lse;
        double m = row_log_softmax_stats(xn, K, 1.0, &lse);
        for (int k = 0; k < K; k++) {
            /* forward: acc += lse - (x[label] - m), lse = log sum exp(x - m)
             * =>  d/dx_k = softmax(x)_k - [k == label] */
            double prob = exp(((double)xn[k] - m) - lse);
            double indicator = k == labels[n] ? 1.0 : 0.0;
            dxn[k] += (float)(scale * (prob - indicator));
        }
    }
    return DG_STATUS_OK;
}

/* ------------------------------------------------------------------------- */
/* Tempered KL of distillation (Hinton et al. 2015, "Distilling the           */
/* Knowledge in a Neural Network", https://arxiv.org/abs/1503.02531; KL as    */
/* https://pytorch.org/docs/stable/generated/torch.nn.KLDivLoss.html with      */
/* reduction="batchmean"). See DESIGN.md "Distillation".                      */
/* ------------------------------------------------------------------------- */

/* T must be a finite positive number. */
static int bad_temperature(float T) {
    return !(T > 0.0f) || !isfinite(T);
}

/* s (student logits) and t (teacher logits) are (N) if binary (then K must be
 * 1), else (N, K). Tempered distributions are the normalised sigmoid(l / T) or
 * softmax(l / T) of the logits.
 *  binary: with a = t/T, b = s/T, p = sigmoid(a), q = sigmoid(b),
 *    KL_n = p (log p - log q) + (1-p) (log(1-p) - log(1-q))
 *         = p (softplus(-b) - softplus(-a)) + (1-p) (softplus(b) - softplus(a)),
 *    using log sigmoid(z) = -softplus(-z), log(1 - sigmoid(z)) = -softplus(z):
 *    no log of a rounded probability, so saturated logits (p = 1 - 1e-20) stay
 *    exact and no log(0) appears. 1 - p is taken as sigmoid(-a), not 1 - p,
 *    which would round to 0.
 *  categorical: log P = log_softmax(t/T), log Q = log_softmax(s/T),
 *    KL_n = sum_k P_k (log P_k - log Q_k), with P_k = exp(log P_k) (0 * finite
 *    = 0 for underflowed classes, so no 0 log 0 special case is needed).
 *  loss = T^2 * mean_n KL_n (the T^2 keeps gradient sizes comparable across T). */
dg_status dg_distill_kl_forward(float *loss, const float *s, const float *t,
                                float T, int binary, int N, int K) {
    if (loss == NULL || s == NULL || t == NULL) return DG_STATUS_ERR_NULL;
    dg_status st = check_nk(NULL, N, K);
    if (st != DG_STATUS_OK) return st;
    if (binary && K != 1) return DG_STATUS_ERR_SHAPE;
    if (bad_temperature(T)) return DG_STATUS_ERR_VALUE;
    double Td = T;
    double acc = 0.0;
    if (binary) {
        for (int n = 0; n < N; n++) {
            double a = (double)t[n] / Td, b = (double)s[n] / Td;
            double p = sigmoid(a), p_c = sigmoid(-a);
            acc += p * (softplus(-b) - softplus(-a)) + p_c * (softplus(b) - softplus(a));
        }
    } else {
        for (int n = 0; n < N; n++) {
            const float *sn = s + (size_t)n * (size_t)K, *tn = t + (size_t)n * (size_t)K;
            double lse_t, lse_s;
            double mt = row_log_softmax_stats(tn, K, Td, &lse_t);
            double ms = row_log_softmax_stats(sn, K, Td, &lse_s);
            double kl = 0.0;
            for (int k = 0; k < K; k++) {
                double logP = ((double)tn[k] - mt) / Td - lse_t;
                double logQ = ((double)sn[k] - ms) / Td - lse_s;
                kl += exp(logP) * (logP - logQ);
            }
            acc += kl;
        }
    }
    *loss = N == 0 ? 0.0f : (float)(Td * Td * acc / (double)N);
    return DG_STATUS_OK;
}

/* ds, s, t as in the forward; ds may be NULL. Gradient with respect to the
 * STUDENT logits only (the teacher is frozen), in closed form, T^2 applied:
 *   dKL_n/db = q - p (binary) or Q - P (categorical), and db/ds = 1/T, so
 *   d loss/ds = T^2 * (q - p) / (T N) = T (q - p) / N. */
dg_status dg_distill_kl_backward(float *ds, const float *s, const float *t,
                                 float T, int binary, float dloss, int N, int K) {
    if (s == NULL || t == NULL) return DG_STATUS_ERR_NULL;
    dg_status st = check_nk(NULL, N, K);
    if (st != DG_STATUS_OK) return st;
    if (binary && K != 1) return DG_STATUS_ERR_SHAPE;
    if (bad_temperature(T)) return DG_STATUS_ERR_VALUE;
    if (ds == NULL || N == 0) return DG_STATUS_OK;
    double Td = T;
    double scale = (double)dloss * Td / (double)N;
    if (binary) {
        for (int n = 0; n < N; n++) {
            /* forward: acc += p (softplus(-b) - softplus(-a)) + (1-p) (softplus(b) - softplus(a)),
             * b = s/T  =>  dacc/db = -p sigmoid(-b) + (1-p) sigmoid(b) = q - p.
             * When both logits are positive, q - p is taken as (1-p) - (1-q)
             * = sigmoid(-a) - sigmoid(-b), a difference of two small accurate
             * numbers, instead of two values near 1 that would cancel to 0
             * while the forward still sees a positive KL. */
            double a = (double)t[n] / Td, b = (double)s[n] / Td;
            double q_minus_p = (a >= 0.0 && b >= 0.0) ? sigmoid(-a) - sigmoid(-b)
                                                      : sigmoid(b) - sigmoid(a);
            ds[n] += (float)(scale * q_minus_p);
        }
    } else {
        for (int n = 0; n < N; n++) {
            const float *sn = s + (size_t)n * (size_t)K, *tn = t + (size_t)n * (size_t)K;
            float *dsn = ds + (size_t)n * (size_t)K;
            double lse_t, lse_s;
            double mt = row_log_softmax_stats(tn, K, Td, &lse_t);
            double ms = row_log_softmax_stats(sn, K, Td, &lse_s);
            for (int k = 0; k < K; k++) {
                /* forward: kl += P_k (log P_k - log Q_k), log Q = log_softmax(s/T)
                 * =>  dkl/d(s_k/T) = Q_k - P_k (sum_j P_j = 1) */
                double P = exp(((double)tn[k] - mt) / Td - lse_t);
                double Q = exp(((double)sn[k] - ms) / Td - lse_s);
                dsn[k] += (float)(scale * (Q - P));
            }
        }
    }
    return DG_STATUS_OK;
}
