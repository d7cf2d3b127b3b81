/*
 * dg_internal.h -- private declarations shared between the C core's own files
 * and its C tests. Not part of the public API (that is distgan.h): nothing here
 * is exported to Python, and it may change without notice.
 */
#ifndef DG_INTERNAL_H
#define DG_INTERNAL_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "distgan.h"

/* One Philox4x32-10 block (Salmon et al. 2011, "Parallel random numbers: as
 * easy as 1, 2, 3", SC'11; the reference implementation is Random123's
 * philox4x32_R with R = 10). Defined in dg_rng.c, exposed so that the tests can
 * check it against Random123's known-answer vectors.
 * out is (4), ctr is (4), key is (2); out may alias ctr. */
void dg_philox4x32_10(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]);

/* Box-Muller's log (x in (0, 1], normal) and cos (x in [0, 2 pi)), the core's
 * own (dg_rng.c), exposed so that the tests can check them against libm's. */
double dg_bm_log(double x);
double dg_bm_cos(double x);
/* The two on n (a multiple of 8) inputs, 8 lanes at a time on an AVX-512 CPU */
void dg_bm_log8_cos8(double *lg, double *cs, const double *u1, const double *x, size_t n);

/* A ReLU or LeakyReLU fused after an op (DG_ACT_RELU, DG_ACT_LEAKY_RELU with
 * slope >= 0): its value at v, and its input gradient for dout dy given its
 * OUTPUT y, exactly as dg_act.c computes them from its input (y > 0 exactly when
 * its input is, as the slope is >= 0; ReLU's NaN passes both ways). */
static inline float dg_act_value(float v, int act, float slope) {
    if (act == DG_ACT_RELU) return v < 0.0f ? 0.0f : v;
    return v > 0.0f ? v : v * slope;
}

static inline float dg_act_grad(float dy, float y, int act, float slope) {
    if (act == DG_ACT_RELU) return y <= 0.0f ? 0.0f : dy;
    float ds = dy * slope;
    return y > 0.0f ? dy : ds;
}

/* 1 unless act and slope are those of a fused activation: DG_ACT_NONE,
 * DG_ACT_RELU, or DG_ACT_LEAKY_RELU with slope >= 0 (so that its output's sign
 * is its input's). */
static inline int dg_bad_act(int act, float slope) {
    if (act == DG_ACT_NONE || act == DG_ACT_RELU) return 0;
    return act != DG_ACT_LEAKY_RELU || slope < 0.0f;
}

/* 1 unless eps is a batch norm's epsilon: finite and > 0. */
static inline int dg_bad_eps(float eps) { return !(eps > 0.0f) || eps > FLT_MAX; }

/* An eval-mode batch norm's scale before gamma: 1 / sqrt(var + eps) in double,
 * rounded to float (dg_batchnorm_act_forward_eval's, to the bit). */
static inline float dg_bn_eval_rstd(float var, float eps) {
    return (float)(1.0 / sqrt((double)var + (double)eps));
}

/* An eval-mode batch norm over channels and its activation, as
 * dg_batchnorm_act_forward_eval takes them: running mean and variance, gamma and
 * beta (each may be NULL), eps, act and slope. */
typedef struct {
    const float *mean, *var, *gamma, *beta;
    float eps;
    int act;
    float slope;
} dg_bn_eval;

/* ------------------------------------------------------------------------- */
/* The thread pool (dg_thread.c)                                              */
/* ------------------------------------------------------------------------- */

/* One task of a parallel region: the work of task t of nt. What it computes
 * must depend on (t, nt) only (never on timing), and tasks of one region must
 * write disjoint memory; the one exception (dg_conv_direct.c's image tasks,
 * which claim images from a counter in their job) is in dg_thread.c. */
typedef void (*dg_task_fn)(void *ctx, int t, int nt);

/* Runs fn(ctx, t, nt) for every t in [0, nt), concurrently on the pool when it
 * can, else one after the other on the calling thread (same results). */
