/*
 * dg_conv_direct.c -- direct AVX-512 kernels for 4x4, stride-2, padding-1
 * convolutions onto small maps (DCGAN's 14x14 -> 7x7), without im2col:
 *
 *   dg_direct_conv          out (N, OC, H/2, W/2) = conv2d(inp (N, C, H, W),
 *                                                          weight (OC, C, 4, 4))
 *   dg_direct_conv_dweight  dweight (OC, C, 4, 4) += its weight gradient
 *   dg_direct_convt         out (N, OC, 2H, 2W) = conv_transpose2d(inp (N, C, H, W),
 *                                                          weight (C, OC, 4, 4))
 *
 * dg_direct_conv either assigns (plus bias[oc] when bias != NULL) or adds to out
 * (add = 1: an input gradient, which accumulates). dg_conv.c uses it for a conv2d
 * forward that keeps no im2col matrix, and for the input gradient of the
 * transposed convolution (7x7 -> 14x14), which is the conv2d of dout with the
 * same weights; and dg_direct_conv_dweight for a conv2d weight gradient with no
 * kept matrix and for the transposed convolution's. Where both apply
 * (dg_conv2d_direct), nn.Conv2d keeps none in training. The weight-gradient kernel is described above dw_units.
 * dg_direct_convt (assigning plus bias, or adding) runs the transposed
 * convolution's forward (7x7 -> 14x14) and conv2d's input gradient, which is the
 * transposed convolution of dout with the same weights; it is described above
 * convt_row_1. dg_direct_convt_few runs the same two for fewer images than the
 * others take (sampling one), without packing the whole weights; it is described
 * above FEW_PATCH_ROW. dg_direct_convt_few_head runs its forward for one image
 * while making its input, chunk of channels by chunk, from the linear layer,
 * batch norm and activation before it (a generator's head, sampling one image
 * on one thread; dg_linear_bn_convt_forward).
 *
 * Why: on an AVX-512 CPU, im2col + OpenBLAS spends ~40 % of such a layer outside
 * the GEMM kernel (writing the col matrix, packing it, col2im, zeroing C for
 * beta = 0; PERFORMANCE.md, logs 35 and 36). Here the weights are packed once per
 * call (by each task, when they are at most DG_DIRECT_PART_BYTES: direct_run)
 * into one panel per block of 32 output channels, (C*16, 32) (row c*16 +
 * kh*4 + kw: that tap's 32 weights), and each output row of at most
 * DG_DIRECT_MAXW pixels is computed for the block in registers: per input
 * channel and tap, two 16-float weight vectors times each pixel's input value,
 * broadcast (one FMA per pixel and vector). Input channels go in chunks of
 * DG_DIRECT_CC, so that the chunk's weights (16 KiB) stay in L1 over every row of
 * DG_DIRECT_GROUP images (the generator's input gradient packs 2 MB of weights,
 * which were otherwise read from beyond L2 once per image); a row's partial sums
 * wait in a small buffer between chunks. Each
 * image reads a zero-padded copy of itself (no bounds tests in the loops), and
 * the products with its zero border are left out: with a 4x4 window at stride 2,
 * the first kernel row of the top output row, the last of the bottom one, and
 * the same columns at the left and right, 13.8 % of a 14x14 -> 7x7 layer's
 * products (5-9 % faster, PERFORMANCE.md log 38).
 *
 * Numbers: FMA (one rounding per multiply-add), summed over input channels, then
 * kernel rows, then kernel columns, in increasing order (the transposed kernel:
 * each chunk of channels summed apart, then the chunks), so the result differs
 * from the GEMM path's in the last bits (as OpenBLAS's does from the reference
 * GEMM) and is the same at any thread count: each image is computed by one task
 * in the same way, whichever task claims it.
 *
 * dg_direct_fits says when it applies: an AVX-512F CPU with the SIMD paths on
 * (dg_set_simd), the geometry above with an output row of at most 8 pixels, OC a
 * multiple of 32, at least DG_DIRECT_MIN_C input channels and DG_DIRECT_MIN_N
 * images (packing the weights costs about as much as a few images), and room in
 * the op's workspace for the panels and each task's padded image and row buffer;
 * dg_direct_t_fits the same for the transposed kernel, with rows of at most 8
 * input pixels and OC a multiple of 16. The transposed convolution's weight
 * gradient is dg_direct_conv_dweight's too (dg_conv.c calls it with dout and inp
 * trading places), since its sums stay in registers over all images
 * (PERFORMANCE.md, log 62; with a sums buffer it was no faster than the GEMM
 * path, logs 37 and 47).
 */
#include "distgan.h"
#include "dg_internal.h"

#include <stdatomic.h>
#include <string.h>

/* Output channels per block (two 16-float vectors). */
#define DG_DIRECT_OCB 32
/* Input channels per chunk: 8 x 16 taps x 32 channels x 4 bytes = 16 KiB. */
#define DG_DIRECT_CC 8
/* Images that share each weight chunk while it is in L1 (dg_direct_conv). */
#define DG_DIRECT_GROUP 2
/* Pixels of an output row held in registers: 8 x 2 accumulators. */
#define DG_DIRECT_MAXW 8
#define DG_DIRECT_MIN_C 8
#define DG_DIRECT_MIN_N 8
/* The transposed kernel: output channels per block (one vector), input
 * channels per chunk (16 x 16 taps x 16 channels x 4 bytes = 16 KiB). */
#define DG_DIRECT_T_OCB 16
#define DG_DIRECT_T_CC 16
/* FLOPs per task at least */
#define DG_DIRECT_GRAIN 4.0e6
/* Packed weights a task of the transposed kernel keeps in its L2 over all its
 * images: the output-channel blocks go in parts of at most this many bytes (one
 * block at least), each part over every image of the task in turn (the
 * generator's 2 MB of panels were otherwise read from beyond L2 once per image:
 * 1.01-1.10x on its forward; the same in dg_direct_conv at 1 thread, whose images
 * then pad twice, gave 0.91-1.02x). At 2 threads or more both kernels share the
 * parts out among the tasks (part_task, convt_part_task). */
#define DG_DIRECT_PART_BYTES ((size_t)1 << 20)
/* Parts at most for the tasks to share out at 2 threads or more (part_task,
 * convt_part_task); with more, all tasks take the parts in order, as at 1. */
#define DG_DIRECT_MAX_PARTS 8
/* The transposed kernel of few images: output channels per block (four
 * vectors of 16 taps), input pixels per row at most (4 x 7 accumulators). */
#define DG_FEW_OCB 4
#define DG_FEW_MAXW 7
/* Input channels per chunk of the few-image kernel: 64 x 4 x 16 x 4 bytes =
 * 16 KiB of a block's weights, in L1 over the block's input rows. */
#define DG_FEW_CC 64
_Static_assert(DG_FEW_CC <= 64, "a pixel's channels of a chunk are bits of a uint64_t");
/* Pieces in which dg_direct_convt_few_head makes the next chunk's input (the
 * linear layer's rows, batch norm and activation) while a chunk computes. Made
 * after every block instead (32 pieces per chunk of DCGAN's 256 -> 128), the
 * calls' own costs took ~3 % of a one-image teacher sample on Emerald Rapids
 * (PERFORMANCE.md, log 99). */
#define DG_FEW_HEAD_PIECES 4
/* The few-image kernel sums only the nonzero inputs (few_lists,
 * convt_sparse_row_*) when at most this share of a call's inputs is nonzero and
 * the block's weights of the chunk are finite; few_sparse_max < 0: the CPU's
 * share (few_share), else what dg_few_sparse_share set (tests). At half, as after
 * a ReLU, the sparse rows took 0.85-0.95 of the dense rows' time on Emerald
 * Rapids (at 0.6 as long; PERFORMANCE.md, log 68), but 1.04-1.15x on Ice Lake,
 * in whole samples of one image (log 72): they load 1.25 vectors per FMA, which
 * the Golden Cove cores of Sapphire and Emerald Rapids sustain and Ice Lake's
 * Sunny Cove does not (1.2 cycles per FMA with every operand in L1). On Zen 4,
 * whose one 512-bit FMA per cycle leaves the dense rows FMA-bound, a whole sample
 * took 0.83 of the dense rows' time (log 102). dg_few_sparse_cpu names the CPUs. */
#define DG_FEW_SPARSE 0.55
static double few_sparse_max = -1.0;

static double few_share(void) {
    if (few_sparse_max >= 0.0) return few_sparse_max;
    return dg_few_sparse_cpu() ? DG_FEW_SPARSE : 0.0;
}

/* Whether the sparse rows broadcast their values from registers (1) or each from
 * memory (0): dg_few_sparse_values' setting, else the CPU's. On Zen 4, whose
 * one 512-bit load per cycle bounds the rows, a one-image teacher sample took
 * 0.97 of the time from registers (PERFORMANCE.md, log 103); Golden Cove loads
 * two vectors per cycle but shuffles on a port of its FMAs, and was not
 * measured, so Intel CPUs keep the loads. */
static int few_values_reg = -1;

static int few_reg(void) { return few_values_reg >= 0 ? few_values_reg : dg_cpu_amd(); }

int dg_few_sparse_values(int reg) {
    int before = few_reg();
    few_values_reg = reg == 0 || reg == 1 ? reg : -1;
    return before;
}

/* A call of either image kernel (dg_direct_conv, dg_direct_convt): the packed
 * weights first in ws (`copies` copies of wp_floats: one that all tasks read, or
 * one per task, which that task packs), then each task's `group` image slots of
 * task_floats floats. */
typedef struct {
    int add;
    float *out, *ws;
    const float *inp, *weight, *bias;
    int N, C, H, W, OC, OH, OW;
    size_t wp_floats, task_floats;   /* task_floats: one image's slot */
    int group;                       /* images per weight chunk (dg_direct_conv) */
    float *lists;                    /* dg_direct_convt_few: every image's few_lists,
                                      * few_list_floats apart (NULL: the dense rows) */
    atomic_size_t next;              /* the image tasks' next unit to claim (0) */
    int copies;                      /* of the panels: 1 (shared) or one per task (direct_run) */
    int parts;                       /* of the panels (part_task, convt_part_task) */
    atomic_int part_state[DG_DIRECT_MAX_PARTS];   /* 0, 1 being packed, 2 packed */
    atomic_size_t part_next[DG_DIRECT_MAX_PARTS]; /* a part's next image to claim */
    const float *packed;             /* dg_direct_convt_few_head: the weights as
                                      * dg_convt_few_pack lays them out, all finite
                                      * (NULL: each block's copied per call) */
} direct_job;

/* Workspace floats of each task: the padded image, then the row buffer
 * (OH*OW pixels x 32 channels), each a multiple of 16 floats. */
static size_t task_floats(int C, int H, int W, int OH, int OW) {
    size_t xp = ((size_t)C * (H + 2) * (W + 2) + 15) & ~(size_t)15;
    return xp + (size_t)OH * OW * DG_DIRECT_OCB;
}

/* The tasks' image slots, after the copies of the panels. */
static float *panels_end(const direct_job *j) {
    return j->ws + (size_t)j->copies * j->wp_floats;
}

/* Packs rows [lo, hi) of a kernel's panels into wp (pack_rows, convt_pack_rows). */
typedef void (*pack_fn)(const direct_job *j, float *wp, size_t lo, size_t hi);

/* The panels task t reads: the shared copy, or (one copy per task) its own,
 * which it packs here, all `rows` rows of it. */
static const float *task_panels(const direct_job *j, int t, pack_fn pack, size_t rows) {
    if (j->copies == 1) return j->ws;
    float *wp = j->ws + (size_t)t * j->wp_floats;
    pack(j, wp, 0, rows);
    return wp;
}

/* Output channels of a part (DG_DIRECT_PART_BYTES of panels of ocb channels, C
 * input channels). */
static int part_channels(int C, int ocb) {
    size_t blocks = DG_DIRECT_PART_BYTES / ((size_t)C * 16 * ocb * sizeof(float));
    return (int)(blocks < 1 ? 1 : blocks) * ocb;
}

/* Packs output channels [ob0, ob1) of the shared panels (every input channel). */
typedef void (*part_pack_fn)(const direct_job *j, int ob0, int ob1);

/* Part p of the shared panels, output channels [ob0, ob1), packed by the first
 * task to come to it; the others wait until that task has packed it (it is
 * running: it took the part while running). */
static void part_ready(direct_job *j, int p, int ob0, int ob1, part_pack_fn pack) {
    int idle = 0;
    if (atomic_compare_exchange_strong_explicit(&j->part_state[p], &idle, 1,
                                                memory_order_acquire, memory_order_acquire)) {
        pack(j, ob0, ob1);
        atomic_store_explicit(&j->part_state[p], 2, memory_order_release);
        return;
    }
    for (int spins = 0; atomic_load_explicit(&j->part_state[p], memory_order_acquire) != 2;
         spins++)
        dg_relax(spins);
}

/* Images n .. n + nb - 1 of task t, output channels [ob0, ob1), from the shared
 * panels (a part's unit of work: image_group, convt_image). */
typedef void (*part_unit_fn)(const direct_job *j, int t, size_t n, int nb, int ob0, int ob1);

/* Task t of nt's share of a call whose panels go in j->parts parts of pc output
 * channels, when several threads run it (direct_run): it starts at part
 * t * parts / nt, packs it (part_ready) and takes its images, g at a time, from
 * the part's own counter; then it goes on round the parts to the next whose
 * images are not all taken, packing it if no task has. A core then reads mostly
 * the part of the panels it packed itself, from its own L2, where with the parts
 * taken in order both cores took turns at the images of each part after packing
 * all of them together (PERFORMANCE.md log 95). Each (part, image) is computed
 * as the image tasks compute it: the same bits. */
static void parts_run(direct_job *j, int t, int nt, int pc, size_t g, part_pack_fn pack,
                      part_unit_fn unit) {
    size_t N = (size_t)j->N;
    int first = t * j->parts / nt;
    for (int k = 0; k < j->parts; k++) {
        int p = (first + k) % j->parts;
        if (atomic_load_explicit(&j->part_next[p], memory_order_relaxed) >= N) continue;
        int ob0 = p * pc, ob1 = j->OC - ob0 < pc ? j->OC : ob0 + pc;
        part_ready(j, p, ob0, ob1, pack);
        for (;;) {
            size_t n = atomic_fetch_add_explicit(&j->part_next[p], g, memory_order_relaxed);
            if (n >= N) break;
            unit(j, t, n, N - n < g ? (int)(N - n) : (int)g, ob0, ob1);
        }
    }
}

