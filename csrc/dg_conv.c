/*
 * dg_conv.c -- 2-D convolution and transposed convolution, forward and
 * backward, as im2col/col2im around one large dg_sgemm per group of images.
 *
 *   conv2d            out = conv2d(inp, weight) + bias   (torch.nn.functional.conv2d,
 *                     cross-correlation, groups = 1, dilation = 1)
 *   conv_transpose2d  out = conv_transpose2d(inp, weight) + bias
 *                     (torch.nn.functional.conv_transpose2d, groups = 1, dilation = 1),
 *                     the adjoint of conv2d with the same weight tensor, plus bias
 *   https://pytorch.org/docs/stable/generated/torch.nn.ConvTranspose2d.html
 *
 * Dimension letters:
 *   N = batch size, C = input channels, H, W = input height/width,
 *   OC = output channels, OH, OW = output height/width,
 *   KH, KW = kernel size, SH, SW = stride, PH, PW = zero padding.
 *   KK = KH*KW, HW = H*W, OHW = OH*OW.
 *
 * The col matrix. For an image (C, H, W) seen through a conv2d window that
 * produces (OH, OW) positions, im2col writes
 *   col[(c*KH + kh)*KW + kw, i*OHW + oh*OW + ow] = img[i, c, oh*SH - PH + kh, ow*SW - PW + kw]
 * (zero where the index falls in the padding), for the nb images i of a group
 * side by side, so that one GEMM covers the whole group. col2im is its adjoint
 * (adds every col entry back onto the pixel it came from).
 *
 *   conv2d forward       col = im2col(inp)              (C*KK, nb*OHW)
 *                        tmp = weight @ col             (OC, nb*OHW), scattered to NCHW + bias
 *   conv2d backward      tmp = dout gathered            (OC, nb*OHW)
 *                        dweight += tmp @ col^T (col rebuilt, or as the forward kept it:
 *                        dg_conv2d_forward_keep); then, in a pass of its own,
 *                        col = weight^T @ tmp; dinp += col2im(col)
 *   conv_t forward       x = inp gathered               (C, nb*HW)
 *                        col = weight^T @ x             (OC*KK, nb*HW); out = bias + col2im(col)
 *                        (plan's nb*HW <= DG_COLT_MAX_COLS, e.g. one 7x7 image: the transposed
 *                        col^T = x^T @ weight (nb*HW, OC*KK), out = bias + col2im_t(col^T),
 *                        which reads col^T row by row; 5-10 % faster for one teacher sample)
 *   conv_t backward      col = im2col(dout)             (OC*KK, nb*HW)
 *                        dweight += x @ col^T; x = weight @ col; dinp += x scattered
 *
 * Batching: a group holds enough images for a GEMM about DG_CONV_GEMM_COLS
 * columns wide, within DG_CONV_WS_TARGET floats of workspace (and at least one
 * image); the groups of a batch are balanced. A GEMM over a group is much
 * faster than one per image when images are small (a 7x7 map gives a GEMM 49
 * columns wide, and each call repacks the weights), and the bounded group
 * keeps the workspace from growing with the batch and near cache. With one image per
 * group the gather/scatter buffer is skipped and the GEMM reads or writes the
 * NCHW tensor directly. The workspace of dg_*_workspace_size covers both
 * forward and backward of the same shapes.
 *
 * im2col/col2im visit one input plane at a time and all its kernel taps while
 * it is in cache; the window ranges of each tap are computed once per call,
 * so the inner loops (over a contiguous output row) hold no division; small
 * geometries use a table of tap offsets instead (see im2col_planes_tab), and
 * 4x4 stride-2 padding-1 kernels an AVX2 path where the CPU has it (see
 * im2col_k4s2).
 *
 * On an AVX-512 CPU, a conv2d forward that keeps no im2col matrix, a conv2d weight
 * gradient without a kept matrix, conv2d's input gradient, and the transposed
 * convolution's forward and both its gradients, of 4x4 stride-2 padding-1 kernels
 * between maps at most 8 and 16 wide, run direct kernels instead
 * (dg_conv_direct.c), where dg_direct_fits / dg_direct_dweight_fits /
 * dg_direct_t_fits say they apply.
 *
 * Threads: a forward, and conv2d's input gradient (a pass of its own after the
 * weight gradient), of a batch run as one task per thread over ranges of images
 * ("Threads over images" below). Otherwise
 * the GEMMs split themselves (dg_gemm.c), and im2col/col2im, the
 * gather/scatter between the GEMM layout and NCHW, the bias fill and the bias
 * gradient run on the core's pool (dg_thread.c) as tasks over contiguous
 * ranges of planes, rows or channels, so every value is computed the same way
 * whatever the thread count.
 */
#include "distgan.h"
#include "dg_internal.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* GEMM columns aimed at per group of images: OpenBLAS runs near its peak from
 * about 1500 columns on, and a group not much larger keeps the col matrix and
 * the gather/scatter buffer close to cache. */
#define DG_CONV_GEMM_COLS 2048
/* ... and GEMM FLOPs per group at least, for layers whose GEMMs are thin (one
 * input or output channel: 16 rows or a K of 16), so that each group's steps
 * are large enough to split over threads (PERFORMANCE.md, log 21). */
#define DG_CONV_GEMM_FLOPS 32.0e6
/* Most workspace floats per group (16 MiB) when the col matrix is tall; a
 * group is at least one image, so the workspace exceeds it for huge images. */
#define DG_CONV_WS_TARGET ((size_t)4 << 20)

/* Padding (floats) of each row of the col^T matrix of a transposed convolution
 * of one small image: rows of OC*KK = 2048 floats would lie 8 KiB apart, on the
 * same few cache sets, where the GEMM stores a tile of rows at a time. */
#define DG_COLT_PAD 16
/* GEMM columns (nb*H*W) up to which the transposed convolution's forward
 * computes col^T instead of col: one 7x7 image of DCGAN's first up-sampling */
#define DG_COLT_MAX_COLS 64
/* Output channels col2im_t_planes fills at a time, so that their planes stay
 * in L1 (16 planes of 14x14 = 12.25 KiB for DCGAN's first up-sampling) */
#define DG_COLT_CBLOCK 16

/* colt_sparse (below): the columns of a strip of the weights, the channels of a
 * chunk, and the tasks at most (each copies its chunks into a buffer of its own). */
#define DG_SPARSE_SB 64
#define DG_SPARSE_CK 64
#define DG_SPARSE_TASKS 4

/* Workspace floats beyond col^T for L pixels of C channels: each pixel's list
 * of offsets and values per chunk, the list lengths and the tasks' buffers. */
static size_t colt_sparse_floats(size_t C, size_t L) {
    size_t chunks = (C + DG_SPARSE_CK - 1) / DG_SPARSE_CK;
    /* + 16: room to start the buffers on a 64-byte line */
    return 2 * L * C + L * chunks + 16 + (size_t)DG_SPARSE_TASKS * DG_SPARSE_CK * DG_SPARSE_SB;
}

/* Largest tensor, in floats, whose byte size and float index fit a ptrdiff_t. */
#define DG_CONV_MAX_FLOATS ((size_t)PTRDIFF_MAX / sizeof(float))

/* The plan of one conv call, shared by its workspace_size, forward and backward. */
typedef struct {
    size_t col_rows;   /* rows of the col matrix: C*KK (conv2d) or OC*KK (conv_t) */
    size_t buf_rows;   /* rows of the gather/scatter buffer: OC (conv2d) or C (conv_t) */
    size_t cols;       /* GEMM columns per image: OHW (conv2d) or HW (conv_t) */
    int nb;            /* images per group */
    size_t ws;         /* workspace floats */
} conv_plan;

/* *r = a * b, returning 0 when it overflows DG_CONV_MAX_FLOATS. */
static int mul_ok(size_t *r, size_t a, size_t b) {
    if (a != 0 && b > DG_CONV_MAX_FLOATS / a) return 0;
    *r = a * b;
    return 1;
}

static int mul4_ok(size_t *r, size_t a, size_t b, size_t c, size_t d) {
    size_t ab, abc;
    return mul_ok(&ab, a, b) && mul_ok(&abc, ab, c) && mul_ok(r, abc, d);
}

/* Validates the sizes shared by both ops and fills the plan: every tensor
 * size fits, padded sizes and GEMM dimensions fit an int, and the group size
 * nb follows from DG_CONV_WS_TARGET. */
static dg_status plan_common(conv_plan *p, int N, int C, int H, int W, int OC,
                             int KH, int KW, int SH, int SW, int PH, int PW,
                             int OH, int OW, int transposed) {
    if (N <= 0 || C <= 0 || H <= 0 || W <= 0 || OC <= 0 || KH <= 0 || KW <= 0 ||
        SH <= 0 || SW <= 0 || PH < 0 || PW < 0 || OH <= 0 || OW <= 0) {
        return DG_STATUS_ERR_SHAPE;
    }
    if ((long long)H + 2LL * PH > INT_MAX || (long long)W + 2LL * PW > INT_MAX ||
        (long long)OH + 2LL * PH > INT_MAX || (long long)OW + 2LL * PW > INT_MAX) {
        return DG_STATUS_ERR_SHAPE;
    }
    size_t t;
    if (!mul4_ok(&t, (size_t)N, (size_t)C, (size_t)H, (size_t)W) ||
        !mul4_ok(&t, (size_t)N, (size_t)OC, (size_t)OH, (size_t)OW) ||
        !mul4_ok(&t, (size_t)OC, (size_t)C, (size_t)KH, (size_t)KW)) {
        return DG_STATUS_ERR_SHAPE;
    }
    size_t kk = (size_t)KH * (size_t)KW;
    size_t col_rows = (transposed ? (size_t)OC : (size_t)C) * kk;
    size_t cols = transposed ? (size_t)H * (size_t)W : (size_t)OH * (size_t)OW;
    size_t buf_rows = transposed ? (size_t)C : (size_t)OC;
    /* GEMM dimensions and leading dimensions are int */
    if (col_rows > INT_MAX || cols > INT_MAX) return DG_STATUS_ERR_SHAPE;
    size_t per_image;
    if (!mul_ok(&per_image, col_rows + buf_rows, cols)) return DG_STATUS_ERR_SHAPE;
    size_t nb = (DG_CONV_GEMM_COLS + cols - 1) / cols;
    /* thin GEMMs (few rows and a short K): enough columns for DG_CONV_GEMM_FLOPS */
    double thin = (double)DG_CONV_GEMM_FLOPS / (2.0 * (double)col_rows * (double)buf_rows);
    if ((double)nb * (double)cols < thin) nb = (size_t)(thin / (double)cols) + 1;
    if (nb > DG_CONV_WS_TARGET / per_image) nb = DG_CONV_WS_TARGET / per_image;
    if (nb < 1) nb = 1;
    if (nb > (size_t)N) nb = (size_t)N;
    if (nb > (size_t)INT_MAX / cols) nb = (size_t)INT_MAX / cols;
    /* balance the groups: the same number of groups, sizes differing by at most one */
    size_t groups = ((size_t)N + nb - 1) / nb;
    nb = ((size_t)N + groups - 1) / groups;
    size_t ws;
    /* + DG_COLT_PAD rows: room for col^T with padded rows (conv_transpose2d_forward) */
    size_t ws_rows = col_rows + (nb > 1 ? buf_rows : 0) + (transposed ? DG_COLT_PAD : 0);
    if (!mul4_ok(&ws, ws_rows, cols, nb, 1)) {
        return DG_STATUS_ERR_SHAPE;
    }
    p->col_rows = col_rows;
    p->buf_rows = buf_rows;
    p->cols = cols;
    p->nb = (int)nb;
    p->ws = ws;
    return DG_STATUS_OK;
}

static dg_status conv2d_plan(conv_plan *p, int N, int C, int H, int W, int OC,
                             int KH, int KW, int SH, int SW, int PH, int PW,
                             int OH, int OW) {
    dg_status st = plan_common(p, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH,
                               OW, 0);
    if (st != DG_STATUS_OK) return st;
    long long eh = (long long)H + 2LL * PH - KH;
    long long ew = (long long)W + 2LL * PW - KW;
    if (eh < 0 || ew < 0) return DG_STATUS_ERR_SHAPE;
    if (eh / SH + 1 != OH || ew / SW + 1 != OW) return DG_STATUS_ERR_SHAPE;
    /* room for the one-channel kernels (dg_conv_thin.c) */
    size_t thin = C == 1 ? dg_thin_ws(N, OC, H, W, KH, KW, SH, SW, PH, PW, OH, OW) : 0;
    if (thin > p->ws) p->ws = thin;
    return DG_STATUS_OK;
}

