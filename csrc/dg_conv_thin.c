/*
 * dg_conv_thin.c -- direct AVX-512 kernels for 4x4, stride-2, padding-1 layers
 * whose large map has ONE channel: a DCGAN critic's first layer (1 -> OC,
 * 28x28 -> 14x14) and a generator's last layer (C -> 1, 14x14 -> 28x28).
 *
 * Dimension letters: the large map is (N, 1, H, W), the small one (N, K, OH, OW)
 * with OH = H/2, OW = W/2 <= 16 (one 16-float vector per row); weight is (K, 1,
 * 4, 4) in both directions, (K, 16) in memory: conv2d's (OC = K, 1, 4, 4) and
 * conv_transpose2d's (C = K, 1, 4, 4) are the same array.
 *
 *   dg_thin_conv     small (+)= conv2d(large, weight) (+ bias)
 *                    conv2d forward (C = 1); conv_transpose2d's input gradient
 *                    (OC = 1), the conv2d of dout with the same weights
 *   dg_thin_convt    large (+)= conv_transpose2d(small, weight) (+ bias)
 *                    conv_transpose2d forward (OC = 1); conv2d's input gradient
 *                    (C = 1)
 *   dg_thin_dweight  weight gradient += sum over images and small-map pixels of
 *                    small * the large map's window: conv2d's (C = 1, small =
 *                    dout, and its bias gradient in the same pass) and
 *                    conv_transpose2d's (OC = 1, small = its input, large = dout)
 *
 * Why: through im2col + OpenBLAS these layers spend most of their time moving
 * data rather than multiplying (K = 16 or an output of one channel: gathering
 * the images into GEMM layout, OpenBLAS's packing, zeroing C), 20-27 GFLOP/s
 * on a 100+ GFLOP/s core (PERFORMANCE.md, log 46); here each pass reads its
 * inputs once and writes its output once, in NCHW.
 *
 * How: an output row of the small map is 16 lanes (OW used). Tap (kh, kw) of
 * small-map row oh reads large-map row 2*oh + kh - 1 at columns 2*ow + kw - 1;
 * each large row is split once into its even and odd columns, E and O, and the
 * four taps of a kernel row are then plain vectors: kw = 0 O shifted by one
 * lane (O[ow - 1]), kw = 1 E, kw = 2 O, kw = 3 E shifted the other way
 * (E[ow + 1]), zero outside the map (split_image). The transposed direction
 * writes a large row's even and odd columns as two such vectors from the small
 * rows around it (no padding read: rows outside the small map are skipped) and
 * interleaves them once at the end.
 *
 * A ReLU or LeakyReLU after the small map can be fused (dg_conv2d_act_*, for a
 * DCGAN critic's first layer): dg_thin_conv applies it as it stores, and
 * dg_thin_convt and dg_thin_dweight take dout through its gradient at the fused
 * output as they load it (dg_thin_dweight once per quad of channels into a
 * buffer, not once per kernel-row unit), the same values as the activation op's
 * backward into a zeroed buffer then the plain kernel.
 *
 * Numbers: FMA, one rounding per multiply-add, in a fixed order per output
 * (taps in order (kh, kw) for dg_thin_conv; input channels, then taps, in
 * chunks of DG_THIN_CC channels summed apart, then the chunks, for
 * dg_thin_convt; images, then rows, in 16 lanes summed at the end by a fixed
 * tree for dg_thin_dweight), each output computed by one task, so the bits do
 * not depend on the thread count; they differ from the GEMM path's in the last
 * places, as OpenBLAS's do from the reference GEMM.
 */
#include "distgan.h"
#include "dg_internal.h"

#include <string.h>

/* Floats per row of a split image: O shifted, E, O, E shifted (16 each). */
#define DG_THIN_ROW 64
/* FLOPs per task at least */
#define DG_THIN_GRAIN 2.0e6
/* What splitting a large map's pixel is counted as against that grain: it moves
 * data rather than multiplying (a batch of 64 28x28 images: 12.8 M, split over 2
 * threads) */
#define DG_THIN_SPLIT_FLOPS 256.0
/* Input channels per chunk of dg_thin_convt, each chunk summed apart (blocked
 * summation: a chain of 4 * K products per output would be ~2.5x less accurate) */
#define DG_THIN_CC 16

/* Most floats of a small map's plane whose gradient through a fused activation
 * dg_thin_dweight makes once per quad of channels (16 x 16: 4 KiB per quad, on
 * the stack) */
#define DG_THIN_GQ 256

