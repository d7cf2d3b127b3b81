/*
 * dg_dense.c -- the fully connected (linear) layer, forward and backward.
 *
 * out = inp @ weight^T + bias, as torch.nn.functional.linear, with PyTorch's
 * weight layout (OUT, IN). Both passes are GEMMs through dg_sgemm; the
 * backward GEMMs accumulate (beta = 1) into the caller's gradients. The forward
 * of one image on an AVX-512 CPU is a matrix-vector kernel of its own instead
 * (linear_one_rows), whose rows' bits do not depend on how the rows are split.
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

#if DG_HAVE_AVX2
#include <immintrin.h>

/* Work (weights) per task at least in linear_one_task; rows summed together. */
#define DG_DENSE_ONE_GRAIN 65536.0
#define DG_DENSE_ONE_ROWS 16

typedef struct {
    float *out;
    const float *inp, *weight, *bias;
    int C, OC;
} one_job;

/* The sums of the lanes of a[0..15], r[i] = a[i][0] + ... + a[i][15], by a fixed
 * tree: pairs of lanes within each 128-bit quarter, then the pairs' sums, then
 * the quarters (45 instructions for 16 rows, where one reduction per row took
 * 10 and a dependent chain of them). */
DG_AVX512 static inline __m512 sum_lanes16(const __m512 *a) {
    __m512 b[8], c[4];
    for (int i = 0; i < 8; i++)
        b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                             _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; i++)
        c[i] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0xee));
    /* c[i]: per quarter q, the sums over q's lanes of rows 4i .. 4i + 3 */
    __m512 f0 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88),
                              _mm512_shuffle_f32x4(c[0], c[1], 0xdd));
    __m512 f1 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], 0x88),
                              _mm512_shuffle_f32x4(c[2], c[3], 0xdd));
    return _mm512_add_ps(_mm512_shuffle_f32x4(f0, f1, 0x88),
                         _mm512_shuffle_f32x4(f0, f1, 0xdd));
}

/* a[0 .. nr) += the products of weight rows w[0 .. nr) (C floats each) with inp, row
 * r in accumulator r, lane l taking c = l mod 16 in increasing c, by FMA; inlined,
 * so that with nr the constant DG_DENSE_ONE_ROWS the accumulators stay in
 * registers. */
DG_AVX512 static inline __attribute__((always_inline)) void
one_rows_sum(__m512 *a, const float *w, const float *inp, int C, int nr) {
    int full = C / 16;
    __mmask16 tail = (__mmask16)((1u << (C % 16)) - 1);
    for (int k = 0; k < full; k++) {
        __m512 xv = _mm512_loadu_ps(inp + 16 * k);
        for (int r = 0; r < nr; r++)
            a[r] = _mm512_fmadd_ps(_mm512_loadu_ps(w + (size_t)r * C + 16 * k), xv, a[r]);
    }
    if (tail) {
        __m512 xv = _mm512_maskz_loadu_ps(tail, inp + 16 * full);
        for (int r = 0; r < nr; r++)
            a[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w + (size_t)r * C + 16 * full),
                                   xv, a[r]);
    }
}

/* out[o] = sum_c weight[o, c] * inp[c] (+ bias[o]) for one image, rows
 * [o0, o1): 16 rows at a time (fewer at the end, the missing rows' sums left at
 * zero), each row summed in one 16-lane accumulator (one_rows_sum), then across
 * its lanes (sum_lanes16), plus the bias. A row's bits do not depend on the rows
 * around it, so not on the split into tasks or into calls on parts of the rows
 * either (dg_direct_convt_few_head makes a layer's rows a piece at a time). */
DG_AVX512 static void linear_one_rows(const one_job *j, size_t o0, size_t o1) {
    int C = j->C;
    for (size_t o = o0; o < o1; o += DG_DENSE_ONE_ROWS) {
        int nr = o1 - o < DG_DENSE_ONE_ROWS ? (int)(o1 - o) : DG_DENSE_ONE_ROWS;
        const float *w = j->weight + o * (size_t)C;
        __m512 a[DG_DENSE_ONE_ROWS];
        for (int r = 0; r < DG_DENSE_ONE_ROWS; r++) a[r] = _mm512_setzero_ps();
        if (nr == DG_DENSE_ONE_ROWS)
            one_rows_sum(a, w, j->inp, C, DG_DENSE_ONE_ROWS);
        else
            one_rows_sum(a, w, j->inp, C, nr);
        __mmask16 m = (__mmask16)((1u << nr) - 1);
        __m512 v = sum_lanes16(a);
        if (j->bias != NULL) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, j->bias + o));
        _mm512_mask_storeu_ps(j->out + o, m, v);
    }
}

static void linear_one_task(void *ctx, int t, int nt) {
    const one_job *j = (const one_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->OC, DG_DENSE_ONE_ROWS, t, nt, &lo, &hi);
    if (lo < hi) linear_one_rows(j, lo, hi);
}
#endif

dg_status dg_linear_forward(float *out, const float *inp, const float *weight,
                            const float *bias, int N, int C, int OC) {
    // out is (N, OC), inp is (N, C), weight is (OC, C), bias is (OC) or NULL
    if (N <= 0 || C <= 0 || OC <= 0) return DG_STATUS_ERR_SHAPE;
    if (out == NULL || inp == NULL || weight == NULL) return DG_STATUS_ERR_NULL;
#if DG_HAVE_AVX2
    if (N == 1 && dg_avx512()) {
        /* one image: a matrix-vector product, in a kernel of its own (1.1-1.3x
         * OpenBLAS's sgemv with the weights in L2, as fast from L3; and its rows'
         * bits independent of the split, PERFORMANCE.md log 70) */
        one_job j = {out, inp, weight, bias, C, OC};
        dg_parallel(linear_one_task, &j,
                    dg_threads_for((double)OC * (double)C, DG_DENSE_ONE_GRAIN));
        return DG_STATUS_OK;
    }
#endif
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