void dg_parallel(dg_task_fn fn, void *ctx, int nt);
/* Tasks worth running for `work` units when a task should do at least `grain`
 * units: 1, fewer than the pool size for little work, else a multiple of the
 * pool size (at most 4 per thread). Depends on the pool size, never on timing.
 * Inside a task of a region of several tasks it is 1: a region started there
 * would run serially anyway, and one task avoids the per-task overhead (the
 * repacking of a split GEMM). Which values a task computes then does not change:
 * the ops split by nt compute each value the same way whatever nt. */
int dg_threads_for(double work, double grain);
/* One round of a task's wait for another task of its region (a flag the other
 * sets): a pause for the first 4096 rounds, then the CPU given up, as the pool's
 * own waits do (the tests run more threads than CPUs). */
void dg_relax(int spins);
/* [*lo, *hi) = task t's share of [0, n) in nt near-equal parts whose bounds
 * are multiples of align (except n itself). */
void dg_split(size_t n, size_t align, int t, int nt, size_t *lo, size_t *hi);
/* Size of the pool (the calling thread included); dg_set_num_threads (dg_gemm.c)
 * is the public entry, which also keeps the BLAS at one thread. dg_threads_get
 * (and so dg_threads_for) first runs dg_threads_init, so that every caller, the
 * first of a process included, sees the size the pool starts with. */
void dg_threads_set(int n);
int dg_threads_get(void);
/* Once per process (dg_gemm.c): the pool takes the thread count OpenBLAS chose
 * at load (OPENBLAS_NUM_THREADS, else the cores), and OpenBLAS drops to one. */
void dg_threads_init(void);

/* ------------------------------------------------------------------------- */
/* AVX2 paths                                                                 */
/* ------------------------------------------------------------------------- */

/* The core is built for baseline x86-64. Some loops also have an AVX2 build:
 * the im2col/col2im of 4x4, stride-2, padding-1 convolutions (dg_conv.c, code
 * of their own), and batch norm and the activations (the same C compiled a
 * second time for AVX2, through DG_AVX2_TASK). They run when
 * dg_avx2() is 1: the CPU has AVX2 and dg_set_simd has not turned them off.
 * They give the same bits as the baseline loops, which the C test checks by
 * running both. dg_set_simd is for the tests, between calls (not thread-safe). */
void dg_set_simd(int on);
int dg_avx2(void);
/* 1 when dg_avx2() is and the CPU has FMA as well (every AVX2 CPU made so far):
 * the col^T product of dg_conv.c's few-column transposed convolution, whose
 * values are not the baseline build's (so dg_set_simd(0) turns it off too). */
int dg_avx2_fma(void);
/* 1 when dg_conv_transpose2d_forward takes colt_sparse (dg_conv.c) for these sizes:
 * the whole batch at most 64 input pixels, OC*KH*KW a multiple of 64, no kernel
 * before it in line, and dg_avx2_fma(). */
int dg_colt_sparse_fits(int N, int C, int H, int W, int OC, int KH, int KW, int SH, int SW,
                        int PH, int PW, int OH, int OW);
/* 1 when the CPU has AVX-512F (and BMI1, which every such CPU has) and dg_set_simd
 * has not turned the SIMD paths off: the direct convolution kernel
 * (dg_conv_direct.c) may run. Unlike the AVX2 builds above, it does not give the
 * bits of the path it replaces (it uses FMA, as OpenBLAS does); its C test checks
 * it against the naive loops, across thread counts bit for bit, and within
 * rounding of the GEMM path. */
int dg_avx512(void);
/* 1 when dg_avx512() and the CPU is one on which the few-image kernel sums only
 * the nonzero inputs (dg_gemm.c, dg_conv_direct.c). */