/* Images split per round of dg_thin_dweight in the workspace the plans size. */
#define DG_THIN_ROUND 64

/* The geometry: a 4x4, stride-2, padding-1 window between (H, W) and (H/2, W/2),
 * W/2 <= 16, K a multiple of 4 (dg_thin_dweight takes channel quads). */
static int thin_shape(int K, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                      int OH, int OW) {
    if (KH != 4 || KW != 4 || SH != 2 || SW != 2 || PH != 1 || PW != 1) return 0;
    return K >= 4 && K % 4 == 0 && H >= 2 && W >= 4 && H % 2 == 0 && W % 2 == 0 &&
           OH == H / 2 && OW == W / 2 && OW <= 16;
}

/* Floats of one split image (dg_thin_conv: one per task; dg_thin_dweight: one per
 * image of a round, after its sums, sums_floats). */
static size_t split_floats(int H) { return (size_t)(H + 2) * DG_THIN_ROW; }

/* Floats of dg_thin_dweight's sums at the start of its workspace: the lane sums
 * (K * 16 taps * 16 lanes), then the bias gradient's K double sums. */
static size_t sums_floats(int K) { return (size_t)K * 256 + 2 * (size_t)K; }

size_t dg_thin_ws(int N, int K, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                  int OH, int OW) {
    if (!thin_shape(K, H, W, KH, KW, SH, SW, PH, PW, OH, OW)) return 0;
    size_t round = N < DG_THIN_ROUND ? (size_t)N : DG_THIN_ROUND;
    return sums_floats(K) + round * split_floats(H);
}

int dg_thin_fits(int K, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                 int OH, int OW, size_t ws_floats) {
#if DG_HAVE_AVX2
    /* room for one task at least (the kernels run as many as the workspace holds) */
    return dg_avx512() && thin_shape(K, H, W, KH, KW, SH, SW, PH, PW, OH, OW) &&
           sums_floats(K) + split_floats(H) <= ws_floats;
#else
    (void)K; (void)H; (void)W; (void)KH; (void)KW; (void)SH; (void)SW; (void)PH; (void)PW;
    (void)OH; (void)OW; (void)ws_floats;
    return 0;
#endif
}

#if DG_HAVE_AVX2
#include <immintrin.h>

#define DG_INLINE_AVX512 __attribute__((always_inline, target("avx512f"))) static inline

typedef struct {
    float *small, *large, *ws, *dweight;
    float *acc;     /* dg_thin_dweight's lane sums, K * 256 floats */
    const float *csmall, *clarge, *weight, *bias;
    int add, N, K, H, W, OH, OW;
    size_t split;   /* floats of one split image */
    int n0, nb;     /* dg_thin_dweight: the images of this round (split in ws) */
    /* an activation fused after the small map: dg_thin_conv applies it to its
     * output; dg_thin_convt and dg_thin_dweight take csmall as the gradient of
     * its output and cy, its output, for its gradient (act DG_ACT_NONE: none) */
    const float *cy;
    int act;
    float slope;
    /* dg_thin_dweight: the bias gradient it sums as well (or NULL), in K double
     * sums kept in its workspace after the lane sums (2K floats, unaligned) */
    float *dbias, *bsums;
} thin_job;


/* dg_act_value and dg_act_grad (dg_internal.h) on 16 lanes, s the slope in every
 * lane: the same compares, so the same values. */
DG_INLINE_AVX512 __m512 act16(__m512 v, int act, __m512 s) {
    __m512 z = _mm512_setzero_ps();
    if (act == DG_ACT_RELU)
        return _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, z, _CMP_LT_OQ), z);
    if (act == DG_ACT_LEAKY_RELU)
        return _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, z, _CMP_NGT_UQ), v, s);
    return v;
}

DG_INLINE_AVX512 __m512 act_grad16(__m512 dy, __m512 y, int act, __m512 s) {
    __m512 z = _mm512_setzero_ps();
    if (act == DG_ACT_RELU)
        return _mm512_mask_mov_ps(dy, _mm512_cmp_ps_mask(y, z, _CMP_LE_OQ), z);
    if (act == DG_ACT_LEAKY_RELU)
        return _mm512_mask_mul_ps(dy, _mm512_cmp_ps_mask(y, z, _CMP_NGT_UQ), dy, s);
    return dy;
}

/* sb ((H + 2) rows of DG_THIN_ROW floats) from the image x (H, W): row r holds
 * large row r - 1 (rows 0 and H + 1: the zero padding) as the four tap vectors
 * of its kernel row, lanes OW and beyond zero. */
