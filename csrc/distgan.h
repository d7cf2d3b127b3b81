/*
 * distgan.h -- the public C API of the distgan core.
 *
 * A plain C library (no Python) holding the forward/backward kernels of every
 * layer a GAN needs, the losses, the distillation losses, Adam, EMA and a
 * counter-based RNG. Python reaches it through csrc/dg_module.c, the only file
 * that includes Python.h.
 *
 * Contract (see ../shared/STYLE.md):
 *  - argument order: outputs, then backward caches, then inputs, then sizes;
 *  - forward ASSIGNS its outputs; backward ACCUMULATES (+=) into gradients, the
 *    caller zeroes them once per step; a NULL gradient pointer means "not needed";
 *  - ops are pure: no malloc, no I/O, no globals touched; scratch memory is a
 *    caller-provided `workspace` of dg_*_workspace_size() floats. The one piece
 *    of process-wide state is the thread pool the ops run their large loops on
 *    (dg_thread.c, sized by dg_set_num_threads): infrastructure, started lazily
 *    and joined at exit; results depend on the thread count only;
 *  - every op returns a dg_status after cheap argument checks; none prints,
 *    asserts or exits;
 *  - all tensors are dense, C-contiguous float32 in PyTorch's layouts:
 *    activations NCHW, linear weight (OUT, IN), conv weight (OC, C, KH, KW),
 *    conv-transpose weight (C, OC, KH, KW).
 *
 * Dimension letters used throughout:
 *   N  = batch size           C  = input channels / features
 *   H, W = input height/width OC = output channels / features
 *   OH, OW = output height/width
 *   KH, KW = kernel size      SH, SW = stride      PH, PW = padding
 *   HW = spatial size H*W (1 for a flat (N, C) batch)
 *   K  = number of classes (losses)  D = embedding dimension
 */
#ifndef DISTGAN_H
#define DISTGAN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    DG_STATUS_OK = 0,
    DG_STATUS_ERR_SHAPE = 1,   /* a size is < 0, inconsistent, or overflows (an empty batch, N = 0, is valid) */
    DG_STATUS_ERR_VALUE = 2,   /* a scalar is out of range (eps <= 0, T <= 0, label out of range ...) */
    DG_STATUS_ERR_NOMEM = 3,   /* an allocation in an init function failed */
    DG_STATUS_ERR_NULL = 4     /* a required pointer is NULL */
} dg_status;

/* Conventions: a NULL required pointer is DG_STATUS_ERR_NULL even when n = 0;
 * losses over zero elements are 0 and their backward does nothing. */

/* Human-readable name of a status ("ok", "shape error", ...). Never NULL. */
const char *dg_status_str(dg_status s);

/* ------------------------------------------------------------------------- */
/* GEMM (dg_gemm.c)                                                           */
/* ------------------------------------------------------------------------- */

/* Row-major C = alpha * op(A) @ op(B) + beta * C, op(X) = X or X^T.
 * op(A) is (M, K), op(B) is (K, N), C is (M, N); lda/ldb/ldc are row strides.
 * Calls cblas_sgemm of OpenBLAS when built with it, else dg_sgemm_ref. */
dg_status dg_sgemm(int transA, int transB, int M, int N, int K, float alpha,
                   const float *A, int lda, const float *B, int ldb, float beta,
                   float *C, int ldc);
/* The plain-loop reference GEMM (same contract); tests compare against it. */
dg_status dg_sgemm_ref(int transA, int transB, int M, int N, int K, float alpha,
                       const float *A, int lda, const float *B, int ldb,
                       float beta, float *C, int ldc);
/* Name of the BLAS in use: "scipy-openblas", "openblas" or "reference". */
const char *dg_blas_name(void);
/* Threads of the core's pool (dg_thread.c), the calling thread included; n < 1
 * is ignored. Every op runs its large loops and GEMMs on that pool; the BLAS
 * itself is kept at ONE thread (its own pool would fight ours). Results depend
 * on the thread count only, never on timing. The default is the thread count
 * OpenBLAS chose when it was loaded (OPENBLAS_NUM_THREADS, else the number of
 * cores), 1 without a BLAS. */
