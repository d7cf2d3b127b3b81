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

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

/* act_task built for AVX2 (dg_internal.h): the same values */
DG_AVX2_TASK(act_task)

static dg_status act_run(int kind, float *out, const float *a, const float *b,
                         float slope, size_t n) {
    act_job j = {kind, out, a, b, slope, n};
    /* tanh and the sigmoid call expm1f/expf: ~20x the cost of a ReLU element */
    double per = kind == A_TANH_F || kind == A_SIG_F ? 16.0 : 1.0;
    dg_parallel(DG_FOR_CPU(act_task), &j, dg_threads_for(per * (double)n, DG_ACT_GRAIN));
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

/* out, inp are (n). Saturates to +-1 for large |x| without overflow; NaN in,
 * NaN out. */
dg_status dg_tanh_forward(float *out, const float *inp, size_t n) {
    if (out == NULL || inp == NULL) return DG_STATUS_ERR_NULL;
    return act_run(A_TANH_F, out, inp, NULL, 0.0f, n);
}

/* tanh as in Cephes' tanhf (Moshier, Cephes Math Library, tanhf.c and
 * expf.c), on |x| with the sign of x put back: |x| < 0.625: |x| + |x|^3 P(x^2)
 * with the minimax P of degree 4; else 1 - 2 / (exp(2|x|) + 1), exp by range
 * reduction to [-ln2/2, ln2/2] and a degree-6 polynomial; |x| is capped at 10
 * (tanh = 1 in float from 9.01 on). Peak error 1.3 ulp against float64 tanh
 * over 2^21 inputs, as libm's tanhf (tests/test_threads_core.py). Four lanes
 * at a time with SSE2, 5x faster than libm's tanhf here (1.28 ms -> 0.23 ms
 * for 50,176 floats), which was the second most expensive op of sampling a
 * batch from a small generator; sixteen with AVX-512 (tanh16, the same bits),
 * 2.5x faster again. Every element takes the same operations in
 * the same order whatever its position, so a split over threads changes no
 * bit (the tail goes through a padded vector). */
#define TANH_SMALL 0.625f
#define TANH_CAP 10.0f
#define TANH_P0 -5.70498872745E-3f
#define TANH_P1 2.06390887954E-2f
#define TANH_P2 -5.37397155531E-2f
#define TANH_P3 1.33314422036E-1f
#define TANH_P4 -3.33332819422E-1f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_C1 0.693359375f
#define EXP_C2 -2.12194440E-4f
#define EXP_Q0 1.9875691500E-4f
#define EXP_Q1 1.3981999507E-3f
#define EXP_Q2 8.3334519073E-3f
#define EXP_Q3 4.1665795894E-2f
#define EXP_Q4 1.6666665459E-1f
#define EXP_Q5 5.0000001201E-1f

#if defined(__SSE2__)
/* tanh's two branches on the lanes of ax = |x|, written once for both widths
 * so that tanh4 and tanh16 take the same operations (the same bits): P is the
 * intrinsics' prefix (_mm: 4 lanes, _mm512: 16), VT and VI its float and integer
 * vector types, CASTI its integer-to-float cast. small = |x| + |x|^3 P(x^2);
 * large = 1 - 2 / (e + 1), e = exp(2 min(|x|, cap)). */
#define TANH_BRANCHES(P, VT, VI, CASTI, ax, small, large)                               \
    do {                                                                                \
        VT z_ = P##_mul_ps(ax, ax);                                                     \
        VT p_ = P##_add_ps(P##_mul_ps(P##_set1_ps(TANH_P0), z_), P##_set1_ps(TANH_P1)); \
        p_ = P##_add_ps(P##_mul_ps(p_, z_), P##_set1_ps(TANH_P2));                      \
        p_ = P##_add_ps(P##_mul_ps(p_, z_), P##_set1_ps(TANH_P3));                      \
        p_ = P##_add_ps(P##_mul_ps(p_, z_), P##_set1_ps(TANH_P4));                      \
        small = P##_add_ps(P##_mul_ps(P##_mul_ps(p_, z_), ax), ax);                     \
        VT y_ = P##_min_ps(P##_add_ps(ax, ax), P##_set1_ps(2.0f * TANH_CAP));           \
        VI k_ = P##_cvttps_epi32(P##_add_ps(P##_mul_ps(y_, P##_set1_ps(EXP_LOG2E)),     \
                                            P##_set1_ps(0.5f)));   /* floor: y >= 0 */ \
        VT kf_ = P##_cvtepi32_ps(k_);                                                   \
        VT r_ = P##_sub_ps(y_, P##_mul_ps(kf_, P##_set1_ps(EXP_C1)));                   \
        r_ = P##_sub_ps(r_, P##_mul_ps(kf_, P##_set1_ps(EXP_C2)));                      \
        VT r2_ = P##_mul_ps(r_, r_);                                                    \
        VT q_ = P##_add_ps(P##_mul_ps(P##_set1_ps(EXP_Q0), r_), P##_set1_ps(EXP_Q1));   \
        q_ = P##_add_ps(P##_mul_ps(q_, r_), P##_set1_ps(EXP_Q2));                       \
        q_ = P##_add_ps(P##_mul_ps(q_, r_), P##_set1_ps(EXP_Q3));                       \
        q_ = P##_add_ps(P##_mul_ps(q_, r_), P##_set1_ps(EXP_Q4));                       \
        q_ = P##_add_ps(P##_mul_ps(q_, r_), P##_set1_ps(EXP_Q5));                       \
        q_ = P##_add_ps(P##_add_ps(P##_mul_ps(q_, r2_), r_), P##_set1_ps(1.0f));        \
        VT e_ = P##_mul_ps(                                                             \
            q_, CASTI(P##_slli_epi32(P##_add_epi32(k_, P##_set1_epi32(127)), 23)));     \
        VT one_ = P##_set1_ps(1.0f);                                                    \
        large = P##_sub_ps(one_, P##_div_ps(P##_set1_ps(2.0f), P##_add_ps(e_, one_)));  \
    } while (0)

static __m128 tanh4(__m128 x) {
    const __m128 absmask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    __m128 ax = _mm_and_ps(x, absmask), sign = _mm_andnot_ps(absmask, x);
    /* the sign goes back on at the end, which keeps tanh(-0) = -0 */
    __m128 small, large;
    TANH_BRANCHES(_mm, __m128, __m128i, _mm_castsi128_ps, ax, small, large);
    __m128 use_small = _mm_cmplt_ps(ax, _mm_set1_ps(TANH_SMALL));
    __m128 t = _mm_or_ps(_mm_and_ps(use_small, small), _mm_andnot_ps(use_small, large));
    t = _mm_or_ps(t, sign);
    __m128 nan = _mm_cmpunord_ps(x, x);
    return _mm_or_ps(_mm_and_ps(nan, x), _mm_andnot_ps(nan, t));
}

#if DG_HAVE_AVX2
/* tanh4 on 16 lanes (the same bits: each lane takes the same IEEE operations,
 * TANH_BRANCHES, and ISO C mode contracts no multiply-add into an FMA); the
 * tail through a zero-padded vector, as tanh4's. Through _core._tanh_forward on
 * Emerald Rapids: 2.69 -> 1.28 us for the 784 floats of a sampled 28x28 image
 * (the call included), 77 -> 30 us for 50,176. */
DG_AVX512 static __m512 tanh16(__m512 x) {
    /* the float bit operations as integer ones (AVX512F has no and_ps) */
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff), xi = _mm512_castps_si512(x);
    __m512 ax = _mm512_castsi512_ps(_mm512_and_si512(xi, absmask));
    __m512i sign = _mm512_andnot_si512(absmask, xi);
    __m512 small, large;
    TANH_BRANCHES(_mm512, __m512, __m512i, _mm512_castsi512_ps, ax, small, large);
    __m512 t = _mm512_mask_mov_ps(large, _mm512_cmp_ps_mask(ax, _mm512_set1_ps(TANH_SMALL),
                                                            _CMP_LT_OS), small);
    t = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), sign));
    return _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