DG_AVX512 static void split_image(float *sb, const float *x, int H, int W) {
    int OW = W / 2;
    __mmask16 mlo = dg_lanes(W), mhi = dg_lanes(W - 16), mow = dg_lanes(OW);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                           26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25,
                                          27, 29, 31);
    const __m512i down = _mm512_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                                           14);
    const __m512i up = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                         15);
    __m512 z = _mm512_setzero_ps();
    for (int k = 0; k < 4; k++) {
        _mm512_storeu_ps(sb + k * 16, z);
        _mm512_storeu_ps(sb + (size_t)(H + 1) * DG_THIN_ROW + k * 16, z);
    }
    for (int r = 0; r < H; r++) {
        const float *xr = x + (size_t)r * W;
        __m512 lo = _mm512_maskz_loadu_ps(mlo, xr);
        __m512 hi = _mm512_maskz_loadu_ps(mhi, xr + 16);
        __m512 e = _mm512_permutex2var_ps(lo, even, hi);   /* x[2j], zero past W */
        __m512 o = _mm512_permutex2var_ps(lo, odd, hi);    /* x[2j + 1] */
        float *d = sb + (size_t)(r + 1) * DG_THIN_ROW;
        /* kw = 0: column 2*ow - 1, O[ow - 1] (zero at ow = 0) */
        _mm512_storeu_ps(d, _mm512_maskz_permutexvar_ps(mow & 0xFFFE, down, o));
        _mm512_storeu_ps(d + 16, e);                                  /* kw = 1 */
        _mm512_storeu_ps(d + 32, o);                                  /* kw = 2 */
        /* kw = 3: column 2*ow + 2, E[ow + 1] (zero at ow = OW - 1) */
        _mm512_storeu_ps(d + 48, _mm512_maskz_permutexvar_ps(mow >> 1, up, e));
    }
}

/* small rows oh of channels k0 .. k0 + KB - 1 of one image (+)= their taps:
 * v[t] the 16 tap vectors of row oh, w the channels' (KB, 16) weights; then
 * the fused activation act (slope sv) of each sum. */
#define THIN_CONV_BLOCK(KB)                                                              \
    DG_INLINE_AVX512 void thin_conv_block_##KB(float *so, size_t plane, __mmask16 mow,   \
                                               const __m512 v[16], const float *w,       \
                                               const float *bias, int add, int act,      \
                                               __m512 sv) {                              \
        __m512 a[KB];                                                                    \
        _Pragma("GCC unroll 8") for (int i = 0; i < KB; i++) {                           \
            a[i] = add ? _mm512_maskz_loadu_ps(mow, so + (size_t)i * plane)              \
                       : bias != NULL ? _mm512_set1_ps(bias[i]) : _mm512_setzero_ps();   \
        }                                                                                \
        _Pragma("GCC unroll 16") for (int t = 0; t < 16; t++) {                          \
            _Pragma("GCC unroll 8") for (int i = 0; i < KB; i++) {                       \
                a[i] = _mm512_fmadd_ps(v[t], _mm512_set1_ps(w[i * 16 + t]), a[i]);       \
            }                                                                            \
        }                                                                                \
        _Pragma("GCC unroll 8") for (int i = 0; i < KB; i++) {                           \
            _mm512_mask_storeu_ps(so + (size_t)i * plane, mow, act16(a[i], act, sv));    \
        }                                                                                \
    }
THIN_CONV_BLOCK(8)
THIN_CONV_BLOCK(2)

/* dg_thin_conv of images [lo, hi), with the task's split image sb. */
DG_AVX512 static void thin_conv_images(const thin_job *j, size_t lo, size_t hi, float *sb) {
    int K = j->K, H = j->H, W = j->W, OH = j->OH, OW = j->OW;
    size_t plane = (size_t)OH * OW;
    __mmask16 mow = dg_lanes(OW);
    __m512 sv = _mm512_set1_ps(j->slope);
    for (size_t n = lo; n < hi; n++) {
        split_image(sb, j->clarge + n * (size_t)H * W, H, W);
        float *sn = j->small + n * (size_t)K * plane;
        for (int oh = 0; oh < OH; oh++) {
            __m512 v[16];
            _Pragma("GCC unroll 16") for (int t = 0; t < 16; t++) {
                v[t] = _mm512_loadu_ps(sb + (size_t)(2 * oh + t / 4) * DG_THIN_ROW +
                                       (t % 4) * 16);
            }
            int k = 0;
            for (; k + 8 <= K; k += 8) {
                thin_conv_block_8(sn + (size_t)k * plane + (size_t)oh * OW, plane, mow, v,
                                  j->weight + (size_t)k * 16,
                                  j->bias != NULL ? j->bias + k : NULL, j->add, j->act, sv);
            }
            for (; k < K; k += 2) {   /* K is even */
                thin_conv_block_2(sn + (size_t)k * plane + (size_t)oh * OW, plane, mow, v,
                                  j->weight + (size_t)k * 16,
                                  j->bias != NULL ? j->bias + k : NULL, j->add, j->act, sv);
            }
        }
    }
}

