/*
 * dg_act.c -- elementwise activations: ReLU, LeakyReLU, tanh, sigmoid.
 *
 * Each op works on a flat run of n floats, so one call covers a whole (N, C, H, W)
 * or (N, C) activation. Forward ASSIGNS out (out may alias inp: every element is
 * read before it is written, which is why no pointer here is `restrict`).
 * Backward ACCUMULATES dinp += dout * f'(.) and takes as its cache the forward's
 * INPUT for relu/leaky_relu (the kink is decided on x) and the forward's OUTPUT
 * for tanh/sigmoid (their derivatives are cheapest in terms of y).
 * A NULL dinp means the gradient is not needed: backward then returns OK at once.
 *
 * Conventions follow PyTorch, including at the kinks and for NaN:
 *   relu(x)   = x < 0 ? 0 : x     (NaN and -0.0 pass through, as torch.relu)
 *   relu'(x)  = x <= 0 ? 0 : 1    (relu'(0) = 0; NaN passes the gradient)
 *   leaky(x)  = x > 0 ? x : x * slope
 *   leaky'(x) = x > 0 ? 1 : slope (leaky'(0) = slope)
 * https://pytorch.org/docs/stable/generated/torch.nn.ReLU.html
 * https://pytorch.org/docs/stable/generated/torch.nn.LeakyReLU.html
 * https://pytorch.org/docs/stable/generated/torch.nn.Tanh.html
 * https://pytorch.org/docs/stable/generated/torch.nn.Sigmoid.html
 * (ATen: aten/src/ATen/native/cpu/Activation.cpp, threshold_backward,
 *  leaky_relu_backward; tanh_backward and sigmoid_backward in
 *  aten/src/ATen/native/cpu/BinaryOpsKernel.cpp.)
 *
 * n = number of elements (any layout; the ops are elementwise).
 */
#include <math.h>
#include <string.h>

#include "distgan.h"
#include "dg_internal.h"

/* Elements per task at least before an op is split over the thread pool; each
 * task takes a contiguous run (bounds multiples of 16 floats), so every element
 * is computed the same way whatever the thread count. */
#define DG_ACT_GRAIN 32768.0

enum { A_RELU_F, A_RELU_B, A_LEAKY_F, A_LEAKY_B, A_TANH_F, A_TANH_B, A_SIG_F, A_SIG_B, A_ZERO };

typedef struct {
    int kind;
    float *out;          /* out (forward) or dinp (backward) */
    const float *a, *b;  /* inp (forward); dout and the cache (backward) */
    float slope;
    size_t n;
} act_job;

static void act_kernel(const act_job *j, size_t lo, size_t hi);

static void act_task(void *ctx, int t, int nt) {
    const act_job *j = (const act_job *)ctx;
    size_t lo, hi;
    dg_split(j->n, 16, t, nt, &lo, &hi);
    if (lo < hi) act_kernel(j, lo, hi);
}

static dg_status act_run(int kind, float *out, const float *a, const float *b,
                         float slope, size_t n) {
    act_job j = {kind, out, a, b, slope, n};
    dg_parallel(act_task, &j, dg_threads_for((double)n, DG_ACT_GRAIN));
    return DG_STATUS_OK;
}

/* ------------------------------------------------------------------------- */
/* ReLU                                                                       */
/* ------------------------------------------------------------------------- */

/* out, inp are (n). */
dg_status dg_relu_forward(float *out, const float *inp, size_t n) {
    if (out == NULL || inp == NULL) return DG_STATUS_ERR_NULL;
    return act_run(A_RELU_F, out, inp, NULL, 0.0f, n);
}

static void relu_forward_k(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = x < 0.0f ? 0.0f : x;
    }
}

/* dinp, dout, inp are (n); inp is the forward's input. */
dg_status dg_relu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    if (dout == NULL || inp == NULL) return DG_STATUS_ERR_NULL;
    if (dinp == NULL) return DG_STATUS_OK;
    return act_run(A_RELU_B, dinp, dout, inp, 0.0f, n);
}

static void relu_backward_k(float *dinp, const float *dout, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        /* forward: out[i] = x < 0.0f ? 0.0f : x;  d/dx = 0 at x <= 0 (torch threshold_backward).
         * Both loads are unconditional, so the select vectorises (a conditional
         * load of dout kept it scalar, with a branch per element). */
        float dy = dout[i], x = inp[i];
        dinp[i] += x <= 0.0f ? 0.0f : dy;
    }
}

/* ------------------------------------------------------------------------- */
/* LeakyReLU                                                                  */
/* ------------------------------------------------------------------------- */

/* out, inp are (n). slope is the negative-side slope (0.2 in the DCGAN discriminator). */
dg_status dg_leaky_relu_forward(float *out, const float *inp, float slope, size_t n) {
    if (out == NULL || inp == NULL) return DG_STATUS_ERR_NULL;
    return act_run(A_LEAKY_F, out, inp, NULL, slope, n);
}

static void leaky_relu_forward_k(float *out, const float *inp, float slope, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = x > 0.0f ? x : x * slope;
    }
}