void dg_set_num_threads(int n);
int dg_get_num_threads(void);
/* The share of nonzero inputs up to which the few-image transposed kernel (one
 * to seven images on AVX-512 CPUs) sums only the nonzero inputs: 0.55 on CPUs
 * with AVX512-FP16 (Sapphire Rapids and later) and AMD's with AVX-512 (Zen 4),
 * where that pays, else 0. Sets it when 0 <= share <= 1 (0: never, 1: always),
 * goes back to the CPU's when share < 0, only asks when share is NaN; returns the
 * one before. For tests and benchmarks, between calls (not thread-safe): both sums
 * give the same bits. */
double dg_few_sparse_share(double share);
/* How those sparse sums broadcast each nonzero input: 0 a load each, 1 four
 * loaded together and broadcast from a register, else the CPU's (1 on AMD's);
 * returns the one in effect before. For tests and benchmarks, between calls:
 * both give the same bits. */
int dg_few_sparse_values(int reg);
/* cblas_sgemm of the BLAS with ITS OWN pool at `threads` threads (then set back
 * to one): the machine's reference GEMM rate, for benchmarks only. Same
 * contract as dg_sgemm; threads < 1 is DG_STATUS_ERR_VALUE. The reference
 * build calls dg_sgemm_ref. */
dg_status dg_cblas_sgemm_threads(int transA, int transB, int M, int N, int K,
                                 float alpha, const float *A, int lda,
                                 const float *B, int ldb, float beta, float *C,
                                 int ldc, int threads);

/* ------------------------------------------------------------------------- */
/* Linear (dg_dense.c)                                                        */
/* ------------------------------------------------------------------------- */

/* out = inp @ weight^T + bias.
 * out is (N, OC), inp is (N, C), weight is (OC, C), bias is (OC) or NULL. */
dg_status dg_linear_forward(float *out, const float *inp, const float *weight,
                            const float *bias, int N, int C, int OC);
/* dinp += dout @ weight; dweight += dout^T @ inp; dbias += sum_n dout.
 * Any of dinp/dweight/dbias may be NULL. dout is (N, OC). */
dg_status dg_linear_backward(float *dinp, float *dweight, float *dbias,
                             const float *dout, const float *inp,
                             const float *weight, int N, int C, int OC);

/* ------------------------------------------------------------------------- */
/* Convolution and transposed convolution (dg_conv.c), via im2col + sgemm     */
/* ------------------------------------------------------------------------- */

/* Output size of conv2d along one axis: (H + 2P - K) / S + 1 (floor).
 * Output size of conv_transpose2d: (H - 1) * S - 2P + K + output_padding. */

/* Floats of workspace the conv2d forward and backward need (0 for an invalid geometry). */
size_t dg_conv2d_workspace_size(int N, int C, int H, int W, int OC, int KH,
                                int KW, int SH, int SW, int PH, int PW, int OH,
                                int OW);
/* out = conv2d(inp, weight) + bias (cross-correlation, as torch.nn.functional.conv2d).
 * out is (N, OC, OH, OW), inp is (N, C, H, W), weight is (OC, C, KH, KW),
 * bias is (OC) or NULL. OH/OW must equal the conv2d output size. */
dg_status dg_conv2d_forward(float *out, float *workspace, const float *inp,
                            const float *weight, const float *bias, int N,
                            int C, int H, int W, int OC, int KH, int KW, int SH,
                            int SW, int PH, int PW, int OH, int OW);
/* Accumulates dinp (N,C,H,W), dweight (OC,C,KH,KW), dbias (OC); each may be NULL. */
dg_status dg_conv2d_backward(float *dinp, float *dweight, float *dbias,
                             float *workspace, const float *dout,
                             const float *inp, const float *weight, int N,
                             int C, int H, int W, int OC, int KH, int KW,
                             int SH, int SW, int PH, int PW, int OH, int OW);
