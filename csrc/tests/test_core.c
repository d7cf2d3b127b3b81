/*
 * test_core.c -- the C core's own test program, without Python.
 *
 *   make -C csrc test               (reference GEMM)
 *   make -C csrc test BLAS=system   (system OpenBLAS)
 *   make -C csrc valgrind           (under valgrind memcheck)
 *
 * Every op is compared with a naive direct-loop reference written here in
 * double (7 nested loops for a convolution), plus exact small-integer cases,
 * the adjoint identity <conv2d(x, w), y> = <x, conv_transpose2d(y, w)>, the
 * backward contract (backward accumulates: twice gives twice the gradient,
 * NULL gradients are skipped, inputs come out unchanged) and the error
 * statuses on bad sizes. Buffers the ops must assign (outputs, workspaces)
 * are filled with NaN first, so a read of stale memory shows up.
 *
 * One line per check ("PASS ..." / "FAIL [line] ..."), then "N passed, N failed";
 * the exit status is non-zero when any check failed.
 *
 * Layout: one test_<group>() per group of ops, called from main(); new groups
 * go where main() marks the place. Dimension letters are those of distgan.h.
 */
#include "distgan.h"
#include "dg_internal.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------- */
/* check machinery                                                            */
/* ------------------------------------------------------------------------- */

static int n_pass = 0, n_fail = 0;

static void check_report(int ok, int line, const char *fmt, ...) {
    va_list ap;
    if (ok) {
        printf("PASS ");
        n_pass++;
    } else {
        printf("FAIL [line %d] ", line);
        n_fail++;
    }
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

/* CHECK(condition, printf-style description) */
#define CHECK(cond, ...) check_report((cond) != 0, __LINE__, __VA_ARGS__)

/* max_i |got_i - want_i| / max(1, max_j |want_j|); NaN in got gives NaN. */
static double max_err(const float *got, const double *want, size_t n) {
    double scale = 1.0, m = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
    }
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]) / scale;
        if (!(e <= m)) m = e;
    }
    return m;
}

/* Checks got against want within tol (scale-relative, see max_err). */
#define CHECK_CLOSE(got, want, n, tol, ...)                                     \
    do {                                                                        \
        double e_ = max_err((got), (want), (n));                                \
        char d_[256];                                                           \
        snprintf(d_, sizeof d_, __VA_ARGS__);                                   \
        CHECK(e_ <= (tol), "%s (max err %.2e)", d_, e_);                        \
    } while (0)

static int same_floats(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* ------------------------------------------------------------------------- */
/* buffers and deterministic random numbers                                   */
/* ------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

/* uniform in [-1, 1), xorshift64* */
static float frand(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 0x2545F4914F6CDD1Dull;
    return (float)((double)(r >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes > 0 ? bytes : 1);
    if (p == NULL) {
        fprintf(stderr, "test_core: out of memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return p;
}

static float *falloc(size_t n) { return xmalloc(n * sizeof(float)); }

static float *frandn(size_t n) {
    float *p = falloc(n);
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

static float *fnan(size_t n) {
    float *p = falloc(n);
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

static float *fcopy(const float *x, size_t n) {
    float *p = falloc(n);
    memcpy(p, x, n * sizeof(float));
    return p;
}

/* n floats scale * sin(freq * i): the same data on every call (frandn's are not) */
static float *fwave(size_t n, double freq, float scale) {
    float *p = falloc(n);
    for (size_t i = 0; i < n; i++) p[i] = scale * (float)sin(freq * (double)i);
    return p;
}

static double *dzeros(size_t n) {
    double *p = xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) p[i] = 0.0;
    return p;
}

static void fill_nan(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = NAN;
}

/* want_i = base_i + k * grad_i, the expected value of an accumulated gradient */
static double *accumulated(const float *base, const double *grad, double k, size_t n) {
    double *p = xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) p[i] = base[i] + k * grad[i];
    return p;
}

/* ------------------------------------------------------------------------- */
/* GEMM                                                                       */
/* ------------------------------------------------------------------------- */

/* C (M, N) = alpha * op(A) @ op(B) + beta * C0 in double (beta == 0 ignores C0). */
static void gemm_naive(double *C, int transA, int transB, int M, int N, int K,
                       double alpha, const float *A, int lda, const float *B,
                       int ldb, double beta, const float *C0, int ldc) {
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int p = 0; p < K; p++) {
                double a = transA ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                double b = transB ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                s += a * b;
            }
            double c = beta == 0.0 ? 0.0 : beta * C0[(size_t)i * ldc + j];
            C[(size_t)i * N + j] = alpha * s + c;
        }
    }
}

/* One GEMM case for both dg_sgemm_ref and dg_sgemm, with padded strides. */
static void gemm_case(int transA, int transB, int M, int N, int K, float alpha,
                      float beta, int nan_c) {
    int lda = (transA ? M : K) + 3, ldb = (transB ? K : N) + 2, ldc = N + 1;
    size_t na = (size_t)(transA ? K : M) * lda, nb = (size_t)(transB ? N : K) * ldb;
    size_t nc = (size_t)M * ldc;
    float *A = frandn(na), *B = frandn(nb), *C0 = nan_c ? fnan(nc) : frandn(nc);
    float *A0 = fcopy(A, na), *B0 = fcopy(B, nb);
    double *want = dzeros((size_t)M * N);
    gemm_naive(want, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc);
    float *Cr = fcopy(C0, nc), *Cb = fcopy(C0, nc);
    float *gr = falloc((size_t)M * N), *gb = falloc((size_t)M * N);
    dg_status sr = dg_sgemm_ref(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, Cr, ldc);
    dg_status sb = dg_sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, Cb, ldc);
    int pad_ok = 1;
    for (int i = 0; i < M; i++) {
        memcpy(gr + (size_t)i * N, Cr + (size_t)i * ldc, (size_t)N * sizeof(float));
        memcpy(gb + (size_t)i * N, Cb + (size_t)i * ldc, (size_t)N * sizeof(float));
        for (int j = N; j < ldc; j++) {
            size_t k = (size_t)i * ldc + j;
            if (memcmp(&Cr[k], &C0[k], sizeof(float)) || memcmp(&Cb[k], &C0[k], sizeof(float))) {
                pad_ok = 0;
            }
        }
    }
    const char *nanc = nan_c ? ", NaN in C" : "";
    CHECK(sr == DG_STATUS_OK && sb == DG_STATUS_OK, "gemm tA=%d tB=%d %dx%dx%d status ok",
          transA, transB, M, N, K);
    CHECK_CLOSE(gr, want, (size_t)M * N, 1e-5,
                "gemm_ref tA=%d tB=%d M=%d N=%d K=%d alpha=%g beta=%g%s vs double",
                transA, transB, M, N, K, alpha, beta, nanc);
    CHECK_CLOSE(gb, want, (size_t)M * N, 1e-5,
                "gemm (%s) tA=%d tB=%d M=%d N=%d K=%d alpha=%g beta=%g%s vs double",
                dg_blas_name(), transA, transB, M, N, K, alpha, beta, nanc);
    CHECK(pad_ok && same_floats(A, A0, na) && same_floats(B, B0, nb),
          "gemm tA=%d tB=%d: inputs and C's padding columns unchanged", transA, transB);
    free(A); free(B); free(C0); free(A0); free(B0); free(want);
    free(Cr); free(Cb); free(gr); free(gb);
}

static void test_gemm(void) {
    printf("# gemm (BLAS: %s, %d thread(s))\n", dg_blas_name(), dg_get_num_threads());
    const char *names[5];
    int distinct = 1;
    for (int s = 0; s < 5; s++) {
        names[s] = dg_status_str((dg_status)s);
        if (names[s] == NULL) distinct = 0;
        for (int t = 0; distinct && t < s; t++) distinct = strcmp(names[s], names[t]) != 0;
    }
    CHECK(distinct && strcmp(dg_status_str(DG_STATUS_OK), "ok") == 0 &&
              dg_status_str((dg_status)99) != NULL,
          "dg_status_str: distinct names, never NULL");
    const char *bn = dg_blas_name();
    CHECK(bn != NULL && (!strcmp(bn, "reference") || !strcmp(bn, "openblas") ||
                         !strcmp(bn, "scipy-openblas")),
          "dg_blas_name is one of the documented names (%s)", bn ? bn : "NULL");
    int nt = dg_get_num_threads();
    dg_set_num_threads(nt);
    CHECK(nt >= 1 && dg_get_num_threads() == nt, "dg_get/set_num_threads round trip (%d)", nt);

    /* exact small integers: [[1,2,3],[4,5,6]] @ [[1,0],[0,1],[1,1]] = [[4,5],[10,11]] */
    {
        float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1}, C[4], Cr[4];
        dg_status s1 = dg_sgemm(0, 0, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2);
        dg_status s2 = dg_sgemm_ref(0, 0, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, Cr, 2);
        CHECK(s1 == DG_STATUS_OK && s2 == DG_STATUS_OK && C[0] == 4 && C[1] == 5 &&
                  C[2] == 10 && C[3] == 11 && !memcmp(C, Cr, sizeof C),
              "gemm exact 2x3 @ 3x2 = [[4,5],[10,11]]");
    }
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            gemm_case(ta, tb, 7, 5, 9, 0.7f, -0.3f, 0);
            gemm_case(ta, tb, 67, 45, 131, 1.0f, 1.0f, 0);
            gemm_case(ta, tb, 33, 70, 20, -1.5f, 0.0f, 1);
        }
    }
    gemm_case(0, 0, 1, 1, 1, 2.0f, 0.5f, 0);
    gemm_case(1, 0, 200, 3, 257, 1.0f, 0.0f, 1);

    /* K == 0: C = beta * C; beta == 0 assigns zeros even over NaN */
    {
        float C[6] = {1, 2, 3, 4, 5, 6}, D[6];
        float one = 1.0f;
        for (int i = 0; i < 6; i++) D[i] = NAN;
        dg_status s1 = dg_sgemm(0, 0, 2, 3, 0, 1.0f, &one, 1, &one, 3, 2.0f, C, 3);
        dg_status s2 = dg_sgemm(0, 0, 2, 3, 0, 1.0f, NULL, 1, NULL, 3, 0.0f, D, 3);
        int ok = s1 == DG_STATUS_OK && s2 == DG_STATUS_OK;
        for (int i = 0; i < 6; i++) ok = ok && C[i] == 2.0f * (float)(i + 1) && D[i] == 0.0f;
        float Cr[6] = {1, 2, 3, 4, 5, 6};
        dg_status s3 = dg_sgemm_ref(0, 0, 2, 3, 0, 1.0f, NULL, 1, NULL, 3, -1.0f, Cr, 3);
        for (int i = 0; i < 6; i++) ok = ok && Cr[i] == -(float)(i + 1);
        CHECK(ok && s3 == DG_STATUS_OK, "gemm K=0: C = beta*C, beta=0 assigns over NaN");
    }
    /* M == 0 or N == 0: no-op, C untouched */
    {
        float C[2] = {7, 8};
        dg_status s1 = dg_sgemm(0, 0, 0, 2, 3, 1.0f, NULL, 3, NULL, 2, 0.0f, C, 2);
        dg_status s2 = dg_sgemm(0, 0, 1, 0, 3, 1.0f, NULL, 3, NULL, 1, 0.0f, C, 1);
        dg_status s3 = dg_sgemm_ref(0, 0, 0, 2, 3, 1.0f, NULL, 3, NULL, 2, 0.0f, C, 2);
        CHECK(s1 == DG_STATUS_OK && s2 == DG_STATUS_OK && s3 == DG_STATUS_OK &&
                  C[0] == 7 && C[1] == 8,
              "gemm M=0 / N=0 is a no-op");
    }
    /* bad sizes and strides */
    {
        float A[64], B[64], C[64];
        for (int i = 0; i < 64; i++) A[i] = B[i] = C[i] = 1.0f;
        int ok = 1;
        for (int r = 0; r < 2; r++) {
            dg_status (*g)(int, int, int, int, int, float, const float *, int,
                           const float *, int, float, float *, int) = r ? dg_sgemm_ref : dg_sgemm;
            ok = ok && g(0, 0, -1, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2) == DG_STATUS_ERR_SHAPE;
            ok = ok && g(0, 0, 2, -1, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2) == DG_STATUS_ERR_SHAPE;
            ok = ok && g(0, 0, 2, 2, -1, 1.0f, A, 2, B, 2, 0.0f, C, 2) == DG_STATUS_ERR_SHAPE;
            ok = ok && g(0, 0, 2, 3, 4, 1.0f, A, 3, B, 3, 0.0f, C, 3) == DG_STATUS_ERR_SHAPE;
            ok = ok && g(1, 0, 2, 3, 4, 1.0f, A, 1, B, 3, 0.0f, C, 3) == DG_STATUS_ERR_SHAPE;
            ok = ok && g(0, 0, 2, 3, 4, 1.0f, A, 4, B, 2, 0.0f, C, 3) == DG_STATUS_ERR_SHAPE;
            ok = ok && g(0, 1, 2, 3, 4, 1.0f, A, 4, B, 3, 0.0f, C, 3) == DG_STATUS_ERR_SHAPE;
            ok = ok && g(0, 0, 2, 3, 4, 1.0f, A, 4, B, 3, 0.0f, C, 2) == DG_STATUS_ERR_SHAPE;
            ok = ok && g(0, 0, 2, 3, 4, 1.0f, A, 4, B, 3, 0.0f, NULL, 3) == DG_STATUS_ERR_NULL;
            ok = ok && g(0, 0, 2, 3, 4, 1.0f, NULL, 4, B, 3, 0.0f, C, 3) == DG_STATUS_ERR_NULL;
            ok = ok && g(0, 0, 2, 3, 4, 1.0f, A, 4, NULL, 3, 0.0f, C, 3) == DG_STATUS_ERR_NULL;
        }
        int untouched = 1;
        for (int i = 0; i < 64; i++) untouched = untouched && C[i] == 1.0f;
        CHECK(ok && untouched, "gemm: bad sizes/strides -> shape error, NULL -> null error, C untouched");
    }
}

/* ------------------------------------------------------------------------- */
/* Linear                                                                     */
/* ------------------------------------------------------------------------- */

static void test_linear(void) {
    printf("# linear\n");
    const int N = 5, C = 7, OC = 3;
    float *x = frandn((size_t)N * C), *w = frandn((size_t)OC * C), *b = frandn(OC);
    float *dy = frandn((size_t)N * OC);
    float *x0 = fcopy(x, (size_t)N * C), *w0 = fcopy(w, (size_t)OC * C), *dy0 = fcopy(dy, (size_t)N * OC);
    double *want = dzeros((size_t)N * OC), *want_nb = dzeros((size_t)N * OC);
    double *gx = dzeros((size_t)N * C), *gw = dzeros((size_t)OC * C), *gb = dzeros(OC);
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < OC; o++) {
            double s = 0.0;
            for (int c = 0; c < C; c++) s += (double)x[n * C + c] * w[o * C + c];
            want_nb[n * OC + o] = s;
            want[n * OC + o] = s + b[o];
            gb[o] += dy[n * OC + o];
            for (int c = 0; c < C; c++) {
                gx[n * C + c] += (double)dy[n * OC + o] * w[o * C + c];
                gw[o * C + c] += (double)dy[n * OC + o] * x[n * C + c];
            }
        }
    }
    float *out = fnan((size_t)N * OC);
    CHECK(dg_linear_forward(out, x, w, b, N, C, OC) == DG_STATUS_OK, "linear forward status ok");
    CHECK_CLOSE(out, want, (size_t)N * OC, 1e-6, "linear forward with bias vs naive");
    fill_nan(out, (size_t)N * OC);
    dg_linear_forward(out, x, w, NULL, N, C, OC);
    CHECK_CLOSE(out, want_nb, (size_t)N * OC, 1e-6, "linear forward without bias vs naive");

    float *dx = frandn((size_t)N * C), *dw = frandn((size_t)OC * C), *db = frandn(OC);
    double *ex1 = accumulated(dx, gx, 1, (size_t)N * C), *ex2 = accumulated(dx, gx, 2, (size_t)N * C);
    double *ew1 = accumulated(dw, gw, 1, (size_t)OC * C), *ew2 = accumulated(dw, gw, 2, (size_t)OC * C);
    double *eb1 = accumulated(db, gb, 1, OC), *eb2 = accumulated(db, gb, 2, OC);
    CHECK(dg_linear_backward(dx, dw, db, dy, x, w, N, C, OC) == DG_STATUS_OK, "linear backward status ok");
    CHECK_CLOSE(dx, ex1, (size_t)N * C, 1e-6, "linear backward dinp accumulates onto existing values");
    CHECK_CLOSE(dw, ew1, (size_t)OC * C, 1e-6, "linear backward dweight accumulates");
    CHECK_CLOSE(db, eb1, OC, 1e-6, "linear backward dbias accumulates");
    dg_linear_backward(dx, dw, db, dy, x, w, N, C, OC);
    CHECK_CLOSE(dx, ex2, (size_t)N * C, 1e-6, "linear backward twice: dinp gets twice the gradient");
    CHECK_CLOSE(dw, ew2, (size_t)OC * C, 1e-6, "linear backward twice: dweight gets twice the gradient");
    CHECK_CLOSE(db, eb2, OC, 1e-6, "linear backward twice: dbias gets twice the gradient");
    float *dw_only = falloc((size_t)OC * C);
    memset(dw_only, 0, (size_t)OC * C * sizeof(float));
    CHECK(dg_linear_backward(NULL, dw_only, NULL, dy, x, w, N, C, OC) == DG_STATUS_OK &&
              dg_linear_backward(NULL, NULL, NULL, dy, x, w, N, C, OC) == DG_STATUS_OK,
          "linear backward with NULL gradients ok");
    CHECK_CLOSE(dw_only, gw, (size_t)OC * C, 1e-6, "linear backward dweight alone");
    CHECK(same_floats(x, x0, (size_t)N * C) && same_floats(w, w0, (size_t)OC * C) &&
              same_floats(dy, dy0, (size_t)N * OC),
          "linear: inputs unchanged");
    CHECK(dg_linear_forward(out, x, w, b, 0, C, OC) == DG_STATUS_ERR_SHAPE &&
              dg_linear_forward(out, x, w, b, N, -1, OC) == DG_STATUS_ERR_SHAPE &&
              dg_linear_forward(out, x, w, b, N, C, 0) == DG_STATUS_ERR_SHAPE &&
              dg_linear_forward(NULL, x, w, b, N, C, OC) == DG_STATUS_ERR_NULL &&
              dg_linear_forward(out, x, NULL, b, N, C, OC) == DG_STATUS_ERR_NULL &&
              dg_linear_backward(dx, dw, db, dy, x, w, N, 0, OC) == DG_STATUS_ERR_SHAPE &&
              dg_linear_backward(dx, dw, db, NULL, x, w, N, C, OC) == DG_STATUS_ERR_NULL,
          "linear: bad sizes -> shape error, NULL -> null error");
    free(x); free(w); free(b); free(dy); free(x0); free(w0); free(dy0);
    free(want); free(want_nb); free(gx); free(gw); free(gb); free(out);
    free(dx); free(dw); free(db); free(ex1); free(ex2); free(ew1); free(ew2);
    free(eb1); free(eb2); free(dw_only);
}

/* One image through a linear layer, which on an AVX-512 CPU runs a kernel of its
 * own (16 rows at a time, each row's sum in one accumulator): against the naive
 * sum within float32 rounding, with and without bias, on widths that leave a tail
 * of lanes (C % 16) and heights that leave a tail of rows (OC % 16); where the
 * kernel runs, the same bits at 1, 2 and 3 threads, and rows [a, b) computed
 * alone (weight rows a on, OC = b - a) the same bits as in the whole layer, which
 * dg_linear_bn_convt_forward relies on (elsewhere, within rounding at each count
 * and in parts; the head runs layer by layer there); with the SIMD paths off, the
 * GEMM path, within rounding. */