/* dinp, dout, inp are (n); inp is the forward's input. */
dg_status dg_leaky_relu_backward(float *dinp, const float *dout, const float *inp,
                                 float slope, size_t n) {
    if (dout == NULL || inp == NULL) return DG_STATUS_ERR_NULL;
    if (dinp == NULL) return DG_STATUS_OK;
    return act_run(A_LEAKY_B, dinp, dout, inp, slope, n);
}

static void leaky_relu_backward_k(float *dinp, const float *dout, const float *inp,
                                  float slope, size_t n) {
    for (size_t i = 0; i < n; i++) {
        /* forward: out[i] = x > 0.0f ? x : x * slope;  (torch: x > 0 ? dy : dy * slope) */
        float dy = dout[i];
        dinp[i] += inp[i] > 0.0f ? dy : dy * slope;
    }
}

/* ------------------------------------------------------------------------- */
/* tanh                                                                       */
/* ------------------------------------------------------------------------- */

/* out, inp are (n). tanhf saturates to +-1 for large |x| without overflow. */
dg_status dg_tanh_forward(float *out, const float *inp, size_t n) {
    if (out == NULL || inp == NULL) return DG_STATUS_ERR_NULL;
    return act_run(A_TANH_F, out, inp, NULL, 0.0f, n);
}

static void tanh_forward_k(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = tanhf(inp[i]);
}

/* dinp, dout, out are (n); out is the forward's OUTPUT y = tanh(x). */
dg_status dg_tanh_backward(float *dinp, const float *dout, const float *out, size_t n) {
    if (dout == NULL || out == NULL) return DG_STATUS_ERR_NULL;
    if (dinp == NULL) return DG_STATUS_OK;
    return act_run(A_TANH_B, dinp, dout, out, 0.0f, n);
}

static void tanh_backward_k(float *dinp, const float *dout, const float *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        /* forward: out[i] = tanhf(inp[i]);  d tanh/dx = 1 - y^2 (torch: dy * (1 - y * y)) */
        float y = out[i];
        dinp[i] += dout[i] * (1.0f - y * y);
    }
}

/* ------------------------------------------------------------------------- */
/* sigmoid                                                                    */
/* ------------------------------------------------------------------------- */

/* out, inp are (n).
 * Numerically stable for large |x|: expf is only ever called on -|x| <= 0, so
 * it never overflows to inf (the naive 1 / (1 + exp(-x)) does for x < -88),
 * and both branches keep full relative precision down to the smallest outputs.
 * NaN propagates (it takes the x < 0 branch, expf(NaN) = NaN). */
dg_status dg_sigmoid_forward(float *out, const float *inp, size_t n) {
    if (out == NULL || inp == NULL) return DG_STATUS_ERR_NULL;
    return act_run(A_SIG_F, out, inp, NULL, 0.0f, n);
}

static void sigmoid_forward_k(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        if (x >= 0.0f) {
            out[i] = 1.0f / (1.0f + expf(-x));
        } else {
            float e = expf(x);
            out[i] = e / (1.0f + e);
        }
    }
}

/* dinp, dout, out are (n); out is the forward's OUTPUT y = sigmoid(x). */
dg_status dg_sigmoid_backward(float *dinp, const float *dout, const float *out, size_t n) {
    if (dout == NULL || out == NULL) return DG_STATUS_ERR_NULL;
    if (dinp == NULL) return DG_STATUS_OK;
    return act_run(A_SIG_B, dinp, dout, out, 0.0f, n);
}

static void sigmoid_backward_k(float *dinp, const float *dout, const float *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        /* forward: out[i] = 1 / (1 + exp(-x));  d sigma/dx = y (1 - y)
         * (torch sigmoid_backward evaluates dy * (1 - y) * y, in that order) */
        float y = out[i];
        dinp[i] += dout[i] * (1.0f - y) * y;
    }
}

/* ------------------------------------------------------------------------- */
/* Zeroing a gradient buffer                                                  */
/* ------------------------------------------------------------------------- */

/* out is (n); out[i] = 0, split over the thread pool like the ops above. */
dg_status dg_zero(float *out, size_t n) {
    if (out == NULL) return DG_STATUS_ERR_NULL;
    act_job j = {A_ZERO, out, out, NULL, 0.0f, n};
    dg_parallel(act_task, &j, dg_threads_for((double)n, 4.0 * DG_ACT_GRAIN));
    return DG_STATUS_OK;
}

/* Task [lo, hi) of a job: the element loops above on a sub-range. */
static void act_kernel(const act_job *j, size_t lo, size_t hi) {
    size_t n = hi - lo;
    float *o = j->out + lo;
    const float *a = j->a + lo, *b = j->b != NULL ? j->b + lo : NULL;
    switch (j->kind) {
    case A_RELU_F: relu_forward_k(o, a, n); break;
    case A_RELU_B: relu_backward_k(o, a, b, n); break;
    case A_LEAKY_F: leaky_relu_forward_k(o, a, j->slope, n); break;
    case A_LEAKY_B: leaky_relu_backward_k(o, a, b, j->slope, n); break;
    case A_TANH_F: tanh_forward_k(o, a, n); break;
    case A_TANH_B: tanh_backward_k(o, a, b, n); break;
    case A_SIG_F: sigmoid_forward_k(o, a, n); break;
    case A_SIG_B: sigmoid_backward_k(o, a, b, n); break;
    case A_ZERO: memset(o, 0, n * sizeof(float)); break;
    }
}