static dg_status conv_transpose2d_plan(conv_plan *p, int N, int C, int H,
                                       int W, int OC, int KH, int KW, int SH,
                                       int SW, int PH, int PW, int OH, int OW) {
    dg_status st = plan_common(p, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH,
                               OW, 1);
    if (st != DG_STATUS_OK) return st;
    /* OH = (H-1)*SH - 2*PH + KH + output_padding, 0 <= output_padding < SH */
    long long oph = (long long)OH - ((long long)(H - 1) * SH - 2LL * PH + KH);
    long long opw = (long long)OW - ((long long)(W - 1) * SW - 2LL * PW + KW);
    if (oph < 0 || oph >= SH || opw < 0 || opw >= SW) return DG_STATUS_ERR_SHAPE;
    /* room for the one-channel kernels (dg_conv_thin.c) */
    size_t thin = OC == 1 ? dg_thin_ws(N, C, OH, OW, KH, KW, SH, SW, PH, PW, H, W) : 0;
    if (thin > p->ws) p->ws = thin;
    /* room for colt_sparse's lists and buffers beside col^T, when the whole batch is
     * a few columns (whatever the CPU, so that the size does not depend on it) */
    size_t L = (size_t)N * p->cols;
    if (L <= DG_COLT_MAX_COLS) {
        size_t need = L * (p->col_rows + DG_COLT_PAD);
        size_t extra = colt_sparse_floats((size_t)C, L);   /* C < 2^31, L <= 64 */
        if (extra > DG_CONV_MAX_FLOATS - need) return DG_STATUS_ERR_SHAPE;
        if (need + extra > p->ws) p->ws = need + extra;
    }
    return DG_STATUS_OK;
}

/* [*lo, *hi): the window positions o in [0, O) whose input index o*S - P + k
 * lies in [0, L). Two divisions per kernel tap, none per element. */
static void valid_range(int O, int L, int S, int P, int k, int *lo, int *hi) {
    long long a = (long long)P - k;      /* need o*S >= a */
    long long b = (long long)L + P - k;  /* need o*S <  b */
    long long l = a <= 0 ? 0 : (a + S - 1) / S;
    long long h = b <= 0 ? 0 : (b + S - 1) / S;
    if (h > O) h = O;
    if (l > h) l = h;
    *lo = (int)l;
    *hi = (int)h;
}

/* d[0, n) = 0; n is usually 0 or 1 (a window overlapping the padding). */
static void zero_few(float *d, int n) {
    if (n == 1) {
        d[0] = 0.0f;
    } else if (n > 1) {
        memset(d, 0, (size_t)n * sizeof(float));
    }
}

/* The valid window ranges of every kernel tap, one division pair per tap and
 * call: [lo[k], hi[k]) from valid_range, for k < K <= DG_CONV_TAPS. */
#define DG_CONV_TAPS 64
typedef struct {
    int lo[DG_CONV_TAPS], hi[DG_CONV_TAPS];
} tap_ranges;

static void tap_table(tap_ranges *t, int K, int O, int L, int S, int P) {
    for (int k = 0; k < K && k < DG_CONV_TAPS; k++) valid_range(O, L, S, P, k, &t->lo[k], &t->hi[k]);
}

static void tap_range(const tap_ranges *t, int K, int O, int L, int S, int P,
                      int k, int *lo, int *hi) {
    if (K <= DG_CONV_TAPS) {
        *lo = t->lo[k];
        *hi = t->hi[k];
    } else {
        valid_range(O, L, S, P, k, lo, hi);
    }
}

/* Small geometries (the usual case) go through a table of tap offsets instead:
 * tab[k*GH*GW + p] is the offset in the input plane that kernel tap k reads at
 * window position p, or -1 where it reads the zero padding. One table per call
 * and task (KH*KW*GH*GW <= DG_CONV_TABLE ints on the stack), then every plane is
 * a flat gather (im2col) or scatter-add (col2im) with no per-row bookkeeping:
 * a 7x7 window grid otherwise spends more time on its 7-float rows' set-up
 * than on copying them. */
#define DG_CONV_TABLE 4096

static int use_table(int IH, int IW, int KH, int KW, int GH, int GW) {
    return (size_t)KH * KW * GH * GW <= DG_CONV_TABLE && (size_t)IH * IW <= INT_MAX;
}

static void tap_offsets(int *tab, int IH, int IW, int KH, int KW, int SH, int SW,
                        int PH, int PW, int GH, int GW) {
    for (int kh = 0; kh < KH; kh++) {
        for (int kw = 0; kw < KW; kw++) {
            for (int oh = 0; oh < GH; oh++) {
                int ih = oh * SH - PH + kh;
                for (int ow = 0; ow < GW; ow++) {
                    int iw = ow * SW - PW + kw;
                    *tab++ = ih >= 0 && ih < IH && iw >= 0 && iw < IW ? ih * IW + iw : -1;
                }
            }
        }
    }
}

/* im2col of the planes q in [q0, q1) through the offset table (see above). */
static void im2col_planes_tab(float *col, size_t ldcol, const float *img, int nb,
                              int CI, int IH, int IW, int KH, int KW, int SH,
                              int SW, int PH, int PW, int GH, int GW, size_t q0,
                              size_t q1) {
    int tab[DG_CONV_TABLE];
    size_t ihw = (size_t)IH * IW, ghw = (size_t)GH * GW, kk = (size_t)KH * KW;
    tap_offsets(tab, IH, IW, KH, KW, SH, SW, PH, PW, GH, GW);
    for (size_t q = q0; q < q1; q++) {
        size_t c = q / (size_t)nb, i = q % (size_t)nb;
        const float *src = img + (i * (size_t)CI + c) * ihw;
        for (size_t k = 0; k < kk; k++) {
            float *dst = col + (c * kk + k) * ldcol + i * ghw;
            const int *t = tab + k * ghw;
            for (size_t p = 0; p < ghw; p++) {
                int o = t[p];
                float v = src[o < 0 ? 0 : o];
                dst[p] = o < 0 ? 0.0f : v;
            }
        }
    }
}

/* col2im (adding) of the planes q in [q0, q1) through the offset table; the
 * window positions of one tap read distinct pixels, so a tap's loop is a
 * plain scatter-add. */
static void col2im_planes_tab(float *img, const float *col, size_t ldcol, int nb,
                              int CI, int IH, int IW, int KH, int KW, int SH,
                              int SW, int PH, int PW, int GH, int GW, size_t q0,
                              size_t q1) {
    int tab[DG_CONV_TABLE];
    size_t ihw = (size_t)IH * IW, ghw = (size_t)GH * GW, kk = (size_t)KH * KW;
    tap_offsets(tab, IH, IW, KH, KW, SH, SW, PH, PW, GH, GW);
    for (size_t q = q0; q < q1; q++) {
        size_t c = q / (size_t)nb, i = q % (size_t)nb;
        float *dst = img + (i * (size_t)CI + c) * ihw;
        for (size_t k = 0; k < kk; k++) {
            const float *src = col + (c * kk + k) * ldcol + i * ghw;
            const int *t = tab + k * ghw;
            for (size_t p = 0; p < ghw; p++) {
                int o = t[p];
                if (o >= 0) dst[o] += src[p];
            }
        }
    }
}

/* col2im the other way round, for small images: each pixel of a plane GATHERS
 * the col entries that land on it, instead of every col entry being added onto
 * its pixel. rev[pix*cmax + e], e < cnt[pix], are the offsets (k*ldcol + p,
 * from the plane's first col row) of those entries, listed in increasing tap k:
 * the order in which the scatter-add adds them, so the sums are the same bits.
 * A pixel takes at most cmax = ceil(KH/SH) * ceil(KW/SW) entries. One pass over
 * each pixel (read, add its 4 entries for a 4x4 stride-2 kernel, write) instead
 * of 16 read-add-writes spread over the plane; and it can start from the bias,
 * which saves the bias fill of the transposed convolution. */
#define DG_CONV_REV 4096
#define DG_CONV_REV_PIX 1024

static int rev_cmax(int KH, int KW, int SH, int SW) {
    return ((KH + SH - 1) / SH) * ((KW + SW - 1) / SW);
}

static int use_rev(int IH, int IW, int KH, int KW, int SH, int SW, int GH, int GW) {
    size_t pix = (size_t)IH * IW, cmax = (size_t)rev_cmax(KH, KW, SH, SW);
    return use_table(IH, IW, KH, KW, GH, GW) && pix <= DG_CONV_REV_PIX &&
           pix * cmax <= DG_CONV_REV;
}

static void rev_offsets(size_t *rev, unsigned char *cnt, size_t ldcol, int IH, int IW,
                        int KH, int KW, int SH, int SW, int PH, int PW, int GH, int GW) {
    int tab[DG_CONV_TABLE];
    size_t pix = (size_t)IH * IW, ghw = (size_t)GH * GW, kk = (size_t)KH * KW;
    size_t cmax = (size_t)rev_cmax(KH, KW, SH, SW);
    tap_offsets(tab, IH, IW, KH, KW, SH, SW, PH, PW, GH, GW);
    memset(cnt, 0, pix);
    for (size_t k = 0; k < kk; k++) {
        for (size_t p = 0; p < ghw; p++) {
            int o = tab[k * ghw + p];
            if (o >= 0) rev[(size_t)o * cmax + cnt[o]++] = k * ldcol + p;
        }
    }
}

/* For the planes q in [q0, q1) of img (nb, CI, IH, IW): img += col2im of col,
 * or, with assign, img = bias[c] (0 when bias is NULL) + col2im of col. */
static void col2im_planes_rev(float *img, const float *col, int assign, const float *bias,
                              size_t ldcol, int nb, int CI, int IH, int IW, int KH,
                              int KW, int SH, int SW, int PH, int PW, int GH, int GW,
                              size_t q0, size_t q1) {
    size_t rev[DG_CONV_REV];
    unsigned char cnt[DG_CONV_REV_PIX];
    size_t pix = (size_t)IH * IW, ghw = (size_t)GH * GW, kk = (size_t)KH * KW;
    size_t cmax = (size_t)rev_cmax(KH, KW, SH, SW);
    rev_offsets(rev, cnt, ldcol, IH, IW, KH, KW, SH, SW, PH, PW, GH, GW);
    for (size_t q = q0; q < q1; q++) {
        size_t c = q / (size_t)nb, i = q % (size_t)nb;
        float *dst = img + (i * (size_t)CI + c) * pix;
        const float *src = col + c * kk * ldcol + i * ghw;
        for (size_t o = 0; o < pix; o++) {
            const size_t *r = rev + o * cmax;
            float acc = !assign ? dst[o] : bias != NULL ? bias[c] : 0.0f;
            for (int e = 0; e < cnt[o]; e++) acc += src[r[e]];
            dst[o] = acc;
        }
    }
}

/* ------------------------------------------------------------------------- */
/* 4x4 kernels, stride 2, padding 1 (every layer of DCGAN), with AVX2         */
/* ------------------------------------------------------------------------- */

/* With KH = KW = 4, SH = SW = 2, PH = PW = 1 and an even plane (IH, IW) =
 * (2*GH, 2*GW), kernel tap (kh, kw) reads pixel (2*oh + kh - 1, 2*ow + kw - 1):
 * the pixels of one parity of row and column, shifted by -1, 0 or +1 window
 * positions. Split into its four parity ("phase") planes, each tap is a shifted
 * copy of one of them, a window row GW contiguous floats: im2col copies and
 * col2im adds rows of 8 floats with AVX2 instead of looking every element up
 * (im2col_planes_tab, col2im_planes_rev: ~4 instructions per element). The
 * values are the same bits: im2col copies, and col2im adds each pixel's entries
 * onto its start value in increasing tap k, as col2im_planes_rev does (a pixel
 * takes at most one entry per tap). Used when dg_avx2() says so, per call. */
#if DG_HAVE_AVX2
#include <immintrin.h>
#endif

/* Largest side of a plane the fast path takes: its phase buffers live on the
 * stack, (K4S2_MAX + 2) * K4S2_LD floats each. */
#define K4S2_MAX 64
/* Row stride of the phase buffers: a row of up to K4S2_MAX / 2 + 2 cells, plus
 * room for an 8-float access starting at any of them. */
#define K4S2_LD (K4S2_MAX / 2 + 16)

static int k4s2_ok(int IH, int IW, int KH, int KW, int SH, int SW, int PH, int PW,
                   int GH, int GW) {
#if DG_HAVE_AVX2
    return KH == 4 && KW == 4 && SH == 2 && SW == 2 && PH == 1 && PW == 1 &&
           IH == 2 * GH && IW == 2 * GW && GH >= 2 && GW >= 2 && IH <= K4S2_MAX &&
           IW <= K4S2_MAX && dg_avx2();
#else
    (void)IH; (void)IW; (void)KH; (void)KW; (void)SH; (void)SW; (void)PH; (void)PW;
    (void)GH; (void)GW;
    return 0;
#endif
}

/* Whether col2im (conv_task) starts each pixel at its bias itself (the k4s2 and
 * per-pixel gather paths); the other paths add onto an image the caller filled. */
static int col2im_from_bias(int IH, int IW, int KH, int KW, int SH, int SW, int PH,
                            int PW, int GH, int GW) {
    return k4s2_ok(IH, IW, KH, KW, SH, SW, PH, PW, GH, GW) ||
           use_rev(IH, IW, KH, KW, SH, SW, GH, GW);
}

#if DG_HAVE_AVX2
/* Offset of plane q = c * nb + i (channel c of image i) in an (nb, CI, hw) tensor. */
static inline size_t k4s2_plane(size_t q, int nb, int CI, size_t hw) {
    return (q % (size_t)nb * (size_t)CI + q / (size_t)nb) * hw;
}

/* Offset of plane q's first entry (tap 0) in a col matrix of 16 taps per channel. */
static inline size_t k4s2_col(size_t q, int nb, size_t ldcol, size_t ghw) {
    return q / (size_t)nb * 16 * ldcol + q % (size_t)nb * ghw;
}

/* An int mask of the first n lanes (0 <= n <= 8). */
__attribute__((target("avx2"))) static inline __m256i k4s2_lanes(int n) {
    static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(m + 8 - n));
}