static void test_linear_one(void) {
    printf("# linear: one image\n");
    /* 143: the widest row of the short rows' kernel (linear_one_short), 144 the
     * narrowest of the other; multiples of 4 also take linear_one_lines (order 2),
     * whose rows repeat their place in a line every 4 (4, 12, 36, 100, 140), 2 (8)
     * or 1 (16) rows */
    static const int Cs[] = {1, 4, 8, 12, 15, 16, 17, 36, 100, 140, 143, 144, 300};
    static const int OCs[] = {1, 5, 16, 37, 200};
    int before = dg_get_num_threads();
    /* the kernel's bits do not depend on the split; without AVX-512 the product is
     * OpenBLAS's sgemv (or the reference GEMM), whose bits may depend on the rows
     * around an element and on the thread count (Debian's OpenBLAS on Zen 3,
     * PERFORMANCE.md log 109): there each result is checked against the naive sum */
    const int kernel = dg_avx512();
    for (size_t i = 0; i < sizeof Cs / sizeof Cs[0]; i++) {
        for (size_t k = 0; k < sizeof OCs / sizeof OCs[0]; k++) {
            int C = Cs[i], OC = OCs[k];
            float *x = frandn((size_t)C), *w = frandn((size_t)OC * C), *b = frandn(OC);
            double *want = dzeros(OC), *want_nb = dzeros(OC);
            for (int o = 0; o < OC; o++) {
                for (int c = 0; c < C; c++) want_nb[o] += (double)x[c] * w[(size_t)o * C + c];
                want[o] = want_nb[o] + b[o];
            }
            float *out = fnan(OC), *out_nb = fnan(OC), *t = fnan(OC), *part = fnan(OC);
            dg_set_num_threads(1);
            CHECK(dg_linear_forward(out, x, w, b, 1, C, OC) == DG_STATUS_OK &&
                      dg_linear_forward(out_nb, x, w, NULL, 1, C, OC) == DG_STATUS_OK,
                  "linear of one image C=%d OC=%d: status ok", C, OC);
            CHECK_CLOSE(out, want, (size_t)OC, 1e-5, "linear of one image C=%d OC=%d vs naive",
                        C, OC);
            CHECK_CLOSE(out_nb, want_nb, (size_t)OC, 1e-5,
                        "linear of one image C=%d OC=%d without bias vs naive", C, OC);
            int same = 1;
            for (int th = 2; th <= 3; th++) {
                dg_set_num_threads(th);
                fill_nan(t, OC);
                dg_linear_forward(t, x, w, b, 1, C, OC);
                if (kernel)
                    same &= same_floats(t, out, OC);
                else
                    CHECK_CLOSE(t, want, (size_t)OC, 1e-5,
                                "linear of one image C=%d OC=%d at %d threads vs naive", C, OC,
                                th);
            }
            dg_set_num_threads(1);
            int same_orders = 1;
            for (int order = 0; order <= 2; order++) {   /* every order of the sums */
                int cpu = dg_linear_one_order(order);
                fill_nan(t, OC);
                dg_linear_forward(t, x, w, b, 1, C, OC);
                same_orders &= same_floats(t, out, OC) && dg_linear_one_order(-1) == order;
                same_orders &= dg_linear_one_order(-1) == cpu;   /* back to the CPU's */
            }
            int a = OC / 3, e = OC - OC / 4;   /* rows [a, e) alone, then the rest */
            dg_linear_forward(part, x, w, b, 1, C, a > 0 ? a : 1);
            if (e > a) dg_linear_forward(part + a, x, w + (size_t)a * C, b + a, 1, C, e - a);
            if (OC > e) dg_linear_forward(part + e, x, w + (size_t)e * C, b + e, 1, C, OC - e);
            if (kernel) {
                CHECK(same && same_orders && same_floats(part, out, OC),
                      "linear of one image C=%d OC=%d: the same bits at 1-3 threads, in "
                      "every order of the sums and in parts",
                      C, OC);
            } else {
                CHECK(same_orders, "linear of one image C=%d OC=%d: no AVX-512, the same bits "
                      "whichever order of the kernel's sums is asked for", C, OC);
                CHECK_CLOSE(part, want, (size_t)OC, 1e-5,
                            "linear of one image C=%d OC=%d in parts vs naive", C, OC);
            }
            dg_set_simd(0);
            fill_nan(t, OC);
            dg_linear_forward(t, x, w, b, 1, C, OC);
            dg_set_simd(1);
            CHECK_CLOSE(t, want, (size_t)OC, 1e-5,
                        "linear of one image C=%d OC=%d, SIMD off (the GEMM path) vs naive", C,
                        OC);
            free(x); free(w); free(b); free(want); free(want_nb);
            free(out); free(out_nb); free(t); free(part);
        }
    }
    /* linear_one_lines (order 2) against linear_one_short (order 1), the same bits:
     * weights starting 0 to 15 floats into a 64-byte line, so every place of a row
     * in its lines, and rows with an inf, a NaN and a -inf among their weights, whose
     * neighbours' sums (which load the lines those share) stay finite */
    static const int lineCs[] = {4, 8, 12, 16, 36, 100, 140};
    dg_set_num_threads(1);
    for (size_t i = 0; i < sizeof lineCs / sizeof lineCs[0]; i++) {
        int C = lineCs[i], OC = 37, same = 1, finite = 1;
        float *x = frandn((size_t)C), *b = frandn(OC);
        float *one = fnan(OC), *lines = fnan(OC);
        for (int off = 0; off < 16; off++) {
            float *buf = frandn((size_t)OC * C + 16), *w = buf + off;
            w[(size_t)5 * C + 3] = INFINITY;
            w[(size_t)21 * C - 1] = NAN;   /* the last weight of row 20 */
            w[(size_t)36 * C] = -INFINITY;
            dg_linear_one_order(1);
            fill_nan(one, OC);
            dg_linear_forward(one, x, w, b, 1, C, OC);
            dg_linear_one_order(2);
            fill_nan(lines, OC);
            dg_linear_forward(lines, x, w, b, 1, C, OC);
            dg_linear_one_order(-1);   /* back to the CPU's */
            same &= same_floats(one, lines, OC);
            for (int o = 0; o < OC; o++)
                if (o != 5 && o != 20 && o != 36) finite &= isfinite(lines[o]) != 0;
            free(buf);
        }
        CHECK(same && finite && !isfinite(lines[5]) && isnan(lines[20]) &&
                  !isfinite(lines[36]),
              "linear of one image C=%d OC=%d from whole lines (order 2): the same bits as "
              "row by row at every offset of the weights in a line; inf and NaN weights "
              "reach only their rows' sums", C, OC);
        free(x); free(b); free(one); free(lines);
    }
    dg_set_num_threads(before);
}

/* A batch through a linear layer of at most 128 inputs, which on an AVX-512
 * CPU runs a kernel of its own (6 weight rows against up to 64 images at a
 * time, the images along the vectors, transposed in registers on the way
 * out): against the naive sum within float32 rounding, with and without bias,
 * on batches that leave a tail of images (N % 16, N % 64), widths with a tail
 * of rows (OC % 6) and C = 129, which takes the GEMM path; nothing written past
 * out; where the kernel runs, the same bits at 1, 2 and 3 threads and with the
 * rows computed in parts (the GEMM path's bits depend on the split: the
 * reference GEMM's do); with the SIMD paths off, the GEMM path, within rounding. */
static void test_linear_batch(void) {
    printf("# linear: a batch of few inputs\n");
    static const int Ns[] = {16, 37, 64, 130}, Cs[] = {1, 17, 100, 128, 129},
                     OCs[] = {1, 5, 6, 37};
    int before = dg_get_num_threads();
    for (size_t q = 0; q < sizeof Ns / sizeof Ns[0]; q++) {
        for (size_t i = 0; i < sizeof Cs / sizeof Cs[0]; i++) {
            for (size_t k = 0; k < sizeof OCs / sizeof OCs[0]; k++) {
                int N = Ns[q], C = Cs[i], OC = OCs[k];
                size_t no = (size_t)N * OC;
                float *x = frandn((size_t)N * C), *w = frandn((size_t)OC * C), *b = frandn(OC);
                double *want = dzeros(no), *want_nb = dzeros(no);
                for (int n = 0; n < N; n++) {
                    for (int o = 0; o < OC; o++) {
                        double s = 0.0;
                        for (int c = 0; c < C; c++)
                            s += (double)x[(size_t)n * C + c] * w[(size_t)o * C + c];
                        want_nb[(size_t)n * OC + o] = s;
                        want[(size_t)n * OC + o] = s + b[o];
                    }
                }
                /* 16 floats past the end of out, which must stay NaN */
                float *out = fnan(no + 16), *out_nb = fnan(no), *t = fnan(no), *part = fnan(no);
                dg_set_num_threads(1);
                CHECK(dg_linear_forward(out, x, w, b, N, C, OC) == DG_STATUS_OK &&
                          dg_linear_forward(out_nb, x, w, NULL, N, C, OC) == DG_STATUS_OK,
                      "linear of a batch N=%d C=%d OC=%d: status ok", N, C, OC);
                CHECK_CLOSE(out, want, no, 2e-6, "linear of a batch N=%d C=%d OC=%d vs naive",
                            N, C, OC);
                CHECK_CLOSE(out_nb, want_nb, no, 2e-6,
                            "linear of a batch N=%d C=%d OC=%d without bias vs naive", N, C, OC);
                int past = 1;
                for (int e = 0; e < 16; e++) past &= isnan(out[no + e]) != 0;
                int same = 1;
                for (int th = 2; th <= 3; th++) {
                    dg_set_num_threads(th);
                    fill_nan(t, no);
                    dg_linear_forward(t, x, w, b, N, C, OC);
                    same &= same_floats(t, out, no);
                }
                dg_set_num_threads(1);
                /* rows [0, a) and [a, OC) apart, each into a (N, rows) array */
                int a = OC / 2 > 0 ? OC / 2 : OC;
                float *p0 = fnan((size_t)N * a), *p1 = fnan((size_t)N * (OC - a) + 1);
                dg_linear_forward(p0, x, w, b, N, C, a);
                if (OC > a) dg_linear_forward(p1, x, w + (size_t)a * C, b + a, N, C, OC - a);
                for (int n = 0; n < N; n++) {
                    memcpy(part + (size_t)n * OC, p0 + (size_t)n * a, (size_t)a * sizeof(float));
                    memcpy(part + (size_t)n * OC + a, p1 + (size_t)n * (OC - a),
                           (size_t)(OC - a) * sizeof(float));
                }
                CHECK(past, "linear of a batch N=%d C=%d OC=%d: nothing written past out", N, C,
                      OC);
                if (dg_linear_batch_fits(N, C)) {   /* the kernel's promise, not the GEMM's */
                    CHECK(same && same_floats(part, out, no),
                          "linear of a batch N=%d C=%d OC=%d: the same bits at 1-3 threads and "
                          "in parts", N, C, OC);
                }
                dg_set_simd(0);
                fill_nan(t, no);
                dg_linear_forward(t, x, w, b, N, C, OC);
                dg_set_simd(1);
                CHECK_CLOSE(t, want, no, 2e-6,
                            "linear of a batch N=%d C=%d OC=%d, SIMD off (the GEMM path) vs naive",
                            N, C, OC);
                free(x); free(w); free(b); free(want); free(want_nb);
                free(out); free(out_nb); free(t); free(part); free(p0); free(p1);
            }
        }
    }
    dg_set_num_threads(before);
}

/* A generator's head in one call (dg_linear_bn_convt_forward: linear, eval-mode
 * batch norm with its activation, transposed convolution) against the three
 * calls one by one: lin, hid and out the same bits, for one image (where an
 * AVX-512 CPU on one thread goes chunk of input channels by chunk) and two (the
 * three calls), with ReLU (half the transposed layer's inputs zero: its sparse
 * rows), no activation (its dense rows) and a leaky ReLU, at 1 and 2 threads; on
 * 80 input channels (a chunk of 64 and one of 16), 7x7 -> 14x14, to 8 output
 * channels and to 28 (seven blocks, the next chunk's input made in runs of two
 * blocks, the last run of one), on 8 channels of 4x4 with K = 17 and on 3 of 5x5
 * (75 features: a batch norm's last 11 past its vectors of 16); each also
 * with the batch norm that follows over OC channels and its activation (tail 1:
 * with gamma and beta, ReLU, over sums that are zeros in channel 0 and NaNs in
 * channel 1; tail 2:
 * without either, the same activation as the first), against the fourth call,
 * dg_batchnorm_act_forward_eval on the third's output; then its errors. */
static void head_case(int N, int K, int C, int H, int OC, int act, int threads, int tail) {
    int W = H, F = C * H * W, OH = 2 * H, OW = 2 * W;
    float *z = frandn((size_t)N * K), *lw = frandn((size_t)F * K), *lb = frandn(F);
    float *mean = frandn(F), *var = frandn(F), *gamma = frandn(F), *beta = frandn(F);
    for (int f = 0; f < F; f++) var[f] = 1.0f + var[f] * var[f];
    float *w = frandn((size_t)C * OC * 16), *b = frandn(OC);
    float *mean2 = frandn(OC), *var2 = frandn(OC), *gamma2 = frandn(OC), *beta2 = frandn(OC);
    for (int o = 0; o < OC; o++) var2[o] = 0.5f + var2[o] * var2[o];
    size_t ws_n = dg_conv_transpose2d_workspace_size(N, C, H, W, OC, 4, 4, 2, 2, 1, 1, OH, OW);
    size_t fo = (size_t)N * OC * OH * OW, fh = (size_t)N * F;
    float *ws = falloc(ws_n), *lin = fnan(fh), *hid = fnan(fh), *out = fnan(fo);
    float *lin1 = fnan(fh), *hid1 = fnan(fh), *out1 = fnan(fo);
    float slope = act == DG_ACT_LEAKY_RELU ? 0.2f : 0.0f;
    int act2 = tail == 1 ? DG_ACT_RELU : act;
    float slope2 = act2 == DG_ACT_LEAKY_RELU ? 0.2f : 0.0f;
    const float *g2 = tail == 1 ? gamma2 : NULL, *b2 = tail == 1 ? beta2 : NULL;
    if (tail == 1) {
        /* channel 0's sums zeros (its weights and bias), channel 1's NaNs (its bias) */
        for (int o = 0; o < OC && o < 2; o++) mean2[o] = 0.0f;
        b[0] = 0.0f;
        for (int c = 0; c < C; c++)
            for (int k = 0; k < 16; k++) w[((size_t)c * OC) * 16 + k] = 0.0f;
        if (OC > 1) b[1] = NAN;
    }
    dg_set_num_threads(threads);
    dg_status st = dg_linear_bn_convt_forward(
        out, lin, hid, ws, z, lw, lb, mean, var, gamma, beta, 1e-5f, act, slope, w, b, N, K, C,
        H, W, OC, 4, 4, 2, 2, 1, 1, OH, OW, tail ? mean2 : NULL, tail ? var2 : NULL, g2, b2,
        1e-3f, act2, slope2, NULL, NULL);
    /* again with the weights packed (dg_convt_few_pack), which the one-image kernel
     * reads instead of its per-call copies, and the first batch norm's scales made
     * once (dg_batchnorm_eval_scale; with gamma NULL for tail 2), which it reads
     * instead of computing them: the same bits; with an inf weight (tail 2, a
     * channel's whose inputs are zero after a ReLU), the flag says so and the kernel
     * copies as without */
    const float *gs = tail == 2 ? NULL : gamma;
    float *sc = fnan(F);
    dg_status sts = dg_batchnorm_eval_scale(sc, var, gs, F, 1e-5f);
    size_t pn = dg_convt_few_packed_floats(C, OC);
    float *pk = fnan(pn), *out2 = fnan(fo), *lin2 = fnan(fh), *hid2 = fnan(fh);
    float *w2 = fcopy(w, (size_t)C * OC * 16);
    if (tail == 2) w2[(size_t)(C - 1) * OC * 16 + 5] = INFINITY;
    dg_status stp = dg_convt_few_pack(pk, w2, C, OC);
    int flag_ok = stp == DG_STATUS_OK && pk[pn - 1] == (tail == 2 ? 0.0f : 1.0f);
    float *out0 = fnan(fo), *lin0 = fnan(fh), *hid0 = fnan(fh);
    if (stp == DG_STATUS_OK && sts == DG_STATUS_OK && tail == 2)   /* gamma NULL */
        stp = dg_linear_bn_convt_forward(
            out0, lin0, hid0, ws, z, lw, lb, mean, var, NULL, beta, 1e-5f, act, slope, w, b, N,
            K, C, H, W, OC, 4, 4, 2, 2, 1, 1, OH, OW, mean2, var2, g2, b2, 1e-3f, act2, slope2,
            NULL, NULL);
    if (stp == DG_STATUS_OK && sts == DG_STATUS_OK)
        stp = dg_linear_bn_convt_forward(
            out2, lin2, hid2, ws, z, lw, lb, mean, var, gs, beta, 1e-5f, act, slope, w2, b,
            N, K, C, H, W, OC, 4, 4, 2, 2, 1, 1, OH, OW, tail ? mean2 : NULL,
            tail ? var2 : NULL, g2, b2, 1e-3f, act2, slope2, pk, sc);
    float *out3 = fnan(fo), *lin3 = fnan(fh), *hid3 = fnan(fh);
    if (stp == DG_STATUS_OK && tail == 2)   /* the reference of the inf weight's output */
        stp = dg_linear_bn_convt_forward(
            out3, lin3, hid3, ws, z, lw, lb, mean, var, NULL, beta, 1e-5f, act, slope, w2, b,
            N, K, C, H, W, OC, 4, 4, 2, 2, 1, 1, OH, OW, mean2, var2, g2, b2, 1e-3f, act2,
            slope2, NULL, NULL);
    const float *hidr = tail == 2 ? hid0 : hid;
    CHECK(stp == DG_STATUS_OK && sts == DG_STATUS_OK && flag_ok &&
              same_floats(lin2, lin, fh) && same_floats(hid2, hidr, fh) &&
              same_floats(out2, tail == 2 ? out3 : out, fo),
          "head N=%d K=%d C=%d %dx%d OC=%d act=%d tail=%d, %d thread(s): packed weights%s "
          "and scales%s, the same bits", N, K, C, H, W, OC, act, tail, threads,
          tail == 2 ? " with an inf (flag 0)" : "", tail == 2 ? " without gamma" : "");
    free(pk); free(out2); free(lin2); free(hid2); free(w2); free(out3); free(sc);
    free(out0); free(lin0); free(hid0); free(lin3); free(hid3);
    dg_status st1 = dg_linear_forward(lin1, z, lw, lb, N, K, F);
    if (st1 == DG_STATUS_OK)
        st1 = dg_batchnorm_act_forward_eval(hid1, lin1, mean, var, gamma, beta, N, F, 1, 1e-5f,
                                            act, slope);
    if (st1 == DG_STATUS_OK)
        st1 = dg_conv_transpose2d_forward(out1, ws, hid1, w, b, N, C, H, W, OC, 4, 4, 2, 2, 1,
                                          1, OH, OW);
    if (st1 == DG_STATUS_OK && tail) {
        float *t = fnan(fo);
        st1 = dg_batchnorm_act_forward_eval(t, out1, mean2, var2, g2, b2, N, OC, OH * OW, 1e-3f,
                                            act2, slope2);
        memcpy(out1, t, fo * sizeof(float));
        free(t);
    }
    CHECK(st == DG_STATUS_OK && st1 == DG_STATUS_OK && same_floats(lin, lin1, fh) &&
              same_floats(hid, hid1, fh) && same_floats(out, out1, fo),
          "head N=%d K=%d C=%d %dx%d OC=%d act=%d tail=%d, %d thread(s): the layers' bits", N,
          K, C, H, W, OC, act, tail, threads);
    free(z); free(lw); free(lb); free(mean); free(var); free(gamma); free(beta); free(w);
    free(b); free(ws); free(lin); free(hid); free(out); free(lin1); free(hid1); free(out1);
    free(mean2); free(var2); free(gamma2); free(beta2);
}

static void test_linear_bn_convt(void) {
    printf("# linear, batch norm, transposed convolution in one call\n");
    int before = dg_get_num_threads();
    /* K, C, H, OC */
    static const int shapes[][4] = {{100, 80, 7, 8}, {100, 80, 7, 28}, {17, 8, 4, 4},
                                    {17, 3, 5, 4}};
    static const int acts[] = {DG_ACT_RELU, DG_ACT_NONE, DG_ACT_LEAKY_RELU};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int N = 1; N <= 2; N++)
            for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++)
                for (int th = 1; th <= 2; th++)
                    for (int tail = 0; tail <= 2; tail++)
                        head_case(N, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3],
                                  acts[a], th, tail);
    dg_set_num_threads(before);
    /* errors: sizes, NULLs, eps and act, as the layers' own */
    int K = 3, C = 4, H = 2, OC = 4, F = C * H * H;
    float *z = frandn(K), *lw = frandn((size_t)F * K), *v = frandn(F), *w = frandn(C * OC * 16);
    float *lin = falloc(F), *hid = falloc(F), *out = falloc(OC * 16);
    float *ws =
        falloc(dg_conv_transpose2d_workspace_size(1, C, H, H, OC, 4, 4, 2, 2, 1, 1, 4, 4));
