/*
 * dg_dense.c -- the fully connected (linear) layer, forward and backward.
 *
 * out = inp @ weight^T + bias, as torch.nn.functional.linear, with PyTorch's
 * weight layout (OUT, IN). Both passes are GEMMs through dg_sgemm; the
 * backward GEMMs accumulate (beta = 1) into the caller's gradients. On an
 * AVX-512 CPU the forward has two kernels of its own instead: one image's is a
 * matrix-vector kernel (linear_one_rows), and a batch of a layer with few
 * inputs (a latent code) reads the weights in place, a block of rows against
 * a group of images (forward_block_*). Neither's bits depend on how the rows
 * are split.
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

/* The one-image kernel's order of its sums (one_rows_sum): dg_linear_one_order's,
 * else the CPU's: each row's weights in turn on AMD's (Zen 4, log 102 of
 * PERFORMANCE.md) and on Golden Cove's server parts and their successors, there
 * from whole lines (linear_one_lines): on Emerald Rapids the row order gave
 * 0.975-0.981 of a one-image teacher sample's time (log 120) and the whole lines
 * 0.978-0.987 (log 121); on the Granite Rapids class host both together ~0.986
 * of the teacher's and ~0.98 of the student's (log 125). Ice Lake not measured. */
static int one_order = -1;

static int one_in_order(void) {
    if (one_order >= 0) return one_order;
    if (dg_cpu_golden_cove_server()) return 2;
    return dg_cpu_amd();
}

int dg_linear_one_order(int order) {
    int before = one_in_order();
    one_order = order >= 0 && order <= 2 ? order : -1;
    return before;
}

#if DG_HAVE_AVX2
#include <immintrin.h>

/* Work (weights) per task at least in linear_one_task; rows summed together. */
#define DG_DENSE_ONE_GRAIN 65536.0
#define DG_DENSE_ONE_ROWS 16

typedef struct {
    float *out;
    const float *inp, *weight, *bias;
    int C, OC;
    int in_order;   /* one_rows_sum's order: each row's weights in turn (dg_cpu_amd);
                     * 2: the same, from whole lines where they fit (linear_one_lines) */
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
 * r in accumulator r, lane l taking c = l mod 16 in increasing c, by FMA; inlined.
 * Two orders of the same FMAs, so the same bits:
 * - vector by vector across the rows, each load 4 C bytes after the last: 16
 *   interleaved chains, in registers when nr is the constant DG_DENSE_ONE_ROWS.
 *   Emerald Rapids and Ice Lake were measured with this one, and a kernel that took
 *   a row at a time (with rotated lanes, so not quite the other) lost on Emerald
 *   Rapids (PERFORMANCE.md, log 99);
 * - in_order: row by row, DG_DENSE_ONE_VECS vectors of inp at a time in registers,
 *   the weights read in the order they lie (a row's accumulator passing through L1
 *   between rows). On Zen 4 a one-image teacher sample took 0.89-0.91 of the other
 *   order's time while the host was busy, 0.97-0.98 while it was quiet (log 102).
 *   Rows of fewer than 144 floats take linear_one_short instead, the same order. */
#define DG_DENSE_ONE_VECS 8
DG_AVX512 static inline __attribute__((always_inline)) void
one_rows_sum(__m512 *a, const float *w, const float *inp, int C, int nr, int in_order) {
    int full = C / 16;
    __mmask16 tail = (__mmask16)((1u << (C % 16)) - 1);
    if (!in_order) {
        for (int k = 0; k < full; k++) {
            __m512 xv = _mm512_loadu_ps(inp + 16 * k);
            for (int r = 0; r < nr; r++)
                a[r] = _mm512_fmadd_ps(_mm512_loadu_ps(w + (size_t)r * C + 16 * k), xv, a[r]);
        }
    } else {
        for (int k0 = 0; k0 < full; k0 += DG_DENSE_ONE_VECS) {
            int nk = full - k0 < DG_DENSE_ONE_VECS ? full - k0 : DG_DENSE_ONE_VECS;
            __m512 xv[DG_DENSE_ONE_VECS];
            _Pragma("GCC unroll 8") for (int k = 0; k < DG_DENSE_ONE_VECS; k++)
                xv[k] = k < nk ? _mm512_loadu_ps(inp + 16 * (k0 + k)) : _mm512_setzero_ps();
            for (int r = 0; r < nr; r++) {
                const float *p = w + (size_t)r * C + 16 * k0;
                __m512 s = a[r];
                _Pragma("GCC unroll 8") for (int k = 0; k < DG_DENSE_ONE_VECS; k++)
                    if (k < nk) s = _mm512_fmadd_ps(_mm512_loadu_ps(p + 16 * k), xv[k], s);
                a[r] = s;
            }
        }
    }
    if (tail) {
        __m512 xv = _mm512_maskz_loadu_ps(tail, inp + 16 * full);
        for (int r = 0; r < nr; r++)
            a[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w + (size_t)r * C + 16 * full),
                                   xv, a[r]);
    }
}