/* 1 when, on this CPU, both dg_conv2d_forward and dg_conv2d_backward's weight
 * gradient of this geometry run a direct kernel without an im2col matrix (AVX-512,
 * 4x4 stride-2 padding-1 kernels onto small maps): then keeping the matrix
 * (dg_conv2d_forward_keep) would only cost time and memory. 0 otherwise, and for
 * a geometry the ops refuse. */
int dg_conv2d_direct(int N, int C, int H, int W, int OC, int KH, int KW, int SH, int SW,
                     int PH, int PW, int OH, int OW);
/* dg_conv2d_forward that also keeps the im2col matrix of inp in col, a cache of
 * (C*KH*KW, N*OH*OW) floats (column n*OH*OW + p: image n's window at output
 * position p), so that dg_conv2d_backward_kept need not rebuild it for the
 * weight gradient. The same out as dg_conv2d_forward. N*OH*OW must fit an int. */
dg_status dg_conv2d_forward_keep(float *out, float *col, float *workspace,
                                 const float *inp, const float *weight,
                                 const float *bias, int N, int C, int H, int W,
                                 int OC, int KH, int KW, int SH, int SW, int PH,
                                 int PW, int OH, int OW);
/* dg_conv2d_backward with col as dg_conv2d_forward_keep left it for this inp
 * and geometry (the caller's promise; col is only read). The same results. */
dg_status dg_conv2d_backward_kept(float *dinp, float *dweight, float *dbias,
                                  float *workspace, const float *col,
                                  const float *dout, const float *inp,
                                  const float *weight, int N, int C, int H, int W,
                                  int OC, int KH, int KW, int SH, int SW, int PH,
                                  int PW, int OH, int OW);
/* conv2d with a ReLU or LeakyReLU fused after it (act and slope as in
 * dg_batchnorm_act_forward below; DG_ACT_NONE: the plain op): out =
 * act(conv2d(inp, weight) + bias), the same values as dg_conv2d_forward then
 * the activation op, in one pass. The backward takes the fused forward's OUTPUT
 * out, dout being the gradient of that output, and gives the same gradients as
 * the activation's backward then dg_conv2d_backward (up to the sign of zeros),
 * without the intermediate gradient. Fused only where dg_conv2d_act_fits says
 * (one input channel, the kernels of a DCGAN critic's first layer, on an
 * AVX-512 CPU); elsewhere an act other than DG_ACT_NONE is
 * DG_STATUS_ERR_VALUE. */
int dg_conv2d_act_fits(int N, int C, int H, int W, int OC, int KH, int KW, int SH, int SW,
                       int PH, int PW, int OH, int OW);
dg_status dg_conv2d_act_forward(float *out, float *workspace, const float *inp,
                                const float *weight, const float *bias, int N, int C, int H,
                                int W, int OC, int KH, int KW, int SH, int SW, int PH, int PW,
                                int OH, int OW, int act, float slope);
dg_status dg_conv2d_act_backward(float *dinp, float *dweight, float *dbias, float *workspace,
                                 const float *dout, const float *out, const float *inp,
                                 const float *weight, int N, int C, int H, int W, int OC,
                                 int KH, int KW, int SH, int SW, int PH, int PW, int OH,
                                 int OW, int act, float slope);

size_t dg_conv_transpose2d_workspace_size(int N, int C, int H, int W, int OC,
                                          int KH, int KW, int SH, int SW,
                                          int PH, int PW, int OH, int OW);
/* out = conv_transpose2d(inp, weight) + bias (as torch.nn.functional.conv_transpose2d,
 * groups=1, dilation=1). out is (N, OC, OH, OW), inp is (N, C, H, W),
 * weight is (C, OC, KH, KW), bias is (OC) or NULL.
 * OH must be (H-1)*SH - 2*PH + KH + oph with 0 <= oph < max(SH, 1) (output_padding); same for OW. */
dg_status dg_conv_transpose2d_forward(float *out, float *workspace,
                                      const float *inp, const float *weight,
                                      const float *bias, int N, int C, int H,
                                      int W, int OC, int KH, int KW, int SH,
                                      int SW, int PH, int PW, int OH, int OW);