#define HEAD2(o, l, zz, k, eps, act, m2, v2, g2, eps2, act2)                               \
    dg_linear_bn_convt_forward(o, l, hid, ws, zz, lw, NULL, v, v, NULL, NULL, eps, act, 0.0f, \
                               w, NULL, 1, k, C, H, H, OC, 4, 4, 2, 2, 1, 1, 4, 4, m2, v2, g2, \
                               NULL, eps2, act2, 0.0f, NULL, NULL)
#define HEAD(o, l, zz, k, eps, act) HEAD2(o, l, zz, k, eps, act, NULL, NULL, NULL, 0.0f, 0)
    CHECK(HEAD(out, lin, z, 0, 1e-5f, 0) == DG_STATUS_ERR_SHAPE &&
              HEAD(NULL, lin, z, K, 1e-5f, 0) == DG_STATUS_ERR_NULL &&
              HEAD(out, NULL, z, K, 1e-5f, 0) == DG_STATUS_ERR_NULL &&
              HEAD(out, lin, NULL, K, 1e-5f, 0) == DG_STATUS_ERR_NULL &&
              HEAD(out, lin, z, K, 0.0f, 0) == DG_STATUS_ERR_VALUE &&
              HEAD(out, lin, z, K, 1e-5f, 7) == DG_STATUS_ERR_VALUE &&
              HEAD(out, lin, z, K, 1e-5f, DG_ACT_RELU) == DG_STATUS_OK,
          "head: K = 0 -> shape error, NULL -> null error, eps 0 or act 7 -> value error");
    CHECK(HEAD2(out, lin, z, K, 1e-5f, 0, v, NULL, NULL, 1e-5f, 0) == DG_STATUS_ERR_NULL &&
              HEAD2(out, lin, z, K, 1e-5f, 0, NULL, v, NULL, 1e-5f, 0) == DG_STATUS_ERR_NULL &&
              HEAD2(out, lin, z, K, 1e-5f, 0, NULL, NULL, v, 1e-5f, 0) == DG_STATUS_ERR_NULL &&
              HEAD2(out, lin, z, K, 1e-5f, 0, v, v, NULL, 0.0f, 0) == DG_STATUS_ERR_VALUE &&
              HEAD2(out, lin, z, K, 1e-5f, 0, v, v, NULL, 1e-5f, 7) == DG_STATUS_ERR_VALUE &&
              HEAD2(out, lin, z, K, 1e-5f, 0, v, v, v, 1e-5f, DG_ACT_RELU) == DG_STATUS_OK,
          "head's second batch norm: a mean without a variance or gamma without either -> "
          "null error, eps 0 or act 7 -> value error");
#undef HEAD
#undef HEAD2
    free(z); free(lw); free(v); free(w); free(lin); free(hid); free(out); free(ws);
    /* dg_batchnorm_eval_scale: 1 / sqrt(var + eps) in double, to float, times gamma */
    float var3[3] = {1.0f, 0.25f, 3.0f}, g3[3] = {2.0f, -1.0f, 0.5f}, s3[3], s3n[3];
    int ok = dg_batchnorm_eval_scale(s3, var3, g3, 3, 1e-5f) == DG_STATUS_OK &&
             dg_batchnorm_eval_scale(s3n, var3, NULL, 3, 1e-5f) == DG_STATUS_OK;
    for (int c = 0; c < 3; c++) {
        float r = (float)(1.0 / sqrt((double)var3[c] + (double)1e-5f));
        ok = ok && s3[c] == r * g3[c] && s3n[c] == r;
    }
    CHECK(ok && dg_batchnorm_eval_scale(s3, var3, g3, 0, 1e-5f) == DG_STATUS_ERR_SHAPE &&
              dg_batchnorm_eval_scale(NULL, var3, g3, 3, 1e-5f) == DG_STATUS_ERR_NULL &&
              dg_batchnorm_eval_scale(s3, NULL, g3, 3, 1e-5f) == DG_STATUS_ERR_NULL &&
              dg_batchnorm_eval_scale(s3, var3, g3, 3, 0.0f) == DG_STATUS_ERR_VALUE,
          "batch norm scales: 1/sqrt(var + eps) times gamma (or 1); C = 0 -> shape error, "
          "NULL -> null error, eps 0 -> value error");
}

/* dg_convt_few_pack's layout, element by element from its description; its size
 * and errors. */
static void test_convt_few_pack(void) {
    printf("# transposed convolution: the one-image kernel's packed weights\n");
    static const int shapes[][2] = {{80, 8}, {64, 4}, {3, 12}, {130, 4}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int C = shapes[s][0], OC = shapes[s][1];
        size_t n = dg_convt_few_packed_floats(C, OC);
        float *w = frandn((size_t)C * OC * 16), *pk = fnan(n);
        int ok = n == (size_t)C * OC * 16 + 16 && dg_convt_few_pack(pk, w, C, OC) == DG_STATUS_OK;
        for (int c = 0; ok && c < C; c++) {
            int c0 = c / 64 * 64, cc = C - c0 < 64 ? C - c0 : 64;
            for (int oc = 0; oc < OC; oc++)
                for (int k = 0; k < 16; k++) {
                    size_t at = (size_t)c0 * OC * 16 + (size_t)(oc / 4) * cc * 64 +
                                (size_t)(c - c0) * 64 + (size_t)(k / 4) * 16 + (oc % 4) * 4 +
                                k % 4;
                    ok &= pk[at] == w[((size_t)c * OC + oc) * 16 + k];
                }
        }
        for (int i = 0; i < 16; i++) ok &= pk[n - 16 + i] == 1.0f;
        w[(size_t)C * OC * 16 - 1] = NAN;
        ok &= dg_convt_few_pack(pk, w, C, OC) == DG_STATUS_OK && pk[n - 1] == 0.0f;
        CHECK(ok, "pack C=%d OC=%d: chunks of 64 channels, blocks of 4, kernel rows by 128-bit "
              "lanes; the finite flag 1, then 0 with a NaN", C, OC);
        free(w); free(pk);
    }
    float w[16 * 4], pk[16 * 4 + 16];
    CHECK(dg_convt_few_packed_floats(1, 6) == 0 && dg_convt_few_packed_floats(0, 4) == 0 &&
              dg_convt_few_packed_floats(4, -4) == 0 &&
              dg_convt_few_packed_floats(INT_MAX, INT_MAX - 3) == 0 &&
              dg_convt_few_pack(pk, w, 1, 6) == DG_STATUS_ERR_SHAPE &&
              dg_convt_few_pack(NULL, w, 1, 4) == DG_STATUS_ERR_NULL &&
              dg_convt_few_pack(pk, NULL, 1, 4) == DG_STATUS_ERR_NULL,
          "pack: OC not a multiple of 4, C or OC < 1 or an overflowing count -> 0 floats and "
          "a shape error; NULL -> null error");
}

/* The bias gradient of a wide layer (several blocks of columns, split over the
 * threads): each column's sum over n in double, in order, then added to dbias
 * and rounded once, which the reference computes the same way, so equal bits; at
 * 1, 2 and 3 threads and with the AVX2 build off. */
static void test_linear_dbias_wide(void) {
    printf("# linear: bias gradient of a wide layer\n");
    const int N = 70, C = 3, OC = 1000;
    float *x = frandn((size_t)N * C), *w = frandn((size_t)OC * C), *dy = frandn((size_t)N * OC);
    float *want = frandn(OC), *db = falloc(OC);
    int before = dg_get_num_threads();
    for (int o = 0; o < OC; o++) {
        double acc = 0.0;
        for (int n = 0; n < N; n++) acc += dy[(size_t)n * OC + o];
        db[o] = want[o];
        want[o] = (float)(want[o] + acc);
    }
    float *start = fcopy(db, OC);
    int ok = 1;
    for (int run = 0; run < 4; run++) {
        dg_set_num_threads(run < 3 ? run + 1 : 2);
        if (run == 3) dg_set_simd(0);
        memcpy(db, start, OC * sizeof(float));
        ok &= dg_linear_backward(NULL, NULL, db, dy, x, w, N, C, OC) == DG_STATUS_OK &&
              same_floats(db, want, OC);
        dg_set_simd(1);
    }
    dg_set_num_threads(before);
    CHECK(ok, "linear dbias N=%d OC=%d: the double sums' bits at 1, 2, 3 threads and without "
          "AVX2", N, OC);
    free(x); free(w); free(dy); free(want); free(db); free(start);
}

/* ------------------------------------------------------------------------- */
/* Convolution and transposed convolution                                     */
/* ------------------------------------------------------------------------- */

typedef struct {
    int N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW;
} conv_geom;

/* Direct conv2d in double. out is (N, OC, OH, OW), x (N, C, H, W),
 * w (OC, C, KH, KW), b (OC) or NULL. */
static void conv2d_naive(double *out, const float *x, const float *w,
                         const float *b, const conv_geom *g) {
    for (int n = 0; n < g->N; n++)
    for (int oc = 0; oc < g->OC; oc++)
    for (int oh = 0; oh < g->OH; oh++)
    for (int ow = 0; ow < g->OW; ow++) {
        double s = b ? b[oc] : 0.0;
        for (int c = 0; c < g->C; c++)
        for (int kh = 0; kh < g->KH; kh++)
        for (int kw = 0; kw < g->KW; kw++) {
            int ih = oh * g->SH - g->PH + kh, iw = ow * g->SW - g->PW + kw;
            if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
            s += (double)x[((size_t)(n * g->C + c) * g->H + ih) * g->W + iw] *
                 w[((size_t)(oc * g->C + c) * g->KH + kh) * g->KW + kw];
        }
        out[((size_t)(n * g->OC + oc) * g->OH + oh) * g->OW + ow] = s;
    }
}

/* Gradients of conv2d_naive in double (assigned): dx (N,C,H,W), dw (OC,C,KH,KW), db (OC). */
static void conv2d_backward_naive(double *dx, double *dw, double *db, const float *dy,
                                  const float *x, const float *w, const conv_geom *g) {
    for (int n = 0; n < g->N; n++)
    for (int oc = 0; oc < g->OC; oc++)
    for (int oh = 0; oh < g->OH; oh++)
    for (int ow = 0; ow < g->OW; ow++) {
        double d = dy[((size_t)(n * g->OC + oc) * g->OH + oh) * g->OW + ow];
        db[oc] += d;
        for (int c = 0; c < g->C; c++)
        for (int kh = 0; kh < g->KH; kh++)
        for (int kw = 0; kw < g->KW; kw++) {
            int ih = oh * g->SH - g->PH + kh, iw = ow * g->SW - g->PW + kw;
            if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
            size_t xi = ((size_t)(n * g->C + c) * g->H + ih) * g->W + iw;
            size_t wi = ((size_t)(oc * g->C + c) * g->KH + kh) * g->KW + kw;
            dx[xi] += d * w[wi];
            dw[wi] += d * x[xi];
        }
    }
}

/* Direct conv_transpose2d in double, as a scatter. out is (N, OC, OH, OW),
 * x (N, C, H, W), w (C, OC, KH, KW), b (OC) or NULL. */
static void conv_t_naive(double *out, const float *x, const float *w,
                         const float *b, const conv_geom *g) {
    for (int n = 0; n < g->N; n++)
    for (int oc = 0; oc < g->OC; oc++)
    for (size_t p = 0; p < (size_t)g->OH * g->OW; p++) {
        out[(size_t)(n * g->OC + oc) * g->OH * g->OW + p] = b ? b[oc] : 0.0;
    }
    for (int n = 0; n < g->N; n++)
    for (int c = 0; c < g->C; c++)
    for (int ih = 0; ih < g->H; ih++)
    for (int iw = 0; iw < g->W; iw++) {
        double v = x[((size_t)(n * g->C + c) * g->H + ih) * g->W + iw];
        for (int oc = 0; oc < g->OC; oc++)
        for (int kh = 0; kh < g->KH; kh++)
        for (int kw = 0; kw < g->KW; kw++) {
            int oh = ih * g->SH - g->PH + kh, ow = iw * g->SW - g->PW + kw;
            if (oh < 0 || oh >= g->OH || ow < 0 || ow >= g->OW) continue;
            out[((size_t)(n * g->OC + oc) * g->OH + oh) * g->OW + ow] +=
                v * w[((size_t)(c * g->OC + oc) * g->KH + kh) * g->KW + kw];
        }
    }
}

/* Gradients of conv_t_naive in double (assigned): dx (N,C,H,W), dw (C,OC,KH,KW), db (OC). */
static void conv_t_backward_naive(double *dx, double *dw, double *db, const float *dy,
                                  const float *x, const float *w, const conv_geom *g) {
    for (int n = 0; n < g->N; n++)
    for (int oc = 0; oc < g->OC; oc++)
    for (size_t p = 0; p < (size_t)g->OH * g->OW; p++) {
        db[oc] += dy[(size_t)(n * g->OC + oc) * g->OH * g->OW + p];
    }
    for (int n = 0; n < g->N; n++)
    for (int c = 0; c < g->C; c++)
    for (int ih = 0; ih < g->H; ih++)
    for (int iw = 0; iw < g->W; iw++) {
        size_t xi = ((size_t)(n * g->C + c) * g->H + ih) * g->W + iw;
        for (int oc = 0; oc < g->OC; oc++)
        for (int kh = 0; kh < g->KH; kh++)
        for (int kw = 0; kw < g->KW; kw++) {
            int oh = ih * g->SH - g->PH + kh, ow = iw * g->SW - g->PW + kw;
            if (oh < 0 || oh >= g->OH || ow < 0 || ow >= g->OW) continue;
            double d = dy[((size_t)(n * g->OC + oc) * g->OH + oh) * g->OW + ow];
            size_t wi = ((size_t)(c * g->OC + oc) * g->KH + kh) * g->KW + kw;
            dx[xi] += d * w[wi];
            dw[wi] += d * x[xi];
        }
    }
}

static size_t ws_size(const conv_geom *g, int transposed) {
    return transposed
        ? dg_conv_transpose2d_workspace_size(g->N, g->C, g->H, g->W, g->OC, g->KH, g->KW,
                                             g->SH, g->SW, g->PH, g->PW, g->OH, g->OW)
        : dg_conv2d_workspace_size(g->N, g->C, g->H, g->W, g->OC, g->KH, g->KW, g->SH,
                                   g->SW, g->PH, g->PW, g->OH, g->OW);
}

static dg_status conv_fwd(const conv_geom *g, int transposed, float *out, float *ws,
                          const float *x, const float *w, const float *b) {
    return transposed
        ? dg_conv_transpose2d_forward(out, ws, x, w, b, g->N, g->C, g->H, g->W, g->OC,
                                      g->KH, g->KW, g->SH, g->SW, g->PH, g->PW, g->OH, g->OW)
        : dg_conv2d_forward(out, ws, x, w, b, g->N, g->C, g->H, g->W, g->OC, g->KH,
                            g->KW, g->SH, g->SW, g->PH, g->PW, g->OH, g->OW);
}

static dg_status conv_bwd(const conv_geom *g, int transposed, float *dx, float *dw,
                          float *db, float *ws, const float *dy, const float *x,
                          const float *w) {
    return transposed
        ? dg_conv_transpose2d_backward(dx, dw, db, ws, dy, x, w, g->N, g->C, g->H, g->W,
                                       g->OC, g->KH, g->KW, g->SH, g->SW, g->PH, g->PW,
                                       g->OH, g->OW)
        : dg_conv2d_backward(dx, dw, db, ws, dy, x, w, g->N, g->C, g->H, g->W, g->OC,
                             g->KH, g->KW, g->SH, g->SW, g->PH, g->PW, g->OH, g->OW);
}

/* Forward and backward of one conv2d (transposed = 0) or conv_transpose2d case
 * against the naive loops, with an exactly sized workspace. */
static void conv_case(const conv_geom *g, int transposed) {
    const char *op = transposed ? "conv_transpose2d" : "conv2d";
    char tag[160];
    snprintf(tag, sizeof tag, "%s N=%d C=%d %dx%d OC=%d K=%dx%d S=%d,%d P=%d,%d -> %dx%d",
             op, g->N, g->C, g->H, g->W, g->OC, g->KH, g->KW, g->SH, g->SW, g->PH,
             g->PW, g->OH, g->OW);
    size_t nx = (size_t)g->N * g->C * g->H * g->W, ny = (size_t)g->N * g->OC * g->OH * g->OW;
    size_t nw = (size_t)g->OC * g->C * g->KH * g->KW, nws = ws_size(g, transposed);
    CHECK(nws > 0, "%s: workspace size %zu floats", tag, nws);
    float *x = frandn(nx), *w = frandn(nw), *b = frandn(g->OC), *dy = frandn(ny);
    float *x0 = fcopy(x, nx), *w0 = fcopy(w, nw), *dy0 = fcopy(dy, ny);
    float *ws = fnan(nws), *out = fnan(ny);
    double *want = dzeros(ny);

    if (transposed) conv_t_naive(want, x, w, b, g); else conv2d_naive(want, x, w, b, g);
    dg_status st = conv_fwd(g, transposed, out, ws, x, w, b);
    CHECK(st == DG_STATUS_OK, "%s: forward status ok", tag);
    CHECK_CLOSE(out, want, ny, 1e-5, "%s: forward with bias vs naive", tag);
    if (transposed) conv_t_naive(want, x, w, NULL, g); else conv2d_naive(want, x, w, NULL, g);
    fill_nan(out, ny);
    fill_nan(ws, nws);
    conv_fwd(g, transposed, out, ws, x, w, NULL);
    CHECK_CLOSE(out, want, ny, 1e-5, "%s: forward without bias vs naive", tag);

    double *gx = dzeros(nx), *gw = dzeros(nw), *gb = dzeros(g->OC);
    if (transposed) conv_t_backward_naive(gx, gw, gb, dy, x, w, g);
    else conv2d_backward_naive(gx, gw, gb, dy, x, w, g);
    float *dx = frandn(nx), *dw = frandn(nw), *db = frandn(g->OC);
    double *ex1 = accumulated(dx, gx, 1, nx), *ex2 = accumulated(dx, gx, 2, nx);
    double *ew1 = accumulated(dw, gw, 1, nw), *ew2 = accumulated(dw, gw, 2, nw);
    double *eb1 = accumulated(db, gb, 1, g->OC), *eb2 = accumulated(db, gb, 2, g->OC);
    fill_nan(ws, nws);
    st = conv_bwd(g, transposed, dx, dw, db, ws, dy, x, w);
    CHECK(st == DG_STATUS_OK, "%s: backward status ok", tag);
    CHECK_CLOSE(dx, ex1, nx, 1e-5, "%s: backward dinp (accumulated) vs naive", tag);
    CHECK_CLOSE(dw, ew1, nw, 1e-5, "%s: backward dweight (accumulated) vs naive", tag);
    CHECK_CLOSE(db, eb1, g->OC, 1e-5, "%s: backward dbias (accumulated) vs naive", tag);
    fill_nan(ws, nws);
    conv_bwd(g, transposed, dx, dw, db, ws, dy, x, w);
    CHECK_CLOSE(dx, ex2, nx, 1e-5, "%s: backward twice: dinp gets twice the gradient", tag);
    CHECK_CLOSE(dw, ew2, nw, 1e-5, "%s: backward twice: dweight gets twice the gradient", tag);
    CHECK_CLOSE(db, eb2, g->OC, 1e-5, "%s: backward twice: dbias gets twice the gradient", tag);

    /* each gradient alone, the others NULL */
    float *dx1 = falloc(nx), *dw1 = falloc(nw);
    memset(dx1, 0, nx * sizeof(float));
    memset(dw1, 0, nw * sizeof(float));
    fill_nan(ws, nws);
    dg_status s1 = conv_bwd(g, transposed, dx1, NULL, NULL, ws, dy, x, w);
    fill_nan(ws, nws);
    dg_status s2 = conv_bwd(g, transposed, NULL, dw1, NULL, ws, dy, x, w);
    dg_status s3 = conv_bwd(g, transposed, NULL, NULL, NULL, ws, dy, x, w);
    CHECK(s1 == DG_STATUS_OK && s2 == DG_STATUS_OK && s3 == DG_STATUS_OK,
          "%s: backward with NULL gradients ok", tag);
    CHECK_CLOSE(dx1, gx, nx, 1e-5, "%s: backward dinp alone", tag);
    CHECK_CLOSE(dw1, gw, nw, 1e-5, "%s: backward dweight alone", tag);
    CHECK(same_floats(x, x0, nx) && same_floats(w, w0, nw) && same_floats(dy, dy0, ny),
          "%s: inputs unchanged", tag);

    free(x); free(w); free(b); free(dy); free(x0); free(w0); free(dy0); free(ws);
    free(out); free(want); free(gx); free(gw); free(gb); free(dx); free(dw); free(db);
    free(ex1); free(ex2); free(ew1); free(ew2); free(eb1); free(eb2); free(dx1); free(dw1);
}