/* out[o .. o + nr) = the lane sums of a[0 .. nr) (sum_lanes16), plus the bias. */
DG_AVX512 static inline void one_rows_store(const one_job *j, const __m512 *a, size_t o,
                                            int nr) {
    __mmask16 m = dg_lanes(nr);
    __m512 v = sum_lanes16(a);
    if (j->bias != NULL) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, j->bias + o));
    _mm512_mask_storeu_ps(j->out + o, m, v);
}

/* linear_one_rows of rows of at most 16 * DG_DENSE_ONE_VECS + 15 floats in the
 * in_order order (a generator's latent code, C = 100): inp in registers for the
 * whole call, each row's sum one FMA chain in registers over its vectors and its
 * tail, the rows taken by a pointer stepped row by row; the same FMAs in the same
 * order per lane as one_rows_sum, so the same bits. one_rows_sum took each
 * row's tail in a second pass over the 16 rows, its sums passing through L1, and
 * loaded inp again for every 16 rows: 23-29 cycles a row of 100 floats on Zen 4,
 * from L2 as from L3, where this one takes ~18-20 (PERFORMANCE.md, log 104). */
DG_AVX512 static void linear_one_short(const one_job *j, size_t o0, size_t o1) {
    int C = j->C, full = C / 16;
    __mmask16 tail = (__mmask16)((1u << (C % 16)) - 1);
    __m512 xv[DG_DENSE_ONE_VECS], xt = _mm512_maskz_loadu_ps(tail, j->inp + 16 * full);
    _Pragma("GCC unroll 8") for (int k = 0; k < DG_DENSE_ONE_VECS; k++)
        xv[k] = k < full ? _mm512_loadu_ps(j->inp + 16 * k) : _mm512_setzero_ps();
    const float *p = j->weight + o0 * (size_t)C;   /* the next row */
/* a = the next row's sum, p then at the row after it */
#define ONE_SHORT_ROW(a)                                                                \
    do {                                                                                \
        __m512 s_ = _mm512_setzero_ps();                                                \
        _Pragma("GCC unroll 8") for (int k = 0; k < DG_DENSE_ONE_VECS; k++)             \
            if (k < full) s_ = _mm512_fmadd_ps(_mm512_loadu_ps(p + 16 * k), xv[k], s_); \
        if (tail)                                                                       \
            s_ = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, p + 16 * full), xt, s_);   \
        (a) = s_;                                                                       \
        p += C;                                                                         \
    } while (0)
    for (size_t o = o0; o < o1; o += DG_DENSE_ONE_ROWS) {
        int nr = o1 - o < DG_DENSE_ONE_ROWS ? (int)(o1 - o) : DG_DENSE_ONE_ROWS;
        __m512 a[DG_DENSE_ONE_ROWS];
        if (nr == DG_DENSE_ONE_ROWS) {
            _Pragma("GCC unroll 16") for (int r = 0; r < DG_DENSE_ONE_ROWS; r++)
                ONE_SHORT_ROW(a[r]);
        } else {
            for (int r = 0; r < DG_DENSE_ONE_ROWS; r++) {
                if (r < nr)
                    ONE_SHORT_ROW(a[r]);
                else
                    a[r] = _mm512_setzero_ps();
            }
        }
        one_rows_store(j, a, o, nr);
    }