/* A generator's first layers to its first transposed convolution, in eval mode:
 * lin (N, C*H*W) = z (N, K) @ lweight (C*H*W, K)^T + lbias (dg_linear_forward;
 * lbias may be NULL), hid = dg_batchnorm_act_forward_eval(lin) over its C*H*W
 * features with act and slope (gamma and beta may be NULL), then out (N, OC,
 * OH, OW) = dg_conv_transpose2d_forward(hid as (N, C, H, W)) + bias, with that
 * layer's workspace. lin, hid and out come out as those three calls make them.
 * With running_mean2 (else NULL), out is then the eval-mode batch norm over its
 * OC channels that follows (running_mean2, running_var2, gamma2, beta2: (OC),
 * the last two may be NULL; eps2) and its activation (act2, slope2), as
 * dg_batchnorm_act_forward_eval makes it from the transposed convolution's
 * output. Where the few-image transposed kernel runs in one task (sampling one
 * image on one thread), the three go chunk of input channels by chunk, so that
 * streaming the linear layer's weights overlaps the transposed layer's sums, and
 * the second batch norm is applied as the sums are stored. packed (else NULL):
 * weight as dg_convt_few_pack laid it out, which that one-image kernel then reads
 * instead of copying each block's weights per call (the same bits); the caller
 * keeps it current with weight. scale (else NULL): dg_batchnorm_eval_scale of
 * running_var, gamma and eps, which that path reads instead of computing each
 * feature's scale per call (the same bits); the caller keeps it current with them. */
dg_status dg_linear_bn_convt_forward(float *out, float *lin, float *hid, float *workspace,
                                     const float *z, const float *lweight,
                                     const float *lbias, const float *running_mean,
                                     const float *running_var, const float *gamma,
                                     const float *beta, float eps, int act, float slope,
                                     const float *weight, const float *bias, int N, int K,
                                     int C, int H, int W, int OC, int KH, int KW, int SH,
                                     int SW, int PH, int PW, int OH, int OW,
                                     const float *running_mean2, const float *running_var2,
                                     const float *gamma2, const float *beta2, float eps2,
                                     int act2, float slope2, const float *packed,
                                     const float *scale);
/* The floats of dg_convt_few_pack's layout of a (C, OC, 4, 4) weight: C*OC*16
 * weights and a vector of 16 after them, or 0 when C, OC are not positive, OC is
 * not a multiple of 4 or the count overflows. */
size_t dg_convt_few_packed_floats(int C, int OC);
/* packed (dg_convt_few_packed_floats) = weight (C, OC, 4, 4) as the one-image
 * transposed kernel of dg_linear_bn_convt_forward reads it: input channels in
 * chunks of 64 (the last may be shorter, cc channels), in a chunk the blocks of 4
 * output channels in order, in a block cc rows of 64 floats, one per input
 * channel: vector K (16 floats) of a row holds kernel row K of the four channels,
 * channel v's 4 taps at 4v. Then a vector of 16 floats: 1.0 when every weight is
 * finite, else 0.0 (the kernel then copies per call, as without packed). */
dg_status dg_convt_few_pack(float *packed, const float *weight, int C, int OC);
/* Accumulates dinp (N,C,H,W), dweight (C,OC,KH,KW), dbias (OC); each may be NULL. */
dg_status dg_conv_transpose2d_backward(float *dinp, float *dweight,
                                       float *dbias, float *workspace,
                                       const float *dout, const float *inp,
                                       const float *weight, int N, int C,
                                       int H, int W, int OC, int KH, int KW,
                                       int SH, int SW, int PH, int PW, int OH,
                                       int OW);

/* ------------------------------------------------------------------------- */
/* Batch normalisation (dg_batchnorm.c): over (N) for (N,C), over (N,H,W) for */
/* (N,C,H,W); HW = 1 for the flat case.                                       */
/* ------------------------------------------------------------------------- */