/* <conv2d(x, w), y> = <x, conv_transpose2d(y, w)>: conv_transpose2d with the
 * conv2d weight (OC, C, KH, KW) read as (C', OC', KH, KW) = (OC, C, KH, KW),
 * and the output_padding that brings OH back to H. */
static void conv_adjoint_case(const conv_geom *g) {
    conv_geom t = {g->N, g->OC, g->OH, g->OW, g->C, g->KH, g->KW, g->SH, g->SW,
                   g->PH, g->PW, g->H, g->W};
    size_t nx = (size_t)g->N * g->C * g->H * g->W, ny = (size_t)g->N * g->OC * g->OH * g->OW;
    size_t nw = (size_t)g->OC * g->C * g->KH * g->KW;
    size_t n1 = ws_size(g, 0), n2 = ws_size(&t, 1);
    float *x = frandn(nx), *w = frandn(nw), *y = frandn(ny);
    float *cx = fnan(ny), *ty = fnan(nx), *ws1 = fnan(n1 ? n1 : 1), *ws2 = fnan(n2 ? n2 : 1);
    dg_status s1 = conv_fwd(g, 0, cx, ws1, x, w, NULL);
    dg_status s2 = conv_fwd(&t, 1, ty, ws2, y, w, NULL);
    double lhs = 0.0, rhs = 0.0, mag = 0.0;
    for (size_t i = 0; i < ny; i++) {
        lhs += (double)cx[i] * y[i];
        mag += fabs((double)cx[i] * y[i]);
    }
    for (size_t i = 0; i < nx; i++) rhs += (double)x[i] * ty[i];
    double rel = fabs(lhs - rhs) / (mag > 1.0 ? mag : 1.0);
    CHECK(s1 == DG_STATUS_OK && s2 == DG_STATUS_OK && n1 > 0 && n2 > 0 && rel < 1e-6,
          "adjoint <conv2d(x,w),y> = <x,conv_transpose2d(y,w)> C=%d %dx%d OC=%d K=%dx%d S=%d,%d "
          "P=%d,%d output_padding=%d,%d (%.6g vs %.6g)",
          g->C, g->H, g->W, g->OC, g->KH, g->KW, g->SH, g->SW, g->PH, g->PW,
          g->H - ((g->OH - 1) * g->SH - 2 * g->PH + g->KH),
          g->W - ((g->OW - 1) * g->SW - 2 * g->PW + g->KW), lhs, rhs);
    free(x); free(w); free(y); free(cx); free(ty); free(ws1); free(ws2);
}

static void conv_exact_cases(void) {
    /* conv2d: 3x3 input 1..9, 2x2 kernel of ones, stride 1 -> [[12,16],[24,28]] */
    {
        float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w[4] = {1, 1, 1, 1}, out[4];
        conv_geom g = {1, 1, 3, 3, 1, 2, 2, 1, 1, 0, 0, 2, 2};
        size_t n = ws_size(&g, 0);
        float *ws = fnan(n);
        dg_status st = conv_fwd(&g, 0, out, ws, x, w, NULL);
        CHECK(st == DG_STATUS_OK && out[0] == 12 && out[1] == 16 && out[2] == 24 && out[3] == 28,
              "conv2d exact: 3x3 (1..9) * ones(2x2) = [[12,16],[24,28]]");
        free(ws);
    }
    /* conv2d with padding 1, stride 2, bias 1: every window of ones(3x3) sees 2x2 ones -> 4 + 1 */
    {
        float x[9], w[9], b[1] = {1}, out[4];
        for (int i = 0; i < 9; i++) x[i] = w[i] = 1;
        conv_geom g = {1, 1, 3, 3, 1, 3, 3, 2, 2, 1, 1, 2, 2};
        size_t n = ws_size(&g, 0);
        float *ws = fnan(n);
        dg_status st = conv_fwd(&g, 0, out, ws, x, w, b);
        CHECK(st == DG_STATUS_OK && out[0] == 5 && out[1] == 5 && out[2] == 5 && out[3] == 5,
              "conv2d exact: ones(3x3) * ones(3x3), P=1 S=2, bias 1 = [[5,5],[5,5]]");
        free(ws);
    }
    /* conv_transpose2d, stride 1: [[1,2],[3,4]] with ones(2x2) -> [[1,3,2],[4,10,6],[3,7,4]] */
    {
        float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 1, 1}, out[9];
        const float want[9] = {1, 3, 2, 4, 10, 6, 3, 7, 4};
        conv_geom g = {1, 1, 2, 2, 1, 2, 2, 1, 1, 0, 0, 3, 3};
        size_t n = ws_size(&g, 1);
        float *ws = fnan(n);
        dg_status st = conv_fwd(&g, 1, out, ws, x, w, NULL);
        CHECK(st == DG_STATUS_OK && !memcmp(out, want, sizeof want),
              "conv_transpose2d exact: [[1,2],[3,4]] with ones(2x2), S=1 = [[1,3,2],[4,10,6],[3,7,4]]");
        free(ws);
    }
    /* conv_transpose2d, stride 2, kernel [[1,2],[3,4]], 2 output channels
     * (second one = 10 * first), bias (0, 1): each input pixel stamps v * kernel */
    {
        float x[4] = {1, 2, 3, 4}, w[8] = {1, 2, 3, 4, 10, 20, 30, 40}, b[2] = {0, 1}, out[32];
        const float k0[16] = {1, 2, 2, 4, 3, 4, 6, 8, 3, 6, 4, 8, 9, 12, 12, 16};
        conv_geom g = {1, 1, 2, 2, 2, 2, 2, 2, 2, 0, 0, 4, 4};
        size_t n = ws_size(&g, 1);
        float *ws = fnan(n);
        dg_status st = conv_fwd(&g, 1, out, ws, x, w, b);
        int ok = st == DG_STATUS_OK;
        for (int i = 0; i < 16; i++) ok = ok && out[i] == k0[i] && out[16 + i] == 10 * k0[i] + 1;
        CHECK(ok, "conv_transpose2d exact: S=2 K=2 stamps v*kernel per pixel, 2 channels with bias");
        free(ws);
    }
    /* conv_transpose2d with output_padding: 1x1 input 2, kernel 1..9 (3x3), S=2, P=1,
     * OH = 0*2 - 2 + 3 + 1 = 2: padding crops kernel row/col 0, output_padding keeps row/col 2 */
    {
        float x[1] = {2}, w[9], out[4];
        for (int i = 0; i < 9; i++) w[i] = (float)(i + 1);
        conv_geom g = {1, 1, 1, 1, 1, 3, 3, 2, 2, 1, 1, 2, 2};
        size_t n = ws_size(&g, 1);
        float *ws = fnan(n);
        dg_status st = conv_fwd(&g, 1, out, ws, x, w, NULL);
        CHECK(st == DG_STATUS_OK && out[0] == 10 && out[1] == 12 && out[2] == 16 && out[3] == 18,
              "conv_transpose2d exact: output_padding=1 crops kernel rows/cols 1..2 = [[10,12],[16,18]]");
        free(ws);
    }
}

static void conv_error_cases(void) {
    float buf[64];
    for (int i = 0; i < 64; i++) buf[i] = 0.0f;
    float *o = buf, *ws = buf;
    const float *x = buf, *w = buf;
    int ok = 1;
    /* wrong output size */
    ok = ok && dg_conv2d_workspace_size(1, 1, 4, 4, 1, 3, 3, 1, 1, 0, 0, 3, 2) == 0;
    ok = ok && dg_conv2d_forward(o, ws, x, w, NULL, 1, 1, 4, 4, 1, 3, 3, 1, 1, 0, 0, 3, 2) == DG_STATUS_ERR_SHAPE;
    ok = ok && dg_conv2d_backward(o, o, o, ws, x, x, w, 1, 1, 4, 4, 1, 3, 3, 1, 1, 0, 0, 2, 3) == DG_STATUS_ERR_SHAPE;
    /* kernel larger than the padded input: (4 + 0 - 5) < 0 */
    ok = ok && dg_conv2d_forward(o, ws, x, w, NULL, 1, 1, 4, 4, 1, 5, 5, 2, 2, 0, 0, 1, 1) == DG_STATUS_ERR_SHAPE;
    /* zero / negative sizes, stride 0, negative padding */
    ok = ok && dg_conv2d_forward(o, ws, x, w, NULL, 0, 1, 4, 4, 1, 3, 3, 1, 1, 0, 0, 2, 2) == DG_STATUS_ERR_SHAPE;
    ok = ok && dg_conv2d_forward(o, ws, x, w, NULL, 1, 1, 4, 4, 1, 3, 3, 0, 1, 0, 0, 2, 2) == DG_STATUS_ERR_SHAPE;
    ok = ok && dg_conv2d_forward(o, ws, x, w, NULL, 1, 1, 4, 4, 1, 3, 3, 1, 1, -1, 0, 0, 2) == DG_STATUS_ERR_SHAPE;
    ok = ok && dg_conv2d_forward(o, ws, x, w, NULL, 1, -1, 4, 4, 1, 3, 3, 1, 1, 0, 0, 2, 2) == DG_STATUS_ERR_SHAPE;
    /* padded sizes beyond an int */
    ok = ok && dg_conv2d_workspace_size(1, 1, 4, 4, 1, 3, 3, INT_MAX, 1, INT_MAX / 2, 0, 2, 2) == 0;
    /* sizes whose products overflow: rejected before any memory is touched */
    ok = ok && dg_conv2d_workspace_size(INT_MAX, INT_MAX, 65536, 65536, INT_MAX, 1, 1, 1, 1, 0, 0,
                                        65536, 65536) == 0;
    ok = ok && dg_conv2d_forward(o, ws, x, w, NULL, INT_MAX, INT_MAX, 65536, 65536, INT_MAX, 1, 1,
                                 1, 1, 0, 0, 65536, 65536) == DG_STATUS_ERR_SHAPE;
    ok = ok && dg_conv_transpose2d_forward(o, ws, x, w, NULL, 2, 65536, 65536, 65536, 65536, 1, 1,
                                           1, 1, 0, 0, 65536, 65536) == DG_STATUS_ERR_SHAPE;
    /* NULL pointers */
    ok = ok && dg_conv2d_forward(o, NULL, x, w, NULL, 1, 1, 4, 4, 1, 3, 3, 1, 1, 0, 0, 2, 2) == DG_STATUS_ERR_NULL;
    ok = ok && dg_conv2d_forward(NULL, ws, x, w, NULL, 1, 1, 4, 4, 1, 3, 3, 1, 1, 0, 0, 2, 2) == DG_STATUS_ERR_NULL;
    ok = ok && dg_conv2d_backward(o, o, o, ws, NULL, x, w, 1, 1, 4, 4, 1, 3, 3, 1, 1, 0, 0, 2, 2) == DG_STATUS_ERR_NULL;
    CHECK(ok, "conv2d: bad sizes -> shape error (workspace size 0), NULL -> null error");

    ok = 1;
    /* OH = (H-1)*S - 2P + K + oph needs 0 <= oph < S: (3-1)*2 - 2 + 4 = 6, so OH in {6, 7} */
    ok = ok && dg_conv_transpose2d_workspace_size(1, 1, 3, 3, 1, 4, 4, 2, 2, 1, 1, 6, 7) > 0;
    ok = ok && dg_conv_transpose2d_workspace_size(1, 1, 3, 3, 1, 4, 4, 2, 2, 1, 1, 8, 6) == 0;
    ok = ok && dg_conv_transpose2d_workspace_size(1, 1, 3, 3, 1, 4, 4, 2, 2, 1, 1, 5, 6) == 0;
    ok = ok && dg_conv_transpose2d_forward(o, ws, x, w, NULL, 1, 1, 3, 3, 1, 4, 4, 2, 2, 1, 1, 8, 6) == DG_STATUS_ERR_SHAPE;
    ok = ok && dg_conv_transpose2d_forward(o, ws, x, w, NULL, 1, 1, 3, 3, 1, 4, 4, 2, 2, 1, 1, 6, 5) == DG_STATUS_ERR_SHAPE;
    ok = ok && dg_conv_transpose2d_backward(o, o, o, ws, x, x, w, 1, 1, 3, 3, 1, 4, 4, 2, 2, 1, 1, 8, 6) == DG_STATUS_ERR_SHAPE;
    /* stride 1 admits no output padding */
    ok = ok && dg_conv_transpose2d_forward(o, ws, x, w, NULL, 1, 1, 3, 3, 1, 2, 2, 1, 1, 0, 0, 5, 4) == DG_STATUS_ERR_SHAPE;
    ok = ok && dg_conv_transpose2d_forward(o, ws, x, w, NULL, 1, 1, 3, 3, 1, 2, 2, 0, 0, 0, 0, 4, 4) == DG_STATUS_ERR_SHAPE;
    ok = ok && dg_conv_transpose2d_forward(o, NULL, x, w, NULL, 1, 1, 3, 3, 1, 4, 4, 2, 2, 1, 1, 6, 6) == DG_STATUS_ERR_NULL;
    ok = ok && dg_conv_transpose2d_backward(o, o, o, ws, x, NULL, w, 1, 1, 3, 3, 1, 4, 4, 2, 2, 1, 1, 6, 6) == DG_STATUS_ERR_NULL;
    int untouched = 1;
    for (int i = 0; i < 64; i++) untouched = untouched && buf[i] == 0.0f;
    CHECK(ok && untouched,
          "conv_transpose2d: output_padding outside [0, S) -> shape error, NULL -> null error, buffers untouched");
}

static void test_conv(void) {
    printf("# conv2d, conv_transpose2d\n");
    conv_exact_cases();
    /* N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW */
    static const conv_geom c2d[] = {
        {2, 3, 8, 8, 4, 4, 4, 2, 2, 1, 1, 4, 4},     /* DCGAN discriminator block */
        {3, 2, 7, 6, 5, 3, 3, 1, 1, 1, 1, 7, 6},     /* 3x3 "same" */
        {2, 4, 5, 5, 3, 1, 1, 1, 1, 0, 0, 5, 5},     /* 1x1 */
        {2, 3, 9, 7, 2, 3, 2, 2, 1, 1, 0, 5, 6},     /* asymmetric kernel/stride/padding */
        {1, 2, 5, 5, 3, 3, 3, 3, 3, 2, 2, 3, 3},     /* stride 3 */
        {2, 1, 6, 6, 2, 5, 5, 2, 2, 2, 2, 3, 3},     /* (H + 2P - K) % S != 0 */
        {2, 3, 4, 4, 2, 4, 4, 1, 1, 0, 0, 1, 1},     /* kernel covers the input */
        {1, 2, 3, 3, 2, 2, 2, 1, 1, 3, 3, 8, 8},     /* padding > kernel: all-padding windows */
        {1, 2, 3, 72, 2, 1, 70, 1, 1, 0, 0, 3, 3},   /* more kernel taps than the range tables hold */
        {7, 64, 30, 30, 2, 5, 5, 1, 1, 2, 2, 30, 30}, /* several image groups, the last of one image */
    };
    /* conv_transpose2d: OH = (H-1)*SH - 2PH + KH + output_padding */
    static const conv_geom ct[] = {
        {2, 4, 7, 7, 3, 4, 4, 2, 2, 1, 1, 14, 14},   /* DCGAN generator block */
        {2, 3, 5, 4, 2, 3, 3, 2, 2, 1, 1, 10, 8},    /* output_padding 1, 1 */
        {3, 2, 4, 4, 3, 3, 3, 1, 1, 1, 1, 4, 4},     /* stride 1 */
        {2, 2, 3, 5, 2, 3, 2, 3, 2, 0, 1, 11, 9},    /* asymmetric, output_padding 2, 1 */
        {1, 2, 4, 4, 1, 1, 1, 1, 1, 0, 0, 4, 4},     /* 1x1 */
        {1, 2, 5, 5, 2, 3, 3, 1, 1, 2, 2, 3, 3},     /* padding crops more than the kernel adds */
        {1, 1, 1, 1, 2, 3, 3, 1, 1, 1, 1, 1, 1},     /* single pixel */
        {1, 2, 3, 3, 2, 1, 66, 1, 1, 0, 0, 3, 68},   /* more kernel taps than the range tables hold */
        {7, 2, 30, 30, 64, 5, 5, 1, 1, 2, 2, 30, 30}, /* several image groups, the last of one image */
    };
    for (size_t i = 0; i < sizeof c2d / sizeof c2d[0]; i++) conv_case(&c2d[i], 0);
    for (size_t i = 0; i < sizeof ct / sizeof ct[0]; i++) conv_case(&ct[i], 1);
    for (size_t i = 0; i < sizeof c2d / sizeof c2d[0]; i++) conv_adjoint_case(&c2d[i]);
    {
        const conv_geom *g = &c2d[sizeof c2d / sizeof c2d[0] - 1];
        const conv_geom *t = &ct[sizeof ct / sizeof ct[0] - 1];
        size_t full2d = (size_t)g->N * (g->C * g->KH * g->KW + g->OC) * g->OH * g->OW;
        size_t fullt = (size_t)t->N * (t->OC * t->KH * t->KW + t->C) * t->H * t->W;
        CHECK(ws_size(g, 0) < full2d && ws_size(t, 1) < fullt,
              "conv: the last cases split the batch into groups (workspace %zu < %zu, %zu < %zu)",
              ws_size(g, 0), full2d, ws_size(t, 1), fullt);
    }
    conv_error_cases();
}

/* The share of conv_simd_run's inputs and output gradients that are zero (as
 * after a ReLU): which ones is fixed by their index. */
static double conv_zero_share = 0.0;

static void zero_some(float *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((double)((i * 2654435761u) % 1000u) < conv_zero_share * 1000.0) p[i] = 0.0f;
}

/* Forward (with and without bias) and backward (accumulating into gradients
 * that start random, with a -0, an inf and a NaN) of one case; the results one
 * after the other in res, which must hold conv_simd_floats(g). */
static size_t conv_simd_floats(const conv_geom *g) {
    size_t nx = (size_t)g->N * g->C * g->H * g->W, ny = (size_t)g->N * g->OC * g->OH * g->OW;
    size_t nw = (size_t)g->OC * g->C * g->KH * g->KW;
    return 2 * ny + nx + nw + (size_t)g->OC;
}

static void conv_simd_run(const conv_geom *g, int transposed, float *res) {
    size_t nx = (size_t)g->N * g->C * g->H * g->W, ny = (size_t)g->N * g->OC * g->OH * g->OW;
    size_t nw = (size_t)g->OC * g->C * g->KH * g->KW, nws = ws_size(g, transposed);
    uint64_t seed = rng_state;
    float *x = frandn(nx), *w = frandn(nw), *b = frandn(g->OC), *dy = frandn(ny);
    float *ws = fnan(nws);
    zero_some(x, nx);
    zero_some(dy, ny);
    float *out = res, *out0 = res + ny, *dx = res + 2 * ny, *dw = dx + nx, *db = dw + nw;
    for (size_t i = 0; i < nx; i++) dx[i] = frand();
    for (size_t i = 0; i < nw; i++) dw[i] = frand();
    for (int i = 0; i < g->OC; i++) db[i] = frand();
    dx[0] = -0.0f;
    dx[nx / 2] = INFINITY;
    dx[nx - 1] = NAN;
    conv_fwd(g, transposed, out, ws, x, w, b);
    conv_fwd(g, transposed, out0, ws, x, w, NULL);
    conv_bwd(g, transposed, dx, dw, db, ws, dy, x, w);
    rng_state = seed;   /* the same inputs for the next run */
    free(x); free(w); free(b); free(dy); free(ws);
}

/* The AVX2 im2col/col2im of 4x4, stride-2, padding-1 convolutions (dg_conv.c,
 * where the CPU has it) against the portable loops: the same bits, forward and
 * backward, at several plane sizes (window rows of 2, 3, 5, 7, 8, 14, 16, 17 and
 * 32 floats, non-square planes, the largest planes it takes and one beyond). Each
 * conv2d case also runs as the transposed convolution that is its adjoint (the
 * input and output planes swapped), and every case is checked against the naive
 * loops too. */
static void note_if_no_avx2(void) {
#if defined(__GNUC__) && defined(__x86_64__)
    if (!__builtin_cpu_supports("avx2"))
#endif
        printf("  note: this CPU has no AVX2: both runs below take the baseline loops\n");
}

/* The conv2d k4 s2 p1 of p = {N, C, H, W, OC}, (H, W) -> (H/2, W/2), and the
 * transposed convolution that is its adjoint, (N, OC, H/2, W/2) -> (N, C, H, W). */
