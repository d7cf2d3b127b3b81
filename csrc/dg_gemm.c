/*
 * dg_gemm.c -- the one matrix multiply of the core, and the status strings.
 *
 * dg_sgemm() is a row-major C = alpha * op(A) @ op(B) + beta * C. It calls the
 * cblas_sgemm of an OpenBLAS chosen at build time:
 *   DG_BLAS_SCIPY   the scipy-openblas32 wheel (symbols prefixed scipy_),
 *   DG_BLAS_SYSTEM  the system OpenBLAS (plain cblas_* symbols),
 *   neither         dg_sgemm_ref, the plain-loop GEMM below.
 * dg_sgemm_ref is also the oracle the C tests compare the BLAS with.
 *
 * Dimension letters (as in BLAS): op(A) is (M, K), op(B) is (K, N), C is (M, N);
 * lda/ldb/ldc are the row strides (in floats) of A, B and C as stored.
 *
 * beta == 0 ASSIGNS C (C is not read, so NaN garbage in C does not leak into
 * the result), as the BLAS reference specifies.
 */
#include "distgan.h"

#if defined(DG_BLAS_SCIPY)
#include <cblas.h>
#define DG_CBLAS_SGEMM scipy_cblas_sgemm
#define DG_BLAS_SET_THREADS scipy_openblas_set_num_threads
#define DG_BLAS_GET_THREADS scipy_openblas_get_num_threads
#define DG_BLAS_NAME "scipy-openblas"
#define DG_HAVE_BLAS 1
#elif defined(DG_BLAS_SYSTEM)
#include <cblas.h>
/* OpenBLAS extensions; declared here in case the cblas.h found is not OpenBLAS's. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
#define DG_CBLAS_SGEMM cblas_sgemm
#define DG_BLAS_SET_THREADS openblas_set_num_threads
#define DG_BLAS_GET_THREADS openblas_get_num_threads
#define DG_BLAS_NAME "openblas"
#define DG_HAVE_BLAS 1
#else
#define DG_BLAS_NAME "reference"
#define DG_HAVE_BLAS 0
#endif

const char *dg_status_str(dg_status s) {
    switch (s) {
    case DG_STATUS_OK: return "ok";
    case DG_STATUS_ERR_SHAPE: return "shape error";
    case DG_STATUS_ERR_VALUE: return "value error";
    case DG_STATUS_ERR_NOMEM: return "out of memory";
    case DG_STATUS_ERR_NULL: return "null pointer";
    }
    return "unknown status";
}

const char *dg_blas_name(void) { return DG_BLAS_NAME; }

void dg_set_num_threads(int n) {
#if DG_HAVE_BLAS
    if (n >= 1) DG_BLAS_SET_THREADS(n);
#else
    (void)n;
#endif
}

int dg_get_num_threads(void) {
#if DG_HAVE_BLAS
    return DG_BLAS_GET_THREADS();
#else
    return 1;
#endif
}

/* Checks the sizes and strides shared by dg_sgemm and dg_sgemm_ref.
 * A is stored (M, K) or, transposed, (K, M); B is stored (K, N) or (N, K). */
static dg_status gemm_check(int transA, int transB, int M, int N, int K,
                            const float *A, int lda, const float *B, int ldb,
                            const float *C, int ldc) {
    if (M < 0 || N < 0 || K < 0) return DG_STATUS_ERR_SHAPE;
    int a_cols = transA ? M : K;
    int b_cols = transB ? K : N;
    if (lda < (a_cols > 1 ? a_cols : 1)) return DG_STATUS_ERR_SHAPE;
    if (ldb < (b_cols > 1 ? b_cols : 1)) return DG_STATUS_ERR_SHAPE;
    if (ldc < (N > 1 ? N : 1)) return DG_STATUS_ERR_SHAPE;
    if (M == 0 || N == 0) return DG_STATUS_OK;
    if (C == NULL) return DG_STATUS_ERR_NULL;
    if (K > 0 && (A == NULL || B == NULL)) return DG_STATUS_ERR_NULL;
    return DG_STATUS_OK;
}

/* C = beta * C over an (M, N) block; beta == 0 assigns zeros without reading C. */
static void scale_c(int M, int N, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f) {
            for (int j = 0; j < N; j++) c[j] = 0.0f;
        } else if (beta != 1.0f) {
            for (int j = 0; j < N; j++) c[j] *= beta;
        }
    }
}

dg_status dg_sgemm_ref(int transA, int transB, int M, int N, int K, float alpha,
                       const float *A, int lda, const float *B, int ldb,
                       float beta, float *C, int ldc) {
    dg_status st = gemm_check(transA, transB, M, N, K, A, lda, B, ldb, C, ldc);
    if (st != DG_STATUS_OK || M == 0 || N == 0) return st;
    scale_c(M, N, beta, C, ldc);
    if (K == 0 || alpha == 0.0f) return DG_STATUS_OK;
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (!transB) {
            /* c[i, :] += alpha * sum_p op(A)[i, p] * B[p, :]: row axpys, contiguous in j */
            for (int p = 0; p < K; p++) {
                float a = alpha * (transA ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]);
                const float *b = B + (size_t)p * ldb;
                for (int j = 0; j < N; j++) c[j] += a * b[j];
            }
        } else {
            /* c[i, j] += alpha * <op(A)[i, :], B[j, :]>: dot products, B row contiguous */
            for (int j = 0; j < N; j++) {
                const float *b = B + (size_t)j * ldb;
                float acc = 0.0f;
                if (transA) {
                    for (int p = 0; p < K; p++) acc += A[(size_t)p * lda + i] * b[p];
                } else {
                    const float *a = A + (size_t)i * lda;
                    for (int p = 0; p < K; p++) acc += a[p] * b[p];
                }
                c[j] += alpha * acc;
            }
        }
    }
    return DG_STATUS_OK;
}

dg_status dg_sgemm(int transA, int transB, int M, int N, int K, float alpha,
                   const float *A, int lda, const float *B, int ldb, float beta,
                   float *C, int ldc) {
#if DG_HAVE_BLAS
    dg_status st = gemm_check(transA, transB, M, N, K, A, lda, B, ldb, C, ldc);
    if (st != DG_STATUS_OK || M == 0 || N == 0) return st;
    if (K == 0) {
        /* handled here so the beta == 0 assignment does not depend on the BLAS */
        scale_c(M, N, beta, C, ldc);
        return DG_STATUS_OK;
    }
    DG_CBLAS_SGEMM(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                   transB ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
                   B, ldb, beta, C, ldc);
    return DG_STATUS_OK;
#else
    return dg_sgemm_ref(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta,
                        C, ldc);
#endif
}