/* Asks for the n floats at p to be brought into cache (a hint: p may point
 * anywhere; nothing is read). The planes a task visits one after the other lie
 * CI planes apart in the image, too far for the hardware to guess. */
__attribute__((target("avx2"))) static inline void k4s2_prefetch(const float *p, size_t n) {
    for (size_t o = 0; o < n; o += 16) _mm_prefetch((const char *)(p + o), _MM_HINT_T0);
    _mm_prefetch((const char *)(p + n - 1), _MM_HINT_T0);
}

/* The even and odd elements of the n floats at s (lanes past n read as 0);
 * `full` says all 16 may be read. */
__attribute__((target("avx2"))) static inline void k4s2_split(const float *s, int n, int full,
                                                             __m256 *ev, __m256 *od) {
    __m256 a, b;
    if (full) {
        a = _mm256_loadu_ps(s);
        b = _mm256_loadu_ps(s + 8);
    } else {
        a = _mm256_maskload_ps(s, k4s2_lanes(n < 8 ? n : 8));
        b = _mm256_maskload_ps(s + 8, k4s2_lanes(n < 8 ? 0 : n - 8));
    }
    /* per 128-bit lane: a0 a2 b0 b2 | a4 a6 b4 b6, then the 64-bit pairs reordered */
    *ev = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xd8));
    *od = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xdd)), 0xd8));
}

/* im2col of the planes q in [q0, q1) (see im2col_planes_tab), 4x4 kernel,
 * stride 2, padding 1. E and O are the even and odd columns of the zero-padded
 * plane P (IH + 2, IW + 2): E[r][j] = P[r][2j], O[r][j] = P[r][2j + 1]; tap
 * (kh, kw) at window (oh, ow) reads P[2oh + kh][2ow + kw], which is
 * (kw odd ? O : E)[2oh + kh][ow + kw/2]: window row oh of the tap is GW
 * consecutive floats of one row of E or O. */
__attribute__((target("avx2")))
static void im2col_k4s2(float *col, size_t ldcol, const float *img, int nb, int CI, int IH,
                        int IW, size_t q0, size_t q1) {
    float eo[2][(K4S2_MAX + 2) * K4S2_LD];
    int GH = IH / 2, GW = IW / 2;
    size_t ihw = (size_t)IH * IW, ghw = (size_t)GH * GW;
    for (int h = 0; h < 2; h++)   /* the padding, never written below */
        memset(eo[h], 0, (size_t)(IH + 2) * K4S2_LD * sizeof(float));
    for (size_t q = q0; q < q1; q++) {
        const float *src = img + k4s2_plane(q, nb, CI, ihw);
        float *dst0 = col + k4s2_col(q, nb, ldcol, ghw);
        if (q + 1 < q1) k4s2_prefetch(img + k4s2_plane(q + 1, nb, CI, ihw), ihw);
        for (int r = 0; r < IH; r++) {
            float *e = eo[0] + (size_t)(r + 1) * K4S2_LD + 1, *o = eo[1] + (size_t)(r + 1) * K4S2_LD;
            for (int s0 = 0; s0 < IW; s0 += 16) {
                __m256 ev, od;
                k4s2_split(src + (size_t)r * IW + s0, IW - s0, IW - s0 >= 16, &ev, &od);
                _mm256_storeu_ps(o + s0 / 2, ev);   /* lanes past the row: 0 (padding) */
                _mm256_storeu_ps(e + s0 / 2, od);
            }
        }
        for (int k = 0; k < 16; k++) {
            int kh = k >> 2, kw = k & 3;
            float *dst = dst0 + (size_t)k * ldcol;
            const float *X = eo[kw & 1] + (size_t)kh * K4S2_LD + (kw >> 1);
            for (int oh = 0; oh < GH; oh++) {
                const float *x = X + (size_t)2 * oh * K4S2_LD;
                float *d = dst + (size_t)oh * GW;
                size_t room = ghw - (size_t)oh * GW;   /* floats from d to this block's end */
                int j = 0;
                /* 8 floats at a time; a store past the row lands on later rows of the
                 * block, which are written afterwards */
                for (; j < GW && (size_t)j + 8 <= room; j += 8)
                    _mm256_storeu_ps(d + j, _mm256_loadu_ps(x + j));
                int n = GW - j;   /* < 8 left at the end of the block: exactly */
                if (n >= 4) {
                    _mm_storeu_ps(d + j, _mm_loadu_ps(x + j));
                    _mm_storeu_ps(d + GW - 4, _mm_loadu_ps(x + GW - 4));
                } else {
                    for (; j < GW; j++) d[j] = x[j];
                }
            }
        }
    }
}

/* col2im of the planes q in [q0, q1) (see col2im_planes_rev: img += col2im of
 * col, or with assign img = bias[c] (0 when bias is NULL) + col2im), 4x4 kernel,
 * stride 2, padding 1. Pixel (2a + py, 2b + px) is cell (a + 1, b + 1) of phase
 * plane py*2 + px (a border of one cell around each); tap (kh, kw) adds window
 * (oh, ow) onto cell (oh + da, ow + db) of plane ((kh + 1) & 1, (kw + 1) & 1),
 * da = -1, 0, 0, +1 for kh = 0..3 (db likewise): a shifted add of whole window
 * rows, taps in increasing k. What lands on the border is never read. */
__attribute__((target("avx2")))
static void col2im_k4s2(float *img, const float *col, int assign, const float *bias,
                        size_t ldcol, int nb, int CI, int IH, int IW, size_t q0, size_t q1) {
    float ph[4][(K4S2_MAX / 2 + 2) * K4S2_LD];
    static const int shift[4] = {-1, 0, 0, 1};
    int GH = IH / 2, GW = IW / 2, tail = GW % 8;
    size_t pix = (size_t)IH * IW, ghw = (size_t)GH * GW;
    __m256i tmask = k4s2_lanes(tail);
    for (int p = 0; p < 4; p++)   /* every float read defined, borders included */
        memset(ph[p], 0, (size_t)(GH + 2) * K4S2_LD * sizeof(float));
    for (size_t q = q0; q < q1; q++) {
        size_t c = q / (size_t)nb;
        float *dst = img + k4s2_plane(q, nb, CI, pix);
        const float *src = col + k4s2_col(q, nb, ldcol, ghw);
        if (q + 1 < q1) {
            const float *next = col + k4s2_col(q + 1, nb, ldcol, ghw);
            for (int k = 0; k < 16; k++) k4s2_prefetch(next + (size_t)k * ldcol, ghw);
            if (!assign) k4s2_prefetch(img + k4s2_plane(q + 1, nb, CI, pix), pix);
        }
        /* start values: the image's pixels, or the bias */
        if (assign) {
            __m256 v = _mm256_set1_ps(bias != NULL ? bias[c] : 0.0f);
            for (int p = 0; p < 4; p++)
                for (int a = 0; a < GH; a++)
                    for (int j = 0; j < GW; j += 8)
                        _mm256_storeu_ps(ph[p] + (size_t)(a + 1) * K4S2_LD + 1 + j, v);
        } else {
            for (int y = 0; y < IH; y++) {
                float *e = ph[(y & 1) * 2] + (size_t)((y >> 1) + 1) * K4S2_LD + 1;
                float *o = ph[(y & 1) * 2 + 1] + (size_t)((y >> 1) + 1) * K4S2_LD + 1;
                for (int s0 = 0; s0 < IW; s0 += 16) {
                    size_t at = (size_t)y * IW + (size_t)s0;
                    __m256 ev, od;
                    k4s2_split(dst + at, IW - s0, at + 16 <= pix, &ev, &od);
                    _mm256_storeu_ps(e + s0 / 2, ev);
                    _mm256_storeu_ps(o + s0 / 2, od);
                }
            }
        }
        for (int k = 0; k < 16; k++) {
            int kh = k >> 2, kw = k & 3;
            float *P = ph[((kh + 1) & 1) * 2 + ((kw + 1) & 1)] +
                       (size_t)(shift[kh] + 1) * K4S2_LD + (shift[kw] + 1);
            const float *s = src + (size_t)k * ldcol;
            for (int oh = 0; oh < GH; oh++) {
                float *p = P + (size_t)oh * K4S2_LD;
                const float *r = s + (size_t)oh * GW;
                int j = 0;
                for (; j + 8 <= GW; j += 8)
                    _mm256_storeu_ps(p + j, _mm256_add_ps(_mm256_loadu_ps(p + j),
                                                          _mm256_loadu_ps(r + j)));
                if (tail) {
                    /* the last tail floats of the row only: the lanes past it keep
                     * their cells as they are (one of them may be a pixel) */
                    __m256 old = _mm256_loadu_ps(p + j);
                    __m256 sum = _mm256_add_ps(old, _mm256_maskload_ps(r + j, tmask));
                    _mm256_storeu_ps(p + j, _mm256_blendv_ps(old, sum,
                                                             _mm256_castsi256_ps(tmask)));
                }
            }
        }
        /* the phase planes interleaved back into the image's rows */
        for (int y = 0; y < IH; y++) {
            const float *e = ph[(y & 1) * 2] + (size_t)((y >> 1) + 1) * K4S2_LD + 1;
            const float *o = ph[(y & 1) * 2 + 1] + (size_t)((y >> 1) + 1) * K4S2_LD + 1;
            for (int j = 0; j < GW; j += 8) {
                __m256 ve = _mm256_loadu_ps(e + j), vo = _mm256_loadu_ps(o + j);
                __m256 lo = _mm256_unpacklo_ps(ve, vo), hi = _mm256_unpackhi_ps(ve, vo);
                __m256 r0 = _mm256_permute2f128_ps(lo, hi, 0x20);
                __m256 r1 = _mm256_permute2f128_ps(lo, hi, 0x31);
                size_t at = (size_t)y * IW + 2 * (size_t)j;
                if (at + 16 <= pix) {
                    /* what passes the row's end lands on later rows, written afterwards */
                    _mm256_storeu_ps(dst + at, r0);
                    _mm256_storeu_ps(dst + at + 8, r1);
                } else {
                    float t[16];
                    _mm256_storeu_ps(t, r0);
                    _mm256_storeu_ps(t + 8, r1);
                    memcpy(dst + at, t, (pix - at) * sizeof(float));
                }
            }
        }
    }
}
#endif

/* col (CI*KH*KW, ldcol) = im2col of img (nb, CI, IH, IW), window positions
 * (GH, GW) per image, image i in columns [i*GH*GW, (i+1)*GH*GW). Assigns.
 * An input plane stays in cache while all its kernel taps are copied out. */
static void im2col_planes(float *col, size_t ldcol, const float *img, int nb,
                          int CI, int IH, int IW, int KH, int KW, int SH, int SW,
                          int PH, int PW, int GH, int GW, size_t q0, size_t q1) {
    size_t ihw = (size_t)IH * IW, ghw = (size_t)GH * GW;
    tap_ranges th, tw;
    tap_table(&th, KH, GH, IH, SH, PH);
    tap_table(&tw, KW, GW, IW, SW, PW);
    /* plane q = c * nb + i: channel c of image i */
    for (size_t q = q0; q < q1; q++) {
        int c = (int)(q / (size_t)nb), i = (int)(q % (size_t)nb);
        {
            const float *src = img + ((size_t)i * CI + c) * ihw;
            for (int kh = 0; kh < KH; kh++) {
                int ohl, ohh;
                tap_range(&th, KH, GH, IH, SH, PH, kh, &ohl, &ohh);
                for (int kw = 0; kw < KW; kw++) {
                    int owl, owh;
                    tap_range(&tw, KW, GW, IW, SW, PW, kw, &owl, &owh);
                    int n = owh - owl;
                    float *dst = col + (((size_t)c * KH + kh) * KW + kw) * ldcol + (size_t)i * ghw;
                    if (n <= 0 || ohh <= ohl) {
                        memset(dst, 0, ghw * sizeof(float));
                        continue;
                    }
                    if (ohl > 0) memset(dst, 0, (size_t)ohl * GW * sizeof(float));
                    for (int oh = ohl; oh < ohh; oh++) {
                        float *d = dst + (size_t)oh * GW;
                        const float *s = src + (size_t)(oh * SH - PH + kh) * IW +
                                         (owl * SW - PW + kw);
                        zero_few(d, owl);
                        if (SW == 1) {
                            memcpy(d + owl, s, (size_t)n * sizeof(float));
                        } else {
                            for (int j = 0; j < n; j++) d[owl + j] = s[(size_t)j * SW];
                        }
                        zero_few(d + owh, GW - owh);
                    }
                    if (ohh < GH) {
                        memset(dst + (size_t)ohh * GW, 0, (size_t)(GH - ohh) * GW * sizeof(float));
                    }
                }
            }
        }
    }
}

/* img (nb, CI, IH, IW) += col2im of col (CI*KH*KW, ldcol): the adjoint of
 * im2col. An image plane stays in cache while all its kernel taps are added. */