static void k4s2_geoms(const int *p, conv_geom *c2d, conv_geom *ct) {
    conv_geom a = {p[0], p[1], p[2], p[3], p[4], 4, 4, 2, 2, 1, 1, p[2] / 2, p[3] / 2};
    conv_geom b = {p[0], p[4], p[2] / 2, p[3] / 2, p[1], 4, 4, 2, 2, 1, 1, p[2], p[3]};
    *c2d = a;
    *ct = b;
}

static void test_conv_simd(void) {
    printf("# conv: AVX2 paths of 4x4 stride-2 padding-1 kernels\n");
    note_if_no_avx2();
    /* N, C, H, W, OC of conv2d k4 s2 p1 -> (H/2, W/2) */
    static const int planes[][5] = {
        {3, 5, 14, 14, 6}, {2, 3, 28, 28, 4}, {2, 2, 4, 4, 3}, {2, 3, 6, 10, 2},
        {1, 2, 32, 32, 3}, {1, 2, 16, 34, 2}, {1, 1, 64, 64, 2}, {1, 1, 66, 66, 2},
    };
    for (size_t k = 0; k < sizeof planes / sizeof planes[0]; k++) {
        const int *p = planes[k];
        conv_geom c2d, ct;
        k4s2_geoms(p, &c2d, &ct);
        for (int transposed = 0; transposed < 2; transposed++) {
            const conv_geom *g = transposed ? &ct : &c2d;
            size_t m = conv_simd_floats(g);
            float *fast = falloc(m), *slow = falloc(m);
            conv_simd_run(g, transposed, fast);
            dg_set_simd(0);
            conv_simd_run(g, transposed, slow);
            dg_set_simd(1);
            CHECK(same_floats(fast, slow, m),
                  "%s N=%d C=%d %dx%d OC=%d K=4 S=2 P=1: AVX2 path bit-identical to the "
                  "portable one (forward, backward onto -0/inf/NaN)",
                  transposed ? "conv_transpose2d" : "conv2d", g->N, g->C, g->H, g->W, g->OC);
            conv_case(g, transposed);
            free(fast); free(slow);
        }
    }
}

/* The float64 values of conv_simd_run's results (its inputs replayed from the
 * same random state, which is left as it was). */
static void conv_simd_truth(const conv_geom *g, int transposed, double *t) {
    size_t nx = (size_t)g->N * g->C * g->H * g->W, ny = (size_t)g->N * g->OC * g->OH * g->OW;
    size_t nw = (size_t)g->OC * g->C * g->KH * g->KW;
    uint64_t seed = rng_state;
    float *x = frandn(nx), *w = frandn(nw), *b = frandn(g->OC), *dy = frandn(ny);
    double *out = t, *out0 = t + ny, *dx = t + 2 * ny, *dw = dx + nx, *db = dw + nw;
    zero_some(x, nx);
    zero_some(dy, ny);
    for (size_t i = 0; i < nx; i++) dx[i] = frand();
    for (size_t i = 0; i < nw; i++) dw[i] = frand();
    for (int i = 0; i < g->OC; i++) db[i] = frand();
    dx[0] = -0.0;
    dx[nx / 2] = INFINITY;
    dx[nx - 1] = NAN;
    double *gx = dzeros(nx), *gw = dzeros(nw), *gb = dzeros(g->OC);
    if (transposed) {
        conv_t_naive(out, x, w, b, g);
        conv_t_naive(out0, x, w, NULL, g);
        conv_t_backward_naive(gx, gw, gb, dy, x, w, g);
    } else {
        conv2d_naive(out, x, w, b, g);
        conv2d_naive(out0, x, w, NULL, g);
        conv2d_backward_naive(gx, gw, gb, dy, x, w, g);
    }
    for (size_t i = 0; i < nx; i++) dx[i] += gx[i];
    for (size_t i = 0; i < nw; i++) dw[i] += gw[i];
    for (int i = 0; i < g->OC; i++) db[i] += gb[i];
    rng_state = seed;
    free(x); free(w); free(b); free(dy); free(gx); free(gw); free(gb);
}

/* One case of a kernel that replaces the GEMM path on this CPU: conv_case
 * (forward with and without bias, backward accumulating, every gradient alone,
 * against the naive loops); the same bits at 1, 2 and 3 threads where the kernel
 * runs (the GEMM path's bits may depend on the thread count, whose groups of
 * images change OpenBLAS's product widths: PERFORMANCE.md log 109; there
 * conv_case runs at 2 and 3 threads too); each result
 * within 1e-5 of its float64 value (|a - t| / (1 + |t|), element by element: the
 * GEMM path's own rounding, e.g. the reference GEMM's sequential sums over 1568
 * products of a weight gradient, is of that size too, so the two paths are not
 * compared with each other but each with the truth), and the GEMM path's inf and
 * NaN where the accumulated input gradient had them. Without AVX-512 (valgrind
 * has none) the kernel is the GEMM path. Leaves one thread set. */
static void kernel_case(const conv_geom *g, int transposed) {
    dg_set_num_threads(1);   /* conv_case at 1 thread here; at 2 and 3 below, off AVX-512 */
    conv_case(g, transposed);
    size_t m = conv_simd_floats(g);
    float *r1 = falloc(m), *slow = falloc(m);
    double *truth = xmalloc(m * sizeof(double));
    conv_simd_run(g, transposed, r1);
    dg_set_simd(0);
    conv_simd_run(g, transposed, slow);
    dg_set_simd(1);
    conv_simd_truth(g, transposed, truth);
    double worst = 0.0, worst_gemm = 0.0;
    int same_specials = 1;
    for (size_t i = 0; i < m; i++) {
        if (!isfinite(truth[i]) || !isfinite(r1[i]) || !isfinite(slow[i])) {
            same_specials &= (isnan(r1[i]) && isnan(slow[i])) || r1[i] == slow[i];
            continue;
        }
        double d = fabs((double)r1[i] - truth[i]) / (1.0 + fabs(truth[i]));
        double dg = fabs((double)slow[i] - truth[i]) / (1.0 + fabs(truth[i]));
        if (d > worst) worst = d;
        if (dg > worst_gemm) worst_gemm = dg;
    }
    const char *op = transposed ? "conv_transpose2d" : "conv2d";
    /* off AVX-512, a transposed forward of a few columns takes colt_sparse where the
     * CPU has AVX2 and FMA (test_colt_sparse checks it across thread counts) */
    int sparse = transposed && !dg_avx512() &&
                 dg_colt_sparse_fits(g->N, g->C, g->H, g->W, g->OC, g->KH, g->KW, g->SH,
                                     g->SW, g->PH, g->PW, g->OH, g->OW);
    if (dg_avx512()) {
        float *r = falloc(m);
        int same = 1;
        for (int th = 2; th <= 3; th++) {
            dg_set_num_threads(th);
            conv_simd_run(g, transposed, r);
            same &= same_floats(r1, r, m);
        }
        dg_set_num_threads(1);
        free(r);
        CHECK(same, "%s N=%d C=%d %dx%d OC=%d: the same bits at 1, 2 and 3 threads", op, g->N,
              g->C, g->H, g->W, g->OC);
        CHECK(worst < 1e-5 && same_specials,
              "%s N=%d C=%d %dx%d OC=%d: within %.1e of float64 (the GEMM path: %.1e), the "
              "GEMM path's inf and NaN",
              op, g->N, g->C, g->H, g->W, g->OC, worst, worst_gemm);
    } else {
        if (sparse) {
            /* its forward through the zeros of its input, the rest the GEMM path */
            CHECK(worst < 1e-5 && same_specials,
                  "%s N=%d C=%d %dx%d OC=%d: no AVX-512, the few-column forward within "
                  "%.1e of float64 (the GEMM path: %.1e), the GEMM path's inf and NaN",
                  op, g->N, g->C, g->H, g->W, g->OC, worst, worst_gemm);
        } else {
            /* no kernel here (e.g. under valgrind, which has no AVX-512): both runs
             * took the GEMM path, which conv_case checked against the naive loops */
            CHECK(same_floats(r1, slow, m),
                  "%s N=%d C=%d %dx%d OC=%d: no AVX-512, the GEMM path both times (same "
                  "bits)",
                  op, g->N, g->C, g->H, g->W, g->OC);
        }
        /* whose bits may depend on the thread count: its checks at 2 and 3 too */
        for (int th = 2; th <= 3; th++) {
            dg_set_num_threads(th);
            conv_case(g, transposed);
        }
        dg_set_num_threads(1);
    }
    free(r1); free(slow); free(truth);
}

/* colt_sparse (dg_conv.c): the transposed forward of a batch of at most 64 input
 * pixels (a sample of one image) through the zeros of its input, where the CPU has
 * AVX2 and FMA and no AVX-512 kernel takes the call. Inputs half zero (-0.0 among
 * them) as a ReLU's output, C not a multiple of the 64-channel chunks, several
 * images, with and without bias; and a channel of zero inputs whose weights hold
 * an inf and a NaN, which the dense product turns into NaN (0 * inf) and the
 * sums through the zeros must too. Each case: within 1e-5 of float64, |a - t| /
 * (1 + |t|), where that is finite, NaN where it is NaN; the same bits at 1, 2 and
 * 3 threads; the GEMM path (dg_set_simd(0)) within the same bound. */
static void test_colt_sparse(void) {
    printf("# conv_transpose2d: a few columns through the zeros of the input\n");
    if (!dg_avx2_fma())
        printf("  note: this CPU has no AVX2 and FMA: the runs below take the GEMM path\n");
    /* N, C, H, W, OC of a transposed k4 s2 p1, (H, W) -> (2H, 2W) */
    static const int shapes[][5] = {
        {1, 256, 7, 7, 128}, {1, 64, 7, 7, 32}, {1, 80, 7, 7, 8}, {4, 20, 4, 4, 4},
        {1, 3, 2, 3, 4}, {2, 130, 4, 4, 12},
    };
    int before = dg_get_num_threads();
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const int *q = shapes[k];
        conv_geom g = {q[0], q[1], q[2], q[3], q[4], 4, 4, 2, 2, 1, 1, 2 * q[2], 2 * q[3]};
        int fits = dg_colt_sparse_fits(g.N, g.C, g.H, g.W, g.OC, 4, 4, 2, 2, 1, 1, g.OH, g.OW);
        CHECK(fits == (dg_avx2_fma() && !dg_avx512()),
              "conv_transpose2d N=%d C=%d %dx%d OC=%d: the few-column path taken on "
              "AVX2 and FMA without AVX-512 (%d)", g.N, g.C, g.H, g.W, g.OC, fits);
        size_t nx = (size_t)g.N * g.C * g.H * g.W, nw = (size_t)g.C * g.OC * 16;
        size_t no = (size_t)g.N * g.OC * g.OH * g.OW;
        size_t nws = dg_conv_transpose2d_workspace_size(g.N, g.C, g.H, g.W, g.OC, 4, 4, 2, 2,
                                                        1, 1, g.OH, g.OW);
        for (int special = 0; special < 2; special++) {
            float *x = frandn(nx), *w = frandn(nw), *b = frandn((size_t)g.OC);
            for (size_t i = 0; i < nx; i++)
                if (x[i] < 0.0f) x[i] = i % 7 == 0 ? -0.0f : 0.0f;
            if (special) {
                /* channel C / 2 all zero, with an inf and a NaN among its weights */
                int c = g.C / 2;
                for (int n = 0; n < g.N; n++)
                    for (int p = 0; p < g.H * g.W; p++)
                        x[((size_t)n * g.C + c) * g.H * g.W + p] = 0.0f;
                w[(size_t)c * g.OC * 16 + 5] = INFINITY;
                w[(size_t)c * g.OC * 16 + 16 * (g.OC - 1) + 10] = NAN;
            }
            const float *bias = special ? NULL : b;
            double *truth = xmalloc(no * sizeof(double));
            conv_t_naive(truth, x, w, bias, &g);
            float *ws = falloc(nws), *o[3], *slow = falloc(no);
            int ok = 1;
            for (int th = 1; th <= 3; th++) {
                dg_set_num_threads(th);
                o[th - 1] = falloc(no);
                ok &= dg_conv_transpose2d_forward(o[th - 1], ws, x, w, bias, g.N, g.C, g.H,
                                                  g.W, g.OC, 4, 4, 2, 2, 1, 1, g.OH,
                                                  g.OW) == DG_STATUS_OK;
            }
            dg_set_num_threads(1);
            dg_set_simd(0);
            dg_conv_transpose2d_forward(slow, ws, x, w, bias, g.N, g.C, g.H, g.W, g.OC, 4, 4,
                                        2, 2, 1, 1, g.OH, g.OW);
            dg_set_simd(1);
            double worst = 0.0, worst_gemm = 0.0;
            int specials = 1, nans = 0;
            for (size_t i = 0; i < no; i++) {
                if (isnan(truth[i])) {
                    specials &= isnan(o[0][i]) && isnan(slow[i]);
                    nans++;
                    continue;
                }
                specials &= !isnan(o[0][i]) && !isnan(slow[i]);
                double d = fabs((double)o[0][i] - truth[i]) / (1.0 + fabs(truth[i]));
                double dg = fabs((double)slow[i] - truth[i]) / (1.0 + fabs(truth[i]));
                if (!(d <= worst)) worst = d;
                if (!(dg <= worst_gemm)) worst_gemm = dg;
            }
            CHECK(ok && worst < 1e-5 && worst_gemm < 1e-5 && specials && (nans > 0) == special,
                  "conv_transpose2d N=%d C=%d %dx%d OC=%d%s: within %.1e of float64 (the "
                  "GEMM path: %.1e), NaN where it is (%d)",
                  g.N, g.C, g.H, g.W, g.OC, special ? ", inf and NaN weights" : "", worst,
                  worst_gemm, nans);
            CHECK(same_floats(o[0], o[1], no) && same_floats(o[0], o[2], no),
                  "conv_transpose2d N=%d C=%d %dx%d OC=%d%s: the same bits at 1, 2 and 3 "
                  "threads", g.N, g.C, g.H, g.W, g.OC, special ? ", inf and NaN weights" : "");
            for (int th = 0; th < 3; th++) free(o[th]);
            free(x); free(w); free(b); free(truth); free(ws); free(slow);
        }
    }
    dg_set_num_threads(before);
}

/* As note_if_no_avx2, for the AVX-512 kernels (valgrind has no AVX-512). */
static void note_if_no_avx512(void) {
    if (!dg_avx512())
        printf("  note: this CPU has no AVX-512F: the runs below take the GEMM path\n");
}

/* kernel_case on each shape's conv2d k4 s2 p1 ({N, C, H, W, OC}) and on the
 * transposed convolution that is its adjoint; returns on how many shapes `fits`
 * (a transposed kernel's dg_*_fits) takes both the transposed forward and the
 * conv2d's input gradient, each with its op's workspace. Leaves the thread count
 * as it was. */
typedef int (*t_fits_fn)(int, int, int, int, int, int, int, int, int, int, int, int, int,
                         size_t);
static int adjoint_cases(const int (*shapes)[5], size_t n, t_fits_fn fits) {
    int before = dg_get_num_threads(), taken = 0;
    for (size_t k = 0; k < n; k++) {
        conv_geom c2d, ct;
        k4s2_geoms(shapes[k], &c2d, &ct);
        taken += fits(ct.N, ct.C, ct.H, ct.W, ct.OC, 4, 4, 2, 2, 1, 1, ct.OH, ct.OW,
                      ws_size(&ct, 1)) &&
                 fits(ct.N, ct.C, ct.H, ct.W, ct.OC, 4, 4, 2, 2, 1, 1, ct.OH, ct.OW,
                      ws_size(&c2d, 0));
        for (int transposed = 0; transposed < 2; transposed++)
            kernel_case(transposed ? &ct : &c2d, transposed);
    }
    dg_set_num_threads(before);
    return taken;
}

/* dg_direct_conv and dg_direct_convt at 3 threads, each task with a copy of the
 * packed weights of its own (a workspace with room for them) against all tasks
 * reading one copy (a workspace under two copies of the weights): the same bits,
 * forward with bias and input gradient accumulating. */
static void direct_copies_case(void) {
    /* conv2d 8x8 -> 4x4 of 32 -> 64 channels; the transposed 4x4 -> 8x8 of 64 ->
     * 32, with the same weights (their 128 KB of panels are large beside the
     * tasks' slots, so that three tasks fit beside one copy) */
    int N = 16, C = 32, H = 8, W = 8, OC = 64;
    size_t wp = (size_t)C * 16 * OC, big = 8 * wp, small = 2 * wp - 1;
    size_t nx = (size_t)N * C * H * W, ny = (size_t)N * OC * (H / 2) * (W / 2);
    if (!dg_direct_fits(N, C, H, W, OC, 4, 4, 2, 2, 1, 1, H / 2, W / 2, small) ||
        !dg_direct_t_fits(N, OC, H / 2, W / 2, C, 4, 4, 2, 2, 1, 1, H, W, small))
        return;
    int before = dg_get_num_threads();
    dg_set_num_threads(3);
    float *x = frandn(nx), *y = frandn(ny), *w = frandn(wp), *b = frandn(OC), *bt = frandn(C);
    float *ws = fnan(big), *y1 = falloc(ny), *y2 = falloc(ny), *x1 = falloc(nx);
    float *x2 = falloc(nx);
    for (int add = 0; add < 2; add++) {
        for (size_t i = 0; i < ny; i++) y1[i] = y2[i] = 0.5f;
        for (size_t i = 0; i < nx; i++) x1[i] = x2[i] = 0.5f;
        int ok = dg_direct_conv(y1, add, ws, big, x, w, b, N, C, H, W, OC) == DG_STATUS_OK &&
                 dg_direct_conv(y2, add, ws, small, x, w, b, N, C, H, W, OC) ==
                     DG_STATUS_OK &&
                 dg_direct_convt(x1, add, ws, big, y, w, bt, N, OC, H / 2, W / 2, C) ==
                     DG_STATUS_OK &&
                 dg_direct_convt(x2, add, ws, small, y, w, bt, N, OC, H / 2, W / 2, C) ==
                     DG_STATUS_OK;
        CHECK(ok && same_floats(y1, y2, ny) && same_floats(x1, x2, nx),
              "direct kernels at 3 threads, %s: the weights packed once per task give the "
              "bits of one shared packing", add ? "accumulating" : "forward with bias");
    }
    free(x); free(y); free(w); free(b); free(bt); free(ws); free(y1); free(y2); free(x1);
    free(x2);
    dg_set_num_threads(before);
}

/* The direct kernels with panels of more than one part (1 MB each): at 2 and 3
 * threads the tasks share the parts out (convt_part_task, part_task; 2 and 3
 * parts, more tasks than parts and the other way round), each packing a part
 * when it comes to it first; the bits of 1 thread, where the panels are packed
 * before the images and the parts (the transposed kernel's) taken in order.
 * Every call gets a workspace of NaN: nothing packed by the call before. */
static void direct_parts_case(void) {
    int N = 8, C = 128, H = 4, W = 4;
    int before = dg_get_num_threads();
    for (int OC = 256; OC <= 384; OC += 128) {
        /* the transposed (N, C, H, W) -> (N, OC, 2H, 2W); the conv2d (N, C, 2H, 2W)
         * -> (N, OC, H, W) with weights (OC, C, 4, 4) of the same size */
        size_t wp = (size_t)C * 16 * OC;
        size_t wsf = wp + 3 * 2 * ((size_t)C * (2 * H + 2) * (2 * W + 2) + 32 * 4 * H * W);
        size_t nx = (size_t)N * C * H * W, ny = (size_t)N * OC * 4 * H * W;
        if (!dg_direct_t_fits(N, C, H, W, OC, 4, 4, 2, 2, 1, 1, 2 * H, 2 * W, wsf) ||
            !dg_direct_fits(N, C, 2 * H, 2 * W, OC, 4, 4, 2, 2, 1, 1, H, W, wsf))
            break;
        float *x = frandn(4 * nx), *w = frandn(wp), *b = frandn(OC), *ws = falloc(wsf);
        float *y1 = falloc(ny), *y2 = falloc(ny);
        for (int kind = 0; kind < 2; kind++) {
            for (int add = 0; add < 2; add++) {
                for (int nt = 1; nt <= 3; nt++) {
                    float *y = nt == 1 ? y1 : y2;
                    size_t n = kind == 0 ? ny : ny / 4;
                    for (size_t i = 0; i < wsf; i++) ws[i] = NAN;
                    for (size_t i = 0; i < n; i++) y[i] = 0.5f;
                    dg_set_num_threads(nt);
                    dg_status st =
                        kind == 0
                            ? dg_direct_convt(y, add, ws, wsf, x, w, b, N, C, H, W, OC)
                            : dg_direct_conv(y, add, ws, wsf, x, w, b, N, C, 2 * H, 2 * W, OC);
                    if (nt == 1) continue;
                    CHECK(st == DG_STATUS_OK && same_floats(y1, y2, n),
                          "direct %s kernel, %d parts of panels at %d threads, %s: the bits "
                          "of 1 thread", kind == 0 ? "transposed" : "conv2d", OC / 128, nt,
                          add ? "accumulating" : "with bias");
                }
            }
        }
        free(x); free(w); free(b); free(ws); free(y1); free(y2);
    }
    dg_set_num_threads(before);
}

