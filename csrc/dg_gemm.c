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
 *
 * Threads: OpenBLAS always runs on ONE thread (its pthreads pool busy-waits and
 * fights any other pool). dg_sgemm splits a large product itself over the core's
 * pool (dg_thread.c): C is cut into blocks (one or two per thread) of columns
 * (when N >= M, so that the smaller operand op(A) is the one every block packs)
 * or of rows, block bounds multiples of 16, and each block is one
 * single-threaded sgemm; small products (or a split dimension too small to cut)
 * stay on the calling thread. The blocks depend on the thread count only, so
 * the bits are the same run after run at a count; between counts they may
 * differ, as OpenBLAS may round an element of C differently when the block
 * around it has another width (its Haswell kernels on Zen 3: 992 of the 12544
 * columns of a 64 x 12544 x 100 product differed between 1 and 2 threads,
 * PERFORMANCE.md log 109). A product with one row or one column of C goes
 * through cblas_sgemv instead, split by ranges of C's elements when its matrix
 * is large (gemv; there too the bits may depend on the thread count).
 */
#include "distgan.h"
#include "dg_internal.h"

#include <pthread.h>
#if DG_HAVE_AVX2
#include <cpuid.h>
#endif

#if defined(DG_BLAS_SCIPY)
#include <cblas.h>
#define DG_CBLAS_SGEMM scipy_cblas_sgemm
#define DG_CBLAS_SGEMV scipy_cblas_sgemv
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
#define DG_CBLAS_SGEMV cblas_sgemv
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

/* The AVX2 paths' switch (dg_internal.h). */
static int simd_on = 1;

void dg_set_simd(int on) { simd_on = on != 0; }

/* The SIMD paths are on and the CPU has `feature` (a literal, as
 * __builtin_cpu_supports takes). */
#if DG_HAVE_AVX2
#define SIMD_CPU_HAS(feature) (simd_on && __builtin_cpu_supports(feature))
#else
#define SIMD_CPU_HAS(feature) 0
#endif

int dg_avx2(void) { return SIMD_CPU_HAS("avx2"); }

int dg_avx2_fma(void) { return SIMD_CPU_HAS("avx2") && SIMD_CPU_HAS("fma"); }

/* AVX-512F with BMI1 (every such CPU has it; the sparse rows count trailing
 * zeros with tzcnt, dg_conv_direct.c). */
int dg_avx512(void) { return SIMD_CPU_HAS("avx512f") && SIMD_CPU_HAS("bmi"); }

/* An AMD CPU, with the SIMD paths on. */
int dg_cpu_amd(void) {
#if DG_HAVE_AVX2
    return simd_on && __builtin_cpu_is("amd");
#else
    return 0;
#endif
}

/* The model of an Intel CPU of family 6 (CPUID leaf 1, with its extended bits),
 * with the SIMD paths on; 0 on any other CPU. Asked once per process: in a
 * virtual machine each CPUID traps to the hypervisor. */
static unsigned intel_model;
static pthread_once_t intel_model_once = PTHREAD_ONCE_INIT;

static void intel_model_init(void) {
#if DG_HAVE_AVX2
    unsigned a, b, c, d;
    if (!__builtin_cpu_is("intel") || !__get_cpuid(1, &a, &b, &c, &d)) return;
    if (((a >> 8) & 0xf) == 6) intel_model = ((a >> 4) & 0xf) | ((a >> 12) & 0xf0);
#endif
}

unsigned dg_cpu_intel_model(void) {
    pthread_once(&intel_model_once, intel_model_init);
    return simd_on ? intel_model : 0;
}

/* Golden Cove's server parts and their successors (Sapphire, Emerald and Granite
 * Rapids), with AVX-512: AVX512-FP16 marks them. Some hypervisors hide
 * AVX512-FP16 from their guests (an Emerald Rapids guest without it took the
 * dense rows and 1.06-1.10x the sparse rows' time per one-image teacher sample,
 * PERFORMANCE.md log 120), so they are also known by their model numbers
 * (dg_cpu_intel_model); others report a model of their own (a Granite Rapids
 * class guest says 167, with AVX512-FP16 shown, log 125). GCC knows the name
 * avx512fp16 from version 12, clang from 16; older compilers say no to it. */
int dg_cpu_golden_cove_server(void) {
#if DG_HAVE_AVX2
    if (!dg_avx512()) return 0;
    unsigned m = dg_cpu_intel_model();
    if (m == DG_INTEL_SAPPHIRE_RAPIDS || m == DG_INTEL_EMERALD_RAPIDS ||
        m == DG_INTEL_GRANITE_RAPIDS_X || m == DG_INTEL_GRANITE_RAPIDS_D)
        return 1;
#if (defined(__clang__) && __clang_major__ >= 16) || \
    (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 12)
    return SIMD_CPU_HAS("avx512fp16");
#endif
#endif
    return 0;
}