#undef ONE_SHORT_ROW
}

/* Lines (16 floats) of a row at most: rows of at most 16 * DG_DENSE_ONE_VECS + 15
 * floats, starting up to 15 floats into a line. */
#define DG_DENSE_LINES (DG_DENSE_ONE_VECS + 2)

/* Groups of 16 rows from o on while 16 remain (linear_one_lines), each row over NV
 * lines: rows q, q + 4, q + 8 and q + 12 of each group start m[q] floats into a
 * line (C a multiple of 4), their first line masked to lanes f[q], their last two
 * to l2[q] and l[q] (the row's lanes of them: none of the last where the row ends
 * a line earlier), times inp shifted m[q] lanes up (xs), and their sums rotated
 * back by back[q]. Returns the first row left. */
DG_AVX512 static inline __attribute__((always_inline)) size_t
lines_groups(const one_job *j, size_t o, size_t o1, const int *m, const __mmask16 *f,
             const __mmask16 *l2, const __mmask16 *l, const __m512i *back, const float *xz,
             const int NV) {
    int C = j->C;
    for (; o1 - o >= DG_DENSE_ONE_ROWS; o += DG_DENSE_ONE_ROWS) {
        const float *w = j->weight + o * (size_t)C;
        __m512 a[DG_DENSE_ONE_ROWS];
        _Pragma("GCC unroll 4") for (int q = 0; q < 4; q++) {
            __m512 xs[DG_DENSE_LINES];
            _Pragma("GCC unroll 10") for (int k = 0; k < NV; k++)
                xs[k] = _mm512_loadu_ps(xz + 16 + 16 * k - m[q]);
            _Pragma("GCC unroll 4") for (int r = q; r < DG_DENSE_ONE_ROWS; r += 4) {
                const float *al = w + (size_t)r * C - m[q];   /* a line's start */
                __m512 s = _mm512_setzero_ps();
                _Pragma("GCC unroll 10") for (int k = 0; k < NV; k++) {
                    if (k > 0 && k + 2 < NV) {   /* a line inside the row */
                        s = _mm512_fmadd_ps(_mm512_load_ps(al + 16 * k), xs[k], s);
                        continue;
                    }
                    __mmask16 u = (__mmask16)((k == 0 ? f[q] : 0xffffu) &
                                              (k + 2 == NV ? l2[q] : 0xffffu) &
                                              (k + 1 == NV ? l[q] : 0xffffu));
                    s = _mm512_mask3_fmadd_ps(_mm512_maskz_loadu_ps(u, al + 16 * k), xs[k], s,
                                              u);
                }
                a[r] = _mm512_permutexvar_ps(back[q], s);
            }
        }
        one_rows_store(j, a, o, DG_DENSE_ONE_ROWS);
    }
    return o;
}