/* The direct AVX-512 kernels (dg_conv_direct.c) of 4x4, stride-2, padding-1
 * convolutions: conv2d forwards and weight gradients and the transposed
 * convolutions' input and weight gradients (dg_direct_conv, dg_direct_conv_dweight), and
 * transposed-convolution forwards and conv2d input gradients (dg_direct_convt),
 * on shapes they take (>= 8 images and channels, the 32- and 16-channel blocks,
 * rows of 1 to 8 input pixels) and some they do not. Each case:
 * - runs through conv_case (forward with and without bias, backward
 *   accumulating, every gradient alone, against the naive loops);
 * - gives the same bits at 1, 2 and 3 threads (each image is one task's);
 * - stays within float rounding of the GEMM path (dg_set_simd(0)), inf and NaN
 *   in the accumulated input gradient included. */
static void test_conv_direct(void) {
    printf("# conv: direct AVX-512 kernel of 4x4 stride-2 padding-1 kernels\n");
    note_if_no_avx512();
    /* N, C, H, W, OC of conv2d k4 s2 p1 -> (H/2, W/2); the transposed case is its
     * adjoint, (N, OC, H/2, W/2) -> (N, C, H, W), whose input gradient is the conv2d */
    static const int shapes[][5] = {
        {8, 8, 14, 14, 32}, {9, 16, 16, 6, 64}, {8, 8, 16, 16, 32}, {8, 13, 8, 12, 32},
        {8, 10, 10, 8, 32}, {8, 9, 4, 10, 32}, {8, 8, 8, 4, 32}, {8, 8, 8, 2, 32},
        {8, 16, 14, 14, 32}, {8, 32, 2, 2, 8}, {8, 16, 8, 16, 24}, {10, 48, 12, 4, 16},
        {8, 16, 12, 12, 8}, {8, 16, 8, 8, 9},
    };
    int t_kernel = adjoint_cases(shapes, sizeof shapes / sizeof shapes[0], dg_direct_t_fits);
    /* the weight-gradient kernel, on the conv2d and on its adjoint (whose dout
     * and inp trade places), each with its op's workspace */
    int dw_kernel = 0;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        conv_geom c2d, ct;
        k4s2_geoms(shapes[k], &c2d, &ct);
        dw_kernel += dg_direct_dweight_fits(c2d.N, c2d.C, c2d.H, c2d.W, c2d.OC, 4, 4, 2, 2,
                                            1, 1, c2d.OH, c2d.OW, ws_size(&c2d, 0)) &&
                     dg_direct_dweight_fits(ct.N, ct.OC, ct.OH, ct.OW, ct.C, 4, 4, 2, 2, 1,
                                            1, ct.H, ct.W, ws_size(&ct, 1));
    }
    if (dg_avx512()) {
        CHECK(t_kernel == 7, "the transposed kernel runs on %d of the shapes (7 expected: "
              "16k output channels)", t_kernel);
        CHECK(dw_kernel == 9, "the weight-gradient kernel runs on %d of the shapes, both "
              "ways (9 expected: 32k output channels of the conv2d)", dw_kernel);
    }
    direct_copies_case();
    direct_parts_case();
}

/* The direct AVX-512 kernel of transposed convolutions of few images
 * (dg_direct_convt_few, which copies a block's weights chunk by chunk): the
 * transposed forward, and conv2d's input gradient (the same transposed
 * convolution), on shapes it takes (1 to 7 images, output channels in blocks of
 * 4, rows of 1 to 7 input pixels, the generators' 7x7 -> 14x14 of 64 -> 32
 * channels, 80 input channels in two chunks) and some it does
 * not (8 images, rows of 8, 6 output channels). Each case as in test_conv_direct:
 * against the naive loops, the same bits at 1, 2 and 3 threads, within rounding
 * of float64. */
static void test_conv_direct_few(void) {
    printf("# conv: direct AVX-512 transposed kernel of few images\n");
    note_if_no_avx512();
    /* N, C, H, W, OC of conv2d k4 s2 p1; the transposed case is its adjoint,
     * (N, OC, H/2, W/2) -> (N, C, H, W) */
    static const int shapes[][5] = {
        {1, 32, 14, 14, 64}, {3, 8, 12, 8, 16}, {2, 4, 2, 2, 8}, {7, 12, 14, 10, 5},
        {2, 16, 4, 14, 3}, {1, 6, 14, 14, 8}, {2, 8, 16, 16, 8}, {8, 8, 14, 14, 8},
        {1, 8, 14, 14, 80},   /* 80 channels into the kernel: a chunk of 64, one of 16 */
    };
    int taken = adjoint_cases(shapes, sizeof shapes / sizeof shapes[0], dg_direct_tfew_fits);
    if (dg_avx512()) {
        CHECK(taken == 6, "the few-image transposed kernel runs on %d of the shapes (6 "
              "expected)", taken);
    }
    /* Its sparse rows (the nonzero inputs listed), forced on, against its dense
     * rows, forced on: the same bits, with none, half and all of the inputs and
     * output gradients zero (the transposed forward reads the input, conv2d's
     * input gradient the output gradient), with the listed values broadcast from
     * memory and from registers; and each as above (threads, float64). */
    static const double zeros[] = {0.0, 0.5, 1.0};
    int before = dg_get_num_threads();
    for (size_t z = 0; z < sizeof zeros / sizeof zeros[0]; z++) {
        conv_zero_share = zeros[z];
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
            conv_geom c2d, ct;
            k4s2_geoms(shapes[k], &c2d, &ct);
            for (int transposed = 0; transposed < 2; transposed++) {
                const conv_geom *g = transposed ? &ct : &c2d;
                size_t m = conv_simd_floats(g);
                float *dense = falloc(m), *sparse = falloc(m), *sparse_reg = falloc(m);
                dg_few_sparse_share(0.0);
                conv_simd_run(g, transposed, dense);
                dg_few_sparse_share(1.0);
                int values = dg_few_sparse_values(0);
                conv_simd_run(g, transposed, sparse);
                int mem = dg_few_sparse_values(1);
                conv_simd_run(g, transposed, sparse_reg);
                int reg = dg_few_sparse_values(-1);   /* the CPU's */
                dg_few_sparse_share(-1.0);
                kernel_case(g, transposed);
                CHECK(same_floats(dense, sparse, m) && same_floats(dense, sparse_reg, m) &&
                      mem == 0 && reg == 1 && dg_few_sparse_values(-1) == values &&
                      values == dg_cpu_amd(),
                      "%s N=%d C=%d %dx%d OC=%d, %.0f %% zeros: the few-image kernel's "
                      "sparse rows give its dense rows' bits, their values broadcast from "
                      "memory and from registers",
                      transposed ? "conv_transpose2d" : "conv2d", g->N, g->C, g->H, g->W,
                      g->OC, 100.0 * zeros[z]);
                free(dense); free(sparse); free(sparse_reg);
            }
        }
    }
    conv_zero_share = 0.0;
    dg_set_num_threads(before);
    /* the share itself: the CPU's (0.55 where dg_few_sparse_cpu, else 0) until set; NaN
     * asks, [0, 1] sets, < 0 goes back to the CPU's; each returns the one before */
    double cpu = dg_few_sparse_cpu() ? 0.55 : 0.0, now = dg_few_sparse_share(NAN);
    double set = dg_few_sparse_share(0.25), asked = dg_few_sparse_share(NAN);
    double reset = dg_few_sparse_share(-1.0), after = dg_few_sparse_share(NAN);
    double high = dg_few_sparse_share(2.0), kept = dg_few_sparse_share(NAN);
    CHECK(now == cpu && set == cpu && asked == 0.25 && reset == 0.25 && after == cpu &&
          high == cpu && kept == cpu,
          "dg_few_sparse_share: the CPU's %.2f at first (%.2f), sets 0.25 (%.2f before, "
          "%.2f after), goes back with -1 (%.2f before, %.2f after), ignores 2 (%.2f, "
          "%.2f)", cpu, now, set, asked, reset, after, high, kept);
}

/* The AVX-512 kernels of 4x4, stride-2, padding-1 layers with a one-channel
 * large map (dg_conv_thin.c): conv2d with C = 1 (forward, input and weight
 * gradients) and the transposed convolution with OC = 1 that is its adjoint, on
 * shapes they take (K = 4k channels, rows of 2 to 16 small-map pixels, odd
 * small-map heights) and some they do not (rows of 17, K = 6). Each case as in
 * test_conv_direct: against the naive loops, the same bits at 1, 2 and 3
 * threads, within rounding of the GEMM path; and the weight gradient the same
 * with a workspace that holds one image per round. */
static void test_conv_thin(void) {
    printf("# conv: AVX-512 kernels of one-channel 4x4 stride-2 padding-1 layers\n");
    note_if_no_avx512();
    /* N, 1, H, W, K of conv2d k4 s2 p1 -> (H/2, W/2) */
    static const int shapes[][5] = {
        {8, 1, 28, 28, 64}, {3, 1, 28, 28, 16}, {1, 1, 28, 28, 128}, {5, 1, 8, 8, 4},
        {2, 1, 32, 32, 8}, {4, 1, 6, 10, 12}, {3, 1, 30, 30, 8}, {2, 1, 4, 4, 4},
        {2, 1, 34, 34, 4}, {2, 1, 28, 28, 6},
    };
    int before = dg_get_num_threads(), taken = 0;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const int *p = shapes[k];
        conv_geom c2d, ct;
        k4s2_geoms(p, &c2d, &ct);
        int fits = dg_thin_fits(p[4], p[2], p[3], 4, 4, 2, 2, 1, 1, p[2] / 2, p[3] / 2,
                                ws_size(&c2d, 0)) &&
                   dg_thin_fits(p[4], p[2], p[3], 4, 4, 2, 2, 1, 1, p[2] / 2, p[3] / 2,
                                ws_size(&ct, 1));
        taken += fits;
        for (int transposed = 0; transposed < 2; transposed++)
            kernel_case(transposed ? &ct : &c2d, transposed);
        if (fits) {
            /* the weight gradient in rounds of one image (the least workspace it
             * takes) against all images in one round */
            int N = p[0], K = p[4], H = p[2], W = p[3];
            size_t nl = (size_t)N * H * W, ns = (size_t)N * K * (H / 2) * (W / 2);
            /* the lane and bias sums, then one split image */
            size_t small_ws = (size_t)K * 256 + 2 * (size_t)K + (size_t)(H + 2) * 64;
            float *lg = frandn(nl), *sm = frandn(ns), *ws = fnan(ws_size(&c2d, 0));
            float *d1 = falloc((size_t)K * 17), *d2 = falloc((size_t)K * 17);
            for (int i = 0; i < K * 17; i++) d1[i] = d2[i] = 0.5f;
            int ok = dg_thin_dweight(d1, d1 + K * 16, ws, ws_size(&c2d, 0), sm, NULL,
                                     DG_ACT_NONE, 0.0f, lg, N, K, H, W) == DG_STATUS_OK &&
                     dg_thin_dweight(d2, d2 + K * 16, ws, small_ws, sm, NULL, DG_ACT_NONE,
                                     0.0f, lg, N, K, H, W) == DG_STATUS_OK &&
                     dg_thin_dweight(d2, d2 + K * 16, ws, small_ws - 1, sm, NULL, DG_ACT_NONE,
                                     0.0f, lg, N, K, H, W) == DG_STATUS_ERR_SHAPE;
            CHECK(ok && same_floats(d1, d2, (size_t)K * 17),
                  "thin weight and bias gradient N=%d K=%d %dx%d: one image per round gives "
                  "the same bits, and less workspace is a shape error", N, K, H, W);
            free(lg); free(sm); free(ws); free(d1); free(d2);
        }
    }
    dg_set_num_threads(before);
    if (dg_avx512()) {
        CHECK(taken == 8, "the one-channel kernels run on %d of the shapes (8 expected)", taken);
    }
}

/* Batch norm (training and eval, forward and backward) and every activation
 * forward and backward on one (N, C, HW) tensor whose values include -0, inf,
 * NaN and subnormals; the results one after the other in res (returns their
 * count, at most simd_elementwise_floats). */
static size_t simd_elementwise_floats(int N, int C, int HW) {
    return 14 * (size_t)N * C * HW + 6 * (size_t)C;
}

static size_t simd_elementwise_run(float *res, int N, int C, int HW) {
    size_t n = (size_t)N * C * HW;
    uint64_t seed = rng_state;
    float *x = frandn(n), *dy = frandn(n), *g = frandn(C), *b = frandn(C);
    float *rm = frandn(C), *rv = frandn(C);
    for (int c = 0; c < C; c++) rv[c] = 1.0f + 0.5f * fabsf(rv[c]);
    static const float special[] = {-0.0f, 0.0f, INFINITY, -INFINITY, NAN, 1e-40f, -1e-40f, 30.0f};
    float *xs = fcopy(x, n);   /* the activations also see the special values */
    for (size_t i = 0; i < n && i < 8; i++) xs[i * 7 % n] = special[i];
    float *o = res;
    float *mean = o + n, *rstd = mean + C;
    dg_batchnorm_forward(o, mean, rstd, rm, rv, x, g, b, N, C, HW, 1e-5f, 0.1f);
    o = rstd + C;
    float *dx = o, *dg = o + n, *db = dg + C;
    for (size_t i = 0; i < n; i++) dx[i] = 0.25f;
    memset(dg, 0, 2 * (size_t)C * sizeof(float));
    dg_batchnorm_backward(dx, dg, db, dy, x, mean, rstd, g, N, C, HW);
    o = db + C;
    dg_batchnorm_forward_eval(o, x, rm, rv, g, b, N, C, HW, 1e-5f);
    o += n;
    float *ex = o, *eg = o + n, *eb = eg + C;
    memset(ex, 0, (n + 2 * (size_t)C) * sizeof(float));
    dg_batchnorm_backward_eval(ex, eg, eb, dy, x, rm, rv, g, N, C, HW, 1e-5f);
    o = eb + C;
    dg_relu_forward(o, xs, n); o += n;
    dg_leaky_relu_forward(o, xs, 0.2f, n); o += n;
    dg_tanh_forward(o, xs, n); o += n;
    dg_sigmoid_forward(o, xs, n); o += n;
    for (int k = 0; k < 4; k++) {
        float *d = o;
        for (size_t i = 0; i < n; i++) d[i] = 0.5f;   /* backward accumulates */
        if (k == 0) dg_relu_backward(d, dy, xs, n);
        if (k == 1) dg_leaky_relu_backward(d, dy, xs, 0.2f, n);
        if (k == 2) dg_tanh_backward(d, dy, res + 6 * n + 6 * (size_t)C, n);
        if (k == 3) dg_sigmoid_backward(d, dy, res + 7 * n + 6 * (size_t)C, n);
        o += n;
    }
    rng_state = seed;   /* the same inputs for the next run */
    free(x); free(dy); free(g); free(b); free(rm); free(rv); free(xs);
    return (size_t)(o - res);
}

/* Equal as values: NaN to NaN, and -0 to +0 (the unfused backward adds the
 * activation's gradient into zeros, which turns -0 into +0). */
static int same_values(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!(a[i] == b[i] || (isnan(a[i]) && isnan(b[i])))) return 0;
    }
    return 1;
}

/* Batch norm with a ReLU or LeakyReLU fused after it (dg_batchnorm_act_*) against
 * the batch norm op, then the activation op, forward and backward, training and
 * eval mode: the same values, with and without the AVX2 build; bad act, a
 * negative slope and a missing forward output are errors. */
static void test_batchnorm_act(void) {
    printf("# batch norm with a fused activation\n");
    /* flat, small planes, and planes longer than a run (DG_BN_RUN = 512: one channel at a
     * time) */
    static const int shapes[][3] = {{4, 37, 1}, {3, 5, 49}, {2, 7, 196}, {9, 1, 7}, {8, 16, 4},
                                    {2, 3, 600}};
    static const int acts[] = {DG_ACT_RELU, DG_ACT_LEAKY_RELU, DG_ACT_LEAKY_RELU};
    static const float slopes[] = {0.0f, 0.2f, 0.0f};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int N = shapes[k][0], C = shapes[k][1], HW = shapes[k][2];
        size_t n = (size_t)N * C * HW;
        for (int a = 0; a < 3; a++) {
            int act = acts[a];
            float slope = slopes[a];
            int ok = 1;
            for (int simd = 1; simd >= 0; simd--) {
                dg_set_simd(simd);
                float *x = frandn(n), *dy = frandn(n), *g = frandn(C), *b = frandn(C);
                float *rm = frandn(C), *rv = frandn(C);
                for (int c = 0; c < C; c++) rv[c] = 1.0f + 0.5f * fabsf(rv[c]);
                float *rm2 = fcopy(rm, C), *rv2 = fcopy(rv, C);
                float *z = falloc(n), *y1 = falloc(n), *y2 = falloc(n);
                float *m1 = falloc(C), *s1 = falloc(C), *m2 = falloc(C), *s2 = falloc(C);
                /* training forward */
                ok &= dg_batchnorm_forward(z, m1, s1, rm, rv, x, g, b, N, C, HW, 1e-5f, 0.1f) ==
                      DG_STATUS_OK;
                ok &= (act == DG_ACT_RELU ? dg_relu_forward(y1, z, n)
                                          : dg_leaky_relu_forward(y1, z, slope, n)) == DG_STATUS_OK;
                ok &= dg_batchnorm_act_forward(y2, m2, s2, rm2, rv2, x, g, b, N, C, HW, 1e-5f,
                                               0.1f, act, slope) == DG_STATUS_OK;
                ok &= same_floats(y1, y2, n) && same_floats(m1, m2, C) && same_floats(s1, s2, C) &&
                      same_floats(rm, rm2, C) && same_floats(rv, rv2, C);
                /* training backward: the activation's gradient into zeros, then batch norm's */
                float *gz = falloc(n), *dx1 = falloc(n), *dx2 = falloc(n);
                float *dg1 = falloc(2 * (size_t)C), *dg2 = falloc(2 * (size_t)C);
                memset(gz, 0, n * sizeof(float));
                for (size_t i = 0; i < n; i++) dx1[i] = dx2[i] = 0.25f;
                for (int c = 0; c < 2 * C; c++) dg1[c] = dg2[c] = 0.5f;
                ok &= (act == DG_ACT_RELU ? dg_relu_backward(gz, dy, z, n)
                                          : dg_leaky_relu_backward(gz, dy, z, slope, n)) ==
                      DG_STATUS_OK;
                ok &= dg_batchnorm_backward(dx1, dg1, dg1 + C, gz, x, m1, s1, g, N, C, HW) ==
                      DG_STATUS_OK;
                ok &= dg_batchnorm_act_backward(dx2, dg2, dg2 + C, dy, y2, x, m1, s1, g, N, C, HW,
                                                act, slope) == DG_STATUS_OK;
                ok &= same_values(dx1, dx2, n) && same_values(dg1, dg2, 2 * (size_t)C);
                /* eval forward and backward */
                ok &= dg_batchnorm_forward_eval(z, x, rm, rv, g, b, N, C, HW, 1e-5f) == DG_STATUS_OK;
                ok &= (act == DG_ACT_RELU ? dg_relu_forward(y1, z, n)
                                          : dg_leaky_relu_forward(y1, z, slope, n)) == DG_STATUS_OK;
                ok &= dg_batchnorm_act_forward_eval(y2, x, rm, rv, g, b, N, C, HW, 1e-5f, act,
                                                    slope) == DG_STATUS_OK;
                ok &= same_floats(y1, y2, n);
                memset(gz, 0, n * sizeof(float));
                ok &= (act == DG_ACT_RELU ? dg_relu_backward(gz, dy, z, n)
                                          : dg_leaky_relu_backward(gz, dy, z, slope, n)) ==
                      DG_STATUS_OK;
                ok &= dg_batchnorm_backward_eval(dx1, dg1, dg1 + C, gz, x, rm, rv, g, N, C, HW,
                                                 1e-5f) == DG_STATUS_OK;
                ok &= dg_batchnorm_act_backward_eval(dx2, dg2, dg2 + C, dy, y2, x, rm, rv, g, N, C,
                                                     HW, 1e-5f, act, slope) == DG_STATUS_OK;
                ok &= same_values(dx1, dx2, n) && same_values(dg1, dg2, 2 * (size_t)C);
                free(x); free(dy); free(g); free(b); free(rm); free(rv); free(rm2); free(rv2);
                free(z); free(y1); free(y2); free(m1); free(s1); free(m2); free(s2);
                free(gz); free(dx1); free(dx2); free(dg1); free(dg2);
            }
            dg_set_simd(1);
            CHECK(ok, "N=%d C=%d HW=%d, %s slope %g: fused forward and backward (training, "
                  "eval) the same values as batch norm and the activation op in turn, with and "
                  "without AVX2", N, C, HW, act == DG_ACT_RELU ? "relu" : "leaky relu",
                  (double)slope);
        }
    }
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, o[8], m[2], r[2], d[8];
    int ok = dg_batchnorm_act_forward(o, m, r, NULL, NULL, x, NULL, NULL, 2, 2, 2, 1e-5f, 0.1f,
                                      3, 0.0f) == DG_STATUS_ERR_VALUE &&
             dg_batchnorm_act_forward(o, m, r, NULL, NULL, x, NULL, NULL, 2, 2, 2, 1e-5f, 0.1f,
                                      DG_ACT_LEAKY_RELU, -0.1f) == DG_STATUS_ERR_VALUE &&
             dg_batchnorm_act_forward_eval(o, x, x, x, NULL, NULL, 2, 2, 2, 1e-5f,
                                           DG_ACT_LEAKY_RELU, -1.0f) == DG_STATUS_ERR_VALUE &&
             dg_batchnorm_act_backward(d, NULL, NULL, x, NULL, x, x, x, NULL, 2, 2, 2,
                                       DG_ACT_RELU, 0.0f) == DG_STATUS_ERR_NULL &&
             dg_batchnorm_act_backward_eval(d, NULL, NULL, x, NULL, x, x, x, NULL, 2, 2, 2,
                                            1e-5f, DG_ACT_RELU, 0.0f) == DG_STATUS_ERR_NULL;
    CHECK(ok, "batch norm with act: act 3 and a negative LeakyReLU slope -> value error; no "
          "forward output for the backward -> null error");
}