static void thin_conv_task(void *ctx, int t, int nt) {
    const thin_job *j = (const thin_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->N, 1, t, nt, &lo, &hi);
    if (lo < hi) thin_conv_images(j, lo, hi, j->ws + (size_t)t * j->split);
}

/* The three shifts of small row r (mow: its OW lanes): s[j - 1], s[j], s[j + 1],
 * zero outside the row. */
DG_INLINE_AVX512 void thin_row3(__m512 s[3], const float *row, __mmask16 mow) {
    s[0] = _mm512_maskz_loadu_ps(mow & 0xFFFE, row - 1);
    s[1] = _mm512_maskz_loadu_ps(mow, row);
    s[2] = _mm512_maskz_loadu_ps(mow >> 1, row + 1);
}

/* thin_row3 of the gradient of a fused activation's input: the row of dout
 * `row`, through the activation's gradient at its output `yrow`. */
DG_INLINE_AVX512 void thin_row3_act(__m512 s[3], const float *row, const float *yrow,
                                    __mmask16 mow, int act, __m512 sv) {
    __m512 y[3];
    thin_row3(s, row, mow);
    thin_row3(y, yrow, mow);
    _Pragma("GCC unroll 3") for (int i = 0; i < 3; i++) s[i] = act_grad16(s[i], y[i], act, sv);
}

/* Large rows 2*a0 .. 2*a0 + 2*P - 1 of one image, as their even (e) and odd (o)
 * columns, summed over the K channels of the small image si: large row y = 2a
 * takes kernel rows 1 (small row a) and 3 (a - 1), y = 2a + 1 rows 0 (a + 1) and
 * 2 (a); even column 2j takes kernel columns 1 (s[j]) and 3 (s[j - 1]), odd
 * column 2j + 1 columns 0 (s[j + 1]) and 2 (s[j]). Small rows outside [0, OH)
 * are skipped. Channels go in chunks of DG_THIN_CC, each summed apart, then
 * added to the total in order. Each output's FMAs come in the same order
 * whatever P, so blocks of 4 small rows (thin_convt_images, where they fit) give
 * the bits of blocks of 2: their 16 chains took a batch of 64 images' forward
 * from 678-682 to 615-628 us on Emerald Rapids (one image's, 9 us, unchanged).
 * The weights are broadcast at each FMA (from memory, where registers run out)
 * rather than held in 16 registers, which P = 4 does not leave. */