/* Tasks for a call: at most one per thread and item (an image, or an image's
 * block of channels), DG_DIRECT_GRAIN FLOPs each at least. N images of C -> OC
 * channels, each weight tap meeting pixels pixels of the small map per image. */
static int direct_tasks(size_t items, int N, int C, int OC, int pixels) {
    double flops = 2.0 * N * (double)OC * C * 16.0 * pixels;
    int nt = dg_threads_for(flops, DG_DIRECT_GRAIN);
    if (nt > dg_threads_get()) nt = dg_threads_get();
    if ((size_t)nt > items) nt = (int)items;
    return nt < 1 ? 1 : nt;
}

/* Floats of a task's slot of the few-image kernel when nt tasks share N images
 * of OC channels (OH x OW each): the padded planes of the most blocks of one
 * image it takes. */
static size_t few_task_floats(int N, int OC, int OH, int OW, int nt) {
    size_t blocks = (size_t)(OC / DG_FEW_OCB), per = ((size_t)N * blocks + nt - 1) / nt;
    return (per < blocks ? per : blocks) * DG_FEW_OCB * (size_t)(OH + 2) * (OW + 2);
}

/* Floats of few_lists' lists of one image of C channels of HW pixels: per chunk
 * of DG_FEW_CC channels and pixel, a 64-bit mask (two floats' room) and
 * DG_FEW_CC values, a multiple of 16 floats. */
static size_t few_list_floats(int C, int HW) {
    size_t slots = (size_t)((C + DG_FEW_CC - 1) / DG_FEW_CC) * HW;
    return (slots * (DG_FEW_CC + 2) + 15) & ~(size_t)15;
}

/* Where the lists of `images` images go in ws (ws_floats floats), from float at
 * on: ws + at when they fit and their masks are 8-byte aligned there (the
 * workspace from NumPy is; few_list_floats is a multiple of 16, so every image's
 * are then), else NULL (the dense rows run). */
static float *few_lists_room(float *ws, size_t ws_floats, size_t at, size_t images, int C,
                             int HW) {
    float *l = ws + at;
    return at + images * few_list_floats(C, HW) <= ws_floats && ((uintptr_t)l & 7) == 0
               ? l
               : NULL;
}

/* The parts of one image's lists at l (few_list_floats of them, l 8-byte
 * aligned): the masks, then the values. */
static void few_list_parts(float *l, int C, int HW, uint64_t **mask, float **val) {
    size_t slots = (size_t)((C + DG_FEW_CC - 1) / DG_FEW_CC) * HW;
    *mask = (uint64_t *)(void *)l;
    *val = l + 2 * slots;
}

/* The CPU and the geometry the kernels take, as a conv2d (N, C, H, W) -> (N, OC,
 * OH, OW) with C input channels at least and OC a multiple of ocb (sizes: the
 * plan of the op, in dg_conv.c, checked that every tensor fits). */
#if DG_HAVE_AVX2
static int direct_geometry(int N, int C, int H, int W, int OC, int KH, int KW, int SH,
                           int SW, int PH, int PW, int OH, int OW, int ocb) {
    if (!dg_avx512()) return 0;
    if (KH != 4 || KW != 4 || SH != 2 || SW != 2 || PH != 1 || PW != 1) return 0;
    if (N < DG_DIRECT_MIN_N || C < DG_DIRECT_MIN_C || OC % ocb != 0) return 0;
    return H % 2 == 0 && W % 2 == 0 && OH == H / 2 && OW == W / 2 && OW <= DG_DIRECT_MAXW &&
           OH >= 1 && OW >= 1;
}
#endif

int dg_direct_fits(int N, int C, int H, int W, int OC, int KH, int KW, int SH, int SW,
                   int PH, int PW, int OH, int OW, size_t ws_floats) {
#if DG_HAVE_AVX2
    /* room for one task at least: whether the kernel runs does not depend on the
     * thread count (dg_direct_conv runs as many tasks as the workspace holds) */
    return direct_geometry(N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW, DG_DIRECT_OCB) &&
           (size_t)C * 16 * OC + task_floats(C, H, W, OH, OW) <= ws_floats;
#else
    (void)N; (void)C; (void)H; (void)W; (void)OC; (void)KH; (void)KW; (void)SH; (void)SW;
    (void)PH; (void)PW; (void)OH; (void)OW; (void)ws_floats;
    return 0;
#endif
}

int dg_direct_t_fits(int N, int C, int H, int W, int OC, int KH, int KW, int SH, int SW,
                     int PH, int PW, int OH, int OW, size_t ws_floats) {
#if DG_HAVE_AVX2
    /* the geometry of its adjoint conv2d, (OH, OW) -> (H, W), whose output
     * channels are this one's input channels (and the other way round); room
     * for the panels and one task's row buffer */
    return direct_geometry(N, OC, OH, OW, C, KH, KW, SH, SW, PH, PW, H, W, 1) &&
           C >= DG_DIRECT_MIN_C && OC % DG_DIRECT_T_OCB == 0 &&
           (size_t)C * 16 * OC + (size_t)OH * OW * DG_DIRECT_T_OCB <= ws_floats;
#else
    (void)N; (void)C; (void)H; (void)W; (void)OC; (void)KH; (void)KW; (void)SH; (void)SW;
    (void)PH; (void)PW; (void)OH; (void)OW; (void)ws_floats;
    return 0;
#endif
}

int dg_direct_tfew_fits(int N, int C, int H, int W, int OC, int KH, int KW, int SH, int SW,
                        int PH, int PW, int OH, int OW, size_t ws_floats) {
#if DG_HAVE_AVX2
    /* the transposed geometry, (H, W) -> (2H, 2W), rows of at most DG_FEW_MAXW
     * input pixels, and room for one task (every block's padded planes) */
    if (!dg_avx512()) return 0;
    if (KH != 4 || KW != 4 || SH != 2 || SW != 2 || PH != 1 || PW != 1) return 0;
    return N >= 1 && N < DG_DIRECT_MIN_N && C >= 1 && OC % DG_FEW_OCB == 0 && H >= 1 &&
           W >= 1 && W <= DG_FEW_MAXW && OH == 2 * H && OW == 2 * W &&
           few_task_floats(1, OC, OH, OW, 1) <= ws_floats;
#else
    (void)N; (void)C; (void)H; (void)W; (void)OC; (void)KH; (void)KW; (void)SH; (void)SW;
    (void)PH; (void)PW; (void)OH; (void)OW; (void)ws_floats;
    return 0;
#endif
}

#if DG_HAVE_AVX2
#include <immintrin.h>

#define DG_INLINE_AVX512 __attribute__((always_inline, target("avx512f"))) static inline

/* r[i] = column i of the 16x16 matrix whose row k was r[k] (four rounds of
 * shuffles, 64 in all). */
DG_INLINE_AVX512 void transpose16(__m512 r[16]) {
    __m512 t[16];
    _Pragma("GCC unroll 8") for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    _Pragma("GCC unroll 4") for (int i = 0; i < 16; i += 4) {
        for (int k = 0; k < 2; k++) {
            __m512d a = _mm512_castps_pd(t[i + k]), b = _mm512_castps_pd(t[i + k + 2]);
            r[i + 2 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            r[i + 2 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    }
    _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
    }
    _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xDD);
    }
}

/* xp (C, H+2, W+2) = the image x (C, H, W) with a border of zeros. */
static void pad_image(float *xp, const float *x, int C, int H, int W) {
    int WP = W + 2;
    size_t plane = (size_t)(H + 2) * WP;
    for (int c = 0; c < C; c++) {
        float *d = xp + (size_t)c * plane;
        memset(d, 0, sizeof(float) * (size_t)WP);
        for (int h = 0; h < H; h++) {
            float *dr = d + (size_t)(h + 1) * WP;
            dr[0] = 0.0f;
            memcpy(dr + 1, x + ((size_t)c * H + h) * W, sizeof(float) * (size_t)W);
            dr[W + 1] = 0.0f;
        }
        memset(d + (size_t)(H + 1) * WP, 0, sizeof(float) * (size_t)WP);
    }
}

/* The panels from weight (OC, C*16), rows [lo, hi) of (C*16): panel ob holds
 * output channels ob*32 .. ob*32 + 31, wp[(ob * C*16 + row) * 32 + i], so that a
 * block's weights of consecutive channels and taps are consecutive in memory
 * (rows of all OC weights would put the channels of a chunk 16*OC floats apart,
 * on the same few L1 sets: 1.5x slower). */
DG_AVX512 static void pack_block(const direct_job *j, float *wp, size_t lo, size_t hi,
                                 int ob0, int ob1) {
    size_t rows = (size_t)j->C * 16;
    /* a tile of 16 rows of a panel (2 KB) at a time: each half of its 32
     * channels is a 16x16 transpose in registers (a float at a time, each line
     * of the tile was rewritten 16 times) */
    for (int ob = ob0; ob < ob1; ob += DG_DIRECT_OCB) {
        float *panel = wp + (size_t)ob * rows;
        for (size_t r0 = lo; r0 < hi; r0 += 16) {
            for (int h = 0; h < DG_DIRECT_OCB; h += 16) {
                __m512 v[16];
                _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++)
                    v[i] = _mm512_loadu_ps(j->weight + (size_t)(ob + h + i) * rows + r0);
                transpose16(v);
                _Pragma("GCC unroll 16") for (int k = 0; k < 16; k++)
                    _mm512_storeu_ps(panel + (r0 + k) * DG_DIRECT_OCB + h, v[k]);
            }
        }
    }
}

/* Rows [lo, hi) of the panels, every output channel. */
static void pack_rows(const direct_job *j, float *wp, size_t lo, size_t hi) {
    pack_block(j, wp, lo, hi, 0, j->OC);
}

/* Task t of nt packs its share of the shared panels. */
static void pack_task(void *ctx, int t, int nt) {
    const direct_job *j = (const direct_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->C * 16, 16, t, nt, &lo, &hi);   /* whole tiles: rows is C*16 */
    pack_rows(j, j->ws, lo, hi);
}

/* One output row of NP pixels for a block of 32 channels: acc (NP, 32) (+)= the
 * taps of input channels [c0, c1) (acc zero first when `first`). xr points at the
 * row's first input row (padded row 2*oh) in channel c0's padded plane (planes
 * `plane` floats apart, rows WP apart); wc at channel c0's rows of the panel.
 * Pixel p of kernel row kh, column kw reads input row kh, column 2*p + kw.
 * Only kernel rows [kh0, kh1) are taken, and neither the first pixel's column 0
 * nor the last pixel's column 3: the caller leaves out the rows that fall in the
 * zero padding, and with OW = W/2 those two columns always do (13.8 % of the
 * products of a 14x14 -> 7x7 layer; skipped, a weight of inf gives inf there
 * rather than inf * 0 = NaN, as a convolution that never reads the padding). */
#define CONV_ROW(NP)                                                                    \
    DG_AVX512 static void conv_row_##NP(float *acc, int first, const float *xr,         \
                                        size_t plane, int WP, const float *wc, int nc,  \
                                        int kh0, int kh1) {                             \
        __m512 a[NP][2];                                                                \
        _Pragma("GCC unroll 8") for (int p = 0; p < NP; p++) {                          \
            a[p][0] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(acc + p * 32);      \
            a[p][1] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(acc + p * 32 + 16); \
        }                                                                               \
        for (int c = 0; c < nc; c++) {                                                  \
            const float *xc = xr + (size_t)c * plane;                                   \
            const float *wk = wc + (size_t)c * 16 * DG_DIRECT_OCB;                      \
            for (int kh = kh0; kh < kh1; kh++) {                                        \
                _Pragma("GCC unroll 4") for (int kw = 0; kw < 4; kw++) {                \
                    const float *xq = xc + (size_t)kh * WP + kw;                        \
                    const float *wq = wk + (size_t)(kh * 4 + kw) * DG_DIRECT_OCB;       \
                    __m512 w0 = _mm512_loadu_ps(wq), w1 = _mm512_loadu_ps(wq + 16);     \
                    _Pragma("GCC unroll 8") for (int p = 0; p < NP; p++) {              \
                        if ((p == 0 && kw == 0) || (p == NP - 1 && kw == 3)) continue;  \
                        __m512 b = _mm512_set1_ps(xq[2 * p]);                           \
                        a[p][0] = _mm512_fmadd_ps(w0, b, a[p][0]);                      \
                        a[p][1] = _mm512_fmadd_ps(w1, b, a[p][1]);                      \
                    }                                                                   \
                }                                                                       \
            }                                                                           \
        }                                                                               \
        _Pragma("GCC unroll 8") for (int p = 0; p < NP; p++) {                          \
            _mm512_storeu_ps(acc + p * 32, a[p][0]);                                    \
            _mm512_storeu_ps(acc + p * 32 + 16, a[p][1]);                               \
        }                                                                               \
    }

CONV_ROW(1)
CONV_ROW(2)
CONV_ROW(3)
CONV_ROW(4)
CONV_ROW(5)
CONV_ROW(6)
CONV_ROW(7)
CONV_ROW(8)

/* out (ocb, npix): channel i = buf[:, i] of a (npix, ocb) row buffer, added
 * (add), or assigned plus bias[i] (bias != NULL) or alone; ocb a multiple of 16.
 * 16 pixels by 16 channels at a time, transposed in registers: 4-4.7x faster
 * in L1 than gathering a channel's 16 pixels at a time, with the same bits
 * (PERFORMANCE.md log 79); a float at a time had been 1.5-2 % of a DCGAN
 * training step, the gathers still ~3 %. */
DG_AVX512 static void scatter_block(float *out, const float *buf, int ocb, size_t npix,
                                    int add, const float *bias) {
    for (size_t q = 0; q < npix; q += 16) {
        int np = npix - q >= 16 ? 16 : (int)(npix - q);
        __mmask16 m = dg_lanes(np);
        for (int i0 = 0; i0 < ocb; i0 += 16) {
            __m512 r[16];
            _Pragma("GCC unroll 16") for (int k = 0; k < 16; k++) {
                r[k] = k < np ? _mm512_loadu_ps(buf + (q + (size_t)k) * ocb + i0)
                              : _mm512_setzero_ps();
            }
            transpose16(r);
            _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) {
                float *o = out + (size_t)(i0 + i) * npix + q;
                __m512 v = r[i];
                if (add) {
                    v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, o), v);
                } else if (bias != NULL) {
                    v = _mm512_add_ps(v, _mm512_set1_ps(bias[i0 + i]));
                }
                _mm512_mask_storeu_ps(o, m, v);
            }
        }
    }
}

typedef void (*conv_row_fn)(float *, int, const float *, size_t, int, const float *, int,
                            int, int);