static void col2im_planes(float *img, const float *col, size_t ldcol, int nb,
                          int CI, int IH, int IW, int KH, int KW, int SH, int SW,
                          int PH, int PW, int GH, int GW, size_t q0, size_t q1) {
    size_t ihw = (size_t)IH * IW, ghw = (size_t)GH * GW;
    tap_ranges th, tw;
    tap_table(&th, KH, GH, IH, SH, PH);
    tap_table(&tw, KW, GW, IW, SW, PW);
    /* plane q = c * nb + i: channel c of image i (written by this plane only) */
    for (size_t q = q0; q < q1; q++) {
        int c = (int)(q / (size_t)nb), i = (int)(q % (size_t)nb);
        {
            float *dst = img + ((size_t)i * CI + c) * ihw;
            for (int kh = 0; kh < KH; kh++) {
                int ohl, ohh;
                tap_range(&th, KH, GH, IH, SH, PH, kh, &ohl, &ohh);
                for (int kw = 0; kw < KW; kw++) {
                    int owl, owh;
                    tap_range(&tw, KW, GW, IW, SW, PW, kw, &owl, &owh);
                    int n = owh - owl;
                    if (n <= 0) continue;
                    const float *src = col + (((size_t)c * KH + kh) * KW + kw) * ldcol + (size_t)i * ghw;
                    for (int oh = ohl; oh < ohh; oh++) {
                        const float *s = src + (size_t)oh * GW + owl;
                        float *d = dst + (size_t)(oh * SH - PH + kh) * IW +
                                   (owl * SW - PW + kw);
                        if (SW == 1) {
                            for (int j = 0; j < n; j++) d[j] += s[j];
                        } else {
                            for (int j = 0; j < n; j++) d[(size_t)j * SW] += s[j];
                        }
                    }
                }
            }
        }
    }
}

/* The row helpers below take the rows q = i * R + r (row r of image i) in [q0, q1). */

/* dst (R, nb*P) = src (nb, R, P) regrouped: dst[r, i*P + p] = src[i, r, p]. */
static void gather_rows(float *dst, const float *src, int nb, size_t R, size_t P,
                        size_t q0, size_t q1) {
    size_t ld = (size_t)nb * P;
    for (size_t q = q0; q < q1; q++) {
        size_t i = q / R, r = q % R;
        memcpy(dst + r * ld + i * P, src + q * P, P * sizeof(float));
    }
}

/* dst (nb, R, P) = src (R, nb*P) regrouped, plus bias[r] when bias != NULL. */
static void scatter_rows_bias(float *dst, const float *src, const float *bias,
                              int nb, size_t R, size_t P, size_t q0, size_t q1) {
    size_t ld = (size_t)nb * P;
    for (size_t q = q0; q < q1; q++) {
        size_t i = q / R, r = q % R;
        float *d = dst + q * P;
        const float *s = src + r * ld + i * P;
        if (bias == NULL) {
            memcpy(d, s, P * sizeof(float));
        } else {
            float b = bias[r];
            for (size_t p = 0; p < P; p++) d[p] = s[p] + b;
        }
    }
}

/* dst (nb, R, P) += src (R, nb*P) regrouped. */
static void scatter_rows_add(float *dst, const float *src, int nb, size_t R,
                             size_t P, size_t q0, size_t q1) {
    size_t ld = (size_t)nb * P;
    for (size_t q = q0; q < q1; q++) {
        size_t i = q / R, r = q % R;
        float *d = dst + q * P;
        const float *s = src + r * ld + i * P;
        for (size_t p = 0; p < P; p++) d[p] += s[p];
    }
}

/* out (nb, R, P) = bias[r] broadcast, or zeros when bias is NULL. */
static void fill_bias(float *out, const float *bias, size_t R, size_t P,
                      size_t q0, size_t q1) {
    if (bias == NULL) {
        memset(out + q0 * P, 0, (q1 - q0) * P * sizeof(float));
        return;
    }
    for (size_t q = q0; q < q1; q++) {
        float *d = out + q * P;
        float b = bias[q % R];
        for (size_t p = 0; p < P; p++) d[p] = b;
    }
}

/* img (nb, CI, IH, IW) = bias[c] (0 when bias is NULL) + col2im of col^T, for
 * the channels c in [c0, c1): col^T is stored (nb*GH*GW, CI*KH*KW) with row
 * stride ldt, row l = i*GH*GW + p holding every (channel, tap) entry that
 * window position p of image i puts on img. The rows are read in order, each
 * entry added onto its pixel; a kernel row's taps land on consecutive pixels,
 * so the innermost loop (over kw) is contiguous in both (4 floats for DCGAN's
 * 4x4 kernels). Each pixel sums its entries in increasing window position. */
static void col2im_t_planes(float *restrict img, const float *restrict colt, size_t ldt,
                            const float *bias, int nb, int CI, int IH, int IW, int KH,
                            int KW, int SH, int SW, int PH, int PW, int GH, int GW,
                            size_t c0, size_t c1) {
    size_t pix = (size_t)IH * IW, kk = (size_t)KH * KW;
    for (int i = 0; i < nb; i++) {
        float *im = img + (size_t)i * CI * pix;
        for (size_t cb = c0; cb < c1; cb += DG_COLT_CBLOCK) {
            size_t ce = c1 - cb < DG_COLT_CBLOCK ? c1 : cb + DG_COLT_CBLOCK;
            fill_bias(im, bias, (size_t)CI, pix, cb, ce);
            for (int gh = 0; gh < GH; gh++) {
                for (int gw = 0; gw < GW; gw++) {
                    const float *row =
                        colt + ((size_t)i * GH * GW + (size_t)gh * GW + gw) * ldt;
                    int ow0 = gw * SW - PW, kw0 = ow0 < 0 ? -ow0 : 0;
                    int kw1 = IW - ow0 < KW ? IW - ow0 : KW, nk = kw1 - kw0;
                    if (nk <= 0) continue;
                    for (int kh = 0; kh < KH; kh++) {
                        int oh = gh * SH - PH + kh;
                        if (oh < 0 || oh >= IH) continue;
                        size_t off = (size_t)oh * IW + (size_t)(ow0 + kw0);
                        for (size_t c = cb; c < ce; c++) {
                            float *d = im + c * pix + off;
                            const float *src = row + c * kk + (size_t)kh * KW + kw0;
#if defined(__SSE2__)
                            if (nk == 4) {
                                /* GCC packs the 4 scalar adds slowly; the same adds */
                                _mm_storeu_ps(d, _mm_add_ps(_mm_loadu_ps(d),
                                                            _mm_loadu_ps(src)));
                                continue;
                            }
#endif
                            for (int kw = 0; kw < nk; kw++) d[kw] += src[kw];
                        }
                    }
                }
            }
        }
    }
}

/* dbias[r] += sum over n and p of g[n, r, p], g = dout (N, R, P), or with y
 * (an activation fused after the op: dout the gradient of its output y) g =
 * dg_act_grad(dout, y). Double sums, for the channels r in [r0, r1): per image,
 * DG_BIAS_CHAINS chains (position p in chain p % DG_BIAS_CHAINS, which the
 * compiler keeps in vector registers; with 4 chains the adds' latency bound the
 * pass), added pairwise, then onto the channel's sum. */
#define DG_BIAS_CHAINS 16
/* Channels whose sums are kept at a time: the images are read in order, a block
 * of channels each (reading channel by channel over the images, one short run
 * per image and channel, waited on the cache misses of every run) */
#define DG_BIAS_BLOCK 256
#define BIAS_SUMS(G)                                                                    \
    do {                                                                                \
        double a[DG_BIAS_CHAINS] = {0.0};                                               \
        size_t p = 0;                                                                   \
        for (; p + DG_BIAS_CHAINS <= P; p += DG_BIAS_CHAINS) {                          \
            _Pragma("GCC unroll 16") for (int i = 0; i < DG_BIAS_CHAINS; i++)           \
                a[i] += G(p + i);                                                       \
        }                                                                               \
        for (int i = 0; p < P; p++, i++) a[i] += G(p);                                  \
        for (int w = DG_BIAS_CHAINS / 2; w >= 1; w /= 2) {                              \
            for (int i = 0; i < w; i++) a[i] += a[i + w];                               \
        }                                                                               \
        acc += a[0];                                                                    \
    } while (0)
/* one expansion per activation (a constant act), so that each is a select the
 * compiler keeps branch-free: with act tested per element it branched on the
 * sign of y, ~10x slower */
#define BIAS_PLAIN(p) d[p]
#define BIAS_RELU(p) dg_act_grad(d[p], yv[p], DG_ACT_RELU, slope)
#define BIAS_LEAKY(p) dg_act_grad(d[p], yv[p], DG_ACT_LEAKY_RELU, slope)

static void bias_backward(float *dbias, const float *dout, const float *y, int act,
                          float slope, int N, size_t R, size_t P, size_t r0, size_t r1) {
    double sums[DG_BIAS_BLOCK];
    for (size_t rb = r0; rb < r1; rb += DG_BIAS_BLOCK) {
        size_t re = r1 - rb < DG_BIAS_BLOCK ? r1 : rb + DG_BIAS_BLOCK;
        for (size_t r = rb; r < re; r++) sums[r - rb] = 0.0;
        for (int n = 0; n < N; n++) {
            for (size_t r = rb; r < re; r++) {
                const float *d = dout + ((size_t)n * R + r) * P;
                double acc = 0.0;
                if (y == NULL) {
                    BIAS_SUMS(BIAS_PLAIN);
                } else if (act == DG_ACT_RELU) {
                    const float *yv = y + ((size_t)n * R + r) * P;
                    BIAS_SUMS(BIAS_RELU);
                } else {
                    const float *yv = y + ((size_t)n * R + r) * P;
                    BIAS_SUMS(BIAS_LEAKY);
                }
                sums[r - rb] += acc;
            }
        }
        for (size_t r = rb; r < re; r++) dbias[r] = (float)(dbias[r] + sums[r - rb]);
    }
}

/* ------------------------------------------------------------------------- */
/* The helpers above on the thread pool. Each task takes a contiguous range  */
/* of planes, rows or channels (dg_split), so tasks write disjoint memory and */
/* every value is computed the same way whatever the thread count.           */
/* ------------------------------------------------------------------------- */

/* Floats moved per task at least, before a helper is split over threads. */
#define DG_CONV_GRAIN 32768.0

enum { J_IM2COL, J_COL2IM, J_COL2IM_BIAS, J_COL2IMT_BIAS, J_GATHER, J_SCATTER_BIAS, J_SCATTER_ADD, J_FILL_BIAS };

typedef struct {
    int kind;
    float *dst;
    const float *src, *bias;
    size_t ld, R, P, count;
    int nb, CI, IH, IW, KH, KW, SH, SW, PH, PW, GH, GW;
} conv_job;

static void conv_task(void *ctx, int t, int nt) {
    const conv_job *j = (const conv_job *)ctx;
    size_t lo, hi;
    dg_split(j->count, 1, t, nt, &lo, &hi);
    if (lo >= hi) return;
    switch (j->kind) {
    case J_IM2COL:
#if DG_HAVE_AVX2
        if (k4s2_ok(j->IH, j->IW, j->KH, j->KW, j->SH, j->SW, j->PH, j->PW, j->GH, j->GW)) {
            im2col_k4s2(j->dst, j->ld, j->src, j->nb, j->CI, j->IH, j->IW, lo, hi);
            break;
        }
#endif
        if (use_table(j->IH, j->IW, j->KH, j->KW, j->GH, j->GW)) {
            im2col_planes_tab(j->dst, j->ld, j->src, j->nb, j->CI, j->IH, j->IW, j->KH,
                              j->KW, j->SH, j->SW, j->PH, j->PW, j->GH, j->GW, lo, hi);
            break;
        }
        im2col_planes(j->dst, j->ld, j->src, j->nb, j->CI, j->IH, j->IW, j->KH, j->KW,
                      j->SH, j->SW, j->PH, j->PW, j->GH, j->GW, lo, hi);
        break;
    case J_COL2IM:
    case J_COL2IM_BIAS:
#if DG_HAVE_AVX2
        if (k4s2_ok(j->IH, j->IW, j->KH, j->KW, j->SH, j->SW, j->PH, j->PW, j->GH, j->GW)) {
            col2im_k4s2(j->dst, j->src, j->kind == J_COL2IM_BIAS, j->bias, j->ld, j->nb,
                        j->CI, j->IH, j->IW, lo, hi);
            break;
        }
#endif
        if (use_rev(j->IH, j->IW, j->KH, j->KW, j->SH, j->SW, j->GH, j->GW)) {
            col2im_planes_rev(j->dst, j->src, j->kind == J_COL2IM_BIAS, j->bias, j->ld,
                              j->nb, j->CI, j->IH, j->IW, j->KH, j->KW, j->SH,
                              j->SW, j->PH, j->PW, j->GH, j->GW, lo, hi);
            break;
        }
        /* J_COL2IM_BIAS here: the caller filled img with the bias; add onto it */
        if (use_table(j->IH, j->IW, j->KH, j->KW, j->GH, j->GW)) {
            col2im_planes_tab(j->dst, j->src, j->ld, j->nb, j->CI, j->IH, j->IW, j->KH,
                              j->KW, j->SH, j->SW, j->PH, j->PW, j->GH, j->GW, lo, hi);
            break;
        }
        col2im_planes(j->dst, j->src, j->ld, j->nb, j->CI, j->IH, j->IW, j->KH, j->KW,
                      j->SH, j->SW, j->PH, j->PW, j->GH, j->GW, lo, hi);
        break;
    case J_COL2IMT_BIAS:
        col2im_t_planes(j->dst, j->src, j->ld, j->bias, j->nb, j->CI, j->IH, j->IW, j->KH,
                        j->KW, j->SH, j->SW, j->PH, j->PW, j->GH, j->GW, lo, hi);
        break;
    case J_GATHER:
        gather_rows(j->dst, j->src, j->nb, j->R, j->P, lo, hi);
        break;
    case J_SCATTER_BIAS:
        scatter_rows_bias(j->dst, j->src, j->bias, j->nb, j->R, j->P, lo, hi);
        break;
    case J_SCATTER_ADD:
        scatter_rows_add(j->dst, j->src, j->nb, j->R, j->P, lo, hi);
        break;
    case J_FILL_BIAS:
        fill_bias(j->dst, j->bias, j->R, j->P, lo, hi);
        break;
    }
}