/* linear_one_short's sums from whole 64-byte lines, for rows of C floats, C a
 * multiple of 4 (a latent code of 100), in groups of 16 rows; returns the first
 * row not summed (the last group of fewer than 16 is linear_one_short's). A row
 * starting m floats into a line: its lines are loaded whole, the first and last
 * masked to the row's lanes, each times inp shifted m lanes up (from a copy of
 * inp between zeros), so lane t sums the products of the c = t - m (mod 16) in
 * increasing c; then the sum is rotated back m lanes. Each lane's products and
 * their order are linear_one_short's, so the same bits: the lanes it adds a
 * product 0 * 0 into (beyond C, in the tail) keep their value there, as no sum
 * is -0 (each starts at +0). Rows 4 apart start at the same m (16 C bytes
 * apart) and go together, with the shifted inp in registers. linear_one_short's
 * rows of 100 floats start 16 bytes further into a line each, so 3 rows in 4
 * load 16 floats across two lines each time: 2048 rows from L2 took 5.3 ns a row
 * on Emerald Rapids, 4.5-4.6 here, 3.6-4.3 padded to 112 floats, and a one-image
 * teacher sample 0.978-0.987 of its time (PERFORMANCE.md, log 121). */
DG_AVX512 static size_t linear_one_lines(const one_job *j, size_t o0, size_t o1) {
    int C = j->C, m[4], nv = 1;
    if (o1 - o0 < DG_DENSE_ONE_ROWS) return o0;
    float xz[16 + 16 * DG_DENSE_LINES] __attribute__((aligned(64)));
    memset(xz, 0, sizeof xz);
    memcpy(xz + 16, j->inp, (size_t)C * sizeof(float));
    const __m512i lane =
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __mmask16 f[4], l2[4], l[4];
    __m512i back[4];
    for (int q = 0; q < 4; q++) {
        uintptr_t at = (uintptr_t)(j->weight + (o0 + (size_t)q) * C);
        m[q] = (int)(at / sizeof(float) % 16);
        int n = (m[q] + C + 15) / 16;
        nv = n > nv ? n : nv;
        back[q] = _mm512_and_si512(_mm512_add_epi32(lane, _mm512_set1_epi32(m[q])),
                                   _mm512_set1_epi32(15));
    }
    for (int q = 0; q < 4; q++) {   /* over nv lines each (the last one empty in some) */
        int e = m[q] + C - 16 * (nv - 1);   /* the row's lanes of its nv-th line */
        f[q] = (__mmask16)(0xffffu << m[q]);
        l[q] = dg_lanes(e);
        l2[q] = dg_lanes(e + 16);   /* the whole line where the row goes on past it */
    }
    switch (nv) {   /* a constant number of lines in each */
    case 1: return lines_groups(j, o0, o1, m, f, l2, l, back, xz, 1);
    case 2: return lines_groups(j, o0, o1, m, f, l2, l, back, xz, 2);
    case 3: return lines_groups(j, o0, o1, m, f, l2, l, back, xz, 3);
    case 4: return lines_groups(j, o0, o1, m, f, l2, l, back, xz, 4);
    case 5: return lines_groups(j, o0, o1, m, f, l2, l, back, xz, 5);
    case 6: return lines_groups(j, o0, o1, m, f, l2, l, back, xz, 6);
    case 7: return lines_groups(j, o0, o1, m, f, l2, l, back, xz, 7);
    case 8: return lines_groups(j, o0, o1, m, f, l2, l, back, xz, 8);
    case 9: return lines_groups(j, o0, o1, m, f, l2, l, back, xz, 9);
    default: return lines_groups(j, o0, o1, m, f, l2, l, back, xz, DG_DENSE_LINES);
    }
}

/* out[o] = sum_c weight[o, c] * inp[c] (+ bias[o]) for one image, rows
 * [o0, o1): 16 rows at a time (fewer at the end, the missing rows' sums left at
 * zero), each row summed in one 16-lane accumulator (one_rows_sum), then across
 * its lanes (sum_lanes16), plus the bias. A row's bits do not depend on the rows
 * around it, so not on the split into tasks or into calls on parts of the rows
 * either (dg_direct_convt_few_head makes a layer's rows a piece at a time).
 * Rows of fewer than 144 floats in the in_order order: linear_one_short, or
 * linear_one_lines first (in_order 2). */