#define THIN_CONVT_ROWS(P)                                                               \
    DG_INLINE_AVX512 void thin_convt_rows_##P(__m512 e[2 * P], __m512 o[2 * P],          \
                                              const float *si, const float *yi,          \
                                              const float *w, int K, int OH, int OW,     \
                                              int a0, int act, __m512 sv) {              \
        size_t plane = (size_t)OH * OW;                                                  \
        __mmask16 mow = dg_lanes(OW);                                                       \
        _Pragma("GCC unroll 8") for (int y = 0; y < 2 * P; y++) {                        \
            e[y] = _mm512_setzero_ps();                                                  \
            o[y] = _mm512_setzero_ps();                                                  \
        }                                                                                \
        for (int c0 = 0; c0 < K; c0 += DG_THIN_CC) {                                     \
            int c1 = K - c0 < DG_THIN_CC ? K : c0 + DG_THIN_CC;                          \
            __m512 pe[2 * P], po[2 * P];   /* this chunk's sums */                       \
            _Pragma("GCC unroll 8") for (int y = 0; y < 2 * P; y++) {                    \
                pe[y] = _mm512_setzero_ps();                                             \
                po[y] = _mm512_setzero_ps();                                             \
            }                                                                            \
            for (int c = c0; c < c1; c++) {                                              \
                const float *sc = si + (size_t)c * plane;                                \
                const float *wc = w + (size_t)c * 16;                                    \
                /* small rows a0 - 1 .. a0 + P; row r feeds large rows 2r - 1 (kernel \
                 * row 0), 2r (1), 2r + 1 (2), 2r + 2 (3) */                             \
                _Pragma("GCC unroll 6") for (int q = 0; q < P + 2; q++) {                \
                    int r = a0 - 1 + q;                                                  \
                    if (r < 0 || r >= OH) continue;                                      \
                    __m512 s[3];                                                         \
                    if (yi != NULL)                                                      \
                        thin_row3_act(s, sc + (size_t)r * OW,                            \
                                      yi + (size_t)c * plane + (size_t)r * OW, mow, act, \
                                      sv);                                               \
                    else                                                                 \
                        thin_row3(s, sc + (size_t)r * OW, mow);                          \
                    _Pragma("GCC unroll 4") for (int kh = 0; kh < 4; kh++) {             \
                        int y = 2 * (q - 1) + kh - 1;   /* 2r + kh - 1 - 2*a0 */         \
                        if (y < 0 || y >= 2 * P) continue;                               \
                        pe[y] = _mm512_fmadd_ps(_mm512_set1_ps(wc[kh * 4 + 1]), s[1],    \
                                                pe[y]);                                  \
                        pe[y] = _mm512_fmadd_ps(_mm512_set1_ps(wc[kh * 4 + 3]), s[0],    \
                                                pe[y]);                                  \
                        po[y] = _mm512_fmadd_ps(_mm512_set1_ps(wc[kh * 4 + 0]), s[2],    \
                                                po[y]);                                  \
                        po[y] = _mm512_fmadd_ps(_mm512_set1_ps(wc[kh * 4 + 2]), s[1],    \
                                                po[y]);                                  \
                    }                                                                    \
                }                                                                        \
            }                                                                            \
            _Pragma("GCC unroll 8") for (int y = 0; y < 2 * P; y++) {                    \
                e[y] = _mm512_add_ps(e[y], pe[y]);                                       \
                o[y] = _mm512_add_ps(o[y], po[y]);                                       \
            }                                                                            \
        }                                                                                \
    }
THIN_CONVT_ROWS(4)
THIN_CONVT_ROWS(2)
THIN_CONVT_ROWS(1)

/* large row y (W floats) (+)= its even and odd columns e, o interleaved. */
DG_INLINE_AVX512 void thin_store_row(float *row, __m512 e, __m512 o, int W, int add,
                                     const float *bias) {
    const __m512i ilo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22,
                                          7, 23);
    const __m512i ihi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14,
                                          30, 15, 31);
    __mmask16 mlo = dg_lanes(W), mhi = dg_lanes(W - 16);
    __m512 lo = _mm512_permutex2var_ps(e, ilo, o), hi = _mm512_permutex2var_ps(e, ihi, o);
    if (add) {
        lo = _mm512_add_ps(_mm512_maskz_loadu_ps(mlo, row), lo);
        hi = _mm512_add_ps(_mm512_maskz_loadu_ps(mhi, row + 16), hi);
    } else if (bias != NULL) {
        lo = _mm512_add_ps(lo, _mm512_set1_ps(bias[0]));
        hi = _mm512_add_ps(hi, _mm512_set1_ps(bias[0]));
    }
    _mm512_mask_storeu_ps(row, mlo, lo);
    _mm512_mask_storeu_ps(row + 16, mhi, hi);
}

/* dg_thin_convt of images [lo, hi). */
DG_AVX512 static void thin_convt_images(const thin_job *j, size_t lo, size_t hi) {
    int K = j->K, H = j->H, W = j->W, OH = j->OH, OW = j->OW;
    __m512 sv = _mm512_set1_ps(j->slope);
    for (size_t n = lo; n < hi; n++) {
        const float *si = j->csmall + n * (size_t)K * OH * OW;
        const float *yi = j->cy != NULL ? j->cy + n * (size_t)K * OH * OW : NULL;
        float *ln = j->large + n * (size_t)H * W;
        int a0 = 0;
        for (; a0 + 4 <= OH; a0 += 4) {
            __m512 e[8], o[8];
            thin_convt_rows_4(e, o, si, yi, j->weight, K, OH, OW, a0, j->act, sv);
            for (int y = 0; y < 8; y++)
                thin_store_row(ln + (size_t)(2 * a0 + y) * W, e[y], o[y], W, j->add, j->bias);
        }
        for (; a0 + 2 <= OH; a0 += 2) {
            __m512 e[4], o[4];
            thin_convt_rows_2(e, o, si, yi, j->weight, K, OH, OW, a0, j->act, sv);
            for (int y = 0; y < 4; y++)
                thin_store_row(ln + (size_t)(2 * a0 + y) * W, e[y], o[y], W, j->add, j->bias);
        }
        if (a0 < OH) {
            __m512 e[2], o[2];
            thin_convt_rows_1(e, o, si, yi, j->weight, K, OH, OW, a0, j->act, sv);
            for (int y = 0; y < 2; y++)
                thin_store_row(ln + (size_t)(2 * a0 + y) * W, e[y], o[y], W, j->add, j->bias);
        }
    }
}