/* The CPUs on which the few-image kernel's sparse rows measured faster than its
 * dense rows (dg_conv_direct.c, few_share): Golden Cove's server parts and their
 * successors, and AMD's with AVX-512 (Zen 4; Zen 5 untried). Ice Lake, AVX-512
 * without either, is the one measured slower. */
int dg_few_sparse_cpu(void) {
    return dg_cpu_golden_cove_server() || (dg_cpu_amd() && dg_avx512());
}

/* Once per process: the pool starts with the thread count OpenBLAS chose at
 * load (OPENBLAS_NUM_THREADS, else the cores), and OpenBLAS drops to one. */
static pthread_once_t threads_once = PTHREAD_ONCE_INIT;

static void threads_init(void) {
#if DG_HAVE_BLAS
    dg_threads_set(DG_BLAS_GET_THREADS());
    DG_BLAS_SET_THREADS(1);
#endif
}

void dg_threads_init(void) { pthread_once(&threads_once, threads_init); }

void dg_set_num_threads(int n) {
    dg_threads_init();
    if (n >= 1) dg_threads_set(n);
}

int dg_get_num_threads(void) { return dg_threads_get(); }

/* Threads GEMMs may use: at least this many FLOPs per thread ... */
#define DG_GEMM_GRAIN 4.0e6
/* (counting each element of C as this many more FLOPs: reading and writing it
 * back is the cost of a product with a short K, the rank-1 input gradient of a
 * critic's last layer, 64 x 6272 with K = 1, writing 1.6 MB on one thread) */
#define DG_GEMM_C_FLOPS 32.0
/* ... and at least this many rows or columns of C per thread. */
#define DG_GEMM_MIN_SPLIT 32

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

#if DG_HAVE_BLAS
typedef struct {
    int transA, transB, M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    int lda, ldb, ldc;
    int split_cols;   /* 1: blocks of columns of C, 0: blocks of rows */
} gemm_job;

static void gemm_task(void *ctx, int t, int nt) {
    const gemm_job *j = (const gemm_job *)ctx;
    size_t lo, hi;
    const float *A = j->A, *B = j->B;
    float *C = j->C;
    int M = j->M, N = j->N;
    if (j->split_cols) {
        dg_split((size_t)N, 16, t, nt, &lo, &hi);
        /* op(B)[:, lo:hi] is B's columns lo.. (B (K, N)) or rows lo.. (B^T stored (N, K)) */
        B += j->transB ? lo * (size_t)j->ldb : lo;
        C += lo;
        N = (int)(hi - lo);
    } else {
        dg_split((size_t)M, 16, t, nt, &lo, &hi);
        A += j->transA ? lo : lo * (size_t)j->lda;
        C += lo * (size_t)j->ldc;
        M = (int)(hi - lo);
    }
    if (M <= 0 || N <= 0) return;
    DG_CBLAS_SGEMM(CblasRowMajor, j->transA ? CblasTrans : CblasNoTrans,
                   j->transB ? CblasTrans : CblasNoTrans, M, N, j->K, j->alpha, A,
                   j->lda, B, j->ldb, j->beta, C, j->ldc);
}
#endif

#if DG_HAVE_BLAS
/* A matrix-vector product's matrix elements per task at least (256 KiB: it
 * streams them once, so below this the split costs more than it saves), and
 * the alignment of each task's range of C's elements (whole cache lines of a
 * contiguous C per task). The bits are the same run after run at a thread
 * count, but may differ between counts (unlike the split sgemm's): OpenBLAS's
 * sgemv takes the elements beyond a multiple of its vector width apart, and
 * each task's range has its own. */
#define DG_GEMV_GRAIN 65536.0
#define DG_GEMV_ALIGN 64
/* The alignment of a column of C's ranges (N == 1): 16 rows, each a dot product
 * over a whole row of the matrix, so that a critic's single logit at batch 64
 * (64 rows of 6272) still splits */
#define DG_GEMV_ROW_ALIGN 16

static size_t gemv_align(int M) { return M == 1 ? DG_GEMV_ALIGN : DG_GEMV_ROW_ALIGN; }

typedef struct {
    int transA, transB, M, N, K;
    float alpha;
    const float *A, *B;
    float *C;
    int lda, ldb, ldc;
} gemv_job;

/* Task t's range of C's elements: columns of the row (M == 1) or rows of the
 * column (N == 1), through cblas_sgemv on the matching part of the matrix
 * (C already holds beta * C). */