DG_AVX512 static void linear_one_rows(const one_job *j, size_t o0, size_t o1) {
    int C = j->C;
    if (j->in_order && C / 16 <= DG_DENSE_ONE_VECS) {
        if (j->in_order == 2 && C % 4 == 0)   /* weight is float-aligned, as C's floats */
            o0 = linear_one_lines(j, o0, o1);
        linear_one_short(j, o0, o1);
        return;
    }
    for (size_t o = o0; o < o1; o += DG_DENSE_ONE_ROWS) {
        int nr = o1 - o < DG_DENSE_ONE_ROWS ? (int)(o1 - o) : DG_DENSE_ONE_ROWS;
        const float *w = j->weight + o * (size_t)C;
        __m512 a[DG_DENSE_ONE_ROWS];
        for (int r = 0; r < DG_DENSE_ONE_ROWS; r++) a[r] = _mm512_setzero_ps();
        /* a call per order with nr the constant: one call taking the row order's nr
         * at run time instead took 1.03-1.05x a teacher sample's time (log 102) */
        if (nr == DG_DENSE_ONE_ROWS && j->in_order)
            one_rows_sum(a, w, j->inp, C, DG_DENSE_ONE_ROWS, 1);
        else if (nr == DG_DENSE_ONE_ROWS)
            one_rows_sum(a, w, j->inp, C, DG_DENSE_ONE_ROWS, 0);
        else
            one_rows_sum(a, w, j->inp, C, nr, j->in_order);
        one_rows_store(j, a, o, nr);
    }
}

static void linear_one_task(void *ctx, int t, int nt) {
    const one_job *j = (const one_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->OC, DG_DENSE_ONE_ROWS, t, nt, &lo, &hi);
    if (lo < hi) linear_one_rows(j, lo, hi);
}

/* The batched forward kernel (dg_linear_forward of at least DG_DENSE_MIN_N
 * images) takes layers of at most DG_DENSE_MAX_C input features (a generator's
 * latent code): there OpenBLAS packs all the weights (5 MB for DCGAN's 100 ->
 * 12544) for products only C deep, and ran at 50-70 GFLOP/s on one Ice Lake
 * thread (PERFORMANCE.md log 76). */
#define DG_DENSE_MAX_C 128
#define DG_DENSE_MIN_N 16
/* The forward's images per group (at most four 16-lane vectors) and weight
 * rows per block: 6 x 4 accumulators take 10 loads per 24 FMAs, where 8 x 2
 * take 10 per 16 (PERFORMANCE.md log 76). */
#define DG_DENSE_GROUP 64
#define DG_DENSE_ROWS 6
/* FLOPs per task at least in the batched forward */
#define DG_DENSE_GRAIN 4.0e6

typedef struct {
    float *out;
    const float *inp, *weight, *bias;
    int N, C, OC;
} batch_job;

/* xt[c * 16 * nv + i] = inp[n0 + i, c] for i < nb, zero for nb <= i < 16 * nv:
 * a group's inputs with the images along the vectors. */
static void group_transpose(float *xt, const float *inp, int C, size_t n0, int nb, int nv) {
    for (int c = 0; c < C; c++) {
        float *d = xt + (size_t)c * 16 * nv;
        for (int i = 0; i < nb; i++) d[i] = inp[(n0 + (size_t)i) * C + c];
        for (int i = nb; i < 16 * nv; i++) d[i] = 0.0f;
    }
}

/* Stores a[0 .. 5], lane i of a[r] the value of row o + r for image n0 + i,
 * as rows n0 + i < n0 + nb of out (ld floats apart), nr <= 6 values each (plus
 * b, the 6 rows' biases in both halves): transposed in registers in three
 * rounds of permutes (32-, 64- and 128-bit elements; rows 6 and 7 zero), each
 * zmm ending with two images' rows. */