static void thin_convt_task(void *ctx, int t, int nt) {
    const thin_job *j = (const thin_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->N, 1, t, nt, &lo, &hi);
    if (lo < hi) thin_convt_images(j, lo, hi);
}

/* dg_thin_dweight's split images n0 .. n0 + nb - 1, one after the other in ws. */
static void thin_split_task(void *ctx, int t, int nt) {
    const thin_job *j = (const thin_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->nb, 1, t, nt, &lo, &hi);
    for (size_t i = lo; i < hi; i++)
        split_image(j->ws + i * j->split, j->clarge + (j->n0 + i) * (size_t)j->H * j->W, j->H,
                    j->W);
}

/* One image's sum of a plane of g (the small map's gradient, through act's
 * gradient at y when y is not NULL), as dg_conv2d_backward's bias pass sums it
 * (bias_backward in dg_conv.c, so the same bits): 16 double chains, position p
 * in chain p % 16, added pairwise (chain i + 8, then + 4, + 2, + 1). */
DG_INLINE_AVX512 double plane_sum(const float *g, const float *y, int act, __m512 sv,
                                  size_t plane) {
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    for (size_t p = 0; p < plane; p += 16) {
        __mmask16 m = dg_lanes((int)(plane - p < 16 ? plane - p : 16));
        __m512 v = _mm512_maskz_loadu_ps(m, g + p);
        if (y != NULL) v = act_grad16(v, _mm512_maskz_loadu_ps(m, y + p), act, sv);
        /* lanes past the plane add +0.0, which leaves a chain as it is (a chain
         * that starts at +0.0 is never -0.0) */
        __m256 v8 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        hi = _mm512_add_pd(hi, _mm512_cvtps_pd(v8));   /* lanes 8 .. 15 */
    }
    __m512d a8 = _mm512_add_pd(lo, hi);
    __m256d a4 = _mm256_add_pd(_mm512_castpd512_pd256(a8), _mm512_extractf64x4_pd(a8, 1));
    __m128d a2 = _mm_add_pd(_mm256_castpd256_pd128(a4), _mm256_extractf128_pd(a4, 1));
    return _mm_cvtsd_f64(_mm_add_sd(a2, _mm_unpackhi_pd(a2, a2)));
}

/* The bias gradient's sums of channels k .. k + 3 += image n's (g: the quad's
 * four planes, through act's gradient at y when y is not NULL); the first image
 * starts them at 0. */
DG_INLINE_AVX512 void bias_quad(char *sums, int first, const float *g, const float *y,
                                int act, __m512 sv, size_t plane) {
    for (int c = 0; c < 4; c++) {
        double s = 0.0;
        if (!first) memcpy(&s, sums + c * sizeof s, sizeof s);
        s += plane_sum(g + c * plane, y != NULL ? y + c * plane : NULL, act, sv, plane);
        memcpy(sums + c * sizeof s, &s, sizeof s);
    }
}

/* Units [lo, hi) of the weight gradient (unit u: channels 4*(u/4) .. + 3, kernel
 * row u%4; 16 lane sums, in acc + u*256) over the round's images, one after the
 * other; after the last image, dweight += each lane sum's total. */