/* Runs job j over j->count units of `per_unit` floats each. */
static void conv_run(conv_job *j, double per_unit) {
    dg_parallel(conv_task, j, dg_threads_for((double)j->count * per_unit, DG_CONV_GRAIN));
}

/* col (CI*KH*KW, ldcol) = im2col of img (nb, CI, IH, IW), windows (GH, GW). */
static void im2col(float *col, size_t ldcol, const float *img, int nb, int CI, int IH,
                   int IW, int KH, int KW, int SH, int SW, int PH, int PW, int GH,
                   int GW) {
    conv_job j = {.kind = J_IM2COL, .dst = col, .src = img, .ld = ldcol,
                  .count = (size_t)CI * nb, .nb = nb, .CI = CI, .IH = IH, .IW = IW,
                  .KH = KH, .KW = KW, .SH = SH, .SW = SW, .PH = PH, .PW = PW,
                  .GH = GH, .GW = GW};
    conv_run(&j, (double)KH * KW * GH * GW);
}

/* img (nb, CI, IH, IW) += col2im of col (CI*KH*KW, ldcol). */
static void col2im_add(float *img, const float *col, size_t ldcol, int nb, int CI,
                       int IH, int IW, int KH, int KW, int SH, int SW, int PH, int PW,
                       int GH, int GW) {
    conv_job j = {.kind = J_COL2IM, .dst = img, .src = col, .ld = ldcol,
                  .count = (size_t)CI * nb, .nb = nb, .CI = CI, .IH = IH, .IW = IW,
                  .KH = KH, .KW = KW, .SH = SH, .SW = SW, .PH = PH, .PW = PW,
                  .GH = GH, .GW = GW};
    conv_run(&j, (double)KH * KW * GH * GW);
}


static void rows_run(int kind, float *dst, const float *src, const float *bias, int nb,
                     size_t R, size_t P) {
    conv_job j = {.kind = kind, .dst = dst, .src = src, .bias = bias, .R = R, .P = P,
                  .nb = nb, .count = (size_t)nb * R};
    conv_run(&j, (double)P);
}

/* img (nb, CI, IH, IW) = bias[c] (0 when bias is NULL) + col2im of col. */
static void col2im_bias(float *img, const float *col, const float *bias, size_t ldcol,
                        int nb, int CI, int IH, int IW, int KH, int KW, int SH, int SW,
                        int PH, int PW, int GH, int GW) {
    if (!col2im_from_bias(IH, IW, KH, KW, SH, SW, PH, PW, GH, GW)) {
        rows_run(J_FILL_BIAS, img, NULL, bias, nb, (size_t)CI, (size_t)IH * IW);
    }
    conv_job j = {.kind = J_COL2IM_BIAS, .dst = img, .src = col, .ld = ldcol,
                  .bias = bias, .count = (size_t)CI * nb, .nb = nb, .CI = CI, .IH = IH,
                  .IW = IW, .KH = KH, .KW = KW, .SH = SH, .SW = SW, .PH = PH, .PW = PW,
                  .GH = GH, .GW = GW};
    conv_run(&j, (double)KH * KW * GH * GW);
}

/* img (nb, CI, IH, IW) = bias[c] (0 when bias is NULL) + col2im of col^T
 * (nb*GH*GW, CI*KH*KW), row stride ldt; tasks are ranges of channels. */
static void col2im_t_bias(float *img, const float *colt, size_t ldt, const float *bias,
                          int nb, int CI, int IH, int IW, int KH, int KW, int SH, int SW,
                          int PH, int PW, int GH, int GW) {
    conv_job j = {.kind = J_COL2IMT_BIAS, .dst = img, .src = colt, .ld = ldt,
                  .bias = bias, .count = (size_t)CI, .nb = nb, .CI = CI, .IH = IH,
                  .IW = IW, .KH = KH, .KW = KW, .SH = SH, .SW = SW, .PH = PH, .PW = PW,
                  .GH = GH, .GW = GW};
    conv_run(&j, (double)nb * KH * KW * GH * GW);
}

/* dbias (R) += sums of dout (N, R, P) over n and p (through the fused act's
 * gradient at y): bias_backward over the channels, split in contiguous ranges
 * (every sum in the same order whatever the thread count), in its AVX2 build
 * where the CPU has it. */
typedef struct {
    float *dbias;
    const float *dout, *y;
    int act, N;
    float slope;
    size_t R, P;
} dbias_job;

static void dbias_task(void *ctx, int t, int nt) {
    const dbias_job *j = (const dbias_job *)ctx;
    size_t lo, hi;
    dg_split(j->R, 1, t, nt, &lo, &hi);
    if (lo < hi) {
        bias_backward(j->dbias, j->dout, j->y, j->act, j->slope, j->N, j->R, j->P, lo, hi);
    }
}

/* dbias_task built for AVX2 (dg_internal.h): the same values */
DG_AVX2_TASK(dbias_task)

static void dbias_run(float *dbias, const float *dout, const float *y, int act, float slope,
                      int N, size_t R, size_t P) {
    dbias_job j = {dbias, dout, act != DG_ACT_NONE ? y : NULL, act, N, slope, R, P};
    dg_parallel(DG_FOR_CPU(dbias_task), &j,
                dg_threads_for((double)R * N * (double)P, DG_CONV_GRAIN));
}

/* ------------------------------------------------------------------------- */
/* Threads over images. A forward, or conv2d's input gradient, of a batch of */
/* at least one image per thread runs as one region of one task per thread;  */
/* task t takes a contiguous range of the images (dg_split) and runs their   */
/* im2col -> GEMM -> col2im/scatter sequence on its own thread, in its own   */
/* slice of the workspace (so in smaller groups). Splitting every step over  */
/* the pool instead synchronises three times per group and leaves the thin   */
/* GEMMs of DCGAN's one-channel first and last layers on one thread          */
/* (PERFORMANCE.md, log 21). Each image's values are computed by the same    */
/* steps as on one thread: which path a group takes (the bias added after    */
/* the product, the col^T product of small images) depends on the plan, not  */
/* on the group's size, so with the reference GEMM the results are the same  */
/* bits at any thread count; OpenBLAS may round a product of fewer columns   */
/* differently, which the thread count alone fixes. A weight gradient sums   */
/* over every image in group order, so it keeps the sequence of groups whose */
/* steps split themselves (and so does conv_transpose2d's input gradient,    */
/* which shares the weight gradient's im2col).                               */
/* ------------------------------------------------------------------------- */

/* GEMM FLOPs of a call at least, before its images are split over threads. */
#define DG_CONV_IMAGE_GRAIN 4.0e6
/* Most tasks of a region over images: one per thread of the pool (at most 64). */
#define DG_CONV_MAX_TASKS 64

enum { R_CONV2D_FWD, R_CONV2D_DINP, R_CONVT_FWD };

typedef struct {
    int kind;
    const conv_plan *p;
    float *out, *ws;                        /* out: the output or dinp */
    float *keep;                            /* conv2d forward: the kept col, or NULL */
    const float *inp, *weight, *bias;       /* inp: the input or dout */
    int N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW;
    size_t slice;                           /* workspace floats per task */
    int nb_task;                            /* most images per group in a task */
    dg_status st[DG_CONV_MAX_TASKS];
} range_job;

#define RANGE_JOB_FIELDS(j)                                                      \
    float *out = (j)->out;                                                       \
    const float *inp = (j)->inp, *weight = (j)->weight, *bias = (j)->bias;       \
    int C = (j)->C, H = (j)->H, W = (j)->W, OC = (j)->OC, KH = (j)->KH,          \
        KW = (j)->KW, SH = (j)->SH, SW = (j)->SW, PH = (j)->PH, PW = (j)->PW,    \
        OH = (j)->OH, OW = (j)->OW;                                              \
    (void)bias

static dg_status conv2d_forward_range(const range_job *j, float *ws, int n_lo,
                                      int n_hi, int nb_max);
static dg_status conv2d_dinp_range(const range_job *j, float *ws, int n_lo, int n_hi,
                                   int nb_max);
static dg_status convt_forward_range(const range_job *j, float *ws, int n_lo, int n_hi,
                                     int nb_max);

static dg_status range_call(const range_job *j, float *ws, int lo, int hi, int nb) {
    switch (j->kind) {
    case R_CONV2D_FWD: return conv2d_forward_range(j, ws, lo, hi, nb);
    case R_CONV2D_DINP: return conv2d_dinp_range(j, ws, lo, hi, nb);
    default: return convt_forward_range(j, ws, lo, hi, nb);
    }
}

static void range_task(void *ctx, int t, int nt) {
    range_job *j = (range_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->N, 1, t, nt, &lo, &hi);
    int cnt = (int)(hi - lo);
    if (cnt <= 0) {
        j->st[t] = DG_STATUS_OK;
        return;
    }
    /* balanced groups of at most nb_task images */
    int groups = (cnt + j->nb_task - 1) / j->nb_task;
    j->st[t] = range_call(j, j->ws + (size_t)t * j->slice, (int)lo, (int)hi,
                          (cnt + groups - 1) / groups);
}

/* Runs job `kind` of one call (plan p; out, inp as in range_job) over its N
 * images: one task per thread when the pool has several threads, the batch at
 * least one image per thread, the work worth it and each task's share of the
 * workspace room for an image; else the plain sequence of groups of the plan,
 * whose steps split themselves. */
static dg_status images_run(int kind, const conv_plan *p, float *out, float *ws,
                            float *keep, const float *inp, const float *weight,
                            const float *bias, int N, int C, int H, int W, int OC, int KH,
                            int KW, int SH, int SW, int PH, int PW, int OH, int OW) {
    range_job job = {.kind = kind, .p = p, .out = out, .ws = ws, .keep = keep, .inp = inp,
                     .weight = weight, .bias = bias, .N = N, .C = C, .H = H, .W = W,
                     .OC = OC, .KH = KH, .KW = KW, .SH = SH, .SW = SW, .PH = PH,
                     .PW = PW, .OH = OH, .OW = OW};
    range_job *j = &job;
    int size = dg_threads_get();
    int nt = size < DG_CONV_MAX_TASKS ? size : DG_CONV_MAX_TASKS;
    double flops = 2.0 * N * (double)p->cols * (double)p->col_rows * (double)p->buf_rows;
    size_t per_image = (p->col_rows + p->buf_rows + DG_COLT_PAD) * p->cols;
    size_t slice = (p->ws / (size_t)nt) & ~(size_t)15;   /* 64-byte multiples */
    if (nt < 2 || N < nt || slice < per_image ||
        dg_threads_for(flops, DG_CONV_IMAGE_GRAIN) < 2) {
        return range_call(j, ws, 0, N, p->nb);
    }
    j->slice = slice;
    j->nb_task = (int)(slice / per_image);
    dg_parallel(range_task, j, nt);
    for (int t = 0; t < nt; t++) {
        if (j->st[t] != DG_STATUS_OK) return j->st[t];
    }
    return DG_STATUS_OK;
}

/* ------------------------------------------------------------------------- */
/* conv2d                                                                     */
/* ------------------------------------------------------------------------- */

size_t dg_conv2d_workspace_size(int N, int C, int H, int W, int OC, int KH,
                                int KW, int SH, int SW, int PH, int PW, int OH,
                                int OW) {
    conv_plan p;
    if (conv2d_plan(&p, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW) !=
        DG_STATUS_OK) {
        return 0;
    }
    return p.ws;
}

/* conv2d forward of images [n_lo, n_hi) in groups of nb, with the workspace ws
 * (col, then the scatter buffer when nb > 1). */
static dg_status conv2d_forward_range(const range_job *j, float *ws, int n_lo,
                                      int n_hi, int nb_max) {
    RANGE_JOB_FIELDS(j);
    size_t hw = (size_t)H * W, ohw = j->p->cols, ckk = j->p->col_rows;
    float *tmp = ws + ckk * ohw * nb_max;   // (OC, nb*OHW), when nb > 1
    for (int n0 = n_lo; n0 < n_hi; n0 += nb_max) {
        int nb = n_hi - n0 < nb_max ? n_hi - n0 : nb_max;
        size_t L = (size_t)nb * ohw;
        const float *x = inp + (size_t)n0 * C * hw;
        float *o = out + (size_t)n0 * OC * ohw;
        // col (C*KK, nb*OHW): the group's columns of the kept matrix, or the workspace
        float *col = j->keep != NULL ? j->keep + (size_t)n0 * ohw : ws;
        size_t ldcol = j->keep != NULL ? (size_t)j->N * ohw : L;
        im2col(col, ldcol, x, nb, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW);
        if (j->p->nb == 1) {
            // groups of one image in the plan (a task's smaller groups keep the
            // plan's path: the bias is added after the product, as below)
            // out[n] (OC, OHW) = weight (OC, C*KK) @ col (C*KK, OHW) + bias
            float beta = 0.0f;
            if (bias != NULL) {
                rows_run(J_FILL_BIAS, o, NULL, bias, 1, (size_t)OC, ohw);
                beta = 1.0f;
            }
            dg_status st = dg_sgemm(0, 0, OC, (int)L, (int)ckk, 1.0f, weight, (int)ckk,
                                    col, (int)ldcol, beta, o, (int)L);
            if (st != DG_STATUS_OK) return st;
        } else {
            // tmp (OC, nb*OHW) = weight (OC, C*KK) @ col (C*KK, nb*OHW)
            dg_status st = dg_sgemm(0, 0, OC, (int)L, (int)ckk, 1.0f, weight, (int)ckk,
                                    col, (int)ldcol, 0.0f, tmp, (int)L);
            if (st != DG_STATUS_OK) return st;
            rows_run(J_SCATTER_BIAS, o, tmp, bias, nb, (size_t)OC, ohw);
        }
    }
    return DG_STATUS_OK;
}