DG_AVX512 static inline __attribute__((always_inline)) void
store_rows(float *out, size_t ld, const __m512 *a, int nb, __mmask16 rows, __m512 b) {
    const __m512i lo32 = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi32 = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30,
                                           15, 31);
    const __m512i lo64 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    const __m512i hi64 = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    const __m512i lo128 = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    const __m512i hi128 = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    __m512 z8 = _mm512_setzero_ps();
    /* t[k] (k < 4): rows 2k, 2k+1 interleaved, images 0-7; t[4 + k]: images 8-15 */
    __m512d t[8], u[8];
    for (int k = 0; k < 4; k++) {
        __m512 r0 = 2 * k < DG_DENSE_ROWS ? a[2 * k] : z8;
        __m512 r1 = 2 * k + 1 < DG_DENSE_ROWS ? a[2 * k + 1] : z8;
        t[k] = _mm512_castps_pd(_mm512_permutex2var_ps(r0, lo32, r1));
        t[4 + k] = _mm512_castps_pd(_mm512_permutex2var_ps(r0, hi32, r1));
    }
    /* u[h*4 + q*2 + s]: images 8h + 4s .. + 3 of rows 4q .. 4q + 3 */
    for (int h = 0; h < 2; h++)
        for (int q = 0; q < 2; q++) {
            u[h * 4 + q * 2] = _mm512_permutex2var_pd(t[h * 4 + 2 * q], lo64, t[h * 4 + 2 * q + 1]);
            u[h * 4 + q * 2 + 1] = _mm512_permutex2var_pd(t[h * 4 + 2 * q], hi64, t[h * 4 + 2 * q + 1]);
        }
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 2; s++)
            for (int e = 0; e < 2; e++) {
                /* images i, i + 1 (rows 0-7 each), i = 8h + 4s + 2e */
                __m512 z = _mm512_castpd_ps(
                    _mm512_permutex2var_pd(u[h * 4 + s], e == 0 ? lo128 : hi128, u[h * 4 + 2 + s]));
                z = _mm512_add_ps(z, b);
                int i = 8 * h + 4 * s + 2 * e;
                if (i < nb) _mm512_mask_storeu_ps(out + (size_t)i * ld, rows, z);
                if (i + 1 < nb)
                    _mm512_mask_storeu_ps(out + (size_t)(i + 1) * ld, rows,
                                          _mm512_shuffle_f32x4(z, z, 0xee));
            }
}

/* out[n0 + i, o + r] = sum_c weight[o + r, c] * xt[c, i] (+ bias[o + r]) for
 * r < nr <= 6 and i < nb <= 16 * NV: 6 x NV accumulators, one per weight row
 * and vector of 16 images, each weight broadcast onto the NV vectors; each sum
 * in increasing c by FMA from zero, then the bias added, so a value's bits do
 * not depend on the blocks around it, the group or the split into tasks. */