/* conv2d with a ReLU or LeakyReLU fused after it (dg_conv2d_act_*), where it fits
 * (a one-channel conv2d on an AVX-512 CPU), against dg_conv2d_forward then the
 * activation op, and the activation's backward into zeros then dg_conv2d_backward:
 * the same values, forward and every gradient (accumulated). Where it does not
 * fit, and for a bad act, the fused ops are errors that write nothing. */
static void test_conv2d_act(void) {
    printf("# conv2d with a fused activation\n");
    /* N, OC, H, W: DCGAN's critic at batch 64, a round of images and a few more, and a
     * small map of more than DG_THIN_GQ pixels (its rows through the gradient per unit) */
    static const int shapes[][4] = {{64, 64, 28, 28}, {3, 8, 16, 16}, {70, 4, 32, 32},
                                    {1, 12, 8, 8}, {3, 8, 68, 16}};
    static const int acts[] = {DG_ACT_RELU, DG_ACT_LEAKY_RELU, DG_ACT_LEAKY_RELU};
    static const float slopes[] = {0.0f, 0.2f, 0.0f};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        conv_geom g = {shapes[k][0], 1, shapes[k][2], shapes[k][3], shapes[k][1], 4, 4, 2, 2,
                       1, 1, shapes[k][2] / 2, shapes[k][3] / 2};
        if (!dg_conv2d_act_fits(g.N, g.C, g.H, g.W, g.OC, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW,
                                g.OH, g.OW)) {
            printf("# skipped N=%d OC=%d %dx%d: not fused on this CPU\n", g.N, g.OC, g.H, g.W);
            continue;
        }
        size_t nx = (size_t)g.N * g.H * g.W, ny = (size_t)g.N * g.OC * g.OH * g.OW;
        size_t nw = (size_t)g.OC * 16;
        for (int a = 0; a < 3; a++) {
            int act = acts[a];
            float slope = slopes[a];
            float *x = frandn(nx), *w = frandn(nw), *b = frandn((size_t)g.OC), *dy = frandn(ny);
            float *ws = fnan(ws_size(&g, 0)), *z = falloc(ny), *y1 = falloc(ny), *y2 = falloc(ny);
            float *gz = falloc(ny), *d1 = falloc(nx + nw + g.OC), *d2 = falloc(nx + nw + g.OC);
            for (size_t i = 0; i < nx + nw + (size_t)g.OC; i++) d1[i] = d2[i] = 0.5f;
            memset(gz, 0, ny * sizeof(float));
            int ok = conv_fwd(&g, 0, z, ws, x, w, b) == DG_STATUS_OK &&
                     (act == DG_ACT_RELU ? dg_relu_forward(y1, z, ny)
                                         : dg_leaky_relu_forward(y1, z, slope, ny)) ==
                         DG_STATUS_OK &&
                     dg_conv2d_act_forward(y2, ws, x, w, b, g.N, g.C, g.H, g.W, g.OC, g.KH, g.KW,
                                           g.SH, g.SW, g.PH, g.PW, g.OH, g.OW, act,
                                           slope) == DG_STATUS_OK &&
                     (act == DG_ACT_RELU ? dg_relu_backward(gz, dy, z, ny)
                                         : dg_leaky_relu_backward(gz, dy, z, slope, ny)) ==
                         DG_STATUS_OK &&
                     dg_conv2d_backward(d1, d1 + nx, d1 + nx + nw, ws, gz, x, w, g.N, g.C, g.H,
                                        g.W, g.OC, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW, g.OH,
                                        g.OW) == DG_STATUS_OK &&
                     dg_conv2d_act_backward(d2, d2 + nx, d2 + nx + nw, ws, dy, y2, x, w, g.N, g.C,
                                            g.H, g.W, g.OC, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW,
                                            g.OH, g.OW, act, slope) == DG_STATUS_OK;
            CHECK(ok && same_floats(y1, y2, ny) && same_values(d1, d2, nx + nw + g.OC),
                  "N=%d OC=%d %dx%d, %s slope %g: fused forward and backward the same values "
                  "as conv2d and the activation op in turn", g.N, g.OC, g.H, g.W,
                  act == DG_ACT_RELU ? "relu" : "leaky relu", (double)slope);
            /* the bias gradient alone (its own pass) against the one the weight
             * gradient's kernel summed above, at 1 and 3 threads: the same bits */
            float *db = falloc((size_t)g.OC);
            for (int nt = 1; nt <= 3; nt += 2) {
                int before = dg_get_num_threads();
                dg_set_num_threads(nt);
                for (int i = 0; i < g.OC; i++) db[i] = 0.5f;
                ok = dg_conv2d_act_backward(NULL, NULL, db, ws, dy, y2, x, w, g.N, g.C, g.H,
                                            g.W, g.OC, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW, g.OH,
                                            g.OW, act, slope) == DG_STATUS_OK;
                dg_set_num_threads(before);
                CHECK(ok && same_floats(db, d2 + nx + nw, (size_t)g.OC),
                      "N=%d OC=%d %dx%d, %s slope %g, %d threads: the bias gradient summed in "
                      "the weight gradient's pass has the bits of its own pass", g.N, g.OC, g.H,
                      g.W, act == DG_ACT_RELU ? "relu" : "leaky relu", (double)slope, nt);
            }
            free(x); free(w); free(b); free(dy); free(ws); free(z); free(y1); free(y2);
            free(gz); free(d1); free(d2); free(db);
        }
    }
    /* three input channels: not fused, an error before anything is written */
    conv_geom g = {2, 3, 8, 8, 4, 4, 4, 2, 2, 1, 1, 4, 4};
    float *x = frandn(2 * 3 * 64), *w = frandn(4 * 3 * 16), *ws = fnan(ws_size(&g, 0));
    float *y = falloc(2 * 4 * 16), *dw = falloc(4 * 3 * 16);
    for (int i = 0; i < 2 * 4 * 16; i++) y[i] = 0.5f;
    for (int i = 0; i < 4 * 3 * 16; i++) dw[i] = 0.5f;
    int ok = !dg_conv2d_act_fits(2, 3, 8, 8, 4, 4, 4, 2, 2, 1, 1, 4, 4) &&
             dg_conv2d_act_forward(y, ws, x, w, NULL, 2, 3, 8, 8, 4, 4, 4, 2, 2, 1, 1, 4, 4,
                                   DG_ACT_RELU, 0.0f) == DG_STATUS_ERR_VALUE &&
             dg_conv2d_act_backward(NULL, dw, NULL, ws, y, y, x, w, 2, 3, 8, 8, 4, 4, 4, 2, 2, 1,
                                    1, 4, 4, DG_ACT_RELU, 0.0f) == DG_STATUS_ERR_VALUE &&
             dg_conv2d_act_forward(y, ws, x, w, NULL, 2, 3, 8, 8, 4, 4, 4, 2, 2, 1, 1, 4, 4, 3,
                                   0.0f) == DG_STATUS_ERR_VALUE &&
             dg_conv2d_act_forward(y, ws, x, w, NULL, 2, 3, 8, 8, 4, 4, 4, 2, 2, 1, 1, 4, 4,
                                   DG_ACT_LEAKY_RELU, -0.1f) == DG_STATUS_ERR_VALUE;
    for (int i = 0; i < 2 * 4 * 16; i++) ok &= y[i] == 0.5f;
    for (int i = 0; i < 4 * 3 * 16; i++) ok &= dw[i] == 0.5f;
    CHECK(ok, "conv2d with act: three input channels, act 3 and a negative slope -> value "
          "error, nothing written");
    free(x); free(w); free(ws); free(y); free(dw);
}

/* Batch norm and the activations built for AVX2 against their baseline build
 * (dg_internal.h): the same bits, on shapes whose runs end on every lane. */
static void test_simd_elementwise(void) {
    printf("# batch norm and activations: AVX2 build\n");
    note_if_no_avx2();
    /* N, C, HW: flat (HW = 1), DCGAN's planes, odd lengths */
    static const int shapes[][3] = {
        {4, 37, 1}, {64, 300, 1}, {3, 5, 49}, {2, 7, 196}, {5, 3, 13}, {1, 2, 1000}, {9, 1, 7},
    };
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int N = shapes[k][0], C = shapes[k][1], HW = shapes[k][2];
        size_t m = simd_elementwise_floats(N, C, HW);
        float *fast = falloc(m), *slow = falloc(m);
        size_t got = simd_elementwise_run(fast, N, C, HW);
        dg_set_simd(0);
        simd_elementwise_run(slow, N, C, HW);
        dg_set_simd(1);
        CHECK(got <= m && same_floats(fast, slow, got),
              "N=%d C=%d HW=%d: batch norm (train, eval; forward, backward) and relu, leaky "
              "relu, tanh, sigmoid (forward, backward) bit-identical with and without AVX2",
              N, C, HW);
        free(fast); free(slow);
    }
}

/* ------------------------------------------------------------------------- */
/* Batch normalisation                                                        */
/* ------------------------------------------------------------------------- */

/* Training-mode batchnorm in double: out (N, C, HW); mean, var (biased) (C). */
static void bn_naive(double *out, double *mean, double *var, const double *x,
                     const double *gamma, const double *beta, int N, int C, int HW,
                     double eps) {
    double M = (double)N * HW;
    for (int c = 0; c < C; c++) {
        double s = 0.0, q = 0.0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) s += x[((size_t)n * C + c) * HW + i];
        double m = s / M;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) {
                double d = x[((size_t)n * C + c) * HW + i] - m;
                q += d * d;
            }
        double v = q / M, r = 1.0 / sqrt(v + eps);
        if (mean) mean[c] = m;
        if (var) var[c] = v;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) {
                size_t k = ((size_t)n * C + c) * HW + i;
                out[k] = (x[k] - m) * r * (gamma ? gamma[c] : 1.0) + (beta ? beta[c] : 0.0);
            }
    }
}

static double *to_double(const float *x, size_t n) {
    double *p = xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) p[i] = x[i];
    return p;
}

static void bn_forward_case(int N, int C, int HW, float offset, int affine) {
    size_t n = (size_t)N * C * HW;
    float eps = 1e-5f, momentum = 0.1f;
    float *x = frandn(n);
    for (size_t i = 0; i < n; i++) x[i] = x[i] * 0.5f + offset;
    float *gamma = affine ? frandn(C) : NULL, *beta = affine ? frandn(C) : NULL;
    float *x0 = fcopy(x, n);
    float *rm = frandn(C), *rv = frandn(C);
    for (int c = 0; c < C; c++) rv[c] = 1.0f + 0.5f * rv[c];
    double *xd = to_double(x, n), *gd = affine ? to_double(gamma, C) : NULL;
    double *bd = affine ? to_double(beta, C) : NULL;
    double *want = dzeros(n), *wm = dzeros(C), *wv = dzeros(C);
    bn_naive(want, wm, wv, xd, gd, bd, N, C, HW, eps);
    double *wr = dzeros(C), *wrm = dzeros(C), *wrv = dzeros(C);
    double M = (double)N * HW;
    for (int c = 0; c < C; c++) {
        wr[c] = 1.0 / sqrt(wv[c] + eps);
        wrm[c] = (1.0 - momentum) * rm[c] + momentum * wm[c];
        wrv[c] = (1.0 - momentum) * rv[c] + momentum * wv[c] * M / (M - 1.0);
    }
    float *out = fnan(n), *mean = fnan(C), *rstd = fnan(C);
    dg_status st = dg_batchnorm_forward(out, mean, rstd, rm, rv, x, gamma, beta, N, C, HW,
                                        eps, momentum);
    char tag[128];
    snprintf(tag, sizeof tag, "batchnorm N=%d C=%d HW=%d offset=%g%s", N, C, HW, offset,
             affine ? "" : " (gamma, beta NULL)");
    CHECK(st == DG_STATUS_OK, "%s: forward status ok", tag);
    CHECK_CLOSE(out, want, n, 2e-5, "%s: forward vs double", tag);
    CHECK_CLOSE(mean, wm, C, 1e-6, "%s: mean cache", tag);
    CHECK_CLOSE(rstd, wr, C, 1e-5, "%s: rstd cache (biased variance)", tag);
    CHECK_CLOSE(rm, wrm, C, 1e-6, "%s: running_mean update", tag);
    CHECK_CLOSE(rv, wrv, C, 1e-6, "%s: running_var update (unbiased variance)", tag);
    CHECK(same_floats(x, x0, n), "%s: input unchanged", tag);

    /* eval mode with the updated running statistics */
    double *rmd = to_double(rm, C), *rvd = to_double(rv, C), *we = dzeros(n);
    for (int k = 0; k < N; k++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < HW; i++) {
                size_t j = ((size_t)k * C + c) * HW + i;
                we[j] = (xd[j] - rmd[c]) / sqrt(rvd[c] + eps) * (affine ? gd[c] : 1.0) +
                        (affine ? bd[c] : 0.0);
            }
    fill_nan(out, n);
    st = dg_batchnorm_forward_eval(out, x, rm, rv, gamma, beta, N, C, HW, eps);
    CHECK(st == DG_STATUS_OK, "%s: eval forward status ok", tag);
    CHECK_CLOSE(out, we, n, 2e-5, "%s: eval forward vs double", tag);

    free(x); free(gamma); free(beta); free(x0); free(rm); free(rv); free(xd); free(gd);
    free(bd); free(want); free(wm); free(wv); free(wr); free(wrm); free(wrv); free(out);
    free(mean); free(rstd); free(rmd); free(rvd); free(we);
}

/* L = sum dy * bn(x) in double, training (running == NULL) or eval mode. */
static double bn_loss(const double *x, const double *g, const double *b, const float *dy,
                      const double *rm, const double *rv, int N, int C, int HW, double eps,
                      double *scratch) {
    size_t n = (size_t)N * C * HW;
    if (rm == NULL) {
        bn_naive(scratch, NULL, NULL, x, g, b, N, C, HW, eps);
    } else {
        for (int k = 0; k < N; k++)
            for (int c = 0; c < C; c++)
                for (int i = 0; i < HW; i++) {
                    size_t j = ((size_t)k * C + c) * HW + i;
                    scratch[j] = (x[j] - rm[c]) / sqrt(rv[c] + eps) * g[c] + b[c];
                }
    }
    double L = 0.0;
    for (size_t i = 0; i < n; i++) L += dy[i] * scratch[i];
    return L;
}

/* Backward (training and eval mode) against central differences of the
 * double forward, and the accumulation contract. */
static void bn_backward_case(int N, int C, int HW, int eval) {
    size_t n = (size_t)N * C * HW;
    float eps = 1e-5f;
    float *x = frandn(n), *gamma = frandn(C), *beta = frandn(C), *dy = frandn(n);
    float *rm = frandn(C), *rv = frandn(C);
    for (int c = 0; c < C; c++) rv[c] = 1.0f + 0.5f * rv[c];
    float *x0 = fcopy(x, n), *dy0 = fcopy(dy, n);
    double *xd = to_double(x, n), *gd = to_double(gamma, C), *bd = to_double(beta, C);
    double *rmd = eval ? to_double(rm, C) : NULL, *rvd = eval ? to_double(rv, C) : NULL;
    double *scratch = dzeros(n), *gx = dzeros(n), *gg = dzeros(C), *gb = dzeros(C);
    const double h = 1e-6;
    for (size_t i = 0; i < n; i++) {
        double v = xd[i];
        xd[i] = v + h;
        double lp = bn_loss(xd, gd, bd, dy, rmd, rvd, N, C, HW, eps, scratch);
        xd[i] = v - h;
        double lm = bn_loss(xd, gd, bd, dy, rmd, rvd, N, C, HW, eps, scratch);
        xd[i] = v;
        gx[i] = (lp - lm) / (2 * h);
    }
    for (int c = 0; c < C; c++) {
        double v = gd[c];
        gd[c] = v + h;
        double lp = bn_loss(xd, gd, bd, dy, rmd, rvd, N, C, HW, eps, scratch);
        gd[c] = v - h;
        double lm = bn_loss(xd, gd, bd, dy, rmd, rvd, N, C, HW, eps, scratch);
        gd[c] = v;
        gg[c] = (lp - lm) / (2 * h);
        v = bd[c];
        bd[c] = v + h;
        lp = bn_loss(xd, gd, bd, dy, rmd, rvd, N, C, HW, eps, scratch);
        bd[c] = v - h;
        lm = bn_loss(xd, gd, bd, dy, rmd, rvd, N, C, HW, eps, scratch);
        bd[c] = v;
        gb[c] = (lp - lm) / (2 * h);
    }
    float *out = fnan(n), *mean = fnan(C), *rstd = fnan(C);
    dg_batchnorm_forward(out, mean, rstd, NULL, NULL, x, gamma, beta, N, C, HW, eps, 0.1f);
    float *dx = frandn(n), *dg = frandn(C), *db = frandn(C);
    double *ex1 = accumulated(dx, gx, 1, n), *ex2 = accumulated(dx, gx, 2, n);
    double *eg1 = accumulated(dg, gg, 1, C), *eg2 = accumulated(dg, gg, 2, C);
    double *eb1 = accumulated(db, gb, 1, C), *eb2 = accumulated(db, gb, 2, C);
    char tag[96];
    snprintf(tag, sizeof tag, "batchnorm%s backward N=%d C=%d HW=%d", eval ? " eval" : "", N, C, HW);
    dg_status st;
    for (int rep = 0; rep < 2; rep++) {
        st = eval ? dg_batchnorm_backward_eval(dx, dg, db, dy, x, rm, rv, gamma, N, C, HW, eps)
                  : dg_batchnorm_backward(dx, dg, db, dy, x, mean, rstd, gamma, N, C, HW);
        CHECK(st == DG_STATUS_OK, "%s: status ok (call %d)", tag, rep + 1);
        CHECK_CLOSE(dx, rep ? ex2 : ex1, n, 1e-4, "%s: dinp vs central differences (call %d, accumulated)", tag, rep + 1);
        CHECK_CLOSE(dg, rep ? eg2 : eg1, C, 1e-4, "%s: dgamma vs central differences (call %d, accumulated)", tag, rep + 1);
        CHECK_CLOSE(db, rep ? eb2 : eb1, C, 1e-4, "%s: dbeta vs central differences (call %d, accumulated)", tag, rep + 1);
    }
    float *dx1 = falloc(n);
    memset(dx1, 0, n * sizeof(float));
    st = eval ? dg_batchnorm_backward_eval(dx1, NULL, NULL, dy, x, rm, rv, gamma, N, C, HW, eps)
              : dg_batchnorm_backward(dx1, NULL, NULL, dy, x, mean, rstd, gamma, N, C, HW);
    dg_status st2 = eval ? dg_batchnorm_backward_eval(NULL, NULL, NULL, dy, x, rm, rv, gamma, N, C, HW, eps)
                         : dg_batchnorm_backward(NULL, NULL, NULL, dy, x, mean, rstd, gamma, N, C, HW);
    CHECK(st == DG_STATUS_OK && st2 == DG_STATUS_OK, "%s: NULL gradients ok", tag);
    CHECK_CLOSE(dx1, gx, n, 1e-4, "%s: dinp alone", tag);
    CHECK(same_floats(x, x0, n) && same_floats(dy, dy0, n), "%s: inputs unchanged", tag);
    free(x); free(gamma); free(beta); free(dy); free(rm); free(rv); free(x0); free(dy0);
    free(xd); free(gd); free(bd); free(rmd); free(rvd); free(scratch); free(gx); free(gg);
    free(gb); free(out); free(mean); free(rstd); free(dx); free(dg); free(db); free(ex1);
    free(ex2); free(eg1); free(eg2); free(eb1); free(eb2); free(dx1);
}