static const conv_row_fn conv_rows[DG_DIRECT_MAXW + 1] = {
    NULL, conv_row_1, conv_row_2, conv_row_3, conv_row_4,
    conv_row_5, conv_row_6, conv_row_7, conv_row_8};

/* Images n0 .. n0 + nb - 1 (nb <= DG_DIRECT_GROUP), output channels [ob0, ob1): out
 * (OC, OH, OW) (+)= each one's convolution; slot k of the task's scratch (`slot`
 * floats apart) holds image k's padded copy, then its row buffer. Each chunk's
 * weights serve the rows of all nb images while they are in L1; every image is
 * computed as it would be alone. */
static void image_group(const direct_job *j, const float *wp, size_t n0, int nb,
                        float *scratch, int ob0, int ob1) {
    int C = j->C, H = j->H, W = j->W, OC = j->OC, OH = j->OH, OW = j->OW;
    int WP = W + 2;
    size_t plane = (size_t)(H + 2) * WP, ohw = (size_t)OH * OW, slot = j->task_floats;
    size_t xpf = slot - ohw * DG_DIRECT_OCB;   /* the padded image's floats */
    size_t in_img = (size_t)C * H * W, out_img = (size_t)OC * ohw;
    for (int k = 0; k < nb; k++) pad_image(scratch + k * slot, j->inp + (n0 + k) * in_img, C, H, W);
    for (int ob = ob0; ob < ob1; ob += DG_DIRECT_OCB) {
        const float *panel = wp + (size_t)ob * C * 16;
        for (int c0 = 0; c0 < C; c0 += DG_DIRECT_CC) {
            int nc = C - c0 < DG_DIRECT_CC ? C - c0 : DG_DIRECT_CC;
            for (int k = 0; k < nb; k++) {
                const float *xp = scratch + k * slot;
                float *buf = scratch + k * slot + xpf;
                for (int oh = 0; oh < OH; oh++) {
                    /* padded rows 0 and H + 1 are zeros (OH = H/2) */
                    conv_rows[OW](buf + (size_t)oh * OW * DG_DIRECT_OCB, c0 == 0,
                                  xp + (size_t)c0 * plane + (size_t)(2 * oh) * WP, plane, WP,
                                  panel + (size_t)c0 * 16 * DG_DIRECT_OCB, nc, oh == 0,
                                  oh == OH - 1 ? 3 : 4);
                }
            }
        }
        /* each buf (pixels, 32) -> out[n0 + k, ob + i, :, :] */
        for (int k = 0; k < nb; k++) {
            scatter_block(j->out + (n0 + k) * out_img + (size_t)ob * ohw,
                          scratch + k * slot + xpf, DG_DIRECT_OCB, ohw, j->add,
                          j->bias != NULL ? j->bias + ob : NULL);
        }
    }
}

/* The tasks claim groups of images in turn rather than a fixed share each: the
 * two halves of a call, alike, took 3.2 and 3.8 ms side by side on Ice Lake
 * (PERFORMANCE.md log 82), and the faster thread now takes more of them. Every
 * image is computed as before, so the bits do not depend on who claims it. With
 * a copy of the panels per task (direct_run), a task packs its own first. */
static void image_task(void *ctx, int t, int nt) {
    direct_job *j = (direct_job *)ctx;
    (void)nt;
    float *scratch = panels_end(j) + (size_t)t * j->group * j->task_floats;
    const float *wp = task_panels(j, t, pack_rows, (size_t)j->C * 16);
    size_t N = (size_t)j->N, g = (size_t)j->group;
    for (;;) {
        size_t n = atomic_fetch_add_explicit(&j->next, g, memory_order_relaxed);
        if (n >= N) break;
        image_group(j, wp, n, N - n < g ? (int)(N - n) : j->group, scratch, 0, j->OC);
    }
}

/* Output channels [ob0, ob1) of the shared panels (part_ready). */
static void pack_part(const direct_job *j, int ob0, int ob1) {
    pack_block(j, j->ws, 0, (size_t)j->C * 16, ob0, ob1);
}

/* A group of part_task's: image_group on task t's scratch. */
static void part_group(const direct_job *j, int t, size_t n, int nb, int ob0, int ob1) {
    image_group(j, j->ws, n, nb, panels_end(j) + (size_t)t * j->group * j->task_floats,
                ob0, ob1);
}

/* image_task's groups, part by part (parts_run); each image is padded again for
 * each part it takes. */
static void part_task(void *ctx, int t, int nt) {
    direct_job *j = (direct_job *)ctx;
    parts_run(j, t, nt, part_channels(j->C, DG_DIRECT_OCB), (size_t)j->group, pack_part,
              part_group);
}
/* ------------------------------------------------------------------------- */
/* Transposed convolution                                                     */
/* ------------------------------------------------------------------------- */

/* out (N, OC, 2H, 2W) (+)= conv_transpose2d(inp (N, C, H, W), weight (C, OC, 4, 4)),
 * stride 2, padding 1, taken apart by the parity of the output pixel: output
 * row 2y reads input rows y (kernel row 1) and y - 1 (row 3), output row 2y + 1
 * input rows y + 1 (row 0) and y (row 2), and the same for columns, so every
 * output pixel is a sum of 2 x 2 taps per input channel, none of them in the
 * padding (no padded copy, and no product with a zero). The weights are packed
 * per call into one panel per block of 16 output channels, (C*16, 16) (row
 * c*16 + kh*4 + kw: that tap's 16 weights); an output row of 2W pixels for a
 * block is held in 2W zmm: per input channel and kernel row, the four column
 * taps' weight vectors times each input pixel's value, broadcast once for the
 * two output columns on either side of it (both parities at once). Channels go
 * in chunks of DG_DIRECT_T_CC (16 KiB of weights in L1 over the rows of an
 * image); the output row waits in a buffer between chunks. Blocks of output
 * channels go in parts of at most DG_DIRECT_PART_BYTES of panels, each part over
 * the images, which the tasks claim in turn (image_task; the part's weights
 * stay in L2). */
/* panels from weight (C, OC, 16), input channels [lo, hi): wp[(ob*C + c)*256 +
 * t*16 + i] = weight[c, ob*16 + i, t] */
DG_AVX512 static void convt_pack_block(const direct_job *j, float *wp, size_t c0, size_t c1,
                                       int ob0, int ob1) {
    /* each block of 16 output channels of channel c: weight[c, block, :] (16
     * channels x 16 taps) transposed in registers (a float at a time before) */
    _Static_assert(DG_DIRECT_T_OCB == 16, "a block is one 16x16 transpose");
    for (size_t c = c0; c < c1; c++) {
        for (int ob = ob0; ob < ob1; ob += DG_DIRECT_T_OCB) {
            const float *w = j->weight + (c * (size_t)j->OC + (size_t)ob) * 16;
            float *d = wp + ((size_t)(ob / DG_DIRECT_T_OCB) * j->C + c) * 256;
            __m512 v[16];
            _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++)
                v[i] = _mm512_loadu_ps(w + i * 16);
            transpose16(v);
            _Pragma("GCC unroll 16") for (int k = 0; k < 16; k++)
                _mm512_storeu_ps(d + k * 16, v[k]);
        }
    }
}

/* Input channels [lo, hi) of the panels, every output channel. */
static void convt_pack_rows(const direct_job *j, float *wp, size_t lo, size_t hi) {
    convt_pack_block(j, wp, lo, hi, 0, j->OC);
}

/* Task t of nt packs its share (input channels) of the shared panels. */
static void convt_pack_task(void *ctx, int t, int nt) {
    const direct_job *j = (const direct_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->C, 1, t, nt, &lo, &hi);
    convt_pack_rows(j, j->ws, lo, hi);
}

/* convt_row_NP's products of one input row (x: NP pixels of a channel) with one
 * kernel row's four column taps (wq: 64 weights), onto ev and od. */
#define CONVT_TAPS(NP, x, wq)                                                           \
    do {                                                                                \
        __m512 w0 = _mm512_loadu_ps(wq), w1 = _mm512_loadu_ps((wq) + 16);               \
        __m512 w2 = _mm512_loadu_ps((wq) + 32), w3 = _mm512_loadu_ps((wq) + 48);        \
        __m512 b[NP];                                                                   \
        _Pragma("GCC unroll 8") for (int i = 0; i < NP; i++) b[i] = _mm512_set1_ps((x)[i]); \
        _Pragma("GCC unroll 8") for (int i = 0; i < NP; i++)                            \
            ev[i] = _mm512_fmadd_ps(w1, b[i], ev[i]);                                   \
        _Pragma("GCC unroll 8") for (int i = 0; i < NP; i++)                            \
            od[i] = _mm512_fmadd_ps(w2, b[i], od[i]);                                   \
        _Pragma("GCC unroll 8") for (int i = 1; i < NP; i++)                            \
            ev[i] = _mm512_fmadd_ps(w3, b[i - 1], ev[i]);                               \
        _Pragma("GCC unroll 8") for (int i = 1; i < NP; i++)                            \
            od[i - 1] = _mm512_fmadd_ps(w0, b[i], od[i - 1]);                           \
    } while (0)

/* One output row of 2*NP pixels for a block of 16 channels: acc (2*NP, 16) = (or
 * += unless `first`) the sum of the taps of nc input channels, summed apart from
 * acc (blocked summation: the rounding error of a sum over 4C products grows
 * with 4*DG_DIRECT_T_CC + C/DG_DIRECT_T_CC, not with 4C; summed into acc all
 * along, the error was ~3x the GEMM path's on 64 channels). Kernel rows kh[r]
 * read input rows xr[r] (channel c0's, planes `plane` floats apart), r < nr
 * (1 or 2); wc: channel c0's rows of the panel. Output column 2x takes input
 * column x by kernel column 1 and x - 1 by 3; column 2x + 1 takes x + 1 by 0
 * and x by 2. The rows' pointers advance by a channel's plane and panel rows per
 * channel, and the one- and two-row cases are loops of their own: with the rows
 * in an inner loop of one or two turns, its set-up (~15 scalar instructions per
 * channel) took issue slots from the FMAs (PERFORMANCE.md log 83). */
#define CONVT_ROW(NP)                                                                   \
    DG_AVX512 static void convt_row_##NP(float *acc, int first, const float *const *xr, \
                                         const int *kh, int nr, size_t plane,           \
                                         const float *wc, int nc) {                     \
        __m512 ev[NP], od[NP];                                                          \
        _Pragma("GCC unroll 8") for (int p = 0; p < NP; p++) {                          \
            ev[p] = _mm512_setzero_ps();                                                \
            od[p] = _mm512_setzero_ps();                                                \
        }                                                                               \
        const float *x0 = xr[0], *q0 = wc + (size_t)kh[0] * 64;                         \
        if (nr == 2) {                                                                  \
            const float *x1 = xr[1], *q1 = wc + (size_t)kh[1] * 64;                     \
            for (int c = 0; c < nc; c++) {                                              \
                CONVT_TAPS(NP, x0, q0);                                                 \
                CONVT_TAPS(NP, x1, q1);                                                 \
                x0 += plane, x1 += plane, q0 += 256, q1 += 256;                         \
            }                                                                           \
        } else {                                                                        \
            for (int c = 0; c < nc; c++) {                                              \
                CONVT_TAPS(NP, x0, q0);                                                 \
                x0 += plane, q0 += 256;                                                 \
            }                                                                           \
        }                                                                               \
        _Pragma("GCC unroll 8") for (int p = 0; p < NP; p++) {                          \
            float *a0 = acc + (2 * p) * 16, *a1 = acc + (2 * p + 1) * 16;               \
            if (!first) {                                                               \
                ev[p] = _mm512_add_ps(_mm512_loadu_ps(a0), ev[p]);                      \
                od[p] = _mm512_add_ps(_mm512_loadu_ps(a1), od[p]);                      \
            }                                                                           \
            _mm512_storeu_ps(a0, ev[p]);                                                \
            _mm512_storeu_ps(a1, od[p]);                                                \
        }                                                                               \
    }

CONVT_ROW(1)
CONVT_ROW(2)
CONVT_ROW(3)
CONVT_ROW(4)
CONVT_ROW(5)
CONVT_ROW(6)
CONVT_ROW(7)
CONVT_ROW(8)

typedef void (*convt_row_fn)(float *, int, const float *const *, const int *, int, size_t,
                             const float *, int);
static const convt_row_fn convt_rows[DG_DIRECT_MAXW + 1] = {
    NULL, convt_row_1, convt_row_2, convt_row_3, convt_row_4,
    convt_row_5, convt_row_6, convt_row_7, convt_row_8};

/* One image, output channels [ob0, ob1): out (+)= its transposed convolution;
 * buf the task's (4HW, 16) row buffer. */
static void convt_image(const direct_job *j, const float *wp, const float *x, float *out,
                        float *buf, int ob0, int ob1) {
    int C = j->C, H = j->H, W = j->W, OH = j->OH, OW = j->OW;
    size_t plane = (size_t)H * W, ohw = (size_t)OH * OW;
    for (int ob = ob0; ob < ob1; ob += DG_DIRECT_T_OCB) {
        const float *panel = wp + (size_t)ob * C * 16;
        for (int c0 = 0; c0 < C; c0 += DG_DIRECT_T_CC) {
            int nc = C - c0 < DG_DIRECT_T_CC ? C - c0 : DG_DIRECT_T_CC;
            const float *xc = x + (size_t)c0 * plane;
            for (int oy = 0; oy < OH; oy++) {
                /* the (input row, kernel row) pairs of output row oy inside the map */
                const float *xr[2];
                int kh[2], nr = 0, y = oy / 2;
                if (oy % 2 == 0) {
                    xr[nr] = xc + (size_t)y * W, kh[nr++] = 1;
                    if (y >= 1) xr[nr] = xc + (size_t)(y - 1) * W, kh[nr++] = 3;
                } else {
                    if (y + 1 < H) xr[nr] = xc + (size_t)(y + 1) * W, kh[nr++] = 0;
                    xr[nr] = xc + (size_t)y * W, kh[nr++] = 2;
                }
                convt_rows[W](buf + (size_t)oy * OW * DG_DIRECT_T_OCB, c0 == 0, xr, kh, nr,
                              plane, panel + (size_t)c0 * 256, nc);
            }
        }
        /* buf (pixels, 16) -> out[ob + i, :, :] */
        scatter_block(out + (size_t)ob * ohw, buf, DG_DIRECT_T_OCB, ohw, j->add,
                      j->bias != NULL ? j->bias + ob : NULL);
    }
}

/* Units (part, image), part by part, claimed in turn as image_task's groups
 * (after packing the task's own copy of the panels, as there). */