DG_AVX512 static void tanh_forward_k16(float *out, const float *inp, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, tanh16(_mm512_loadu_ps(inp + i)));
    if (i < n) {
        __mmask16 m = dg_lanes((int)(n - i));
        _mm512_mask_storeu_ps(out + i, m, tanh16(_mm512_maskz_loadu_ps(m, inp + i)));
    }
}
#endif

static void tanh_forward_k(float *out, const float *inp, size_t n) {
    size_t i = 0;
#if DG_HAVE_AVX2
    if (dg_avx512()) {
        tanh_forward_k16(out, inp, n);
        return;
    }
#endif
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(out + i, tanh4(_mm_loadu_ps(inp + i)));
    if (i < n) {
        float buf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        memcpy(buf, inp + i, (n - i) * sizeof(float));
        _mm_storeu_ps(buf, tanh4(_mm_loadu_ps(buf)));
        memcpy(out + i, buf, (n - i) * sizeof(float));
    }
}
#else
/* the same operations, one element at a time */
static float tanh1(float x) {
    if (x != x) return x;
    float ax = fabsf(x);
    if (ax < TANH_SMALL) {
        float z = ax * ax;
        float p = ((((TANH_P0 * z + TANH_P1) * z + TANH_P2) * z + TANH_P3) * z + TANH_P4);
        return copysignf(p * z * ax + ax, x);
    }
    float y = fminf(ax + ax, 2.0f * TANH_CAP);
    float kf = (float)(int)(y * EXP_LOG2E + 0.5f);
    float r = (y - kf * EXP_C1) - kf * EXP_C2, r2 = r * r;
    float q = ((((EXP_Q0 * r + EXP_Q1) * r + EXP_Q2) * r + EXP_Q3) * r + EXP_Q4) * r + EXP_Q5;
    float e = ldexpf((q * r2 + r) + 1.0f, (int)kf);
    return copysignf(1.0f - 2.0f / (e + 1.0f), x);
}

static void tanh_forward_k(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = tanh1(inp[i]);
}
#endif

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