/* Training mode: per channel c, mean[c] and rstd[c] = 1/sqrt(var_biased + eps)
 * over N*HW values; out = (inp - mean) * rstd * gamma + beta.
 * out, inp are (N, C, HW); mean, rstd (caches for backward) are (C);
 * gamma, beta are (C) or NULL (meaning 1 and 0).
 * If running_mean/running_var are not NULL they are updated in place as
 * PyTorch does: r = (1 - momentum) * r + momentum * batch_stat, with the
 * UNBIASED variance (N*HW / (N*HW - 1)) in running_var. */
dg_status dg_batchnorm_forward(float *out, float *mean, float *rstd,
                               float *running_mean, float *running_var,
                               const float *inp, const float *gamma,
                               const float *beta, int N, int C, int HW,
                               float eps, float momentum);
/* Eval mode: out = (inp - running_mean) / sqrt(running_var + eps) * gamma + beta. */
dg_status dg_batchnorm_forward_eval(float *out, const float *inp,
                                    const float *running_mean,
                                    const float *running_var,
                                    const float *gamma, const float *beta,
                                    int N, int C, int HW, float eps);
/* Backward of the training-mode forward, using its mean/rstd caches.
 * Accumulates dinp (N,C,HW), dgamma (C), dbeta (C); each may be NULL.
 * gamma may be NULL (meaning 1). */
dg_status dg_batchnorm_backward(float *dinp, float *dgamma, float *dbeta,
                                const float *dout, const float *inp,
                                const float *mean, const float *rstd,
                                const float *gamma, int N, int C, int HW);
/* Backward of the eval-mode forward (statistics are constants). */
dg_status dg_batchnorm_backward_eval(float *dinp, float *dgamma, float *dbeta,
                                     const float *dout, const float *inp,
                                     const float *running_mean,
                                     const float *running_var,
                                     const float *gamma, int N, int C, int HW,
                                     float eps);

/* Batch norm with a ReLU or LeakyReLU fused after it: out = act(batch norm of
 * inp), the same values as dg_batchnorm_forward(_eval) then dg_relu_forward or
 * dg_leaky_relu_forward, in one pass and without the intermediate tensor.
 * act is DG_ACT_NONE (then the plain op), DG_ACT_RELU, or DG_ACT_LEAKY_RELU with
 * slope >= 0 (DG_STATUS_ERR_VALUE otherwise). The backward takes the fused
 * forward's OUTPUT out as its cache (its sign is the activation input's, as the
 * slope is >= 0) and gives the same gradients as the two backward ops in turn
 * (up to the sign of zeros), without the intermediate gradient. */
enum { DG_ACT_NONE = 0, DG_ACT_RELU = 1, DG_ACT_LEAKY_RELU = 2 };
dg_status dg_batchnorm_act_forward(float *out, float *mean, float *rstd,
                                   float *running_mean, float *running_var,
                                   const float *inp, const float *gamma,
                                   const float *beta, int N, int C, int HW,
                                   float eps, float momentum, int act, float slope);
dg_status dg_batchnorm_act_forward_eval(float *out, const float *inp,
                                        const float *running_mean,
                                        const float *running_var,
                                        const float *gamma, const float *beta,
                                        int N, int C, int HW, float eps, int act,
                                        float slope);
/* scale (C) = the factor by which dg_batchnorm_act_forward_eval multiplies each
 * channel's centred input: 1 / sqrt(running_var + eps) in double rounded to float,
 * times gamma (C; NULL: 1), in float; the bits that op computes. */
dg_status dg_batchnorm_eval_scale(float *scale, const float *running_var, const float *gamma,
                                  int C, float eps);
dg_status dg_batchnorm_act_backward(float *dinp, float *dgamma, float *dbeta,
                                    const float *dout, const float *out, const float *inp,
                                    const float *mean, const float *rstd,
                                    const float *gamma, int N, int C, int HW, int act,
                                    float slope);