static void convt_image_task(void *ctx, int t, int nt) {
    direct_job *j = (direct_job *)ctx;
    (void)nt;
    float *buf = panels_end(j) + (size_t)t * j->task_floats;   /* group 1 */
    const float *wp = task_panels(j, t, convt_pack_rows, (size_t)j->C);
    size_t in_img = (size_t)j->C * j->H * j->W, out_img = (size_t)j->OC * j->OH * j->OW;
    size_t N = (size_t)j->N;
    int pc = part_channels(j->C, DG_DIRECT_T_OCB);
    size_t units = (size_t)((j->OC + pc - 1) / pc) * N;
    for (;;) {
        size_t u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (u >= units) break;
        size_t n = u % N;
        int ob0 = (int)(u / N) * pc, ob1 = j->OC - ob0 < pc ? j->OC : ob0 + pc;
        convt_image(j, wp, j->inp + n * in_img, j->out + n * out_img, buf, ob0, ob1);
    }
}

/* Output channels [ob0, ob1) of the shared panels (part_ready). */
static void convt_pack_part(const direct_job *j, int ob0, int ob1) {
    convt_pack_block(j, j->ws, 0, (size_t)j->C, ob0, ob1);
}

/* An image of convt_part_task's: convt_image with task t's row buffer. */
static void convt_part_image(const direct_job *j, int t, size_t n, int nb, int ob0, int ob1) {
    size_t in_img = (size_t)j->C * j->H * j->W, out_img = (size_t)j->OC * j->OH * j->OW;
    (void)nb;   /* 1 */
    convt_image(j, j->ws, j->inp + n * in_img, j->out + n * out_img,
                panels_end(j) + (size_t)t * j->task_floats, ob0, ob1);
}

/* convt_image_task's units, part by part (parts_run). */
static void convt_part_task(void *ctx, int t, int nt) {
    direct_job *j = (direct_job *)ctx;
    parts_run(j, t, nt, part_channels(j->C, DG_DIRECT_T_OCB), 1, convt_pack_part,
              convt_part_image);
}

/* y[v] = 128-bit lane v of x[0], x[1], x[2], x[3], in that order: the 4x4
 * transpose of x's lanes, in 8 shuffles. */
DG_INLINE_AVX512 void lanes4_transpose(__m512 y[4], const __m512 x[4]) {
    __m512 t0 = _mm512_shuffle_f32x4(x[0], x[1], 0x44);
    __m512 t1 = _mm512_shuffle_f32x4(x[0], x[1], 0xee);
    __m512 t2 = _mm512_shuffle_f32x4(x[2], x[3], 0x44);
    __m512 t3 = _mm512_shuffle_f32x4(x[2], x[3], 0xee);
    y[0] = _mm512_shuffle_f32x4(t0, t2, 0x88);
    y[1] = _mm512_shuffle_f32x4(t0, t2, 0xdd);
    y[2] = _mm512_shuffle_f32x4(t1, t3, 0x88);
    y[3] = _mm512_shuffle_f32x4(t1, t3, 0xdd);
}

/* ------------------------------------------------------------------------- */
/* Transposed convolution of few images                                       */
/* ------------------------------------------------------------------------- */

/* For fewer than DG_DIRECT_MIN_N images (sampling a batch of one), packing the
 * panels above costs more than the images (the generator's 2 MB of weights), so
 * this kernel takes the weights as they are laid out: row c of weight (C, OC*16)
 * holds output channel oc's 16 taps at oc*16, one zmm, and four channels' taps are
 * four consecutive zmm. For a block of 4 output channels and one input row of NP
 * pixels, 4*NP accumulators take every tap of every pixel, summed over the input
 * channels (one FMA per pixel, channel and vector, the pixel's value broadcast);
 * each accumulator is then a kernel row of that pixel's patches of the four
 * channels (the copied weights' layout, few_copy_finite), added onto the block's
 * padded (OH+2, OW+2) planes, one padded row of a patch row at a time
 * (FEW_PATCH_ROW). This is the GEMM path's col^T = x^T @ weight and its col2im, in
 * registers, without the 2 MB col^T matrix or OpenBLAS's packing of the whole
 * weights. The input channels go in chunks of DG_FEW_CC; a block's weights of
 * a chunk (DG_FEW_CC x 256 bytes, 256 bytes of each 8 KB row) are first copied
 * together, 16 KiB that stay in L1 over the block's input rows. Read in place,
 * they did not: rows 8 KB apart fall in the same four L1 sets, so every row of
 * pixels read them again from L2 or beyond (PERFORMANCE.md log 56). Each tap
 * is summed over a chunk's channels in increasing order, the chunks then added
 * onto the plane in increasing order, input row by input row.
 *
 * When at most few_share() of the inputs are nonzero (a ReLU's output is
 * about half zero), each pixel sums only its nonzero channels instead, from
 * lists made per image (few_lists, convt_sparse_row_*): half the FMAs, at 1.25
 * loads per FMA where the dense rows take 0.4 (each weight vector serves every
 * pixel of a row there): 0.85-0.95 of their time at half nonzero with stored
 * offsets (log 68), and 0.89 of that with masks in a microbenchmark (log 71), on
 * Emerald Rapids (not on Ice Lake, log 72). An FMA with a zero
 * input leaves a finite sum as it is, so the two give the same bits; a block
 * whose weights of the chunk are not all finite (an inf or NaN weight met only
 * by zero inputs makes NaN in the dense rows) takes the dense rows.
 *
 * Padded row d of channel v's plane, lanes m (+)= row K of a row of patches: lane
 * group v of the even pixels' kernel rows K, e[0..3], at columns 0, 4, 8, 12 (ev,
 * the four groups of e transposed: one transpose for the four planes, 16 shuffles
 * for both where taking each plane's groups apart took 24), plus that of the odd
 * ones' o[0..3] at 2, 6, 10 (o[3], beyond the row, is zero). One add per padded
 * row: adding the patches one by one reloaded each store, which overlaps the
 * last, a store-forwarding stall per patch (0.6-0.8x). */
#define FEW_PATCH_ROWS(d, m, e, o, pplane)                                              \
    do {                                                                                \
        __m512 ev_[4], od_[4];                                                          \
        lanes4_transpose(ev_, e);                                                       \
        lanes4_transpose(od_, o);                                                       \
        _Pragma("GCC unroll 4") for (int v_ = 0; v_ < 4; v_++) {                        \
            __m512 o_ = _mm512_castsi512_ps(_mm512_alignr_epi32(                        \
                _mm512_castps_si512(od_[v_]), _mm512_setzero_si512(), 14));             \
            float *dv_ = (d) + (size_t)v_ * (pplane);                                   \
            _mm512_mask_storeu_ps(dv_, (m),                                             \
                                  _mm512_add_ps(_mm512_maskz_loadu_ps((m), dv_),        \
                                                _mm512_add_ps(ev_[v_], o_)));           \
        }                                                                               \
    } while (0)

/* Pixel p's accumulators a[p][0..3] (a[p][K]: kernel row K of its patches of
 * four output channels, lanes 4v .. 4v + 3 channel v's) added onto those
 * channels' padded planes (pad + v * pplane): padded rows K0 .. K1 - 1 of the patch
 * row (the others fall in the planes' border, which few_store drops: the rows
 * computed none of them), columns 2p .. 2p + 3. */
#define FEW_PATCHES(NP, a, pad, ldp, pplane, K0, K1)                                    \
    do {                                                                                \
        __mmask16 m_ = (__mmask16)((1u << (2 * NP + 2)) - 1);                           \
        _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {                           \
            if (k < (K0) || k >= (K1)) continue;                                        \
            __m512 e[4], o[4], z = _mm512_setzero_ps();                                 \
            _Pragma("GCC unroll 4") for (int q = 0; q < 4; q++) {                       \
                e[q] = 2 * q < NP ? a[2 * q < NP ? 2 * q : 0][k] : z;                   \
                o[q] = 2 * q + 1 < NP ? a[2 * q + 1 < NP ? 2 * q + 1 : 0][k] : z;       \
            }                                                                           \
            FEW_PATCH_ROWS((pad) + (size_t)k * (ldp), m_, e, o, pplane);                \
        }                                                                               \
    } while (0)

/* Lines to fetch into L2 while a row computes, one per step of its loop over
 * channels (or pairs of listed channels) while p < end: spread, not in bursts,
 * which stalled on the line fill buffers (dg_direct_convt_few_head). */
typedef struct {
    const char *p, *end;
} far_stream;

#define FAR_STEP(p, end)                                                                \
    do {                                                                                \
        if ((p) < (end)) {                                                              \
            __builtin_prefetch((p), 0, 2);                                              \
            (p) += 64;                                                                  \
        }                                                                               \
    } while (0)

/* convt_few_row_<NP>_<E>: the row of kernel rows [K0, K1), E as SPARSE_ROW_KS's. */
#define FEW_ROW_KS(NP, E, K0, K1)                                                       \
    DG_AVX512 static void convt_few_row_##NP##_##E(float *pad, int ldp, size_t pplane,  \
                                                   const float *x, size_t xplane,      \
                                                   const float *w, int C,              \
                                                   far_stream *fs) {                   \
        convt_few_row_##NP##_k(pad, ldp, pplane, x, xplane, w, C, fs, K0, K1);          \
    }

#define CONVT_FEW_ROW(NP)                                                               \
    __attribute__((always_inline, target("avx512f,bmi"))) static inline void            \
    convt_few_row_##NP##_k(float *pad, int ldp, size_t pplane, const float *x,         \
                           size_t xplane, const float *w, int C, far_stream *fs,       \
                           const int k0, const int k1) {                                \
        __m512 a[NP][DG_FEW_OCB];                                                       \
        _Pragma("GCC unroll 8") for (int p = 0; p < NP; p++)                            \
            _Pragma("GCC unroll 4") for (int v = 0; v < DG_FEW_OCB; v++)                \
                a[p][v] = _mm512_setzero_ps();                                          \
        const char *fp = fs->p, *fe = fs->end; /* in registers, not through *fs */      \
        for (int c = 0; c < C; c++) {                                                   \
            FAR_STEP(fp, fe);                                                           \
            const float *wc = w + (size_t)c * 16 * DG_FEW_OCB;                          \
            const float *xc = x + (size_t)c * xplane;                                   \
            __m512 w0 = _mm512_loadu_ps(wc), w1 = _mm512_loadu_ps(wc + 16);             \
            __m512 w2 = _mm512_loadu_ps(wc + 32), w3 = _mm512_loadu_ps(wc + 48);        \
            _Pragma("GCC unroll 8") for (int p = 0; p < NP; p++) {                      \
                __m512 b = _mm512_set1_ps(xc[p]);                                       \
                if (k0 == 0) a[p][0] = _mm512_fmadd_ps(w0, b, a[p][0]);                 \
                a[p][1] = _mm512_fmadd_ps(w1, b, a[p][1]);                              \
                a[p][2] = _mm512_fmadd_ps(w2, b, a[p][2]);                              \
                if (k1 == 4) a[p][3] = _mm512_fmadd_ps(w3, b, a[p][3]);                 \
            }                                                                           \
        }                                                                               \
        fs->p = fp;                                                                     \
        FEW_PATCHES(NP, a, pad, ldp, pplane, k0, k1);                                   \
    }                                                                                   \
    FEW_ROW_KS(NP, 0, 0, 4)                                                             \
    FEW_ROW_KS(NP, 1, 1, 4)                                                             \
    FEW_ROW_KS(NP, 2, 0, 3)                                                             \
    FEW_ROW_KS(NP, 3, 1, 3)

/* Sums over a pixel's listed channels: one listed channel's 4 vectors of
 * weights (at w + o; vector K: kernel row K) times its value broadcast in b,
 * FMAs onto s[K] for the kernel rows K in [k0, k1) (constants once inlined: the
 * others fall in the padded planes' border for this input row). */
#define SPARSE_STEP(s, w, o, b)                                                         \
    do {                                                                                \
        const float *u_ = (w) + (o);                                                    \
        __m512 b_ = (b);                                                                \
        if (k0 == 0) s[0] = _mm512_fmadd_ps(_mm512_loadu_ps(u_), b_, s[0]);             \
        s[1] = _mm512_fmadd_ps(_mm512_loadu_ps(u_ + 16), b_, s[1]);                     \
        s[2] = _mm512_fmadd_ps(_mm512_loadu_ps(u_ + 32), b_, s[2]);                     \
        if (k1 == 4) s[3] = _mm512_fmadd_ps(_mm512_loadu_ps(u_ + 48), b_, s[3]);        \
    } while (0)

/* Lane sel (0x00, 0x55, 0xaa or 0xff) of xv broadcast by a shuffle, not a load. */
#define LANE_BCAST(xv, sel)                                                             \
    _mm512_broadcastss_ps((sel) == 0 ? (xv) : _mm_permute_ps((xv), sel))

/* A step of a pair of pixels (convt_sparse_row_*): each one's next listed channel,
 * times its value broadcast in bp and bq. */
#define PAIR_STEP(bp, bq)                                                               \
    do {                                                                                \
        FAR_STEP(fp, fe);                                                               \
        size_t cp_ = (size_t)_tzcnt_u64(mp), cq_ = (size_t)_tzcnt_u64(mq);              \
        mp &= mp - 1, mq &= mq - 1;                                                     \
        SPARSE_STEP(s, w, cp_ * 16 * DG_FEW_OCB, bp);                                   \
        SPARSE_STEP(t, w, cq_ * 16 * DG_FEW_OCB, bq);                                   \
    } while (0)

/* Pixel p's list and the next one's, q (p itself at the end of a row of odd NP):
 * masks mp and mq, values at vp and vq, lengths np and nq, the first m in step,
 * from i = 0 (convt_sparse_row_*, convt_sparse2_row_*). */
#define PAIR_LISTS(NP, p)                                                               \
    int q = (p) + 1 < (NP) ? (p) + 1 : (p);                                             \
    uint64_t mp = mask[p], mq = q != (p) ? mask[q] : 0;                                 \
    const float *vp = val + (size_t)(p) * DG_FEW_CC;                                    \
    const float *vq = val + (size_t)q * DG_FEW_CC;                                      \
    int np = __builtin_popcountll(mp), nq = __builtin_popcountll(mq);                   \
    int m = np < nq ? np : nq, i = 0