DG_AVX512 static void thin_dw_units(const thin_job *j, size_t lo, size_t hi) {
    int K = j->K, OH = j->OH, OW = j->OW;
    size_t plane = (size_t)OH * OW;
    __mmask16 mow = dg_lanes(OW);
    __m512 sv = _mm512_set1_ps(j->slope);
    /* with a fused activation, a quad's rows of dout through its gradient, made once
     * for the quad's four units (planes of at most DG_THIN_GQ floats; larger ones
     * take each row through it in every unit) */
    float gq[4 * DG_THIN_GQ];
    int own = j->cy != NULL && plane <= DG_THIN_GQ;
    for (int i = 0; i < j->nb; i++) {
        int n = j->n0 + i;
        const float *sb = j->ws + (size_t)i * j->split;
        const float *sn = j->csmall + (size_t)n * K * plane;
        const float *yn = j->cy != NULL ? j->cy + (size_t)n * K * plane : NULL;
        for (size_t u = lo; u < hi; u++) {
            int k = (int)(u / 4) * 4, kh = (int)(u % 4);
            float *acc = j->acc + u * 256;
            __m512 a[4][4];
            _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
                _Pragma("GCC unroll 4") for (int t = 0; t < 4; t++) {
                    a[c][t] = n == 0 ? _mm512_setzero_ps()
                                     : _mm512_loadu_ps(acc + (c * 4 + t) * 16);
                }
            }
            const float *dk = sn + (size_t)k * plane;
            /* the next quad's rows (4 * plane floats after dk, the next image's
             * first after the last; a prefetch never faults) on their way to L1
             * while this quad's first unit runs: 4 lines per row of the loop */
            const float *yk = yn != NULL ? yn + (size_t)k * plane : NULL;
            const char *next = (const char *)(dk + 4 * plane);
            const char *ynext = yk != NULL ? (const char *)(yk + 4 * plane) : NULL;
            size_t quad_bytes = 4 * plane * sizeof(float);
            if (own && (u == lo || kh == 0)) {
                for (size_t q = 0; q < 4 * plane; q += 16) {
                    __mmask16 m = dg_lanes((int)(4 * plane - q));
                    _mm512_mask_storeu_ps(gq + q, m,
                                          act_grad16(_mm512_maskz_loadu_ps(m, dk + q),
                                                     _mm512_maskz_loadu_ps(m, yk + q), j->act,
                                                     sv));
                }
            }
            const float *src = own ? gq : dk;   /* the quad's rows of g */
            if (j->dbias != NULL && kh == 0)
                bias_quad((char *)j->bsums + (size_t)k * sizeof(double), n == 0, src,
                          own ? NULL : yk, j->act, sv, plane);
            for (int oh = 0; oh < OH; oh++) {
                for (size_t b = (size_t)oh * 256;
                     kh == 0 && b < quad_bytes && b < (size_t)(oh + 1) * 256; b += 64) {
                    _mm_prefetch(next + b, _MM_HINT_T0);
                    if (yk != NULL) _mm_prefetch(ynext + b, _MM_HINT_T0);
                }
                const float *vr = sb + (size_t)(2 * oh + kh) * DG_THIN_ROW;
                __m512 v[4];
                _Pragma("GCC unroll 4") for (int t = 0; t < 4; t++) v[t] =
                    _mm512_loadu_ps(vr + t * 16);
                _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
                    size_t at = (size_t)c * plane + (size_t)oh * OW;
                    __m512 d = _mm512_maskz_loadu_ps(mow, src + at);
                    if (yk != NULL && !own)
                        d = act_grad16(d, _mm512_maskz_loadu_ps(mow, yk + at), j->act, sv);
                    _Pragma("GCC unroll 4") for (int t = 0; t < 4; t++) a[c][t] =
                        _mm512_fmadd_ps(d, v[t], a[c][t]);
                }
            }
            _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
                _Pragma("GCC unroll 4") for (int t = 0; t < 4; t++) {
                    _mm512_storeu_ps(acc + (c * 4 + t) * 16, a[c][t]);
                }
            }
        }
    }
    if (j->n0 + j->nb < j->N) return;
    for (size_t u = lo; u < hi; u++) {
        int k = (int)(u / 4) * 4, kh = (int)(u % 4);
        const float *acc = j->acc + u * 256;
        for (int c = 0; c < 4; c++) {
            float *dw = j->dweight + (size_t)(k + c) * 16 + 4 * kh;
            for (int t = 0; t < 4; t++)
                dw[t] += _mm512_reduce_add_ps(_mm512_loadu_ps(acc + (c * 4 + t) * 16));
        }
        if (j->dbias != NULL && kh == 0) {
            for (int c = 0; c < 4; c++) {
                double b;
                memcpy(&b, (const char *)j->bsums + (size_t)(k + c) * sizeof b, sizeof b);
                j->dbias[k + c] = (float)(j->dbias[k + c] + b);
            }
        }
    }
}

static void thin_dw_task(void *ctx, int t, int nt) {
    const thin_job *j = (const thin_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->K, 1, t, nt, &lo, &hi);   /* K units: K/4 quads x 4 rows */
    if (lo < hi) thin_dw_units(j, lo, hi);
}

/* Tasks for a pass of the given FLOPs over `items` (images or units), each with
 * a split image of `split` floats out of `room` floats of workspace. */