/* conv2d forward; keep: the whole batch's col matrix, (C*KK, N*OHW), or NULL */
/* act, slope: an activation fused after the op (dg_conv2d_act_forward), or
 * DG_ACT_NONE */
static dg_status conv2d_forward_impl(float *out, float *keep, float *workspace,
                                     const float *inp, const float *weight,
                                     const float *bias, int N, int C, int H, int W,
                                     int OC, int KH, int KW, int SH, int SW, int PH,
                                     int PW, int OH, int OW, int act, float slope) {
    // out is (N, OC, OH, OW), workspace is (dg_conv2d_workspace_size),
    // inp is (N, C, H, W), weight is (OC, C, KH, KW), bias is (OC) or NULL
    conv_plan p;
    dg_status st = conv2d_plan(&p, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW);
    if (st != DG_STATUS_OK) return st;
    if (out == NULL || workspace == NULL || inp == NULL || weight == NULL) {
        return DG_STATUS_ERR_NULL;
    }
    if (keep == NULL && C == 1 &&
        dg_thin_fits(OC, H, W, KH, KW, SH, SW, PH, PW, OH, OW, p.ws)) {
        // one input channel: the kernel of dg_conv_thin.c
        return dg_thin_conv(out, 0, workspace, p.ws, inp, weight, bias, N, OC, H, W, act,
                            slope);
    }
    if (act != DG_ACT_NONE) return DG_STATUS_ERR_VALUE;   // fused in the thin kernel only
    if (keep == NULL && dg_direct_fits(N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW, p.ws)) {
        // a direct kernel (dg_conv_direct.c) where it applies, else im2col + GEMM
        return dg_direct_conv(out, 0, workspace, p.ws, inp, weight, bias, N, C, H, W, OC);
    }
    return images_run(R_CONV2D_FWD, &p, out, workspace, keep, inp, weight, bias, N, C,
                      H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW);
}

dg_status dg_conv2d_forward(float *out, float *workspace, const float *inp,
                            const float *weight, const float *bias, int N,
                            int C, int H, int W, int OC, int KH, int KW, int SH,
                            int SW, int PH, int PW, int OH, int OW) {
    return conv2d_forward_impl(out, NULL, workspace, inp, weight, bias, N, C, H, W, OC,
                               KH, KW, SH, SW, PH, PW, OH, OW, DG_ACT_NONE, 0.0f);
}

int dg_conv2d_direct(int N, int C, int H, int W, int OC, int KH, int KW, int SH, int SW,
                     int PH, int PW, int OH, int OW) {
    conv_plan p;
    if (conv2d_plan(&p, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW) != DG_STATUS_OK) {
        return 0;
    }
    if (C == 1 && dg_thin_fits(OC, H, W, KH, KW, SH, SW, PH, PW, OH, OW, p.ws)) return 1;
    return dg_direct_fits(N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW, p.ws) &&
           dg_direct_dweight_fits(N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW, p.ws);
}

/* The kept col matrix of the keep/kept entry points: given, and its row length
 * N*OHW fits a GEMM leading dimension (an int); other sizes the plan checks. */
static dg_status keep_check(const float *col, int N, int OH, int OW) {
    if (N > 0 && OH > 0 && OW > 0 && (long long)N * OH * OW > INT_MAX) {
        return DG_STATUS_ERR_SHAPE;
    }
    return col == NULL ? DG_STATUS_ERR_NULL : DG_STATUS_OK;
}

dg_status dg_conv2d_forward_keep(float *out, float *col, float *workspace,
                                 const float *inp, const float *weight,
                                 const float *bias, int N, int C, int H, int W,
                                 int OC, int KH, int KW, int SH, int SW, int PH,
                                 int PW, int OH, int OW) {
    // col is (C*KH*KW, N*OH*OW); the rest as in dg_conv2d_forward
    dg_status st = keep_check(col, N, OH, OW);
    if (st != DG_STATUS_OK) return st;
    return conv2d_forward_impl(out, col, workspace, inp, weight, bias, N, C, H, W, OC,
                               KH, KW, SH, SW, PH, PW, OH, OW, DG_ACT_NONE, 0.0f);
}

/* conv2d input gradient of images [n_lo, n_hi): inp is dout, out is dinp. */
static dg_status conv2d_dinp_range(const range_job *j, float *ws, int n_lo, int n_hi,
                                   int nb_max) {
    RANGE_JOB_FIELDS(j);
    size_t hw = (size_t)H * W, ohw = j->p->cols, ckk = j->p->col_rows;
    float *col = ws;                        // (C*KK, nb*OHW)
    float *tmp = ws + ckk * ohw * nb_max;   // (OC, nb*OHW), when nb > 1
    for (int n0 = n_lo; n0 < n_hi; n0 += nb_max) {
        int nb = n_hi - n0 < nb_max ? n_hi - n0 : nb_max;
        size_t L = (size_t)nb * ohw;
        const float *dy = inp + (size_t)n0 * OC * ohw;
        if (nb > 1) {
            rows_run(J_GATHER, tmp, dy, NULL, nb, (size_t)OC, ohw);
            dy = tmp;
        }
        // dy is dout of the group as (OC, nb*OHW); forward: tmp = weight @ col,
        // col = im2col(inp), so dcol (C*KK, nb*OHW) = weight^T (C*KK, OC) @ dy
        // (OC, nb*OHW) and dinp += col2im(dcol)
        dg_status st = dg_sgemm(1, 0, (int)ckk, (int)L, OC, 1.0f, weight, (int)ckk, dy,
                                (int)L, 0.0f, col, (int)L);
        if (st != DG_STATUS_OK) return st;
        col2im_add(out + (size_t)n0 * C * hw, col, L, nb, C, H, W, KH, KW, SH, SW, PH,
                   PW, OH, OW);
    }
    return DG_STATUS_OK;
}

/* conv2d backward; kept: the forward's col matrix, (C*KK, N*OHW), or NULL; act,
 * slope: an activation fused after the op (dg_conv2d_act_backward; dout is the
 * gradient of its output act_out), or DG_ACT_NONE */
static dg_status conv2d_backward_impl(float *dinp, float *dweight, float *dbias,
                                      float *workspace, const float *kept,
                                      const float *dout, const float *act_out,
                                      const float *inp, const float *weight, int N, int C,
                                      int H, int W, int OC, int KH, int KW, int SH, int SW,
                                      int PH, int PW, int OH, int OW, int act, float slope) {
    // dinp is (N, C, H, W), dweight is (OC, C, KH, KW), dbias is (OC); any may be NULL
    // workspace is (dg_conv2d_workspace_size), dout is (N, OC, OH, OW),
    // inp is (N, C, H, W), weight is (OC, C, KH, KW)
    conv_plan p;
    dg_status st = conv2d_plan(&p, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW);
    if (st != DG_STATUS_OK) return st;
    if (workspace == NULL || dout == NULL || inp == NULL || weight == NULL) {
        return DG_STATUS_ERR_NULL;
    }
    size_t hw = (size_t)H * W, ohw = p.cols, ckk = p.col_rows;
    float *col = workspace;                    // (C*KK, nb*OHW)
    float *tmp = workspace + ckk * ohw * p.nb; // (OC, nb*OHW), when nb > 1
    int thin = C == 1 && dg_thin_fits(OC, H, W, KH, KW, SH, SW, PH, PW, OH, OW, p.ws);
    if (act != DG_ACT_NONE && (!thin || kept != NULL)) {
        return DG_STATUS_ERR_VALUE;   // fused in the thin kernels only
    }
    if (act != DG_ACT_NONE && act_out == NULL) return DG_STATUS_ERR_NULL;
    if (thin) {
        // one input channel: the kernels of dg_conv_thin.c (dinp += the transposed
        // convolution of dout with the same weights)
        if (dweight != NULL && kept == NULL) {
            // the bias gradient summed in the same pass over dout (and act_out)
            st = dg_thin_dweight(dweight, dbias, workspace, p.ws, dout, act_out, act, slope,
                                 inp, N, OC, H, W);
            if (st != DG_STATUS_OK) return st;
            dweight = NULL;
            dbias = NULL;
        }
        if (dinp != NULL) {
            st = dg_thin_convt(dinp, 1, dout, act_out, act, slope, weight, NULL, N, OC, H, W);
            if (st != DG_STATUS_OK) return st;
            dinp = NULL;
        }
    }
    if (dweight != NULL && kept == NULL &&
        dg_direct_dweight_fits(N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW, p.ws)) {
        // the direct kernel (dg_conv_direct.c): no im2col matrix at all
        st = dg_direct_conv_dweight(dweight, workspace, p.ws, dout, inp, N, C, H, W, OC);
        if (st != DG_STATUS_OK) return st;
        dweight = NULL;
    }
    if (dweight != NULL) {
        for (int n0 = 0; n0 < N; n0 += p.nb) {
            int nb = N - n0 < p.nb ? N - n0 : p.nb;
            size_t L = (size_t)nb * ohw;
            const float *dy = dout + (size_t)n0 * OC * ohw;
            if (nb > 1) {
                rows_run(J_GATHER, tmp, dy, NULL, nb, (size_t)OC, ohw);
                dy = tmp;
            }
            // dy is dout of the group as (OC, nb*OHW)
            // forward: tmp = weight @ col, col = im2col(inp) (kept by the forward,
            // or rebuilt here)
            // dweight (OC, C*KK) += dy (OC, nb*OHW) @ col^T (nb*OHW, C*KK)
            const float *cg = col;
            size_t ldcol = L;
            if (kept != NULL) {
                cg = kept + (size_t)n0 * ohw;
                ldcol = (size_t)N * ohw;
            } else {
                im2col(col, L, inp + (size_t)n0 * C * hw, nb, C, H, W, KH, KW,
                       SH, SW, PH, PW, OH, OW);
            }
            st = dg_sgemm(0, 1, OC, (int)ckk, (int)L, 1.0f, dy, (int)L, cg,
                          (int)ldcol, 1.0f, dweight, (int)ckk);
            if (st != DG_STATUS_OK) return st;
        }
    }
    if (dinp != NULL &&
        dg_direct_t_fits(N, OC, OH, OW, C, KH, KW, SH, SW, PH, PW, H, W, p.ws)) {
        // dinp += conv_transpose2d(dout, weight) by the direct kernel
        // (dg_conv_direct.c): weight (OC, C, KH, KW) is that transposed
        // convolution's, from OC channels to C
        st = dg_direct_convt(dinp, 1, workspace, p.ws, dout, weight, NULL, N, OC, OH, OW, C);
        if (st != DG_STATUS_OK) return st;
        dinp = NULL;
    } else if (dinp != NULL &&
               dg_direct_tfew_fits(N, OC, OH, OW, C, KH, KW, SH, SW, PH, PW, H, W, p.ws)) {
        // the same for fewer images than that kernel takes (dg_direct_convt_few)
        st = dg_direct_convt_few(dinp, 1, workspace, p.ws, dout, weight, NULL, N, OC, OH, OW,
                                 C);
        if (st != DG_STATUS_OK) return st;
        dinp = NULL;
    }
    if (dinp != NULL) {
        // a pass of its own (over images, one task per thread; conv2d_dinp_range)
        st = images_run(R_CONV2D_DINP, &p, dinp, workspace, NULL, dout, weight, NULL, N, C, H,
                        W, OC, KH, KW, SH, SW, PH, PW, OH, OW);
        if (st != DG_STATUS_OK) return st;
    }
    if (dbias != NULL) {
        // forward: out[n, oc, :, :] = ... + bias[oc]
        dbias_run(dbias, dout, act_out, act, slope, N, (size_t)OC, ohw);
    }
    return DG_STATUS_OK;
}

dg_status dg_conv2d_backward(float *dinp, float *dweight, float *dbias,
                             float *workspace, const float *dout,
                             const float *inp, const float *weight, int N,
                             int C, int H, int W, int OC, int KH, int KW,
                             int SH, int SW, int PH, int PW, int OH, int OW) {
    return conv2d_backward_impl(dinp, dweight, dbias, workspace, NULL, dout, NULL, inp,
                                weight, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW,
                                DG_ACT_NONE, 0.0f);
}

int dg_conv2d_act_fits(int N, int C, int H, int W, int OC, int KH, int KW, int SH, int SW,
                       int PH, int PW, int OH, int OW) {
    conv_plan p;
    if (conv2d_plan(&p, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW) != DG_STATUS_OK) {
        return 0;
    }
    return C == 1 && dg_thin_fits(OC, H, W, KH, KW, SH, SW, PH, PW, OH, OW, p.ws);
}