/* The same row from lists of each pixel's nonzero inputs of the chunk (mask:
 * bit c - c0 set for each; val: their values in channel order; as few_lists
 * writes them). Each pixel's accumulators take its listed channels in
 * increasing order, one FMA chain per vector as in the dense row, so the sums
 * are the dense row's to the bit (an FMA with a zero input leaves a sum that is
 * not -0 as it was; the sums start at +0 and no FMA makes -0 of them). Pixels
 * go in pairs, the pair's lists in step up to the shorter one's end (eight
 * chains), then the rest of the longer one alone. A listed channel's weights
 * are found from its mask bit (count trailing zeros, clear the lowest bit)
 * instead of a stored offset: one load fewer per listed channel, where the
 * loads bound the loop (PERFORMANCE.md log 71). With REG (convt_sparse_row_*_reg,
 * few_reg), each pixel's values come four at a time, broadcast from a register
 * (PAIR_STEP): two loads for four steps of the pair, where each step took two. */
/* convt_sparse_row_<NP><SUF>_<E>: the row of kernel rows [K0, K1) (E: bit 0, the
 * first input row, whose kernel row 0 falls in the top border; bit 1, the last,
 * whose row 3 falls in the bottom one). */
#define SPARSE_ROW_KS(NP, SUF, E, K0, K1)                                               \
    DG_AVX512 static void convt_sparse_row_##NP##SUF##_##E(                             \
        float *pad, int ldp, size_t pplane, const uint64_t *mask, const float *val,     \
        const float *w, far_stream *fs) {                                               \
        convt_sparse_row_##NP##SUF##_k(pad, ldp, pplane, mask, val, w, fs, K0, K1);     \
    }

#define CONVT_SPARSE_ROW(NP, SUF, REG)                                                  \
    __attribute__((always_inline, target("avx512f,bmi"))) static inline void            \
    convt_sparse_row_##NP##SUF##_k(float *pad, int ldp, size_t pplane,                  \
                                   const uint64_t *mask, const float *val,              \
                                   const float *w, far_stream *fs, const int k0,        \
                                   const int k1) {                                      \
        __m512 a[NP][DG_FEW_OCB];                                                       \
        const char *fp = fs->p, *fe = fs->end; /* in registers, not through *fs */      \
        for (int p = 0; p < NP; p += 2) {                                               \
            PAIR_LISTS(NP, p);                                                          \
            __m512 s[DG_FEW_OCB], t[DG_FEW_OCB];                                        \
            _Pragma("GCC unroll 4") for (int v = 0; v < DG_FEW_OCB; v++)                \
                s[v] = t[v] = _mm512_setzero_ps();                                      \
            for (; REG && i + 4 <= m; i += 4) {                                         \
                __m128 xp_ = _mm_loadu_ps(vp + i), xq_ = _mm_loadu_ps(vq + i);          \
                PAIR_STEP(LANE_BCAST(xp_, 0x00), LANE_BCAST(xq_, 0x00));                \
                PAIR_STEP(LANE_BCAST(xp_, 0x55), LANE_BCAST(xq_, 0x55));                \
                PAIR_STEP(LANE_BCAST(xp_, 0xaa), LANE_BCAST(xq_, 0xaa));                \
                PAIR_STEP(LANE_BCAST(xp_, 0xff), LANE_BCAST(xq_, 0xff));                \
            }                                                                           \
            for (; i < m; i++) PAIR_STEP(_mm512_set1_ps(vp[i]), _mm512_set1_ps(vq[i]));  \
            for (int k = i; k < np; k++, mp &= mp - 1)                                  \
                SPARSE_STEP(s, w, (size_t)_tzcnt_u64(mp) * 16 * DG_FEW_OCB,             \
                            _mm512_set1_ps(vp[k]));                                     \
            for (int k = i; k < nq; k++, mq &= mq - 1)                                  \
                SPARSE_STEP(t, w, (size_t)_tzcnt_u64(mq) * 16 * DG_FEW_OCB,             \
                            _mm512_set1_ps(vq[k]));                                     \
            _Pragma("GCC unroll 4") for (int v = 0; v < DG_FEW_OCB; v++) {              \
                a[p][v] = s[v];                                                         \
                if (q != p) a[q][v] = t[v];                                             \
            }                                                                           \
        }                                                                               \
        fs->p = fp;                                                                     \
        FEW_PATCHES(NP, a, pad, ldp, pplane, k0, k1);                                   \
    }                                                                                   \
    SPARSE_ROW_KS(NP, SUF, 0, 0, 4)                                                     \
    SPARSE_ROW_KS(NP, SUF, 1, 1, 4)                                                     \
    SPARSE_ROW_KS(NP, SUF, 2, 0, 3)                                                     \
    SPARSE_ROW_KS(NP, SUF, 3, 1, 3)

/* The sparse rows of two blocks at once (convt_sparse2_row_*, few_chunk with
 * kept weights): the second block's weights wn floats after the first's, its
 * planes DG_FEW_OCB planes after. Each listed channel's value, broadcast once,
 * serves eight FMAs, one per vector of both blocks' weights: 9 loads for 8 FMAs
 * where one block takes 10 (the loads bound the loop, SPARSE_STEP). Each
 * accumulator takes the same FMAs in the same order as in one block's rows, so
 * the same bits. Middle input rows took ~0.92 of their time in a teacher's
 * one-image sample on Granite Rapids; the pass's 32 KiB of weights are first
 * read in its first row (PERFORMANCE.md log 128). */
#define SPARSE2_ROW_KS(NP, E, K0, K1)                                                   \
    DG_AVX512 static void convt_sparse2_row_##NP##_##E(                                 \
        float *pad, int ldp, size_t pplane, const uint64_t *mask, const float *val,     \
        const float *w, size_t wn, far_stream *fs) {                                    \
        convt_sparse2_row_##NP##_k(pad, ldp, pplane, mask, val, w, wn, fs, K0, K1);     \
    }

/* A listed channel's step of one pixel for both blocks (accumulators s, s2). */
#define SPARSE2_STEP(s, s2, w, w2, o, b)                                                \
    do {                                                                                \
        size_t o2_ = (o);                                                               \
        __m512 b2_ = (b);                                                               \
        SPARSE_STEP(s, w, o2_, b2_);                                                    \
        SPARSE_STEP(s2, w2, o2_, b2_);                                                  \
    } while (0)

/* As CONVT_SPARSE_ROW's loops, for two blocks; a far line per pixel's step (each
 * as long as a pair's step of one block). */
#define CONVT_SPARSE2_ROW(NP)                                                           \
    __attribute__((always_inline, target("avx512f,bmi"))) static inline void            \
    convt_sparse2_row_##NP##_k(float *pad, int ldp, size_t pplane,                      \
                               const uint64_t *mask, const float *val, const float *w,  \
                               size_t wn, far_stream *fs, const int k0, const int k1) { \
        __m512 a[NP][DG_FEW_OCB], a2[NP][DG_FEW_OCB];                                   \
        const char *fp = fs->p, *fe = fs->end; /* in registers, not through *fs */      \
        const float *w2 = w + wn;                                                       \
        for (int p = 0; p < NP; p += 2) {                                               \
            PAIR_LISTS(NP, p);                                                          \
            __m512 s[DG_FEW_OCB], t[DG_FEW_OCB], s2[DG_FEW_OCB], t2[DG_FEW_OCB];        \
            _Pragma("GCC unroll 4") for (int v = 0; v < DG_FEW_OCB; v++)                \
                s[v] = t[v] = s2[v] = t2[v] = _mm512_setzero_ps();                      \
            for (; i < m; i++) {                                                        \
                size_t cp_ = (size_t)_tzcnt_u64(mp) * 16 * DG_FEW_OCB;                  \
                size_t cq_ = (size_t)_tzcnt_u64(mq) * 16 * DG_FEW_OCB;                  \
                mp &= mp - 1, mq &= mq - 1;                                             \
                FAR_STEP(fp, fe);                                                       \
                SPARSE2_STEP(s, s2, w, w2, cp_, _mm512_set1_ps(vp[i]));                 \
                FAR_STEP(fp, fe);                                                       \
                SPARSE2_STEP(t, t2, w, w2, cq_, _mm512_set1_ps(vq[i]));                 \
            }                                                                           \
            for (int k = i; k < np; k++, mp &= mp - 1) {                                \
                FAR_STEP(fp, fe);                                                       \
                SPARSE2_STEP(s, s2, w, w2, (size_t)_tzcnt_u64(mp) * 16 * DG_FEW_OCB,    \
                             _mm512_set1_ps(vp[k]));                                    \
            }                                                                           \
            for (int k = i; k < nq; k++, mq &= mq - 1) {                                \
                FAR_STEP(fp, fe);                                                       \
                SPARSE2_STEP(t, t2, w, w2, (size_t)_tzcnt_u64(mq) * 16 * DG_FEW_OCB,    \
                             _mm512_set1_ps(vq[k]));                                    \
            }                                                                           \
            _Pragma("GCC unroll 4") for (int v = 0; v < DG_FEW_OCB; v++) {              \
                a[p][v] = s[v], a2[p][v] = s2[v];                                       \
                if (q != p) a[q][v] = t[v], a2[q][v] = t2[v];                           \
            }                                                                           \
        }                                                                               \
        fs->p = fp;                                                                     \
        FEW_PATCHES(NP, a, pad, ldp, pplane, k0, k1);                                   \
        FEW_PATCHES(NP, a2, pad + DG_FEW_OCB * pplane, ldp, pplane, k0, k1);            \
    }                                                                                   \
    SPARSE2_ROW_KS(NP, 0, 0, 4)                                                         \
    SPARSE2_ROW_KS(NP, 1, 1, 4)                                                         \
    SPARSE2_ROW_KS(NP, 2, 0, 3)                                                         \
    SPARSE2_ROW_KS(NP, 3, 1, 3)

CONVT_FEW_ROW(1)
CONVT_FEW_ROW(2)
CONVT_FEW_ROW(3)
CONVT_FEW_ROW(4)
CONVT_FEW_ROW(5)
CONVT_FEW_ROW(6)
CONVT_FEW_ROW(7)
CONVT_SPARSE_ROW(1, , 0)
CONVT_SPARSE_ROW(2, , 0)
CONVT_SPARSE_ROW(3, , 0)
CONVT_SPARSE_ROW(4, , 0)
CONVT_SPARSE_ROW(5, , 0)
CONVT_SPARSE_ROW(6, , 0)
CONVT_SPARSE_ROW(7, , 0)
CONVT_SPARSE_ROW(1, _reg, 1)
CONVT_SPARSE_ROW(2, _reg, 1)
CONVT_SPARSE_ROW(3, _reg, 1)
CONVT_SPARSE_ROW(4, _reg, 1)
CONVT_SPARSE_ROW(5, _reg, 1)
CONVT_SPARSE_ROW(6, _reg, 1)
CONVT_SPARSE_ROW(7, _reg, 1)
CONVT_SPARSE2_ROW(1)
CONVT_SPARSE2_ROW(2)
CONVT_SPARSE2_ROW(3)
CONVT_SPARSE2_ROW(4)
CONVT_SPARSE2_ROW(5)
CONVT_SPARSE2_ROW(6)
CONVT_SPARSE2_ROW(7)

typedef void (*convt_few_fn)(float *, int, size_t, const float *, size_t, const float *,
                             int, far_stream *);
/* [E][NP] tables of the row functions P<NP>S_<E> (E as SPARSE_ROW_KS's: the input
 * row's place, which few_chunk picks) */
#define FEW_FNS(P, S, E)                                                                \
    {NULL, P##1##S##_##E, P##2##S##_##E, P##3##S##_##E, P##4##S##_##E, P##5##S##_##E,   \
     P##6##S##_##E, P##7##S##_##E}
#define FEW_TABLE(P, S) \
    {FEW_FNS(P, S, 0), FEW_FNS(P, S, 1), FEW_FNS(P, S, 2), FEW_FNS(P, S, 3)}
static const convt_few_fn convt_few_rows[4][DG_FEW_MAXW + 1] = FEW_TABLE(convt_few_row_, );
typedef void (*convt_sparse_fn)(float *, int, size_t, const uint64_t *, const float *,
                                const float *, far_stream *);
static const convt_sparse_fn convt_sparse_rows[4][DG_FEW_MAXW + 1] =
    FEW_TABLE(convt_sparse_row_, );
static const convt_sparse_fn convt_sparse_rows_reg[4][DG_FEW_MAXW + 1] =
    FEW_TABLE(convt_sparse_row_, _reg);
typedef void (*convt_sparse2_fn)(float *, int, size_t, const uint64_t *, const float *,
                                 const float *, size_t, far_stream *);
static const convt_sparse2_fn convt_sparse2_rows[4][DG_FEW_MAXW + 1] =
    FEW_TABLE(convt_sparse2_row_, );

/* Lists of the nonzero inputs of one image x (C, HW), chunk by chunk of
 * DG_FEW_CC channels: for chunk k (channels c0 = k * DG_FEW_CC on) and pixel p,
 * slot k * HW + p: mask bit c - c0 set for each channel c with x[c, p] != 0
 * (NaN included), and at slot * DG_FEW_CC in val those x[c, p] in increasing
 * c. Each group of 16 channels: one gather, one compare, one compress, stored
 * whole (the stores end within the slot: at most g values precede group g). */
DG_AVX512 static void few_lists(const float *x, int C, int HW, uint64_t *mask, float *val) {
    const __m512i lane =
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(HW);
    for (int c0 = 0, k = 0; c0 < C; c0 += DG_FEW_CC, k++) {
        int cc = C - c0 < DG_FEW_CC ? C - c0 : DG_FEW_CC;
        const float *xc = x + (size_t)c0 * HW;
        for (int p = 0; p < HW; p++) {
            size_t s = (size_t)k * HW + p;
            uint64_t bits = 0;
            int n = 0;
            for (int g = 0; g < cc; g += 16) {
                __mmask16 in = (__mmask16)(cc - g >= 16 ? 0xffffu : (1u << (cc - g)) - 1);
                __m512i at = _mm512_mullo_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32(g)),
                                                step);
                __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, at, xc + p, 4);
                __mmask16 nz =
                    _mm512_mask_cmp_ps_mask(in, v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
                _mm512_storeu_ps(val + s * DG_FEW_CC + n, _mm512_maskz_compress_ps(nz, v));
                bits |= (uint64_t)nz << g;
                n += __builtin_popcount(nz);
            }
            mask[s] = bits;
        }
    }
}

/* Whether the sparse rows take x[0 .. n): at most few_share() of it nonzero
 * (NaN included); never when that share is 0 (x not read). */
DG_AVX512 static int few_sparse(const float *x, size_t n) {
    double share = few_share();
    if (share <= 0.0) return 0;
    size_t count = 0, i = 0;
    for (; i + 16 <= n; i += 16)
        count += (size_t)__builtin_popcount(
            _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), _mm512_setzero_ps(), _CMP_NEQ_UQ));
    for (; i < n; i++) count += x[i] != 0.0f;
    return (double)count <= share * (double)n;
}

