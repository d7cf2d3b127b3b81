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

#include "distgan.h"

/* ------------------------------------------------------------------------- */
/* ReLU                                                                       */
/* ------------------------------------------------------------------------- */

/* out, inp are (n). */
dg_status dg_relu_forward(float *out, const float *inp, size_t n) {
    if (out == NULL || inp == NULL) return DG_STATUS_ERR_NULL;
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = x < 0.0f ? 0.0f : x;
    }
    return DG_STATUS_OK;
}

/* dinp, dout, inp are (n); inp is the forward's input. */
dg_status dg_relu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    if (dout == NULL || inp == NULL) return DG_STATUS_ERR_NULL;
    if (dinp == NULL) return DG_STATUS_OK;
    for (size_t i = 0; i < n; i++) {
        /* forward: out[i] = x < 0.0f ? 0.0f : x;  d/dx = 0 at x <= 0 (torch threshold_backward) */
        dinp[i] += inp[i] <= 0.0f ? 0.0f : dout[i];
    }
    return DG_STATUS_OK;
}

/* ------------------------------------------------------------------------- */
/* LeakyReLU                                                                  */
/* ------------------------------------------------------------------------- */

/* out, inp are (n). slope is the negative-side slope (0.2 in the DCGAN discriminator). */
dg_status dg_leaky_relu_forward(float *out, const float *inp, float slope, size_t n) {
    if (out == NULL || inp == NULL) return DG_STATUS_ERR_NULL;
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = x > 0.0f ? x : x * slope;
    }
    return DG_STATUS_OK;
}

/* dinp, dout, inp are (n); inp is the forward's input. */
dg_status dg_leaky_relu_backward(float *dinp, const float *dout, const float *inp,
                                 float slope, size_t n) {
    if (dout == NULL || inp == NULL) return DG_STATUS_ERR_NULL;
    if (dinp == NULL) return DG_STATUS_OK;
    for (size_t i = 0; i < n; i++) {
        /* forward: out[i] = x > 0.0f ? x : x * slope;  (torch: x > 0 ? dy : dy * slope) */
        float dy = dout[i];
        dinp[i] += inp[i] > 0.0f ? dy : dy * slope;
    }
    return DG_STATUS_OK;
}

/* ------------------------------------------------------------------------- */
/* tanh                                                                       */
/* ------------------------------------------------------------------------- */

/* out, inp are (n). tanhf saturates to +-1 for large |x| without overflow. */
dg_status dg_tanh_forward(float *out, const float *inp, size_t n) {
    if (out == NULL || inp == NULL) return DG_STATUS_ERR_NULL;
    for (size_t i = 0; i < n; i++) out[i] = tanhf(inp[i]);
    return DG_STATUS_OK;
}

/* dinp, dout, out are (n); out is the forward's OUTPUT y = tanh(x). */
dg_status dg_tanh_backward(float *dinp, const float *dout, const float *out, size_t n) {
    if (dout == NULL || out == NULL) return DG_STATUS_ERR_NULL;
    if (dinp == NULL) return DG_STATUS_OK;
    for (size_t i = 0; i < n; i++) {
        /* forward: out[i] = tanhf(inp[i]);  d tanh/dx = 1 - y^2 (torch: dy * (1 - y * y)) */
        float y = out[i];
        dinp[i] += dout[i] * (1.0f - y * y);
    }
    return DG_STATUS_OK;
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
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        if (x >= 0.0f) {
            out[i] = 1.0f / (1.0f + expf(-x));
        } else {
            float e = expf(x);
            out[i] = e / (1.0f + e);
        }
    }
    return DG_STATUS_OK;
}

/* dinp, dout, out are (n); out is the forward's OUTPUT y = sigmoid(x). */
dg_status dg_sigmoid_backward(float *dinp, const float *dout, const float *out, size_t n) {
    if (dout == NULL || out == NULL) return DG_STATUS_ERR_NULL;
    if (dinp == NULL) return DG_STATUS_OK;
    for (size_t i = 0; i < n; i++) {
        /* forward: out[i] = 1 / (1 + exp(-x));  d sigma/dx = y (1 - y)
         * (torch sigmoid_backward evaluates dy * (1 - y) * y, in that order) */
        float y = out[i];
        dinp[i] += dout[i] * (1.0f - y) * y;
    }
    return DG_STATUS_OK;
}