int dg_few_sparse_cpu(void);
/* 1 on an AMD CPU with the SIMD paths on (dg_gemm.c). */
int dg_cpu_amd(void);
/* 1 with dg_avx512() on Sapphire, Emerald or Granite Rapids and their successors
 * (AVX512-FP16, or the model numbers below; dg_gemm.c). */
int dg_cpu_golden_cove_server(void);
/* The model number of an Intel CPU of family 6 with the SIMD paths on, else 0
 * (dg_gemm.c); the server parts of Golden Cove and its successor: */
unsigned dg_cpu_intel_model(void);
#define DG_INTEL_SAPPHIRE_RAPIDS 0x8fu
#define DG_INTEL_EMERALD_RAPIDS 0xcfu
#define DG_INTEL_GRANITE_RAPIDS_X 0xadu
#define DG_INTEL_GRANITE_RAPIDS_D 0xaeu
/* The order of the one-image linear kernel's sums (dg_dense.c, one_rows_sum): 0
 * a vector of every row in turn, 1 each row's weights in turn, 2 the same from
 * whole 64-byte lines where the rows' width allows (linear_one_lines), else the
 * CPU's (2 on Sapphire and Emerald Rapids, 1 where dg_cpu_amd); returns the one
 * in effect before. All give the same bits; for tests, between calls. */
int dg_linear_one_order(int order);

/* ------------------------------------------------------------------------- */
/* Direct convolution kernel (dg_conv_direct.c)                               */
/* ------------------------------------------------------------------------- */

/* 1 when dg_direct_conv takes this conv2d geometry on this CPU, with a
 * workspace of ws_floats floats (whatever the thread count). */
int dg_direct_fits(int N, int C, int H, int W, int OC, int KH, int KW, int SH, int SW,
                   int PH, int PW, int OH, int OW, size_t ws_floats);
/* out (N, OC, H/2, W/2) = conv2d(inp (N, C, H, W), weight (OC, C, 4, 4), stride 2,
 * padding 1) + bias (or NULL), or out += conv2d(...) when add (bias unused), with
 * the workspace ws of ws_floats floats that dg_direct_fits accepted. */
dg_status dg_direct_conv(float *out, int add, float *ws, size_t ws_floats, const float *inp,
                         const float *weight, const float *bias, int N, int C, int H,
                         int W, int OC);
/* 1 when dg_direct_convt takes this conv_transpose2d geometry, (N, C, H, W) ->
 * (N, OC, OH, OW), on this CPU, with a workspace of ws_floats floats. */
int dg_direct_t_fits(int N, int C, int H, int W, int OC, int KH, int KW, int SH, int SW,
                     int PH, int PW, int OH, int OW, size_t ws_floats);
/* out (N, OC, 2H, 2W) = conv_transpose2d(inp (N, C, H, W), weight (C, OC, 4, 4),
 * stride 2, padding 1) + bias (or NULL), or out += it when add (bias unused),
 * with the workspace that dg_direct_t_fits accepted. */
dg_status dg_direct_convt(float *out, int add, float *ws, size_t ws_floats, const float *inp,
                          const float *weight, const float *bias, int N, int C, int H,
                          int W, int OC);
/* 1 when dg_direct_convt_few takes this conv_transpose2d geometry on this CPU:
 * fewer than 8 images, rows of at most 7 input pixels, OC a multiple of 4, with a
 * workspace of ws_floats floats. */
int dg_direct_tfew_fits(int N, int C, int H, int W, int OC, int KH, int KW, int SH, int SW,
                        int PH, int PW, int OH, int OW, size_t ws_floats);
/* The same as dg_direct_convt, for few images: no packed panels of the whole
 * weights (a block's weights of a chunk of channels are copied to the stack as
 * they are needed), with the workspace that dg_direct_tfew_fits accepted. */
dg_status dg_direct_convt_few(float *out, int add, float *ws, size_t ws_floats,
                              const float *inp, const float *weight, const float *bias, int N,
                              int C, int H, int W, int OC);