dg_status dg_conv2d_act_forward(float *out, float *workspace, const float *inp,
                                const float *weight, const float *bias, int N, int C, int H,
                                int W, int OC, int KH, int KW, int SH, int SW, int PH, int PW,
                                int OH, int OW, int act, float slope) {
    if (dg_bad_act(act, slope)) return DG_STATUS_ERR_VALUE;
    return conv2d_forward_impl(out, NULL, workspace, inp, weight, bias, N, C, H, W, OC,
                               KH, KW, SH, SW, PH, PW, OH, OW, act, slope);
}

dg_status dg_conv2d_act_backward(float *dinp, float *dweight, float *dbias, float *workspace,
                                 const float *dout, const float *out, const float *inp,
                                 const float *weight, int N, int C, int H, int W, int OC,
                                 int KH, int KW, int SH, int SW, int PH, int PW, int OH,
                                 int OW, int act, float slope) {
    if (dg_bad_act(act, slope)) return DG_STATUS_ERR_VALUE;
    return conv2d_backward_impl(dinp, dweight, dbias, workspace, NULL, dout, out, inp, weight,
                                N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW, act, slope);
}

dg_status dg_conv2d_backward_kept(float *dinp, float *dweight, float *dbias,
                                  float *workspace, const float *col,
                                  const float *dout, const float *inp,
                                  const float *weight, int N, int C, int H, int W,
                                  int OC, int KH, int KW, int SH, int SW, int PH,
                                  int PW, int OH, int OW) {
    // col is (C*KH*KW, N*OH*OW) as dg_conv2d_forward_keep left it; the rest as in
    // dg_conv2d_backward
    dg_status st = keep_check(col, N, OH, OW);
    if (st != DG_STATUS_OK) return st;
    return conv2d_backward_impl(dinp, dweight, dbias, workspace, col, dout, NULL, inp,
                                weight, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW,
                                DG_ACT_NONE, 0.0f);
}

/* ------------------------------------------------------------------------- */
/* conv_transpose2d                                                           */
/* ------------------------------------------------------------------------- */

size_t dg_conv_transpose2d_workspace_size(int N, int C, int H, int W, int OC,
                                          int KH, int KW, int SH, int SW,
                                          int PH, int PW, int OH, int OW) {
    conv_plan p;
    if (conv_transpose2d_plan(&p, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH,
                              OW) != DG_STATUS_OK) {
        return 0;
    }
    return p.ws;
}

/* conv_transpose2d forward of images [n_lo, n_hi) in groups of nb, with the
 * workspace ws (col or col^T, then the gather buffer when nb > 1). */
static dg_status convt_forward_range(const range_job *j, float *ws, int n_lo, int n_hi,
                                     int nb_max) {
    RANGE_JOB_FIELDS(j);
    size_t hw = j->p->cols, ohw = (size_t)OH * OW, okk = j->p->col_rows;
    float *col = ws;                   // (OC*KK, nb*HW)
    // (C, nb*HW), when nb > 1; after the room for col^T with padded rows
    float *xb = ws + (okk + DG_COLT_PAD) * hw * nb_max;
    for (int n0 = n_lo; n0 < n_hi; n0 += nb_max) {
        int nb = n_hi - n0 < nb_max ? n_hi - n0 : nb_max;
        size_t L = (size_t)nb * hw;
        const float *x = inp + (size_t)n0 * C * hw;
        float *o = out + (size_t)n0 * OC * ohw;
        dg_status st;
        if (nb > 1) {
            rows_run(J_GATHER, xb, x, NULL, nb, (size_t)C, hw);
            x = xb;
        }
        if ((size_t)j->p->nb * hw <= DG_COLT_MAX_COLS && okk <= (size_t)INT_MAX - DG_COLT_PAD) {
            // few columns (a small image or two): the transposed product, then
            // a col2im that reads it row by row (PERFORMANCE.md, log 13);
            // col^T (nb*HW, OC*KK) = x^T (nb*HW, C) @ weight (C, OC*KK)
            size_t ldt = okk + DG_COLT_PAD;   // workspace holds L * ldt floats
            st = dg_sgemm(1, 0, (int)L, (int)okk, C, 1.0f, x, (int)L, weight, (int)okk,
                          0.0f, col, (int)ldt);
            if (st != DG_STATUS_OK) return st;
            col2im_t_bias(o, col, ldt, bias, nb, OC, OH, OW, KH, KW, SH, SW, PH, PW, H, W);
            continue;
        }
        // col (OC*KK, nb*HW) = weight^T (OC*KK, C) @ x (C, nb*HW)
        st = dg_sgemm(1, 0, (int)okk, (int)L, C, 1.0f, weight, (int)okk, x,
                      (int)L, 0.0f, col, (int)L);
        if (st != DG_STATUS_OK) return st;
        // out = bias + col2im(col): each input pixel's KH x KW patch lands on out
        col2im_bias(o, col, bias, L, nb, OC, OH, OW, KH, KW, SH, SW, PH, PW, H, W);
    }
    return DG_STATUS_OK;
}

/* ------------------------------------------------------------------------- */
/* The col^T product of a few columns through the zeros of the input (AVX2)    */
/* ------------------------------------------------------------------------- */

/* One 7x7 image of DCGAN's first up-sampling (a teacher's sample of one): col^T
 * (L, OC*KK) = x^T (L, C) @ weight (C, OC*KK) with L <= DG_COLT_MAX_COLS pixels,
 * where x is a ReLU's output, about half zero. OpenBLAS packs the 2 MB of
 * weights and sums every channel; here each pixel sums only its nonzero
 * channels (PERFORMANCE.md, log 111). The weights go in strips of
 * DG_SPARSE_SB columns, a chunk of DG_SPARSE_CK channels at a time copied
 * together (16 KiB, which stay in L1 while every pixel reads them; read in
 * place, rows 8 KB apart fall in four L1 sets, log 29), and each pixel keeps
 * its strip in 8 ymm accumulators over its listed channels. An element of col^T
 * is one FMA chain over its pixel's channels in increasing order; a zero input
 * would add a zero product, which leaves a finite sum as it is (but for the
 * sign of a zero sum), so skipping it changes nothing unless a weight is inf or
 * NaN (0 * inf = NaN): a chunk of a strip with such a weight sums every channel.
 * The bits do not depend on the thread count (tasks take whole strips); they
 * are not OpenBLAS's (another order), and dg_set_simd(0) turns it off. */
#if DG_HAVE_AVX2
#define DG_AVX2_FMA __attribute__((target("avx2,fma")))

typedef struct {
    float *colt;
    size_t ldt;
    const float *x;          /* (nimg, C, hw): pixel p is image p / hw, position p % hw */
    const float *weight;     /* (C, okk) */
    int L, C, okk, chunks;
    size_t hw;
    int *off;                /* (L, C): row offsets in a chunk's copy, per chunk */
    float *val;              /* (L, C): the values, in the same slots */
    int *cnt;                /* (L, chunks): list lengths */
    float *buf;              /* DG_SPARSE_TASKS chunk copies */
} colt_sparse_job;

/* The lists of pixels [lo, hi): slot p * C + c0 + i of chunk c0's i-th nonzero. */
static void colt_sparse_lists(void *ctx, int t, int nt) {
    const colt_sparse_job *j = (const colt_sparse_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->L, 1, t, nt, &lo, &hi);
    for (size_t p = lo; p < hi; p++) {
        const float *xp = j->x + (p / j->hw) * (size_t)j->C * j->hw + p % j->hw;
        for (int k = 0; k < j->chunks; k++) {
            int c0 = k * DG_SPARSE_CK, cc = j->C - c0 < DG_SPARSE_CK ? j->C - c0 : DG_SPARSE_CK;
            size_t base = p * (size_t)j->C + (size_t)c0;
            int n = 0;
            for (int c = 0; c < cc; c++) {
                /* branch-free: the slot is written whatever the value (NaN counts) */
                float v = xp[(size_t)(c0 + c) * j->hw];
                j->off[base + n] = c * DG_SPARSE_SB;
                j->val[base + n] = v;
                n += v != 0.0f;
            }
            j->cnt[p * (size_t)j->chunks + k] = n;
        }
    }
}

DG_AVX2_FMA static void colt_sparse_strips(void *ctx, int t, int nt) {
    const colt_sparse_job *j = (const colt_sparse_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->okk / DG_SPARSE_SB, 1, t, nt, &lo, &hi);
    float *pk = j->buf + (size_t)t * DG_SPARSE_CK * DG_SPARSE_SB;
    for (size_t s = lo; s < hi; s++) {
        size_t col0 = s * DG_SPARSE_SB;
        for (int k = 0; k < j->chunks; k++) {
            int c0 = k * DG_SPARSE_CK, cc = j->C - c0 < DG_SPARSE_CK ? j->C - c0 : DG_SPARSE_CK;
            /* the chunk's strip copied together, and whether it is all finite */
            __m256 bad = _mm256_setzero_ps();
            for (int c = 0; c < cc; c++) {
                const float *src = j->weight + (size_t)(c0 + c) * j->okk + col0;
                for (int i = 0; i < DG_SPARSE_SB; i += 8) {
                    __m256 w = _mm256_loadu_ps(src + i);
                    bad = _mm256_or_ps(bad, _mm256_sub_ps(w, w));   /* 0 when finite */
                    _mm256_storeu_ps(pk + c * DG_SPARSE_SB + i, w);
                }
            }
            int dense = _mm256_movemask_ps(_mm256_cmp_ps(bad, bad, _CMP_UNORD_Q)) != 0;
            for (int p = 0; p < j->L; p++) {
                float *o = j->colt + (size_t)p * j->ldt + col0;
                __m256 a0, a1, a2, a3, a4, a5, a6, a7;
                if (k == 0) {
                    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = _mm256_setzero_ps();
                } else {
                    a0 = _mm256_loadu_ps(o);
                    a1 = _mm256_loadu_ps(o + 8);
                    a2 = _mm256_loadu_ps(o + 16);
                    a3 = _mm256_loadu_ps(o + 24);
                    a4 = _mm256_loadu_ps(o + 32);
                    a5 = _mm256_loadu_ps(o + 40);
                    a6 = _mm256_loadu_ps(o + 48);
                    a7 = _mm256_loadu_ps(o + 56);
                }
#define COLT_SPARSE_FMAS(r, b)                                                           \
    do {                                                                                 \
        a0 = _mm256_fmadd_ps(b, _mm256_loadu_ps(r), a0);                                 \
        a1 = _mm256_fmadd_ps(b, _mm256_loadu_ps(r + 8), a1);                             \
        a2 = _mm256_fmadd_ps(b, _mm256_loadu_ps(r + 16), a2);                            \
        a3 = _mm256_fmadd_ps(b, _mm256_loadu_ps(r + 24), a3);                            \
        a4 = _mm256_fmadd_ps(b, _mm256_loadu_ps(r + 32), a4);                            \
        a5 = _mm256_fmadd_ps(b, _mm256_loadu_ps(r + 40), a5);                            \
        a6 = _mm256_fmadd_ps(b, _mm256_loadu_ps(r + 48), a6);                            \
        a7 = _mm256_fmadd_ps(b, _mm256_loadu_ps(r + 56), a7);                            \
    } while (0)
                if (dense) {
                    /* every channel, zeros included: 0 * inf makes its NaN */
                    const float *xp =
                        j->x + (p / j->hw) * (size_t)j->C * j->hw + p % j->hw;
                    for (int c = 0; c < cc; c++) {
                        const float *r = pk + c * DG_SPARSE_SB;
                        __m256 b = _mm256_set1_ps(xp[(size_t)(c0 + c) * j->hw]);
                        COLT_SPARSE_FMAS(r, b);
                    }
                } else {
                    size_t base = (size_t)p * j->C + (size_t)c0;
                    const int *off = j->off + base;
                    const float *val = j->val + base;
                    int n = j->cnt[(size_t)p * j->chunks + k];
                    for (int e = 0; e < n; e++) {
                        const float *r = pk + off[e];
                        __m256 b = _mm256_broadcast_ss(val + e);
                        COLT_SPARSE_FMAS(r, b);
                    }
                }
#undef COLT_SPARSE_FMAS
                _mm256_storeu_ps(o, a0);
                _mm256_storeu_ps(o + 8, a1);
                _mm256_storeu_ps(o + 16, a2);
                _mm256_storeu_ps(o + 24, a3);
                _mm256_storeu_ps(o + 32, a4);
                _mm256_storeu_ps(o + 40, a5);
                _mm256_storeu_ps(o + 48, a6);
                _mm256_storeu_ps(o + 56, a7);
            }
        }
    }
}

/* col^T (L, okk) with row stride ldt = x^T @ weight, x the nimg images (C, hw) of
 * L = nimg * hw pixels, weight (C, okk); colt_sparse_floats more floats after
 * col^T's rows hold the lists and buffers. */
static void colt_sparse(float *colt, size_t ldt, const float *x, int nimg, size_t hw,
                        int C, const float *weight, int okk) {
    int L = (int)((size_t)nimg * hw), chunks = (C + DG_SPARSE_CK - 1) / DG_SPARSE_CK;
    float *rest = colt + (size_t)L * ldt;
    /* the chunk copies on 64-byte lines, so that no load of a weight vector splits one */
    uintptr_t b = (uintptr_t)(rest + 2 * (size_t)L * C + (size_t)L * chunks);
    colt_sparse_job j = {.colt = colt, .ldt = ldt, .x = x, .weight = weight, .L = L, .C = C,
                         .okk = okk, .chunks = chunks, .hw = hw,
                         .off = (int *)rest, .val = rest + (size_t)L * C,
                         .cnt = (int *)(rest + 2 * (size_t)L * C),
                         .buf = (float *)((b + 63) & ~(uintptr_t)63)};
    double flops = 2.0 * L * (double)C * okk;   /* as if dense */
    int nt = dg_threads_for(flops, DG_CONV_IMAGE_GRAIN);
    if (nt > DG_SPARSE_TASKS) nt = DG_SPARSE_TASKS;
    if (nt > okk / DG_SPARSE_SB) nt = okk / DG_SPARSE_SB;
    dg_parallel(colt_sparse_lists, &j, nt < 1 ? 1 : nt > L ? L : nt);
    dg_parallel(colt_sparse_strips, &j, nt < 1 ? 1 : nt);
}

