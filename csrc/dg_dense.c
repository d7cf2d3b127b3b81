/*
 * dg_dense.c -- the fully connected (linear) layer, forward and backward.
 *
 * out = inp @ weight^T + bias, as torch.nn.functional.linear, with PyTorch's
 * weight layout (OUT, IN). Both passes are GEMMs through dg_sgemm; the
 * backward GEMMs accumulate (beta = 1) into the caller's gradients.
 *
 * Dimension letters:
 *   N  = batch size
 *   C  = input features
 *   OC = output features
 */
#include "distgan.h"
#include "dg_internal.h"

#include <string.h>

/* Channels summed together in dbias, with double accumulators on the stack. */
#define DG_DENSE_BIAS_BLOCK 256
/* Values of dout per task at least before dbias is split over threads. */
#define DG_DENSE_BIAS_GRAIN 65536.0

typedef struct {
    float *dbias;
    const float *dout;
    int N, OC;
} dbias_job;

/* dbias[o] += sum_n dout[n, o] for the task's columns (blocks of
 * DG_DENSE_BIAS_BLOCK): rows are read contiguously, a block of columns at a time,
 * each column summed over n in order, in double, so the bits do not depend on the
 * split or the vector width (7 GB/s on one thread in the scalar loop, 0.4x
 * PyTorch's; PERFORMANCE.md log 54). */
static void dbias_task(void *ctx, int t, int nt) {
    const dbias_job *j = (const dbias_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->OC, DG_DENSE_BIAS_BLOCK, t, nt, &lo, &hi);
    double acc[DG_DENSE_BIAS_BLOCK];
    for (size_t o0 = lo; o0 < hi; o0 += DG_DENSE_BIAS_BLOCK) {
        int nb = hi - o0 < DG_DENSE_BIAS_BLOCK ? (int)(hi - o0) : DG_DENSE_BIAS_BLOCK;
        for (int k = 0; k < nb; k++) acc[k] = 0.0;
        for (int n = 0; n < j->N; n++) {
            const float *d = j->dout + (size_t)n * j->OC + o0;
            for (int k = 0; k < nb; k++) acc[k] += d[k];
        }
        for (int k = 0; k < nb; k++) j->dbias[o0 + k] = (float)(j->dbias[o0 + k] + acc[k]);
    }
}

/* dbias_task built for AVX2 (dg_internal.h): the same values */
DG_AVX2_TASK(dbias_task)

dg_status dg_linear_forward(float *out, const float *inp, const float *weight,
                            const float *bias, int N, int C, int OC) {
    // out is (N, OC), inp is (N, C), weight is (OC, C), bias is (OC) or NULL
    if (N <= 0 || C <= 0 || OC <= 0) return DG_STATUS_ERR_SHAPE;
    if (out == NULL || inp == NULL || weight == NULL) return DG_STATUS_ERR_NULL;
    float beta = 0.0f;
    if (bias != NULL) {
        /* start every row at the bias, then let the GEMM add onto it */
        for (int n = 0; n < N; n++) {
            memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
        }
        beta = 1.0f;
    }
    // out[n, o] = sum_c inp[n, c] * weight[o, c] (+ bias[o])
    return dg_sgemm(0, 1, N, OC, C, 1.0f, inp, C, weight, C, beta, out, OC);
}

dg_status dg_linear_backward(float *dinp, float *dweight, float *dbias,
                             const float *dout, const float *inp,
                             const float *weight, int N, int C, int OC) {
    // dinp is (N, C), dweight is (OC, C), dbias is (OC); any may be NULL
    // dout is (N, OC), inp is (N, C), weight is (OC, C)
    if (N <= 0 || C <= 0 || OC <= 0) return DG_STATUS_ERR_SHAPE;
    if (dout == NULL || inp == NULL || weight == NULL) return DG_STATUS_ERR_NULL;
    dg_status st = DG_STATUS_OK;
    // forward: out[n, o] = sum_c inp[n, c] * weight[o, c] + bias[o]
    if (dinp != NULL) {
        // dinp[n, c] += sum_o dout[n, o] * weight[o, c]
        st = dg_sgemm(0, 0, N, C, OC, 1.0f, dout, OC, weight, C, 1.0f, dinp, C);
        if (st != DG_STATUS_OK) return st;
    }
    if (dweight != NULL) {
        // dweight[o, c] += sum_n dout[n, o] * inp[n, c]
        st = dg_sgemm(1, 0, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
        if (st != DG_STATUS_OK) return st;
    }
    if (dbias != NULL) {
        dbias_job j = {dbias, dout, N, OC};
        dg_parallel(DG_FOR_CPU(dbias_task), &j,
                    dg_threads_for((double)N * (double)OC, DG_DENSE_BIAS_GRAIN));
    }
    return DG_STATUS_OK;
}