/* pk = a block's weights of a chunk (cc rows of 16 * DG_FEW_OCB floats, from
 * rows ldw apart at wb), as few_chunk's rows take them: each row's four vectors
 * (output channel v's 16 taps, kernel row K in lanes 4K .. 4K + 3) transposed by
 * 128-bit lanes, vector K holding kernel row K of the four channels (channel v's
 * in lanes 4v .. 4v + 3), so that a row of inputs whose kernel row 0 or 3 falls
 * in the padded planes' border skips that vector's FMAs (SPARSE_STEP): 7.1 % of
 * the products of DCGAN's 7x7 -> 14x14, 0.961-0.973 of a one-image teacher
 * sample's time on Zen 4 (PERFORMANCE.md log 115). Returns 1 when all are
 * finite. The shuffles run while the rows' lines arrive. */
DG_AVX512 static int few_copy_finite(float *pk, const float *wb, int cc, size_t ldw) {
    const __m512i e = _mm512_set1_epi32(0x7f800000);   /* the exponent's bits */
    __mmask16 bad = 0;
    _Static_assert(DG_FEW_OCB == 4, "four channels' rows of four taps in a vector");
    for (int c = 0; c < cc; c++) {
        const float *r = wb + (size_t)c * ldw;
        __m512 v[4] = {_mm512_loadu_ps(r), _mm512_loadu_ps(r + 16), _mm512_loadu_ps(r + 32),
                       _mm512_loadu_ps(r + 48)}, u[4];
        lanes4_transpose(u, v);
        _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
            _mm512_store_ps(pk + (size_t)(c * DG_FEW_OCB + k) * 16, u[k]);
            __m512i b = _mm512_castps_si512(u[k]);
            bad |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(b, e), e);
        }
    }
    return bad == 0;
}

/* Adds chunk c0's patches (its cc channels) of image x onto the padded planes
 * of blocks [b0, b1), of a run of blocks [bf, bl) whose planes start at pad:
 * for each block, its weights of the chunk copied together (pk: 16 KiB, which
 * stay in L1 over the block's input rows), or read in place from j->packed,
 * where they lie so already (one copy less per block and call: a teacher's
 * one-image sample 0.943-0.954 of the time on Granite Rapids, PERFORMANCE.md
 * log 127), then every input row's patches added
 * on (from the chunk's lists of nonzeros, mask/val at its first slot, when
 * mask is set), while the next block's weights in the run are fetched into L2
 * (rows 8 KB apart, which the hardware did not fetch ahead: 1.06-1.09x with the
 * weights in L3, log 68; fetched into L1 as well, 1.014x, log 100: their rows
 * fall in four of L1's 64 sets), and the far_lines 64-byte lines at far into
 * L2, a share per input row, one per step of the row's loop (the next chunk's
 * rows of the linear layer before this one, dg_direct_convt_few_head).
 *
 * Kept weights with lists, where the sparse rows load weights rather than
 * values (not with few_reg's, Zen 4's): blocks go two at a time
 * (convt_sparse2_row_*, a pass over their 32 KiB, contiguous in the kept
 * layout), the next pass's fetched into L2, and the pass's own into L1 at its
 * start, all together: its first row otherwise waited on them line by line
 * (13 % of a teacher's one-image sample's profile on Granite Rapids where the
 * last row took 6 %). The sample took ~0.98 of its time with one block at a
 * time (PERFORMANCE.md log 128). */
DG_AVX512 static void few_chunk(const direct_job *j, float *pad, int bf, int bl, int b0,
                                int b1, const float *x, int c0, const uint64_t *mask,
                                const float *val, const float *far,
                                size_t far_lines, float *pk) {
    int C = j->C, H = j->H, W = j->W, ldp = j->OW + 2;
    int cc = C - c0 < DG_FEW_CC ? C - c0 : DG_FEW_CC;
    size_t pplane = (size_t)(j->OH + 2) * ldp, xplane = (size_t)H * W;
    /* a weight row; a block's weights of one input channel */
    size_t ldw = (size_t)j->OC * 16, bw = 16 * DG_FEW_OCB;
    size_t steps = (size_t)(b1 - b0) * H, step = 0;   /* blocks' input rows, for far */
    const convt_sparse_fn(*sparse_rows)[DG_FEW_MAXW + 1] =
        few_reg() ? convt_sparse_rows_reg : convt_sparse_rows;   /* once per call */
    /* kept weights: a block's of a chunk are cc rows of bw floats in a row, from
     * the chunk's first row on (dg_convt_few_pack) */
    const float *kept = j->packed;
    int pairs = kept != NULL && mask != NULL && !few_reg();   /* blocks two at a time */
    for (int b = b0, nb; b < b1; b += nb) {
        nb = pairs && b + 1 < b1 ? 2 : 1;
        const float *wb = kept != NULL ? kept + (size_t)c0 * ldw + (size_t)b * cc * bw
                                       : j->weight + (size_t)c0 * ldw + (size_t)b * bw;
        /* the sparse rows only where every weight is finite: they skip zero inputs,
         * which an inf or NaN weight would make NaN in the dense rows (kept weights
         * are all finite) */
        const float *pw = kept != NULL ? wb : pk;
        const uint64_t *bm =
            (kept != NULL || few_copy_finite(pk, wb, cc, ldw)) && mask != NULL ? mask : NULL;
        float *pb = pad + (size_t)(b - bf) * DG_FEW_OCB * pplane;
        /* the next piece of weights: the next blocks' (the next pass's), or the next
         * chunk's first; nn blocks of it fetched */
        const float *nw = NULL;
        int ncc = 0, nn = 1;
        if (b + nb < bl) {
            nw = wb + (kept != NULL ? (size_t)nb * cc * bw : bw), ncc = cc;
            nn = pairs && bl - (b + nb) > 1 ? 2 : 1;
        } else if (c0 + DG_FEW_CC < C) {
            ncc = C - c0 - DG_FEW_CC < DG_FEW_CC ? C - c0 - DG_FEW_CC : DG_FEW_CC;
            nw = (kept != NULL ? kept : j->weight) + (size_t)(c0 + DG_FEW_CC) * ldw +
                 (size_t)bf * (kept != NULL ? (size_t)ncc * bw : bw);
            nn = pairs && bl - bf > 1 ? 2 : 1;
        }
        if (nb == 2)   /* this pass's weights into L1 */
            for (size_t l = 0; l < (size_t)2 * cc * DG_FEW_OCB; l++)
                __builtin_prefetch(pw + 16 * l, 0, 3);
        for (int y = 0; y < H; y++, step += (size_t)nb) {
            /* its rows fetched into L2 while this block computes, a share per row:
             * every line of rows ldw apart; of kept weights, in a row, every fourth
             * line, the hardware's prefetchers taking the rest (a teacher's sample
             * ~0.976 of the time with every line on Granite Rapids: the prefetches
             * stalled on the fill buffers; every eighth, ~1.02; PERFORMANCE.md log
             * 127), every eighth for a pass of two blocks (~0.98 of the time of
             * every fourth there, every sixteenth ~1.01; log 128) */
            if (nw != NULL && kept != NULL) {
                int lo = y * nn * ncc / H, hi = (y + 1) * nn * ncc / H;
                for (int c = (lo + nn - 1) / nn * nn; c < hi; c += nn)
                    __builtin_prefetch(nw + bw * (size_t)c, 0, 2);
            } else if (nw != NULL)
                for (int c = y * ncc / H; c < (y + 1) * ncc / H; c++)
                    for (int l = 0; l < DG_FEW_OCB; l++)   /* its 64-byte lines */
                        __builtin_prefetch(nw + (size_t)c * ldw + 16 * l, 0, 2);
            far_stream fs = {NULL, NULL};
            if (far != NULL)
                fs.p = (const char *)far + 64 * (step * far_lines / steps),
                fs.end = (const char *)far + 64 * ((step + (size_t)nb) * far_lines / steps);
            float *row = pb + (size_t)(2 * y) * ldp;
            int e = (y == 0) | (y == H - 1) << 1;   /* kernel rows in the border */
            if (nb == 2)
                convt_sparse2_rows[e][W](row, ldp, pplane, mask + (size_t)y * W,
                                         val + (size_t)y * W * DG_FEW_CC, pw, (size_t)cc * bw,
                                         &fs);
            else if (bm != NULL)
                sparse_rows[e][W](row, ldp, pplane, mask + (size_t)y * W,
                                  val + (size_t)y * W * DG_FEW_CC, pw, &fs);
            else
                convt_few_rows[e][W](row, ldp, pplane,
                                     x + (size_t)c0 * xplane + (size_t)y * W, xplane, pw, cc,
                                     &fs);
            while (fs.p < fs.end) FAR_STEP(fs.p, fs.end);   /* what the row's steps left */
        }
    }
}

/* The interiors of blocks [b0, b1)'s padded planes at pad (block b0's first) to
 * image n of out: assigned plus bias, or added; with a tail (only when assigning),
 * each sum plus bias then through its channel's eval-mode batch norm and
 * activation, ((v - mean) * scale + shift) with scale = dg_bn_eval_rstd(var) *
 * gamma and shift = beta: the bits of dg_batchnorm_act_forward_eval on the
 * stored v (which subtracts a +0 more, changing nothing, not even a -0 or a
 * NaN). A row 16 pixels at a time. In a teacher's one-image sample the batch
 * norm applied here instead of in a call of its own (~9 us) took ~1.5 % off the
 * sample's time (PERFORMANCE.md log 124). */
DG_AVX512 static void few_store(const direct_job *j, const float *pad, size_t n, int b0,
                                int b1, const dg_bn_eval *tail) {
    int OC = j->OC, OH = j->OH, OW = j->OW, ldp = OW + 2;
    size_t pplane = (size_t)(OH + 2) * ldp, ohw = (size_t)OH * OW;
    int act = tail != NULL ? tail->act : DG_ACT_NONE;
    float slope = tail != NULL ? tail->slope : 0.0f;
    for (int b = b0; b < b1; b++) {
        for (int v = 0; v < DG_FEW_OCB; v++) {
            int oc = b * DG_FEW_OCB + v;
            float *o = j->out + (n * OC + oc) * ohw;
            const float *sp = pad + ((size_t)(b - b0) * DG_FEW_OCB + v) * pplane + ldp + 1;
            __m512 vb = _mm512_set1_ps(j->bias != NULL ? j->bias[oc] : 0.0f);
            __m512 vm = _mm512_setzero_ps(), vs = vm, vt = vm;
            if (tail != NULL) {
                float g = tail->gamma != NULL ? tail->gamma[oc] : 1.0f;
                vm = _mm512_set1_ps(tail->mean[oc]);
                vs = _mm512_set1_ps(dg_bn_eval_rstd(tail->var[oc], tail->eps) * g);
                vt = _mm512_set1_ps(tail->beta != NULL ? tail->beta[oc] : 0.0f);
            }
            for (int oy = 0; oy < OH; oy++, o += OW, sp += ldp) {
                for (int ox = 0; ox < OW; ox += 16) {
                    __mmask16 m = dg_lanes(OW - ox);
                    __m512 x = _mm512_maskz_loadu_ps(m, sp + ox);
                    if (j->add) {
                        x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, o + ox), x);
                    } else {
                        x = _mm512_add_ps(x, vb);
                        if (tail != NULL)
                            x = dg_act16(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(x, vm), vs),
                                                       vt), act, slope);
                    }
                    _mm512_mask_storeu_ps(o + ox, m, x);
                }
            }
        }
    }
}

/* Units (image, block of 4 output channels) [lo, hi) of the task, one image's
 * run of blocks at a time: their padded planes (in the task's slot of ws)
 * zeroed, each chunk of DG_FEW_CC input channels added on (few_chunk), then
 * the interiors to out (few_store). */
static void convt_few_task(void *ctx, int t, int nt) {
    const direct_job *j = (const direct_job *)ctx;
    int C = j->C, hw = j->H * j->W, blocks = j->OC / DG_FEW_OCB;
    size_t pplane = (size_t)(j->OH + 2) * (j->OW + 2);
    float *pad = j->ws + (size_t)t * j->task_floats;
    size_t lf = few_list_floats(C, hw);   /* an image's lists (few_lists) */
    float pk[DG_FEW_CC * 16 * DG_FEW_OCB] __attribute__((aligned(64)));
    size_t lo, hi;
    dg_split((size_t)j->N * blocks, 1, t, nt, &lo, &hi);
    for (size_t u = lo; u < hi;) {
        size_t n = u / blocks;
        int b0 = (int)(u % blocks);
        int b1 = (n + 1) * blocks <= hi ? blocks : (int)(hi - n * blocks);
        uint64_t *mask = NULL;
        float *val = NULL;
        if (j->lists != NULL) few_list_parts(j->lists + n * lf, C, hw, &mask, &val);
        memset(pad, 0, sizeof(float) * (size_t)(b1 - b0) * DG_FEW_OCB * pplane);
        for (int c0 = 0; c0 < C; c0 += DG_FEW_CC) {
            size_t s = (size_t)(c0 / DG_FEW_CC) * hw;   /* the chunk's first slot */
            few_chunk(j, pad, b0, b1, b0, b1, j->inp + n * C * hw, c0,
                      mask != NULL ? mask + s : NULL, mask != NULL ? val + s * DG_FEW_CC : NULL,
                      NULL, 0, pk);
        }
        few_store(j, pad, n, b0, b1, NULL);
        u = n * blocks + b1;
    }
}

/* ------------------------------------------------------------------------- */
/* Weight gradient                                                            */
/* ------------------------------------------------------------------------- */

/* dweight (OC, C, 4, 4) += sum over images n and output pixels (oh, ow) of
 * dout[n, oc, oh, ow] * padded inp[n, c, 2*oh + kh, 2*ow + kw]. First, in the
 * workspace: dout transposed to blocks of 32 channels, pixel-major, dyT (OC/32,
 * N, OH*OW, 32); then the sums (dw_units), each unit's in registers over all
 * images, added to dweight. The input is read in place (no product with its
 * padding is computed): a padded copy of every image, 8.4 MB for the
 * generator's layer, cost a pass over memory (PERFORMANCE.md log 77). */
typedef struct {
    float *dweight, *dyt;
    const float *dout, *inp;
    int N, C, H, W, OC, OH, OW;
} dw_job;