dg_status dg_batchnorm_act_backward_eval(float *dinp, float *dgamma, float *dbeta,
                                         const float *dout, const float *out,
                                         const float *inp, const float *running_mean,
                                         const float *running_var, const float *gamma,
                                         int N, int C, int HW, float eps, int act,
                                         float slope);

/* ------------------------------------------------------------------------- */
/* Activations (dg_act.c), elementwise over n values. out may alias inp.      */
/* Backward takes the forward's input (relu, leaky_relu) or output (tanh,     */
/* sigmoid) as the cache, as named, and accumulates dinp.                     */
/* ------------------------------------------------------------------------- */

dg_status dg_relu_forward(float *out, const float *inp, size_t n);
dg_status dg_relu_backward(float *dinp, const float *dout, const float *inp, size_t n);
dg_status dg_leaky_relu_forward(float *out, const float *inp, float slope, size_t n);
dg_status dg_leaky_relu_backward(float *dinp, const float *dout, const float *inp,
                                 float slope, size_t n);
dg_status dg_tanh_forward(float *out, const float *inp, size_t n);
dg_status dg_tanh_backward(float *dinp, const float *dout, const float *out, size_t n);
dg_status dg_sigmoid_forward(float *out, const float *inp, size_t n);
dg_status dg_sigmoid_backward(float *dinp, const float *dout, const float *out, size_t n);
/* out[i] = 0 for i < n, on the core's thread pool (zeroing gradient buffers
 * before a backward accumulates into them). */
dg_status dg_zero(float *out, size_t n);

/* ------------------------------------------------------------------------- */
/* Label embedding (dg_embed.c)                                               */
/* ------------------------------------------------------------------------- */

/* out[n, :] = table[labels[n], :]. out is (N, D), table is (K, D), labels (N)
 * with 0 <= label < K (else DG_STATUS_ERR_VALUE, out untouched). */
dg_status dg_embedding_forward(float *out, const int64_t *labels,
                               const float *table, int N, int K, int D);
/* dtable[labels[n], :] += dout[n, :]. */
dg_status dg_embedding_backward(float *dtable, const float *dout,
                                const int64_t *labels, int N, int K, int D);

/* ------------------------------------------------------------------------- */
/* Losses (dg_loss.c). Every loss is a MEAN over its elements (or over the    */
/* batch, where said) written to *loss. Every backward ACCUMULATES            */
/* dloss * d(loss)/d(x) into dx, where dloss is the upstream scalar gradient. */
/* ------------------------------------------------------------------------- */

/* BCE with logits: mean_i [ softplus(x_i) - y_i * x_i ]  (stable form of
 * -y log sigmoid(x) - (1-y) log(1 - sigmoid(x))). x, y are (n).
 * Gradient: (sigmoid(x_i) - y_i) / n. */
dg_status dg_bce_logits_forward(float *loss, const float *x, const float *y, size_t n);
dg_status dg_bce_logits_backward(float *dx, const float *x, const float *y,
                                 float dloss, size_t n);
/* Hinge: mean_i relu(1 - sign * x_i), sign exactly +1 or -1 (else ERR_VALUE).
 * The discriminator form is hinge(real, +1) + hinge(fake, -1). */
dg_status dg_hinge_forward(float *loss, const float *x, float sign, size_t n);
dg_status dg_hinge_backward(float *dx, const float *x, float sign, float dloss, size_t n);
/* Generator hinge form: -mean_i x_i. */
dg_status dg_hinge_gen_forward(float *loss, const float *x, size_t n);
dg_status dg_hinge_gen_backward(float *dx, float dloss, size_t n);
/* Least squares (LSGAN, Mao et al. 2017): 0.5 * mean_i (x_i - target)^2. */
dg_status dg_least_squares_forward(float *loss, const float *x, float target, size_t n);
dg_status dg_least_squares_backward(float *dx, const float *x, float target,
                                    float dloss, size_t n);
/* L1: mean_i |x_i - y_i|. Backward accumulates into dx (+sign/n) and dy
 * (-sign/n), either may be NULL; sign(0) = 0 as in PyTorch. */
