/*
 * dg_adam.c -- the optimiser step and the weight average, over flat buffers.
 *
 * Parameters, gradients and the two Adam moments of one network are each one
 * flat float32 array of n values (DESIGN.md "Layers of the system"), so one
 * call updates a whole network.
 *
 * dg_adam_step follows torch.optim.AdamW's single-tensor path
 * (torch/optim/adam.py `_single_tensor_adam`, decoupled_weight_decay=True):
 *   https://pytorch.org/docs/stable/generated/torch.optim.AdamW.html
 *   Kingma & Ba 2015, https://arxiv.org/abs/1412.6980 (Adam)
 *   Loshchilov & Hutter 2019, https://arxiv.org/abs/1711.05101 (decoupled decay)
 * Scalars are prepared once per step in double, as Python does for torch, and
 * rounded to float where torch rounds them (a Python float meeting a float32
 * tensor is cast to float32); the element loop then runs in float like torch's
 * float32 kernels. The bias corrections 1 - beta^step are computed ONCE per
 * call, outside the loop (llm.c calls powf per element).
 * Not bitwise equal to torch: its CPU kernels may use fused multiply-adds
 * (lerp_ for m, addcmul_ for v) and its betas are doubles where ours are
 * float; the differences are a few float ulps per step.
 *
 * n = number of elements.
 */
#include <math.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "distgan.h"
#include "dg_internal.h"

/* Elements per task at least before an update is split over the thread pool
 * (contiguous runs, bounds multiples of 16: each element is updated the same
 * way whatever the thread count). */
#define DG_ADAM_GRAIN 32768.0

typedef struct {
    float *param, *m, *v;
    const float *grad;
    size_t n;
    int decay;
    float decay_factor, beta1f, beta2f, one_minus_beta1, one_minus_beta2;
    float step_size, sqrt_bc2, epsf;
} adam_job;

static void adam_task(void *ctx, int t, int nt) {
    const adam_job *j = (const adam_job *)ctx;
    size_t lo, hi;
    dg_split(j->n, 16, t, nt, &lo, &hi);
    float *param = j->param, *m = j->m, *v = j->v;
    const float *grad = j->grad;
    const int decay = j->decay;
    const float decay_factor = j->decay_factor, beta1f = j->beta1f, beta2f = j->beta2f;
    const float one_minus_beta1 = j->one_minus_beta1, one_minus_beta2 = j->one_minus_beta2;
    const float step_size = j->step_size, sqrt_bc2 = j->sqrt_bc2, epsf = j->epsf;
    size_t i = lo;
#if defined(__SSE2__)
    /* Four at a time with SSE2: the same IEEE operations in the same order as
     * the scalar loop below (sqrtps and divps are correctly rounded like
     * sqrtf and /), so the same bits. GCC keeps the scalar loop scalar:
     * sqrtf may set errno. */
    const __m128 vdf = _mm_set1_ps(decay_factor), vb1 = _mm_set1_ps(beta1f);
    const __m128 vb2 = _mm_set1_ps(beta2f), vo1 = _mm_set1_ps(one_minus_beta1);
    const __m128 vo2 = _mm_set1_ps(one_minus_beta2), vss = _mm_set1_ps(step_size);
    const __m128 vbc = _mm_set1_ps(sqrt_bc2), veps = _mm_set1_ps(epsf);
    for (; i + 4 <= hi; i += 4) {
        __m128 g = _mm_loadu_ps(grad + i);
        __m128 p = _mm_loadu_ps(param + i);
        if (decay) p = _mm_mul_ps(p, vdf);
        __m128 mi = _mm_add_ps(_mm_mul_ps(vb1, _mm_loadu_ps(m + i)), _mm_mul_ps(vo1, g));
        __m128 vi = _mm_add_ps(_mm_mul_ps(vb2, _mm_loadu_ps(v + i)),
                               _mm_mul_ps(_mm_mul_ps(vo2, g), g));
        __m128 denom = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vi), vbc), veps);
        _mm_storeu_ps(param + i, _mm_sub_ps(p, _mm_div_ps(_mm_mul_ps(vss, mi), denom)));
        _mm_storeu_ps(m + i, mi);
        _mm_storeu_ps(v + i, vi);
    }