static void test_batchnorm(void) {
    printf("# batchnorm\n");
    bn_forward_case(4, 3, 5, 0.0f, 1);
    bn_forward_case(8, 300, 1, 0.0f, 1);     /* flat (N, C), more channels than one block */
    bn_forward_case(3, 5, 49, 0.0f, 0);
    bn_forward_case(16, 2, 1, 1000.0f, 1);   /* large mean: two-pass variance keeps its digits */
    bn_forward_case(64, 3, 2051, 0.5f, 1);   /* a channel larger than the cache block */
    bn_backward_case(3, 2, 4, 0);
    bn_backward_case(5, 3, 1, 0);
    bn_backward_case(3, 2, 4, 1);
    bn_backward_case(2, 2, 601, 0);          /* HW beyond the per-position arrays */
    bn_backward_case(2, 1, 601, 1);
    /* errors */
    float b[8] = {0, 0, 0, 0, 0, 0, 0, 0}, m[2], r[2], rm[2] = {0, 0}, rv[2] = {1, 1};
    int ok = 1;
    ok = ok && dg_batchnorm_forward(b, m, r, NULL, NULL, b, NULL, NULL, 1, 2, 1, 1e-5f, 0.1f) == DG_STATUS_ERR_SHAPE;
    ok = ok && dg_batchnorm_forward(b, m, r, NULL, NULL, b, NULL, NULL, 0, 2, 4, 1e-5f, 0.1f) == DG_STATUS_ERR_SHAPE;
    ok = ok && dg_batchnorm_forward(b, m, r, NULL, NULL, b, NULL, NULL, 2, 2, -1, 1e-5f, 0.1f) == DG_STATUS_ERR_SHAPE;
    ok = ok && dg_batchnorm_forward(b, m, r, NULL, NULL, b, NULL, NULL, 2, 2, 2, 0.0f, 0.1f) == DG_STATUS_ERR_VALUE;
    ok = ok && dg_batchnorm_forward(b, m, r, NULL, NULL, b, NULL, NULL, 2, 2, 2, NAN, 0.1f) == DG_STATUS_ERR_VALUE;
    ok = ok && dg_batchnorm_forward(b, m, r, rm, rv, b, NULL, NULL, 2, 2, 2, 1e-5f, 1.5f) == DG_STATUS_ERR_VALUE;
    ok = ok && dg_batchnorm_forward(b, NULL, r, NULL, NULL, b, NULL, NULL, 2, 2, 2, 1e-5f, 0.1f) == DG_STATUS_ERR_NULL;
    ok = ok && dg_batchnorm_forward_eval(b, b, NULL, rv, NULL, NULL, 2, 2, 2, 1e-5f) == DG_STATUS_ERR_NULL;
    ok = ok && dg_batchnorm_forward_eval(b, b, rm, rv, NULL, NULL, 2, 2, 2, -1.0f) == DG_STATUS_ERR_VALUE;
    ok = ok && dg_batchnorm_backward(b, NULL, NULL, b, b, NULL, r, NULL, 2, 2, 2) == DG_STATUS_ERR_NULL;
    ok = ok && dg_batchnorm_backward(b, NULL, NULL, b, b, m, r, NULL, 2, 0, 2) == DG_STATUS_ERR_SHAPE;
    ok = ok && dg_batchnorm_backward_eval(b, NULL, NULL, b, b, rm, rv, NULL, 2, 2, 2, 0.0f) == DG_STATUS_ERR_VALUE;
    int untouched = rm[0] == 0 && rm[1] == 0 && rv[0] == 1 && rv[1] == 1;
    for (int i = 0; i < 8; i++) untouched = untouched && b[i] == 0;
    CHECK(ok && untouched,
          "batchnorm: one value per channel in training, bad sizes -> shape error, eps <= 0 or "
          "momentum outside [0, 1] -> value error, NULL -> null error");
}

/* ------------------------------------------------------------------------- */

/* ------------------------------------------------------------------------- */
/* the thread pool (dg_thread.c)                                              */
/* ------------------------------------------------------------------------- */

typedef struct {
    int hits[8];
    int nested;
} pool_probe;

static void probe_inner(void *ctx, int t, int nt) {
    (void)nt;
    pool_probe *p = (pool_probe *)ctx;
    p->hits[4 + t] += 1;   /* tasks of the nested region: run on the calling task's thread */
}

static void probe_task(void *ctx, int t, int nt) {
    pool_probe *p = (pool_probe *)ctx;
    p->hits[t] += 1 + nt * 10;
    if (p->nested && t == 0) dg_parallel(probe_inner, ctx, 2);
}

/* dg_conv2d_forward_keep / dg_conv2d_backward_kept: the kept col matrix is the
 * im2col of the definition, and every result is bit-identical to the plain ops,
 * at 1, 2 and 3 threads (one group, several groups, and the split over images). */
static void test_conv_keep(void) {
    printf("# conv2d with the col matrix kept for the backward\n");
    enum { C = 8, H = 28, W = 28, OC = 32, K = 4, S = 2, P = 1, OH = 14, OW = 14 };
    int before = dg_get_num_threads();
    const int batches[2] = {1, 7};
    for (int bi = 0; bi < 2; bi++) {
        int N = batches[bi];
        size_t nin = (size_t)N * C * H * W, nout = (size_t)N * OC * OH * OW;
        size_t nw = (size_t)OC * C * K * K, ncol = (size_t)C * K * K * N * OH * OW;
        size_t ws = dg_conv2d_workspace_size(N, C, H, W, OC, K, K, S, S, P, P, OH, OW);
        float *x = fwave(nin, 0.23, 1.0f), *w = fwave(nw, 0.17, 0.1f);
        float *b = fwave(OC, 0.5, 0.1f), *dy = fwave(nout, 0.31, 1.0f);
        float *work = falloc(ws), *col = fnan(ncol);
        float *y1 = falloc(nout), *y2 = falloc(nout);
        float *g1 = falloc(nin + nw + OC), *g2 = falloc(nin + nw + OC);
        /* the definition: col[(c*K + kh)*K + kw, n*OH*OW + oh*OW + ow] */
        float *want = falloc(ncol);
        for (int c = 0; c < C; c++)
            for (int kh = 0; kh < K; kh++)
                for (int kw = 0; kw < K; kw++)
                    for (int n = 0; n < N; n++)
                        for (int oh = 0; oh < OH; oh++)
                            for (int ow = 0; ow < OW; ow++) {
                                int ih = oh * S - P + kh, iw = ow * S - P + kw;
                                float v = ih < 0 || ih >= H || iw < 0 || iw >= W ? 0.0f
                                          : x[(((size_t)n * C + c) * H + ih) * W + iw];
                                want[((size_t)(c * K + kh) * K + kw) * N * OH * OW +
                                     ((size_t)n * OH + oh) * OW + ow] = v;
                            }
        for (int th = 1; th <= 3; th++) {
            dg_set_num_threads(th);
            fill_nan(col, ncol);
            dg_status s1 = dg_conv2d_forward(y1, work, x, w, b, N, C, H, W, OC, K, K, S, S,
                                             P, P, OH, OW);
            dg_status s2 = dg_conv2d_forward_keep(y2, col, work, x, w, b, N, C, H, W, OC, K,
                                                  K, S, S, P, P, OH, OW);
            CHECK(s1 == DG_STATUS_OK && s2 == DG_STATUS_OK && !memcmp(y1, y2, nout * 4) &&
                      !memcmp(col, want, ncol * 4),
                  "conv2d_forward_keep N=%d, %d thread(s): out bit-identical, col = im2col", N, th);
            memset(g1, 0, (nin + nw + OC) * 4);
            memset(g2, 0, (nin + nw + OC) * 4);
            s1 = dg_conv2d_backward(g1, g1 + nin, g1 + nin + nw, work, dy, x, w, N, C, H, W,
                                    OC, K, K, S, S, P, P, OH, OW);
            s2 = dg_conv2d_backward_kept(g2, g2 + nin, g2 + nin + nw, work, col, dy, x, w, N,
                                         C, H, W, OC, K, K, S, S, P, P, OH, OW);
            CHECK(s1 == DG_STATUS_OK && s2 == DG_STATUS_OK &&
                      !memcmp(g1, g2, (nin + nw + OC) * 4),
                  "conv2d_backward_kept N=%d, %d thread(s): dinp, dweight, dbias bit-identical",
                  N, th);
        }
        CHECK(dg_conv2d_forward_keep(y2, NULL, work, x, w, b, N, C, H, W, OC, K, K, S, S, P,
                                     P, OH, OW) == DG_STATUS_ERR_NULL &&
                  dg_conv2d_backward_kept(g2, NULL, NULL, work, NULL, dy, x, w, N, C, H, W,
                                          OC, K, K, S, S, P, P, OH, OW) == DG_STATUS_ERR_NULL &&
                  dg_conv2d_forward_keep(y2, col, work, x, w, b, N, C, H, W, OC, K, K, S, S,
                                         P, P, OH + 1, OW) == DG_STATUS_ERR_SHAPE,
              "conv2d keep/kept N=%d: NULL col -> null error, bad OH -> shape error", N);
        free(x); free(w); free(b); free(dy); free(work); free(col); free(y1); free(y2);
        free(g1); free(g2); free(want);
    }
    dg_set_num_threads(before);
}

/* conv2d forward of x (bias b), its whole backward with the output as dout
 * (input, weight and bias gradients into zeroed buffers) and the transposed
 * convolution of the output with the same weight (C = OC or not: the weight is
 * read as (OC, C, K, K) either way); appended to *o as y, dx, dw, db, xt,
 * and *y and *xt point at those two. */
static void conv_chain(float **o, float **y, float **xt, float *work, const float *x,
                       const float *w, const float *b, int N, int C, int H, int W, int OC,
                       int K, int S, int P, int OH, int OW) {
    size_t nin = (size_t)N * C * H * W, nw = (size_t)OC * C * K * K;
    *y = *o; *o += (size_t)N * OC * OH * OW;
    dg_conv2d_forward(*y, work, x, w, b, N, C, H, W, OC, K, K, S, S, P, P, OH, OW);
    float *dx = *o; *o += nin;
    float *dw = *o; *o += nw;
    float *db = *o; *o += OC;
    memset(dx, 0, (nin + nw + OC) * sizeof(float));
    dg_conv2d_backward(dx, dw, db, work, *y, x, w, N, C, H, W, OC, K, K, S, S, P, P, OH, OW);
    *xt = *o; *o += nin;
    dg_conv_transpose2d_forward(*xt, work, *y, w, NULL, N, OC, OH, OW, C, K, K, S, S, P, P, H,
                                W);
}

/* Convolutions large enough to run as one task per thread over images
 * (dg_conv.c, "Threads over images"): batches of 7 (not a multiple of 2 or 3
 * threads) and 3 (one 7x7 image per task at 3 threads, which takes the col^T
 * path inside the task). Writes conv_chain's outputs, conv2d's input gradient
 * alone, and a second transposed-convolution forward to out; returns the
 * floats written. */
static size_t image_split_ops(float *out) {
    enum { N = 7, C = 8, H = 28, W = 28, OC = 32, K = 4, S = 2, P = 1, OH = 14, OW = 14 };
    enum { N2 = 3, C2 = 64, H2 = 7, W2 = 7, OC2 = 32, OH2 = 14, OW2 = 14 };
    size_t nin = (size_t)N * C * H * W;
    size_t nw = (size_t)OC * C * K * K, nin2 = (size_t)N2 * C2 * H2 * W2;
    size_t nw2 = (size_t)C2 * OC2 * K * K;
    size_t ws = dg_conv2d_workspace_size(N, C, H, W, OC, K, K, S, S, P, P, OH, OW);
    size_t wst = dg_conv_transpose2d_workspace_size(N, OC, OH, OW, C, K, K, S, S, P, P, H, W);
    size_t wst2 = dg_conv_transpose2d_workspace_size(N2, C2, H2, W2, OC2, K, K, S, S, P, P,
                                                      OH2, OW2);
    size_t wmax = ws > wst ? ws : wst;
    wmax = wmax > wst2 ? wmax : wst2;
    float *x = fwave(nin, 0.29, 1.0f), *w = fwave(nw, 0.13, 0.1f);
    float *x2 = fwave(nin2, 0.41, 1.0f), *w2 = fwave(nw2, 0.07, 0.1f);
    float *b = fwave(OC, 0.5, 0.1f), *work = falloc(wmax);
    float *o = out;
    float *y, *xt;
    conv_chain(&o, &y, &xt, work, x, w, b, N, C, H, W, OC, K, S, P, OH, OW);
    float *dx = o; o += nin;      /* the input gradient alone */
    for (size_t i = 0; i < nin; i++) dx[i] = 0.5f;   /* dinp accumulates */
    dg_conv2d_backward(dx, NULL, NULL, work, y, x, w, N, C, H, W, OC, K, K, S, S, P, P, OH, OW);
    float *yt = o; o += (size_t)N2 * OC2 * OH2 * OW2;
    dg_conv_transpose2d_forward(yt, work, x2, w2, b, N2, C2, H2, W2, OC2, K, K, S, S, P, P,
                                OH2, OW2);
    free(x); free(w); free(x2); free(w2); free(b); free(work);
    return (size_t)(o - out);
}

/* Runs conv2d, conv_transpose2d, batch norm, leaky ReLU and Adam forward and
 * backward on fixed data; writes every result to out (returns its length). */
static size_t threaded_ops(float *out) {
    enum { N = 8, C = 16, H = 16, W = 16, OC = 16, K = 4, S = 2, P = 1, OH = 8, OW = 8 };
    size_t nin = (size_t)N * C * H * W, nout = (size_t)N * OC * OH * OW, nw = (size_t)OC * C * K * K;
    float *x = fwave(nin, 0.37, 1.0f), *w = fwave(nw, 0.11, 0.1f), *b = fwave(OC, 0.3, 0.1f);
    size_t ws = dg_conv2d_workspace_size(N, C, H, W, OC, K, K, S, S, P, P, OH, OW);
    size_t wst = dg_conv_transpose2d_workspace_size(N, OC, OH, OW, C, K, K, S, S, P, P, H, W);
    float *work = falloc(ws > wst ? ws : wst);
    float *o = out;
    /* conv2d forward and backward, conv_transpose2d forward with the same weight */
    float *y, *xt;
    conv_chain(&o, &y, &xt, work, x, w, b, N, C, H, W, OC, K, S, P, OH, OW);
    /* conv_transpose2d backward (C = OC here) */
    float *dyt = o; o += nout;
    float *dwt = o; o += nw;
    memset(dyt, 0, (nout + nw) * sizeof(float));
    dg_conv_transpose2d_backward(dyt, dwt, NULL, work, xt, y, w, N, OC, OH, OW, C, K, K, S,
                                 S, P, P, H, W);
    /* batch norm and leaky ReLU over (N, C, H*W) */
    float *bn = o; o += nin;
    float *mean = o; o += C;
    float *rstd = o; o += C;
    dg_batchnorm_forward(bn, mean, rstd, NULL, NULL, xt, NULL, NULL, N, C, H * W, 1e-5f, 0.1f);
    float *dbn = o; o += nin;
    memset(dbn, 0, nin * sizeof(float));
    dg_batchnorm_backward(dbn, NULL, NULL, x, xt, mean, rstd, NULL, N, C, H * W);
    float *lr = o; o += nin;
    dg_leaky_relu_forward(lr, bn, 0.2f, nin);
    /* Adam on the first nin floats of x as parameters, dbn as gradient */
    float *pa = o; o += nin;
    float *m = o; o += nin;
    float *v = o; o += nin;
    memcpy(pa, x, nin * sizeof(float));
    memset(m, 0, 2 * nin * sizeof(float));
    dg_adam_step(pa, m, v, dbn, nin, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0);
    free(x); free(w); free(b); free(work);
    o += image_split_ops(o);
    return (size_t)(o - out);
}

static void test_threads(void) {
    printf("# thread pool\n");
    int before = dg_get_num_threads();
    /* every task of a region runs exactly once, with the region's nt; a
     * region wider than the pool, or nested in a task, runs serially */
    dg_set_num_threads(2);
    for (int nt = 1; nt <= 4; nt++) {
        for (int nested = 0; nested < 2; nested++) {
            pool_probe p;
            memset(&p, 0, sizeof p);
            p.nested = nested;
            dg_parallel(probe_task, &p, nt);
            int ok = 1;
            for (int t = 0; t < 4; t++) ok &= p.hits[t] == (t < nt ? 1 + nt * 10 : 0);
            ok &= p.hits[4] == nested && p.hits[5] == nested;
            CHECK(ok, "dg_parallel: %d task(s)%s each run once", nt, nested ? " (nested region)" : "");
        }
    }
    size_t lo, hi, covered = 0;
    int split_ok = 1;
    for (int t = 0; t < 3; t++) {
        dg_split(100, 16, t, 3, &lo, &hi);
        split_ok &= lo == covered && (lo % 16 == 0) && hi >= lo;
        covered = hi;
    }
    CHECK(split_ok && covered == 100, "dg_split: 3 contiguous parts of 100, bounds multiples of 16");

    /* the same ops at 1, 2 and 3 threads: bit-identical at each count when run
     * twice; within float tolerance across counts (bit-identical too with the
     * reference GEMM, which is not split) */
    size_t cap = 1 << 20;
    float *r1 = malloc(cap * sizeof(float)), *r2 = malloc(cap * sizeof(float));
    float *r3 = malloc(cap * sizeof(float));
    dg_set_num_threads(1);
    size_t n = threaded_ops(r1);
    double *want = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) want[i] = r1[i];
    for (int th = 2; th <= 3; th++) {
        dg_set_num_threads(th);
        threaded_ops(r2);
        threaded_ops(r3);
        CHECK(dg_get_num_threads() == th && !memcmp(r2, r3, n * sizeof(float)),
              "conv/bn/act/adam at %d threads: two runs bit-identical", th);
        CHECK_CLOSE(r2, want, n, 1e-5, "conv/bn/act/adam at %d threads vs 1 thread", th);
        if (!strcmp(dg_blas_name(), "reference")) {
            CHECK(!memcmp(r1, r2, n * sizeof(float)),
                  "reference GEMM: %d threads bit-identical to 1 thread", th);
        }
    }
    free(r1); free(r2); free(r3); free(want);
    dg_set_num_threads(before);
}

/* The groups of csrc/tests/test_misc.c (activations, losses, Adam, RNG,
 * embedding), compiled as their own translation unit; each returns its number
 * of failures and counts its checks in tm_checks_run. */
int test_act(void);
int test_loss(void);
int test_adam(void);
int test_rng(void);
int test_embed(void);
extern int tm_checks_run;

int main(void) {
    test_gemm();
    test_linear();
    test_linear_one();
    test_linear_batch();
    test_linear_dbias_wide();
    test_linear_bn_convt();
    test_conv();
    test_conv_keep();
    test_conv_simd();
    test_colt_sparse();
    test_conv_direct();
    test_conv_direct_few();
    test_conv_thin();
    test_simd_elementwise();
    test_batchnorm_act();
    test_conv2d_act();
    test_batchnorm();
    test_threads();
    /* last: its random weights leave the other tests' draws as they were */
    test_convt_few_pack();
    int misc_fail = test_act() + test_embed() + test_loss() + test_adam() + test_rng();
    n_fail += misc_fail;
    n_pass += tm_checks_run - misc_fail;
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