DG_AVX512 static void dw_prep_task(void *ctx, int t, int nt) {
    const dw_job *j = (const dw_job *)ctx;
    size_t lo, hi;
    dg_split((size_t)j->N, 1, t, nt, &lo, &hi);
    int OC = j->OC, B = DG_DIRECT_OCB;
    size_t ohw = (size_t)j->OH * j->OW;
    /* 16 channels x 16 pixels at a time, transposed in registers */
    for (size_t n = lo; n < hi; n++) {
        const float *dy = j->dout + n * ohw * OC;
        for (int oc = 0; oc < OC; oc += 16) {
            float *dyt = j->dyt + ((size_t)(oc / B) * j->N + n) * ohw * B + oc % B;
            for (size_t q = 0; q < ohw; q += 16) {
                int np = ohw - q >= 16 ? 16 : (int)(ohw - q);
                __mmask16 m = dg_lanes(np);
                __m512 v[16];
                _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++)
                    v[i] = _mm512_maskz_loadu_ps(m, dy + (size_t)(oc + i) * ohw + q);
                transpose16(v);
                _Pragma("GCC unroll 16") for (int k = 0; k < 16; k++)
                    if (k < np) _mm512_storeu_ps(dyt + (q + k) * B, v[k]);
            }
        }
    }
}

/* Unit u of the weight gradient: output channels ob .. ob + 31, input channel
 * c, kernel rows 2*half and 2*half + 1. */
static inline void unit_of(size_t u, int C, int *ob, int *c, int *half) {
    *half = (int)(u % 2);
    *c = (int)(u / 2 % (size_t)C);
    *ob = (int)(u / 2 / (size_t)C) * DG_DIRECT_OCB;
}

/* One output pixel's products: the unit's taps [t0, t1) (tap t: kernel row t / 4
 * of the unit's two, column t % 4), leaving out column 0 when skip0 and column
 * 3 when skip3 (they fall in the padding); d: the pixel's 32 channels of dout,
 * x[r][k]: its window's input value at row r, column k, broadcast. Inlined with
 * constant bounds, so the accumulators stay in registers. */
DG_INLINE_AVX512 void dw_pixel(__m512 a[8][2], const float *d, __m512 x[2][4], int t0,
                               int t1, int skip0, int skip3) {
    __m512 d0 = _mm512_loadu_ps(d), d1 = _mm512_loadu_ps(d + 16);
    _Pragma("GCC unroll 8") for (int t = 0; t < 8; t++) {
        if (t < t0 || t >= t1 || (skip0 && t % 4 == 0) || (skip3 && t % 4 == 3)) continue;
        a[t][0] = _mm512_fmadd_ps(d0, x[t / 4][t % 4], a[t][0]);
        a[t][1] = _mm512_fmadd_ps(d1, x[t / 4][t % 4], a[t][1]);
    }
}

/* The window of output pixel ow: input columns 2*ow + 1 and + 2 of both rows
 * (window columns 2 and 3) broadcast into x[r][2..3] (columns 0 and 1 are the
 * previous pixel's 2 and 3); for the last pixel (last) column 3 falls in the
 * padding and is not read. */
DG_INLINE_AVX512 void dw_window(__m512 x[2][4], const float *const *xr, int ow, int last) {
    _Pragma("GCC unroll 2") for (int r = 0; r < 2; r++) {
        x[r][2] = _mm512_set1_ps(xr[r][2 * ow + 1]);
        x[r][3] = last ? _mm512_setzero_ps() : _mm512_set1_ps(xr[r][2 * ow + 2]);
    }
}

DG_INLINE_AVX512 void dw_shift(__m512 x[2][4]) {
    _Pragma("GCC unroll 2") for (int r = 0; r < 2; r++) {
        x[r][0] = x[r][2];
        x[r][1] = x[r][3];
    }
}

/* One output row of OW pixels (dr: its dout, pixel-major, pixels ld floats
 * apart; xr[0], xr[1]: its window's two input rows of W = 2*OW floats, a row of
 * zeros where the window's row falls in the padding): the first pixel's column
 * 0 and the last one's column 3 fall in the padding, and are left out.
 * Neighbouring pixels' windows share two columns, broadcast once. */
DG_INLINE_AVX512 void dw_row(__m512 a[8][2], const float *dr, const float *const *xr, int OW,
                             int ld, int t0, int t1) {
    __m512 x[2][4];
    _Pragma("GCC unroll 2") for (int r = 0; r < 2; r++) {
        x[r][0] = _mm512_setzero_ps();   /* padding, never multiplied */
        x[r][1] = _mm512_set1_ps(xr[r][0]);
    }
    dw_window(x, xr, 0, OW == 1);
    if (OW == 1) {
        dw_pixel(a, dr, x, t0, t1, 1, 1);
        return;
    }
    dw_pixel(a, dr, x, t0, t1, 1, 0);
    _Pragma("GCC unroll 8") for (int ow = 1; ow < OW - 1; ow++) {
        dw_shift(x);
        dw_window(x, xr, ow, 0);
        dw_pixel(a, dr + (size_t)ow * ld, x, t0, t1, 0, 0);
    }
    dw_shift(x);
    dw_window(x, xr, OW - 1, 1);
    dw_pixel(a, dr + (size_t)(OW - 1) * ld, x, t0, t1, 0, 1);
}

/* dw_row with the row's width a constant for DCGAN's 7-pixel rows: the pixels
 * unrolled, the window's columns stay in registers without moves from pixel to
 * pixel and the offsets are constants (PERFORMANCE.md log 83); the same FMAs. */
#define DW_ROW(a, dr, xr, OW, ld, t0, t1)                                    \
    do {                                                                     \
        if ((OW) == 7)                                                       \
            dw_row(a, dr, xr, 7, ld, t0, t1);                                \
        else                                                                 \
            dw_row(a, dr, xr, OW, ld, t0, t1);                               \
    } while (0)

/* dw_row's row in the padding: input rows have at most 2 * DG_DIRECT_MAXW
 * floats (direct_geometry). */
static const float dw_zero_row[2 * DG_DIRECT_MAXW];

/* Images whose products a unit sums in registers before adding them onto its
 * sums (blocked summation): the rounding error of a weight's sum then grows
 * with the pixels of DG_DW_IMAGES images plus the number of groups, not with
 * all N*OH*OW products. One chain over every image had PyTorch's float32 error
 * (1.2e-6 normwise at 16 images, 2.1e-6 at 64, the GEMM path's 6e-7 and 5e-7);
 * groups of 4, 3.6e-7 and 3.0e-7 at no measured cost (PERFORMANCE.md, log 62). */
#define DG_DW_IMAGES 4

/* Units a task takes together, group of images by group: each group's dout
 * (DG_DW_IMAGES x OH*OW x 32 channels, 25 KB at 7x7) then serves that many
 * units from L1 instead of being read again from L2 for each (on Ice Lake,
 * 0.72-0.82x the time of one unit at a time at 1 thread, 0.82-0.90x at 2; 16
 * and 32 gave the same, PERFORMANCE.md log 77). Their sums: 8 KiB on the stack. */
#define DG_DW_UNITS 8

/* Units [lo, hi) (unit u: block u / (2C) of 32 output channels, input channel
 * u / 2 % C, kernel rows 2*(u % 2) and the next): each unit's 8 taps x 32
 * channels sum in zmm over the pixels of a group of DG_DW_IMAGES images, each
 * group's sums are added onto the unit's (in L1), which then go to dweight.
 * Up to DG_DW_UNITS consecutive units of one block run group by group side by
 * side (the group's dout in L1 over them); units of one block follow each
 * other, so the block's dout (N x OH*OW x 32) stays in L2 over them. Each
 * weight's sum runs over the groups in order, and within a group over images,
 * then pixels, in one task, whatever the thread count or the units beside it. */
DG_AVX512 static void dw_units(const dw_job *j, size_t lo, size_t hi) {
    int C = j->C, H = j->H, W = j->W, OH = j->OH, OW = j->OW, B = DG_DIRECT_OCB;
    size_t plane = (size_t)H * W, ohw = (size_t)OH * OW;
    float tot[DG_DW_UNITS][8 * DG_DIRECT_OCB];
    for (size_t u0 = lo; u0 < hi;) {
        /* units u0 .. u1 - 1: at most DG_DW_UNITS, all of u0's block */
        size_t block_end = (u0 / (2 * (size_t)C) + 1) * 2 * (size_t)C;
        size_t u1 = u0 + DG_DW_UNITS;
        if (u1 > hi) u1 = hi;
        if (u1 > block_end) u1 = block_end;
        for (int n0 = 0; n0 < j->N; n0 += DG_DW_IMAGES) {
            int n1 = j->N - n0 < DG_DW_IMAGES ? j->N : n0 + DG_DW_IMAGES;
            for (size_t u = u0; u < u1; u++) {
                int ob, c, half;
                unit_of(u, C, &ob, &c, &half);
                __m512 a[8][2];
                _Pragma("GCC unroll 8") for (int t = 0; t < 8; t++) {
                    a[t][0] = _mm512_setzero_ps();
                    a[t][1] = _mm512_setzero_ps();
                }
                for (int n = n0; n < n1; n++) {
                    const float *xc = j->inp + ((size_t)n * C + c) * plane;
                    const float *dyn = j->dyt + ((size_t)(ob / B) * j->N + n) * ohw * B;
                    /* kernel rows 2*half and + 1 read input rows y and y + 1,
                     * y = 2*oh + 2*half - 1: the first falls in the top padding for
                     * half = 0, oh = 0 and the second in the bottom padding for
                     * half = 1, oh = OH - 1 (OH = H/2); their taps are left out */
                    for (int oh = 0; oh < OH; oh++) {
                        int y = 2 * oh + 2 * half - 1;
                        const float *xr[2] = {y >= 0 ? xc + (size_t)y * W : dw_zero_row,
                                              y + 1 < H ? xc + (size_t)(y + 1) * W : dw_zero_row};
                        const float *dr = dyn + (size_t)oh * OW * B;
                        if (half == 0 && oh == 0)
                            DW_ROW(a, dr, xr, OW, B, 4, 8);
                        else if (half == 1 && oh == OH - 1)
                            DW_ROW(a, dr, xr, OW, B, 0, 4);
                        else
                            DW_ROW(a, dr, xr, OW, B, 0, 8);
                    }
                }
                /* the group's sums onto the unit's (in L1) */
                float *tu = tot[u - u0];
                _Pragma("GCC unroll 8") for (int t = 0; t < 8; t++) {
                    for (int v = 0; v < 2; v++) {
                        float *q = tu + t * 32 + v * 16;
                        _mm512_storeu_ps(q, n0 == 0 ? a[t][v]
                                                    : _mm512_add_ps(_mm512_loadu_ps(q), a[t][v]));
                    }
                }
            }
        }
        for (size_t u = u0; u < u1; u++) {
            int ob, c, half;
            unit_of(u, C, &ob, &c, &half);
            for (int i = 0; i < DG_DIRECT_OCB; i++) {
                float *dw = j->dweight + ((size_t)(ob + i) * C + c) * 16 + 8 * half;
                for (int t = 0; t < 8; t++) dw[t] += tot[u - u0][t * 32 + i];
            }
        }
        u0 = u1;
    }
}

static void dw_task(void *ctx, int t, int nt) {
    const dw_job *j = (const dw_job *)ctx;
    size_t units = (size_t)(j->OC / DG_DIRECT_OCB) * j->C * 2, lo, hi;
    dg_split(units, 1, t, nt, &lo, &hi);
    if (lo < hi) dw_units(j, lo, hi);
}

/* Workspace floats of the weight gradient: dout transposed (dyT). */
static size_t dw_floats(int N, int H, int W, int OC) {
    return (size_t)N * (H / 2) * (W / 2) * OC;
}
#endif

int dg_direct_dweight_fits(int N, int C, int H, int W, int OC, int KH, int KW, int SH,
                           int SW, int PH, int PW, int OH, int OW, size_t ws_floats) {
#if DG_HAVE_AVX2
    return direct_geometry(N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW, DG_DIRECT_OCB) &&
           dw_floats(N, H, W, OC) <= ws_floats;
#else
    (void)N; (void)C; (void)H; (void)W; (void)OC; (void)KH; (void)KW; (void)SH; (void)SW;
    (void)PH; (void)PW; (void)OH; (void)OW; (void)ws_floats;
    return 0;
#endif
}

dg_status dg_direct_conv_dweight(float *dweight, float *ws, size_t ws_floats,
                                 const float *dout, const float *inp, int N, int C, int H,
                                 int W, int OC) {
#if DG_HAVE_AVX2
    if (dw_floats(N, H, W, OC) > ws_floats) return DG_STATUS_ERR_SHAPE;
    dw_job j = {dweight, ws, dout, inp, N, C, H, W, OC, H / 2, W / 2};
    dg_parallel(dw_prep_task, &j, dg_threads_for((double)N * OC * (H / 2) * (W / 2), 65536.0));
    double flops = 2.0 * N * (double)OC * C * 16.0 * (H / 2) * (W / 2);
    int nt = dg_threads_for(flops, DG_DIRECT_GRAIN);
    size_t units = (size_t)(OC / DG_DIRECT_OCB) * C * 2;
    if ((size_t)nt > units) nt = (int)units;
    dg_parallel(dw_task, &j, nt < 1 ? 1 : nt);
    return DG_STATUS_OK;
#else
    (void)dweight; (void)ws; (void)ws_floats; (void)dout; (void)inp; (void)N; (void)C;
    (void)H; (void)W; (void)OC;
    return DG_STATUS_ERR_VALUE;
#endif
}

#if DG_HAVE_AVX2
/* Packs the weights (pack), then runs the images (images) in as many tasks as
 * direct_tasks asks for and the workspace holds (j->group images each, fewer
 * images per chunk before fewer tasks; neither changes a bit); or, with several
 * tasks and j->parts parts of panels, part_images, whose tasks pack the parts
 * themselves. pixels_h x pixels_w: the pixels each weight tap meets per image
 * (the small map), for the FLOP count. */