/* How many tasks dg_direct_convt_few runs N images of (C, H, W) -> OC channels in. */
int dg_direct_tfew_tasks(int N, int C, int H, int W, int OC);
/* The layers before a transposed convolution that dg_direct_convt_few_head makes
 * its input with, for one image: lin (C*H*W) = lweight (C*H*W, K) @ z (K) + lbias
 * (or NULL), then hid (C*H*W) = bn of lin (over C*H*W features) with its
 * activation. */
typedef struct {
    float *lin, *hid;
    const float *z, *lweight, *lbias;
    int K;
    dg_bn_eval bn;
    const float *scale;   /* bn's scales (dg_batchnorm_eval_scale), else NULL */
} dg_few_head;
/* dg_batchnorm_act_forward_eval of one image of F features (N = 1, C = F, HW = 1)
 * on this thread, each feature's scale read from scale (dg_batchnorm_eval_scale
 * of the running variance and gamma) instead of computed: the same bits. */
void dg_bn_eval_one_scaled(float *out, const float *inp, const float *mean,
                           const float *scale, const float *beta, int F, int act,
                           float slope);
/* dg_direct_convt_few (assigning plus bias) of one image's hid as h makes it, in
 * one task, chunk of DG_FEW_CC input channels by chunk: the next chunk's rows of
 * the linear layer, batch norm and activation are made a piece after each run
 * of blocks of output channels (DG_FEW_HEAD_PIECES runs), each piece's rows of
 * lweight fetched into L2 while its run sums (the first chunk's made first), so
 * that streaming the linear layer's weights overlaps the sums. lin and hid as
 * the layers one by one make them (dg_linear_forward's one-image rows), out as
 * dg_direct_convt_few makes it from hid, or, with a tail (else NULL), that
 * output through the tail's batch norm over OC channels and its activation as it
 * is stored (dg_batchnorm_act_forward_eval's bits). Sizes and arguments checked
 * by the caller (dg_linear_bn_convt_forward); the workspace: what
 * dg_direct_tfew_fits accepted. packed (else NULL): weight as dg_convt_few_pack
 * lays it out, read in place of each block's weights copied per call when its
 * flag says all are finite. */
dg_status dg_direct_convt_few_head(float *out, float *ws, size_t ws_floats,
                                   const dg_few_head *h, const float *weight,
                                   const float *packed, const float *bias, int C, int H,
                                   int W, int OC, const dg_bn_eval *tail);
/* 1 when dg_direct_conv_dweight takes this conv2d geometry on this CPU, with a
 * workspace of ws_floats floats. */
/* 1 when dg_linear_forward of N images of C inputs runs its batched kernel
 * (dg_dense.c: the same bits at any thread count and for any split of the rows). */
int dg_linear_batch_fits(int N, int C);
int dg_direct_dweight_fits(int N, int C, int H, int W, int OC, int KH, int KW, int SH,
                           int SW, int PH, int PW, int OH, int OW, size_t ws_floats);
/* dweight (OC, C, 4, 4) += the weight gradient of that conv2d: dout (N, OC, H/2,
 * W/2) against the 4x4 windows of inp (N, C, H, W), stride 2, padding 1. */
dg_status dg_direct_conv_dweight(float *dweight, float *ws, size_t ws_floats,
                                 const float *dout, const float *inp, int N, int C, int H,
                                 int W, int OC);

/* ------------------------------------------------------------------------- */
/* Kernels for one-channel large maps (dg_conv_thin.c)                        */
/* ------------------------------------------------------------------------- */

/* Workspace floats the dg_thin_* kernels use for this layer at their best (the
 * plans of dg_conv.c size the workspace to hold it), 0 when its shape is not
 * theirs; (H, W) the one-channel large map, (OH, OW) the small one. */
size_t dg_thin_ws(int N, int K, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                  int OH, int OW);
/* 1 when the dg_thin_* kernels take a 4x4, stride-2, padding-1 layer between the
 * one-channel large map (H, W) and the K-channel small map (OH, OW) on this CPU,
 * with a workspace of ws_floats floats (at the current thread count). */