static int thin_tasks(double flops, size_t items, size_t split, size_t room) {
    int nt = dg_threads_for(flops, DG_THIN_GRAIN);
    if ((size_t)nt > items) nt = (int)items;
    if (split > 0 && (size_t)nt > room / split) nt = (int)(room / split);
    return nt < 1 ? 1 : nt;
}
#endif

dg_status dg_thin_conv(float *small, int add, float *ws, size_t ws_floats,
                       const float *large, const float *weight, const float *bias, int N,
                       int K, int H, int W, int act, float slope) {
#if DG_HAVE_AVX2
    size_t split = split_floats(H);
    if (split > ws_floats) return DG_STATUS_ERR_SHAPE;
    thin_job j = {small, NULL, ws, NULL, NULL, NULL, large, weight, add ? NULL : bias, add, N,
                  K, H, W, H / 2, W / 2, split, 0, N, NULL, add ? DG_ACT_NONE : act, slope, NULL,
                  NULL};
    dg_parallel(thin_conv_task, &j,
                thin_tasks(32.0 * N * K * (H / 2) * (W / 2), (size_t)N, split, ws_floats));
    return DG_STATUS_OK;
#else
    (void)small; (void)add; (void)ws; (void)ws_floats; (void)large; (void)weight;
    (void)bias; (void)N; (void)K; (void)H; (void)W; (void)act; (void)slope;
    return DG_STATUS_ERR_VALUE;
#endif
}

dg_status dg_thin_convt(float *large, int add, const float *small, const float *y, int act,
                        float slope, const float *weight, const float *bias, int N, int K,
                        int H, int W) {
#if DG_HAVE_AVX2
    thin_job j = {NULL, large, NULL, NULL, NULL, small, NULL, weight, add ? NULL : bias, add,
                  N, K, H, W, H / 2, W / 2, 0, 0, N, act != DG_ACT_NONE ? y : NULL, act, slope,
                  NULL, NULL};
    dg_parallel(thin_convt_task, &j,
                thin_tasks(32.0 * N * K * (H / 2) * (W / 2), (size_t)N, 0, 0));
    return DG_STATUS_OK;
#else
    (void)large; (void)add; (void)small; (void)y; (void)act; (void)slope; (void)weight;
    (void)bias; (void)N; (void)K; (void)H; (void)W;
    return DG_STATUS_ERR_VALUE;
#endif
}

dg_status dg_thin_dweight(float *dweight, float *dbias, float *ws, size_t ws_floats,
                          const float *small, const float *y, int act, float slope,
                          const float *large, int N, int K, int H, int W) {
#if DG_HAVE_AVX2
    size_t split = split_floats(H), sums = sums_floats(K);
    if (sums + split > ws_floats) return DG_STATUS_ERR_SHAPE;
    /* the lane sums and the bias's first, then as many split images as the rest
     * holds: each round splits its images, then runs the units over them */
    size_t room = (ws_floats - sums) / split;
    int chunk = room < (size_t)N ? (int)room : N;
    thin_job j = {NULL, NULL, ws + sums, dweight, ws, small, large, NULL, NULL, 0, N, K, H, W,
                  H / 2, W / 2, split, 0, 0, act != DG_ACT_NONE ? y : NULL, act, slope,
                  dbias, ws + (size_t)K * 256};
    for (int n0 = 0; n0 < N; n0 += chunk) {
        j.n0 = n0;
        j.nb = N - n0 < chunk ? N - n0 : chunk;
        /* one task per thread at most in both: splitting is a uniform pass, and
         * every unit's task reads all the round's split images (at 8 tasks to 2
         * threads, a 1 -> 64 critic layer's weight gradient read its 490 KB four
         * times as often, and took 1.00-1.29 ms instead of 0.93-0.98 at batch 64;
         * PERFORMANCE.md, log 91) */
        int most = dg_threads_get();
        int ns = thin_tasks(DG_THIN_SPLIT_FLOPS * j.nb * H * W, (size_t)j.nb, 0, 0);
        int nu = thin_tasks(32.0 * j.nb * K * (H / 2) * (W / 2), (size_t)K, 0, 0);
        dg_parallel(thin_split_task, &j, ns < most ? ns : most);
        dg_parallel(thin_dw_task, &j, nu < most ? nu : most);
    }
    return DG_STATUS_OK;
#else
    (void)dweight; (void)dbias; (void)ws; (void)ws_floats; (void)small; (void)y; (void)act;
    (void)slope; (void)large; (void)N; (void)K; (void)H; (void)W;
    return DG_STATUS_ERR_VALUE;
#endif
}