static dg_status direct_run(direct_job *j, size_t ws_floats, int pixels_h, int pixels_w,
                            dg_task_fn pack, dg_task_fn images, dg_task_fn part_images) {
    if (j->wp_floats + j->task_floats > ws_floats) return DG_STATUS_ERR_SHAPE;
    size_t room = (ws_floats - j->wp_floats) / j->task_floats;   /* image slots */
    int nt = direct_tasks((size_t)j->N, j->N, j->C, j->OC, pixels_h * pixels_w);
    if ((size_t)nt * (size_t)j->group > room) {
        j->group = room >= (size_t)nt ? (int)(room / (size_t)nt) : 1;
        if (room < (size_t)nt) nt = (int)room;
    }
    /* each task packs a copy of its own when the panels are at most a part and
     * there is room, so that its images read only panels its own core wrote. At 2
     * threads, the critic layer's input gradient (512 KB of panels) took 93-95 us
     * an image with a copy per task and 100 us with one shared copy (91 us at 1
     * thread); the whole step x0.969-0.976 (PERFORMANCE.md log 93). The
     * generator's 2 MB panels, packed twice, were no faster; they go in parts,
     * which the tasks share out (part_task, convt_part_task), each packing the
     * parts it comes to first. */
    j->copies = 1;
    if (nt > 1 && part_images != NULL && j->parts > 1 && j->parts <= DG_DIRECT_MAX_PARTS) {
        dg_parallel(part_images, j, nt);
        return DG_STATUS_OK;
    }
    if (nt > 1 && j->wp_floats * sizeof(float) <= DG_DIRECT_PART_BYTES &&
        (size_t)nt * (j->wp_floats + (size_t)j->group * j->task_floats) <= ws_floats)
        j->copies = nt;
    else
        dg_parallel(pack, j, dg_threads_for((double)j->wp_floats, 65536.0));
    dg_parallel(images, j, nt);
    return DG_STATUS_OK;
}
#endif

dg_status dg_direct_conv(float *out, int add, float *ws, size_t ws_floats, const float *inp,
                         const float *weight, const float *bias, int N, int C, int H,
                         int W, int OC) {
#if DG_HAVE_AVX2
    int OH = H / 2, OW = W / 2;
    direct_job j = {add, out, ws, inp, weight, add ? NULL : bias, N, C, H, W, OC, OH, OW,
                    (size_t)C * 16 * OC, task_floats(C, H, W, OH, OW), DG_DIRECT_GROUP,
                    NULL, 0, 1, 0, {0}, {0}, NULL};
    int pc = part_channels(C, DG_DIRECT_OCB);
    j.parts = (OC + pc - 1) / pc;
    return direct_run(&j, ws_floats, OH, OW, pack_task, image_task, part_task);
#else
    (void)out; (void)add; (void)ws; (void)ws_floats; (void)inp; (void)weight; (void)bias;
    (void)N; (void)C; (void)H; (void)W; (void)OC;
    return DG_STATUS_ERR_VALUE;
#endif
}

dg_status dg_direct_convt(float *out, int add, float *ws, size_t ws_floats, const float *inp,
                          const float *weight, const float *bias, int N, int C, int H,
                          int W, int OC) {
#if DG_HAVE_AVX2
    /* one image per slot: its (2H*2W, 16) row buffer */
    direct_job j = {add, out, ws, inp, weight, add ? NULL : bias, N, C, H, W, OC, 2 * H,
                    2 * W, (size_t)C * 16 * OC, (size_t)4 * H * W * DG_DIRECT_T_OCB, 1,
                    NULL, 0, 1, 0, {0}, {0}, NULL};
    int pc = part_channels(C, DG_DIRECT_T_OCB);
    j.parts = (OC + pc - 1) / pc;
    return direct_run(&j, ws_floats, H, W, convt_pack_task, convt_image_task, convt_part_task);
#else
    (void)out; (void)add; (void)ws; (void)ws_floats; (void)inp; (void)weight; (void)bias;
    (void)N; (void)C; (void)H; (void)W; (void)OC;
    return DG_STATUS_ERR_VALUE;
#endif
}

int dg_direct_tfew_tasks(int N, int C, int H, int W, int OC) {
#if DG_HAVE_AVX2
    return direct_tasks((size_t)N * (OC / DG_FEW_OCB), N, C, OC, H * W);
#else
    (void)N; (void)C; (void)H; (void)W; (void)OC;
    return 1;
#endif
}

#if DG_HAVE_AVX2
/* Rows [r0, r0 + nr) of the input made: those rows of the linear layer, then
 * their batch norm and activation, as the whole layers make them (the same calls,
 * on those rows: each row's bits are its own in both), the batch norm's scales
 * read from h->scale where the caller keeps them (dg_batchnorm_eval_scale): its
 * variance and gamma, 100 KB for a teacher, then unread, and no square roots
 * (a teacher's one-image sample ~0.99 of the time on Granite Rapids,
 * PERFORMANCE.md log 129). */
static dg_status few_head_rows(const dg_few_head *h, size_t r0, size_t nr) {
    if (nr == 0) return DG_STATUS_OK;
    float *lin = h->lin + r0;
    dg_status st = dg_linear_forward(lin, h->z, h->lweight + r0 * h->K,
                                     h->lbias != NULL ? h->lbias + r0 : NULL, 1, h->K,
                                     (int)nr);
    if (st != DG_STATUS_OK) return st;
    const dg_bn_eval *bn = &h->bn;
    if (h->scale != NULL) {   /* on this thread, as every call here */
        dg_bn_eval_one_scaled(h->hid + r0, lin, bn->mean + r0, h->scale + r0,
                              bn->beta != NULL ? bn->beta + r0 : NULL, (int)nr, bn->act,
                              bn->slope);
        return DG_STATUS_OK;
    }
    return dg_batchnorm_act_forward_eval(h->hid + r0, lin, bn->mean + r0, bn->var + r0,
                                         bn->gamma != NULL ? bn->gamma + r0 : NULL,
                                         bn->beta != NULL ? bn->beta + r0 : NULL, 1, (int)nr,
                                         1, bn->eps, bn->act, bn->slope);
}

/* The end of the chunk of rows that starts at row r0 (C channels of hw rows; r0 a
 * chunk's first row, or C * hw: an empty chunk). */
static size_t few_head_end(int C, int hw, size_t r0) {
    size_t e = r0 + (size_t)DG_FEW_CC * hw, m = (size_t)C * hw;
    return e < m ? e : m;
}

/* The first row of piece p of `pieces` of the rows [r0, r1): a multiple of 16
 * rows from r0 (whole groups of rows of dg_linear_forward's kernel of one image). */
static size_t few_piece(size_t r0, size_t r1, int p, int pieces) {
    size_t g = (r1 - r0 + 15) / 16, at = r0 + 16 * (g * (size_t)p / (size_t)pieces);
    return at < r1 ? at : r1;
}
#endif

dg_status dg_direct_convt_few_head(float *out, float *ws, size_t ws_floats,
                                   const dg_few_head *h, const float *weight,
                                   const float *packed, const float *bias, int C, int H,
                                   int W, int OC, const dg_bn_eval *tail) {
#if DG_HAVE_AVX2
    int hw = H * W, blocks = OC / DG_FEW_OCB;
    /* kept weights only when all are finite (their flag after them) */
    if (packed != NULL && packed[(size_t)C * OC * 16] != 1.0f) packed = NULL;
    direct_job j = {0, out, ws, h->hid, weight, bias, 1, C, H, W, OC, 2 * H, 2 * W, 0,
                    few_task_floats(1, OC, 2 * H, 2 * W, 1), 1, NULL, 0, 1, 0, {0}, {0},
                    packed};
    if (j.task_floats > ws_floats) return DG_STATUS_ERR_SHAPE;
    /* the lists after the slot, when there is room for them */
    size_t pplane = (size_t)(2 * H + 2) * (2 * W + 2);
    float *lists = few_lists_room(ws, ws_floats, j.task_floats, 1, C, hw);
    uint64_t *mask = NULL;
    float *val = NULL;
    if (lists != NULL) few_list_parts(lists, C, hw, &mask, &val);
    float pk[DG_FEW_CC * 16 * DG_FEW_OCB] __attribute__((aligned(64)));
    size_t K = (size_t)h->K, lrow = K * sizeof(float);
    /* blocks per piece of the next chunk's rows, and pieces per chunk */
    int g = (blocks + DG_FEW_HEAD_PIECES - 1) / DG_FEW_HEAD_PIECES;
    int pieces = (blocks + g - 1) / g;
    /* the first chunk, with nothing to overlap */
    dg_status st = few_head_rows(h, 0, few_head_end(C, hw, 0));
    if (st != DG_STATUS_OK) return st;
    memset(ws, 0, sizeof(float) * (size_t)blocks * DG_FEW_OCB * pplane);
    for (int c0 = 0; c0 < C; c0 += DG_FEW_CC) {
        int cc = C - c0 < DG_FEW_CC ? C - c0 : DG_FEW_CC;
        /* its lists when few enough of its inputs are nonzero */
        const float *xc = h->hid + (size_t)c0 * hw;
        size_t s = (size_t)(c0 / DG_FEW_CC) * hw, nx = (size_t)cc * hw;
        int sparse = lists != NULL && few_sparse(xc, nx);
        if (sparse) few_lists(xc, cc, hw, mask + s, val + s * DG_FEW_CC);
        /* the next chunk's rows [r0, r1), made in DG_FEW_HEAD_PIECES pieces, each
         * after its run of g blocks, its weights fetched into L2 while the run
         * computes (few_chunk's far lines, a share per input row of each block; a
         * piece ahead: no faster, log 70) */
        size_t r0 = (size_t)(c0 + cc) * hw, r1 = few_head_end(C, hw, r0);
        /* the lines fetched: those rows; in the last chunk, which has none to make,
         * the first chunk's rows, which the next call (a loop of samples) makes
         * first with nothing to overlap, then from L2 instead of L3 (a teacher's
         * sample 0.965-0.971 of the time on Granite Rapids, PERFORMANCE.md log
         * 106). Not with one chunk: there every row stays in L2 between calls. */
        int again = r0 == r1 && c0 > 0;
        size_t f0 = again ? 0 : r0, f1 = again ? few_head_end(C, hw, 0) : r1;
        for (int p = 0; p < pieces; p++) {
            int b0 = p * g, b1 = b0 + g < blocks ? b0 + g : blocks;
            size_t p0 = few_piece(r0, r1, p, pieces), p1 = few_piece(r0, r1, p + 1, pieces);
            size_t q0 = few_piece(f0, f1, p, pieces), q1 = few_piece(f0, f1, p + 1, pieces);
            few_chunk(&j, ws, 0, blocks, b0, b1, h->hid, c0, sparse ? mask + s : NULL,
                      sparse ? val + s * DG_FEW_CC : NULL, h->lweight + q0 * K,
                      ((q1 - q0) * lrow + 63) / 64, pk);   /* 64-byte lines */
            st = few_head_rows(h, p0, p1 - p0);
            if (st != DG_STATUS_OK) return st;
        }
    }
    few_store(&j, ws, 0, 0, blocks, tail);
    return DG_STATUS_OK;
#else
    (void)out; (void)ws; (void)ws_floats; (void)h; (void)weight; (void)packed; (void)bias;
    (void)C; (void)H; (void)W; (void)OC; (void)tail;
    return DG_STATUS_ERR_VALUE;
#endif
}

size_t dg_convt_few_packed_floats(int C, int OC) {
    if (C <= 0 || OC <= 0 || OC % DG_FEW_OCB != 0) return 0;
    if ((size_t)C > (SIZE_MAX - 16) / 16 / (size_t)OC) return 0;
    return (size_t)C * OC * 16 + 16;
}

/* Plain loops: a layout made once per change of the weights, not per call. */
dg_status dg_convt_few_pack(float *packed, const float *weight, int C, int OC) {
    size_t n = dg_convt_few_packed_floats(C, OC);
    if (n == 0) return DG_STATUS_ERR_SHAPE;
    if (packed == NULL || weight == NULL) return DG_STATUS_ERR_NULL;
    int finite = 1;
    for (int c0 = 0; c0 < C; c0 += DG_FEW_CC) {
        int cc = C - c0 < DG_FEW_CC ? C - c0 : DG_FEW_CC;
        for (int b = 0; b < OC / DG_FEW_OCB; b++) {
            float *blk = packed + (size_t)c0 * OC * 16 + (size_t)b * cc * 16 * DG_FEW_OCB;
            for (int c = 0; c < cc; c++) {
                const float *w = weight + ((size_t)(c0 + c) * OC + (size_t)b * DG_FEW_OCB) * 16;
                float *row = blk + (size_t)c * 16 * DG_FEW_OCB;
                for (int v = 0; v < DG_FEW_OCB; v++)       /* output channel of the block */
                    for (int k = 0; k < 4; k++)            /* kernel row */
                        for (int t = 0; t < 4; t++) {      /* tap of the row */
                            float x = w[v * 16 + k * 4 + t];
                            row[k * 16 + v * 4 + t] = x;
                            finite &= isfinite(x) != 0;
                        }
            }
        }
    }
    for (int i = 0; i < 16; i++) packed[n - 16 + i] = finite ? 1.0f : 0.0f;
    return DG_STATUS_OK;
}

double dg_few_sparse_share(double share) {
    double before = few_share();
    if (share >= 0.0 && share <= 1.0)
        few_sparse_max = share;
    else if (share < 0.0)
        few_sparse_max = -1.0;   /* the CPU's */
    return before;
}

dg_status dg_direct_convt_few(float *out, int add, float *ws, size_t ws_floats,
                              const float *inp, const float *weight, const float *bias, int N,
                              int C, int H, int W, int OC) {
#if DG_HAVE_AVX2
    /* each task's slot: the padded planes of its blocks of one image */
    direct_job j = {add, out, ws, inp, weight, add ? NULL : bias, N, C, H, W, OC, 2 * H,
                    2 * W, 0, 0, 1, NULL, 0, 1, 0, {0}, {0}, NULL};
    int nt = direct_tasks((size_t)N * (OC / DG_FEW_OCB), N, C, OC, H * W);
    while (nt > 1 && (size_t)nt * few_task_floats(N, OC, 2 * H, 2 * W, nt) > ws_floats) nt--;
    j.task_floats = few_task_floats(N, OC, 2 * H, 2 * W, nt);
    if ((size_t)nt * j.task_floats > ws_floats) return DG_STATUS_ERR_SHAPE;
    /* the sparse rows, when few enough inputs are nonzero and the workspace has
     * room after the tasks' slots for every image's lists, made once here */
    size_t lf = few_list_floats(C, H * W), total = (size_t)N * C * H * W;
    float *lists = few_lists_room(ws, ws_floats, (size_t)nt * j.task_floats, (size_t)N, C,
                                  H * W);
    if (lists != NULL && few_sparse(inp, total)) {
        j.lists = lists;
        for (int n = 0; n < N; n++) {
            uint64_t *mask;
            float *val;
            few_list_parts(j.lists + (size_t)n * lf, C, H * W, &mask, &val);
            few_lists(inp + (size_t)n * C * H * W, C, H * W, mask, val);
        }
    }
    dg_parallel(convt_few_task, &j, nt);
    return DG_STATUS_OK;
#else
    (void)out; (void)add; (void)ws; (void)ws_floats; (void)inp; (void)weight; (void)bias;
    (void)N; (void)C; (void)H; (void)W; (void)OC;
    return DG_STATUS_ERR_VALUE;
#endif
}