dg_status dg_l1_forward(float *loss, const float *x, const float *y, size_t n);
dg_status dg_l1_backward(float *dx, float *dy, const float *x, const float *y,
                         float dloss, size_t n);
/* MSE: mean_i (x_i - y_i)^2. */
dg_status dg_mse_forward(float *loss, const float *x, const float *y, size_t n);
dg_status dg_mse_backward(float *dx, float *dy, const float *x, const float *y,
                          float dloss, size_t n);
/* Softmax cross-entropy: mean over the batch of -log softmax(x_n)[labels_n].
 * x is (N, K), labels (N) with 0 <= label < K.
 * Backward (fused softmax): dx += dloss * (softmax(x) - onehot) / N. */
dg_status dg_cross_entropy_forward(float *loss, const float *x,
                                   const int64_t *labels, int N, int K);
dg_status dg_cross_entropy_backward(float *dx, const float *x,
                                    const int64_t *labels, float dloss, int N,
                                    int K);
/* Tempered KL of distillation (Hinton et al. 2015), T > 0, T^2 factor APPLIED:
 *  binary (K = 1, logits are (N)):  p = sigmoid(t/T), q = sigmoid(s/T),
 *    loss = T^2 * mean_n [p log(p/q) + (1-p) log((1-p)/(1-q))];
 *  categorical (logits are (N, K)): P = softmax(t/T), Q = softmax(s/T),
 *    loss = T^2 * mean_n sum_k P log(P/Q)   (KL(teacher || student), batch mean).
 * s = student logits, t = teacher logits; binary requires K = 1. */
dg_status dg_distill_kl_forward(float *loss, const float *s, const float *t,
                                float T, int binary, int N, int K);
/* Closed-form gradient with respect to the STUDENT logits only (T^2 applied):
 *  ds += dloss * T * (q - p) / N   (binary)
 *  ds += dloss * T * (Q - P) / N   (categorical). */
dg_status dg_distill_kl_backward(float *ds, const float *s, const float *t,
                                 float T, int binary, float dloss, int N, int K);

/* ------------------------------------------------------------------------- */
/* Optimiser and weight averaging (dg_adam.c), over flat buffers of n floats. */
/* ------------------------------------------------------------------------- */

/* One Adam step in place, with decoupled weight decay (AdamW, Loshchilov &
 * Hutter 2019) when weight_decay > 0, following torch.optim.AdamW exactly:
 *   param *= 1 - lr * weight_decay
 *   m = beta1 * m + (1 - beta1) * grad;  v = beta2 * v + (1 - beta2) * grad^2
 *   param -= (lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
 * step >= 1 is the 1-based step count. With weight_decay = 0 it is torch.optim.Adam.
 * The scalars are doubles, as Python's are: torch rounds beta and 1 - beta to
 * float separately, which a float argument could not reproduce. */
dg_status dg_adam_step(float *param, float *m, float *v, const float *grad,
                       size_t n, long step, double lr, double beta1, double beta2,
                       double eps, double weight_decay);
/* ema = decay * ema + (1 - decay) * param, 0 <= decay <= 1. */
dg_status dg_ema_update(float *ema, const float *param, size_t n, float decay);

/* ------------------------------------------------------------------------- */
/* Counter-based RNG (dg_rng.c): Philox4x32-10 (Salmon et al. 2011).          */
/* Element i of a draw depends only on (seed, offset + i), so the stream does */
/* not depend on the number of threads or on how a draw is split.             */
/* ------------------------------------------------------------------------- */

/* out[i] ~ N(0, 1) (Box-Muller on the counter offset + i). */
dg_status dg_rng_normal(float *out, size_t n, uint64_t seed, uint64_t offset);
/* out[i] ~ U[lo, hi), finite lo < hi (else ERR_VALUE). The counter offset + i wraps mod 2^64. */
dg_status dg_rng_uniform(float *out, size_t n, uint64_t seed, uint64_t offset,
                         float lo, float hi);

#ifdef __cplusplus
}
#endif
#endif /* DISTGAN_H */