/* Whether colt_sparse takes a call: the CPU, whole strips, and room in ws_floats
 * beside col^T (L rows of ldt floats). */
static int colt_sparse_fits(size_t L, size_t C, size_t okk, size_t ldt, size_t ws_floats) {
    if (!dg_avx2_fma() || okk % DG_SPARSE_SB != 0 || L > DG_COLT_MAX_COLS) return 0;
    size_t need = L * ldt;
    return need <= ws_floats && colt_sparse_floats(C, L) <= ws_floats - need;
}
#endif /* DG_HAVE_AVX2 */

int dg_colt_sparse_fits(int N, int C, int H, int W, int OC, int KH, int KW, int SH, int SW,
                        int PH, int PW, int OH, int OW) {
#if DG_HAVE_AVX2
    conv_plan p;
    if (conv_transpose2d_plan(&p, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW) !=
        DG_STATUS_OK) {
        return 0;
    }
    if (OC == 1 && dg_thin_fits(C, OH, OW, KH, KW, SH, SW, PH, PW, H, W, p.ws)) return 0;
    if (dg_direct_t_fits(N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW, p.ws) ||
        dg_direct_tfew_fits(N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW, p.ws)) {
        return 0;
    }
    return colt_sparse_fits((size_t)N * p.cols, (size_t)C, p.col_rows,
                            p.col_rows + DG_COLT_PAD, p.ws);
#else
    (void)N; (void)C; (void)H; (void)W; (void)OC; (void)KH; (void)KW; (void)SH; (void)SW;
    (void)PH; (void)PW; (void)OH; (void)OW;
    return 0;
#endif
}

dg_status dg_conv_transpose2d_forward(float *out, float *workspace,
                                      const float *inp, const float *weight,
                                      const float *bias, int N, int C, int H,
                                      int W, int OC, int KH, int KW, int SH,
                                      int SW, int PH, int PW, int OH, int OW) {
    // out is (N, OC, OH, OW), workspace is (dg_conv_transpose2d_workspace_size),
    // inp is (N, C, H, W), weight is (C, OC, KH, KW), bias is (OC) or NULL
    conv_plan p;
    dg_status st = conv_transpose2d_plan(&p, N, C, H, W, OC, KH, KW, SH, SW,
                                         PH, PW, OH, OW);
    if (st != DG_STATUS_OK) return st;
    if (out == NULL || workspace == NULL || inp == NULL || weight == NULL) {
        return DG_STATUS_ERR_NULL;
    }
    if (OC == 1 && dg_thin_fits(C, OH, OW, KH, KW, SH, SW, PH, PW, H, W, p.ws)) {
        // one output channel: the kernel of dg_conv_thin.c
        return dg_thin_convt(out, 0, inp, NULL, DG_ACT_NONE, 0.0f, weight, bias, N, C, OH,
                             OW);
    }
    if (dg_direct_t_fits(N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW, p.ws)) {
        // a direct kernel (dg_conv_direct.c) where it applies, else GEMM + col2im
        return dg_direct_convt(out, 0, workspace, p.ws, inp, weight, bias, N, C, H, W, OC);
    }
    if (dg_direct_tfew_fits(N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW, p.ws)) {
        // few images (sampling one): the direct kernel without packed weights
        return dg_direct_convt_few(out, 0, workspace, p.ws, inp, weight, bias, N, C, H, W,
                                   OC);
    }
#if DG_HAVE_AVX2
    size_t L = (size_t)N * p.cols, ldt = p.col_rows + DG_COLT_PAD;
    if (colt_sparse_fits(L, (size_t)C, p.col_rows, ldt, p.ws)) {
        // the whole batch a few columns (one small image): col^T through the zeros of
        // its input, then the col2im that reads it row by row
        colt_sparse(workspace, ldt, inp, N, p.cols, C, weight, (int)p.col_rows);
        col2im_t_bias(out, workspace, ldt, bias, N, OC, OH, OW, KH, KW, SH, SW, PH, PW, H, W);
        return DG_STATUS_OK;
    }
#endif
    return images_run(R_CONVT_FWD, &p, out, workspace, NULL, inp, weight, bias, N, C, H, W,
                      OC, KH, KW, SH, SW, PH, PW, OH, OW);
}

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
                                     const float *scale) {
    // lin and hid are (N, C*H*W), z is (N, K), lweight is (C*H*W, K), lbias and the
    // batch norm's vectors are (C*H*W) (lbias, gamma, beta may be NULL); out,
    // workspace, weight and bias as dg_conv_transpose2d_forward's; the second batch
    // norm's vectors (OC), all NULL without it (gamma2, beta2 may be NULL with it)
    conv_plan p;
    dg_status st = conv_transpose2d_plan(&p, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW);
    if (st != DG_STATUS_OK) return st;
    if (K <= 0) return DG_STATUS_ERR_SHAPE;
    if ((long long)C * H * W > INT_MAX) return DG_STATUS_ERR_SHAPE;
    if (out == NULL || lin == NULL || hid == NULL || workspace == NULL || z == NULL ||
        lweight == NULL || running_mean == NULL || running_var == NULL || weight == NULL) {
        return DG_STATUS_ERR_NULL;
    }
    if (dg_bad_eps(eps) || dg_bad_act(act, slope)) return DG_STATUS_ERR_VALUE;
    if ((running_mean2 == NULL) != (running_var2 == NULL)) return DG_STATUS_ERR_NULL;
    if (running_mean2 == NULL && (gamma2 != NULL || beta2 != NULL)) return DG_STATUS_ERR_NULL;
    if (running_mean2 != NULL && (dg_bad_eps(eps2) || dg_bad_act(act2, slope2))) {
        return DG_STATUS_ERR_VALUE;
    }
    int F = C * H * W;
    dg_bn_eval tail = {running_mean2, running_var2, gamma2, beta2, eps2, act2, slope2};
    if (N == 1 && dg_direct_tfew_fits(N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW, p.ws) &&
        dg_direct_tfew_tasks(N, C, H, W, OC) == 1) {
        // one image in one task: chunk by chunk of input channels (dg_conv_direct.c;
        // its linear rows are dg_linear_forward's kernel of one image, the whole
        // layer's bits; more images would take the GEMM there)
        dg_few_head h = {lin, hid, z, lweight, lbias, K,
                         {running_mean, running_var, gamma, beta, eps, act, slope}, scale};
        return dg_direct_convt_few_head(out, workspace, p.ws, &h, weight, packed, bias, C, H,
                                        W, OC, running_mean2 != NULL ? &tail : NULL);
    }
    st = dg_linear_forward(lin, z, lweight, lbias, N, K, F);
    if (st != DG_STATUS_OK) return st;
    st = dg_batchnorm_act_forward_eval(hid, lin, running_mean, running_var, gamma, beta, N, F,
                                       1, eps, act, slope);
    if (st != DG_STATUS_OK) return st;
    st = dg_conv_transpose2d_forward(out, workspace, hid, weight, bias, N, C, H, W, OC, KH,
                                     KW, SH, SW, PH, PW, OH, OW);
    if (st != DG_STATUS_OK || running_mean2 == NULL) return st;
    // in place: each value is read, then written, by the same step
    return dg_batchnorm_act_forward_eval(out, out, running_mean2, running_var2, gamma2, beta2, N,
                                         OC, OH * OW, eps2, act2, slope2);
}

dg_status dg_conv_transpose2d_backward(float *dinp, float *dweight,
                                       float *dbias, float *workspace,
                                       const float *dout, const float *inp,
                                       const float *weight, int N, int C,
                                       int H, int W, int OC, int KH, int KW,
                                       int SH, int SW, int PH, int PW, int OH,
                                       int OW) {
    // dinp is (N, C, H, W), dweight is (C, OC, KH, KW), dbias is (OC); any may be NULL
    // workspace is (dg_conv_transpose2d_workspace_size), dout is (N, OC, OH, OW),
    // inp is (N, C, H, W), weight is (C, OC, KH, KW)
    conv_plan p;
    dg_status st = conv_transpose2d_plan(&p, N, C, H, W, OC, KH, KW, SH, SW,
                                         PH, PW, OH, OW);
    if (st != DG_STATUS_OK) return st;
    if (workspace == NULL || dout == NULL || inp == NULL || weight == NULL) {
        return DG_STATUS_ERR_NULL;
    }
    size_t hw = p.cols, ohw = (size_t)OH * OW, okk = p.col_rows;
    float *col = workspace;                   // (OC*KK, nb*HW)
    float *xb = workspace + okk * hw * p.nb;  // (C, nb*HW), when nb > 1
    if (OC == 1 && dg_thin_fits(C, OH, OW, KH, KW, SH, SW, PH, PW, H, W, p.ws)) {
        // one output channel: the kernels of dg_conv_thin.c (dinp += the conv2d of
        // dout with the same weights; inp against dout's windows for dweight)
        if (dinp != NULL) {
            st = dg_thin_conv(dinp, 1, workspace, p.ws, dout, weight, NULL, N, C, OH, OW,
                              DG_ACT_NONE, 0.0f);
            if (st != DG_STATUS_OK) return st;
            dinp = NULL;
        }
        if (dweight != NULL) {
            st = dg_thin_dweight(dweight, NULL, workspace, p.ws, inp, NULL, DG_ACT_NONE, 0.0f,
                                 dout, N, C, OH, OW);
            if (st != DG_STATUS_OK) return st;
            dweight = NULL;
        }
    }
    if (dinp != NULL && dg_direct_fits(N, OC, OH, OW, C, KH, KW, SH, SW, PH, PW, H, W, p.ws)) {
        // dinp += conv2d(dout, weight) by the direct kernel (dg_conv_direct.c):
        // weight (C, OC, KH, KW) is that conv2d's (C output channels); first, as the
        // workspace is reused below
        st = dg_direct_conv(dinp, 1, workspace, p.ws, dout, weight, NULL, N, OC, OH, OW, C);
        if (st != DG_STATUS_OK) return st;
        dinp = NULL;
    }
    if (dweight != NULL &&
        dg_direct_dweight_fits(N, OC, OH, OW, C, KH, KW, SH, SW, PH, PW, H, W, p.ws)) {
        // dweight (C, OC, KH, KW) += the weight gradient of the same adjoint conv2d,
        // inp taking the place of its output gradient (dg_conv_direct.c)
        st = dg_direct_conv_dweight(dweight, workspace, p.ws, inp, dout, N, OC, OH, OW, C);
        if (st != DG_STATUS_OK) return st;
        dweight = NULL;
    }
    if (dinp != NULL || dweight != NULL) {
        for (int n0 = 0; n0 < N; n0 += p.nb) {
            int nb = N - n0 < p.nb ? N - n0 : p.nb;
            size_t L = (size_t)nb * hw;
            // forward: out = col2im(col)  =>  dcol = im2col(dout), (OC*KK, nb*HW)
            im2col(col, L, dout + (size_t)n0 * OC * ohw, nb, OC, OH, OW, KH, KW,
                   SH, SW, PH, PW, H, W);
            if (dweight != NULL) {
                // forward: col = weight^T @ x
                // dweight (C, OC*KK) += x (C, nb*HW) @ dcol^T (nb*HW, OC*KK)
                const float *x = inp + (size_t)n0 * C * hw;
                if (nb > 1) {
                    rows_run(J_GATHER, xb, x, NULL, nb, (size_t)C, hw);
                    x = xb;
                }
                st = dg_sgemm(0, 1, C, (int)okk, (int)L, 1.0f, x, (int)L, col,
                              (int)L, 1.0f, dweight, (int)okk);
                if (st != DG_STATUS_OK) return st;
            }
            if (dinp != NULL) {
                // forward: col = weight^T @ x
                // dx (C, nb*HW) = weight (C, OC*KK) @ dcol (OC*KK, nb*HW); dinp += dx
                float *di = dinp + (size_t)n0 * C * hw;
                if (nb == 1) {
                    st = dg_sgemm(0, 0, C, (int)L, (int)okk, 1.0f, weight,
                                  (int)okk, col, (int)L, 1.0f, di, (int)L);
                    if (st != DG_STATUS_OK) return st;
                } else {
                    st = dg_sgemm(0, 0, C, (int)L, (int)okk, 1.0f, weight,
                                  (int)okk, col, (int)L, 0.0f, xb, (int)L);
                    if (st != DG_STATUS_OK) return st;
                    rows_run(J_SCATTER_ADD, di, xb, NULL, nb, (size_t)C, hw);
                }
            }
        }
    }
    if (dbias != NULL) {
        // forward: out[n, oc, :, :] = bias[oc] + ...
        dbias_run(dbias, dout, NULL, DG_ACT_NONE, 0.0f, N, (size_t)OC, ohw);
    }
    return DG_STATUS_OK;
}