#define FORWARD_BLOCK(NV)                                                                \
    DG_AVX512 static void forward_block_##NV(const batch_job *j, const float *xt,      \
                                             size_t n0, int nb, size_t o, int nr) {    \
        int C = j->C;                                                                  \
        const float *w[DG_DENSE_ROWS];                                                 \
        for (int r = 0; r < DG_DENSE_ROWS; r++) /* rows past nr: the last, unstored */ \
            w[r] = j->weight + (o + (size_t)(r < nr ? r : nr - 1)) * C;                \
        __m512 a[NV][DG_DENSE_ROWS];                                                   \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                           \
            _Pragma("GCC unroll 6") for (int r = 0; r < DG_DENSE_ROWS; r++)            \
                a[v][r] = _mm512_setzero_ps();                                         \
        /* the rows of the block two ahead fetched into L1 over the c loop, 24 bytes \
         * a step (DCGAN's layer, whose 5 MB of weights come from L3, took 0.7x   \
         * the time); near the end the block's own first rows again (no fetch     \
         * outside the weights). */                                               \
        int ahead = o + 3 * DG_DENSE_ROWS <= (size_t)j->OC;                            \
        const char *pf = (const char *)(j->weight + (o + (ahead ? 2 * DG_DENSE_ROWS : 0)) * C); \
        size_t step = ahead ? DG_DENSE_ROWS * sizeof(float) : 0;                       \
        for (int c = 0; c < C; c++) {                                                  \
            __m512 x[NV];                                                              \
            _mm_prefetch(pf + step * (size_t)c, _MM_HINT_T0);                          \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                       \
                x[v] = _mm512_loadu_ps(xt + ((size_t)c * NV + v) * 16);                \
            _Pragma("GCC unroll 6") for (int r = 0; r < DG_DENSE_ROWS; r++) {          \
                __m512 wb = _mm512_set1_ps(w[r][c]);                                   \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                   \
                    a[v][r] = _mm512_fmadd_ps(wb, x[v], a[v][r]);                      \
            }                                                                          \
        }                                                                              \
        __mmask16 rows = (__mmask16)((1u << nr) - 1u);                                 \
        __m512 b = _mm512_setzero_ps();                                                \
        if (j->bias != NULL) {                                                         \
            b = _mm512_maskz_loadu_ps(rows, j->bias + o);                              \
            b = _mm512_shuffle_f32x4(b, b, 0x44); /* the rows' biases in both halves */ \
        }                                                                              \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                         \
            if (16 * v >= nb) break;                                                   \
            store_rows(j->out + (n0 + 16 * (size_t)v) * j->OC + o, (size_t)j->OC, a[v], \
                       nb - 16 * v, rows, b);                                          \
        }                                                                              \
    }

FORWARD_BLOCK(1)
FORWARD_BLOCK(2)
FORWARD_BLOCK(3)
FORWARD_BLOCK(4)

typedef void (*forward_block_fn)(const batch_job *, const float *, size_t, int, size_t, int);
static const forward_block_fn forward_blocks[5] = {NULL, forward_block_1, forward_block_2,
                                                   forward_block_3, forward_block_4};

/* The task's blocks of 6 rows, over every group of up to 64 images in turn (the
 * group's inputs transposed on the stack: at most 32 KiB). */
static void forward_task(void *ctx, int t, int nt) {
    const batch_job *j = (const batch_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->OC, DG_DENSE_ROWS, t, nt, &lo, &hi);
    float xt[DG_DENSE_MAX_C * DG_DENSE_GROUP];
    for (size_t n0 = 0; n0 < (size_t)j->N; n0 += DG_DENSE_GROUP) {
        int nb = (size_t)j->N - n0 < DG_DENSE_GROUP ? (int)((size_t)j->N - n0) : DG_DENSE_GROUP;
        int nv = (nb + 15) / 16;
        group_transpose(xt, j->inp, j->C, n0, nb, nv);
        for (size_t o = lo; o < hi; o += DG_DENSE_ROWS)
            forward_blocks[nv](j, xt, n0, nb, o,
                               hi - o < DG_DENSE_ROWS ? (int)(hi - o) : DG_DENSE_ROWS);
    }
}
#endif

int dg_linear_batch_fits(int N, int C) {
#if DG_HAVE_AVX2
    return N >= DG_DENSE_MIN_N && C <= DG_DENSE_MAX_C && dg_avx512();
#else
    (void)N; (void)C;
    return 0;
#endif
}

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
        one_job j = {out, inp, weight, bias, C, OC, one_in_order()};
        dg_parallel(linear_one_task, &j,
                    dg_threads_for((double)OC * (double)C, DG_DENSE_ONE_GRAIN));
        return DG_STATUS_OK;
    }
    if (dg_linear_batch_fits(N, C)) {
        /* a small C: the weights read in place, 6 rows against 64 images at a time */
        batch_job j = {out, inp, weight, bias, N, C, OC};
        dg_parallel(forward_task, &j,
                    dg_threads_for(2.0 * N * (double)C * (double)OC, DG_DENSE_GRAIN));
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