int dg_thin_fits(int K, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                 int OH, int OW, size_t ws_floats);
/* small (N, K, H/2, W/2) = act(conv2d(large (N, 1, H, W), weight (K, 1, 4, 4)) + bias
 * (or NULL)), or small += conv2d(...) when add (bias and act unused); act a
 * DG_ACT_* code and slope as dg_act_value's (DG_ACT_NONE: none). */
dg_status dg_thin_conv(float *small, int add, float *ws, size_t ws_floats,
                       const float *large, const float *weight, const float *bias, int N,
                       int K, int H, int W, int act, float slope);
/* large (N, 1, H, W) = conv_transpose2d(small (N, K, H/2, W/2), weight (K, 1, 4, 4)) +
 * bias (1 float, or NULL), or large += it when add (bias unused). With act (not
 * DG_ACT_NONE), small is the gradient of a fused activation's output y (like
 * small), and the kernel takes it through dg_act_grad first. */
dg_status dg_thin_convt(float *large, int add, const float *small, const float *y, int act,
                        float slope, const float *weight, const float *bias, int N, int K,
                        int H, int W);
/* dweight (K, 1, 4, 4) += sum over n, oh, ow of small[n, k, oh, ow] times the
 * window (kh, kw) of large[n] at (oh, ow); small through dg_act_grad at y first
 * with act, as in dg_thin_convt. dbias (K, or NULL) += the sums of small's
 * channels (through the same gradient), the same bits as dg_conv2d_backward's
 * own bias pass. */
dg_status dg_thin_dweight(float *dweight, float *dbias, float *ws, size_t ws_floats,
                          const float *small, const float *y, int act, float slope,
                          const float *large, int N, int K, int H, int W);

#if defined(__GNUC__) && defined(__x86_64__)
#define DG_HAVE_AVX2 1
/* f_avx2 DG_AVX2_CLONE calling f: f and every function it calls inlined into
 * f_avx2 and compiled for AVX2 (no FMA: a * b + c stays two roundings, as in
 * the baseline build, so the values are the same bits). */
#define DG_AVX2_CLONE __attribute__((target("avx2"), flatten))
/* Defines f_avx2, the task function f (a dg_task_fn) built for AVX2. */
#define DG_AVX2_TASK(f) \
    DG_AVX2_CLONE static void f##_avx2(void *ctx, int t, int nt) { f(ctx, t, nt); }
/* f_avx2 when dg_avx2() says so, else f */
#define DG_FOR_CPU(f) (dg_avx2() ? f##_avx2 : f)
/* A function built for AVX-512F and BMI1, called only when dg_avx512() is 1. */
#define DG_AVX512 __attribute__((target("avx512f,bmi")))
#include <immintrin.h>
/* The mask of the first n of 16 lanes (none for n <= 0, all for n >= 16): a row's
 * pixels, or the tail of a run of floats, in one zmm. */
static inline __mmask16 dg_lanes(int n) {
    return n <= 0 ? 0 : n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
}
/* dg_act_value of 16 floats (act DG_ACT_NONE: v itself), for AVX-512 callers */
__attribute__((always_inline, target("avx512f"))) static inline __m512
dg_act16(__m512 v, int act, float slope) {
    const __m512 zero = _mm512_setzero_ps();
    if (act == DG_ACT_RELU)   /* v < 0 ? 0 : v */
        return _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
    if (act == DG_ACT_LEAKY_RELU)   /* v > 0 ? v : v * slope */
        return _mm512_mask_mov_ps(_mm512_mul_ps(v, _mm512_set1_ps(slope)),
                                  _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ), v);
    return v;
}
#else
#define DG_HAVE_AVX2 0
#define DG_AVX2_TASK(f)
#define DG_FOR_CPU(f) (f)
#endif

#endif /* DG_INTERNAL_H */