#endif
    for (; i < hi; i++) {
        float g = grad[i];
        float p = param[i];
        if (decay) p = p * decay_factor;
        /* m = beta1 * m + (1 - beta1) * grad;  v = beta2 * v + (1 - beta2) * grad^2,
         * the product evaluated as ((1 - beta2) * g) * g like torch's addcmul_ */
        float mi = beta1f * m[i] + one_minus_beta1 * g;
        float vi = beta2f * v[i] + one_minus_beta2 * g * g;
        /* denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
         * param.addcdiv_(exp_avg, denom, value=-step_size) */
        float denom = sqrtf(vi) / sqrt_bc2 + epsf;
        param[i] = p - step_size * mi / denom;
        m[i] = mi;
        v[i] = vi;
    }
}

typedef struct {
    float *ema;
    const float *param;
    size_t n;
    float decay, one_minus_decay;
} ema_job;

static void ema_task(void *ctx, int t, int nt) {
    const ema_job *j = (const ema_job *)ctx;
    size_t lo, hi;
    dg_split(j->n, 16, t, nt, &lo, &hi);
    float *ema = j->ema;
    const float *param = j->param;
    const float decay = j->decay, one_minus_decay = j->one_minus_decay;
    for (size_t i = lo; i < hi; i++) {
        ema[i] = decay * ema[i] + one_minus_decay * param[i];
    }
}

/* param, m, v, grad are (n); param, m, v are updated in place.
 * eps = 0 is accepted, as torch does; an element with m = v = 0 then becomes
 * 0/0 = NaN, also as in torch. */
dg_status dg_adam_step(float *param, float *m, float *v, const float *grad,
                       size_t n, long step, double lr, double beta1, double beta2,
                       double eps, double weight_decay) {
    if (param == NULL || m == NULL || v == NULL || grad == NULL) return DG_STATUS_ERR_NULL;
    /* Written as !(ok) so that NaN scalars are rejected too. */
    if (step < 1) return DG_STATUS_ERR_VALUE;
    if (!(lr >= 0.0) || !isfinite(lr)) return DG_STATUS_ERR_VALUE;
    if (!(beta1 >= 0.0 && beta1 < 1.0)) return DG_STATUS_ERR_VALUE;
    if (!(beta2 >= 0.0 && beta2 < 1.0)) return DG_STATUS_ERR_VALUE;
    if (!(eps >= 0.0) || !isfinite(eps)) return DG_STATUS_ERR_VALUE;
    if (!(weight_decay >= 0.0) || !isfinite(weight_decay)) return DG_STATUS_ERR_VALUE;

    /* Per-step scalars, in double as in Python:
     *   bias_correction1 = 1 - beta1 ** step;  bias_correction2 = 1 - beta2 ** step
     *   step_size = lr / bias_correction1;     bias_correction2_sqrt = bias_correction2 ** 0.5
     * beta < 1 and step >= 1 make both corrections > 0 (for beta = 0 they are 1). */
    double bias_correction1 = 1.0 - pow(beta1, (double)step);
    double bias_correction2 = 1.0 - pow(beta2, (double)step);
    float step_size = (float)(lr / bias_correction1);
    float sqrt_bc2 = (float)sqrt(bias_correction2);
    /* torch casts each Python-double scalar to float where it meets a float32
     * tensor: beta itself, and 1 - beta computed in double */
    float beta1f = (float)beta1, beta2f = (float)beta2, epsf = (float)eps;
    float one_minus_beta1 = (float)(1.0 - beta1);
    float one_minus_beta2 = (float)(1.0 - beta2);
    /* param.mul_(1 - lr * weight_decay), skipped by torch when weight_decay == 0 */
    int decay = weight_decay != 0.0;
    float decay_factor = (float)(1.0 - lr * weight_decay);

    adam_job j = {param, m, v, grad, n, decay, decay_factor, beta1f, beta2f,
                  one_minus_beta1, one_minus_beta2, step_size, sqrt_bc2, epsf};
    dg_parallel(adam_task, &j, dg_threads_for((double)n, DG_ADAM_GRAIN));
    return DG_STATUS_OK;
}

/* ema, param are (n); ema is updated in place:
 *   ema = decay * ema + (1 - decay) * param
 * (the EMA generator of Yazici et al. 2019, https://arxiv.org/abs/1806.04498). */
dg_status dg_ema_update(float *ema, const float *param, size_t n, float decay) {
    if (ema == NULL || param == NULL) return DG_STATUS_ERR_NULL;
    if (!(decay >= 0.0f && decay <= 1.0f)) return DG_STATUS_ERR_VALUE;
    float one_minus_decay = (float)(1.0 - (double)decay);
    ema_job j = {ema, param, n, decay, one_minus_decay};
    dg_parallel(ema_task, &j, dg_threads_for((double)n, DG_ADAM_GRAIN));
    return DG_STATUS_OK;
}