static void gemv_task(void *ctx, int t, int nt) {
    const gemv_job *j = (const gemv_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)(j->M == 1 ? j->N : j->M), gemv_align(j->M), t, nt, &lo, &hi);
    int n = (int)(hi - lo);   /* >= 1: gemv runs at most one task per aligned block */
    if (j->M == 1) {
        /* c (1, N) = a (1, K) @ op(B) (K, N): c^T = op(B)^T a^T;
         * a's stride is lda if A^T is stored (K, 1) */
        int inca = j->transA ? j->lda : 1;
        if (j->transB) {
            DG_CBLAS_SGEMV(CblasRowMajor, CblasNoTrans, n, j->K, j->alpha,
                           j->B + lo * (size_t)j->ldb, j->ldb, j->A, inca, 1.0f, j->C + lo, 1);
        } else {
            DG_CBLAS_SGEMV(CblasRowMajor, CblasTrans, j->K, n, j->alpha, j->B + lo, j->ldb,
                           j->A, inca, 1.0f, j->C + lo, 1);
        }
    } else {
        /* c (M, 1) = op(A) (M, K) @ b (K, 1);
         * c's stride is ldc, b's ldb if B is stored (K, 1) */
        int incb = j->transB ? 1 : j->ldb;
        float *c = j->C + lo * (size_t)j->ldc;
        if (j->transA) {
            DG_CBLAS_SGEMV(CblasRowMajor, CblasTrans, j->K, n, j->alpha, j->A + lo, j->lda,
                           j->B, incb, 1.0f, c, j->ldc);
        } else {
            DG_CBLAS_SGEMV(CblasRowMajor, CblasNoTrans, n, j->K, j->alpha,
                           j->A + lo * (size_t)j->lda, j->lda, j->B, incb, 1.0f, c, j->ldc);
        }
    }
}

/* A product with one row (M == 1) or one column (N == 1) of C is a
 * matrix-vector product: cblas_sgemv reads the matrix once, where sgemm would
 * first pack all of it (a batch of one through a linear layer, or the single
 * logit of a critic). beta is applied first (beta == 0 assigns, so C is never
 * read then); a large matrix is split by ranges of C's elements over the pool
 * (the generator's 5 MB at a batch of one: the split reads it at both cores'
 * rate, and keeps the workers awake for the next op). */
static dg_status gemv(int transA, int transB, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc) {
    if (beta != 1.0f) scale_c(M, N, beta, C, ldc);
    gemv_job j = {transA, transB, M, N, K, alpha, A, B, C, lda, ldb, ldc};
    size_t span = (size_t)(M == 1 ? N : M);
    int nt = dg_threads_for((double)span * K, DG_GEMV_GRAIN);
    size_t align = gemv_align(M);
    size_t blocks = (span + align - 1) / align;   /* >= 1 */
    if ((size_t)nt > blocks) nt = (int)blocks;
    dg_parallel(gemv_task, &j, nt);
    return DG_STATUS_OK;
}
#endif

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
    dg_threads_init();
    if (M == 1 || N == 1) {
        return gemv(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    }
    gemm_job j = {transA, transB, M, N, K, alpha, beta, A, B, C, lda, ldb, ldc, N >= M};
    int span = j.split_cols ? N : M;
    /* blocks: at most two per thread (each packs the shared operand again), each
     * DG_GEMM_MIN_SPLIT wide at least, a multiple of the thread count when
     * there are more blocks than threads */
    int size = dg_threads_get();
    int nt = dg_threads_for((2.0 * K + DG_GEMM_C_FLOPS) * M * (double)N, DG_GEMM_GRAIN);
    if (nt > 2 * size) nt = 2 * size;
    if (nt > span / DG_GEMM_MIN_SPLIT) nt = span / DG_GEMM_MIN_SPLIT;
    if (nt > size) nt -= nt % size;
    dg_parallel(gemm_task, &j, nt < 1 ? 1 : nt);
    return DG_STATUS_OK;
#else
    return dg_sgemm_ref(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta,
                        C, ldc);
#endif
}

/* The BLAS's own multi-threaded sgemm, for the benchmark's reference rate. */
dg_status dg_cblas_sgemm_threads(int transA, int transB, int M, int N, int K,
                                 float alpha, const float *A, int lda,
                                 const float *B, int ldb, float beta, float *C,
                                 int ldc, int threads) {
    dg_status st = gemm_check(transA, transB, M, N, K, A, lda, B, ldb, C, ldc);
    if (st != DG_STATUS_OK || M == 0 || N == 0) return st;
    if (threads < 1) return DG_STATUS_ERR_VALUE;
#if DG_HAVE_BLAS
    dg_threads_init();
    if (K == 0) {
        scale_c(M, N, beta, C, ldc);
        return DG_STATUS_OK;
    }
    DG_BLAS_SET_THREADS(threads);
    DG_CBLAS_SGEMM(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                   transB ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
                   ldb, beta, C, ldc);
    DG_BLAS_SET_THREADS(1);
    return DG_STATUS_OK;
#else
    return dg_sgemm_ref(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}
