/*
 * dg_embed.c -- label embedding (a lookup table), as torch.nn.Embedding:
 * https://pytorch.org/docs/stable/generated/torch.nn.Embedding.html
 *
 * Conditional generators feed embed(y) next to z, and the projection
 * discriminator takes <embed(y), h> (Miyato & Koyama 2018, "cGANs with
 * Projection Discriminator", https://arxiv.org/abs/1802.05637).
 *
 * N = batch size, K = number of classes (rows of the table), D = embedding dim.
 * Every label is validated BEFORE anything is written, so a bad label leaves
 * out / dtable untouched and returns DG_STATUS_ERR_VALUE.
 * N == 0 is an empty batch (nothing to do); K <= 0, D <= 0 or N < 0 is a shape error.
 */
#include <string.h>

#include "distgan.h"

/* Shared argument checks: sizes, then labels (0 <= label < K). */
static dg_status check_labels(const int64_t *labels, int N, int K, int D) {
    if (N < 0 || K <= 0 || D <= 0) return DG_STATUS_ERR_SHAPE;
    for (int n = 0; n < N; n++) {
        if (labels[n] < 0 || labels[n] >= (int64_t)K) return DG_STATUS_ERR_VALUE;
    }
    return DG_STATUS_OK;
}

/* out is (N, D), labels is (N), table is (K, D). */
dg_status dg_embedding_forward(float *out, const int64_t *labels,
                               const float *table, int N, int K, int D) {
    if (out == NULL || labels == NULL || table == NULL) return DG_STATUS_ERR_NULL;
    dg_status st = check_labels(labels, N, K, D);
    if (st != DG_STATUS_OK) return st;
    for (int n = 0; n < N; n++) {
        memcpy(out + (size_t)n * (size_t)D, table + (size_t)labels[n] * (size_t)D, (size_t)D * sizeof(float));
    }
    return DG_STATUS_OK;
}

/* dtable is (K, D) or NULL (not needed), dout is (N, D), labels is (N).
 * Repeated labels accumulate, in batch order. */
dg_status dg_embedding_backward(float *dtable, const float *dout,
                                const int64_t *labels, int N, int K, int D) {
    if (dout == NULL || labels == NULL) return DG_STATUS_ERR_NULL;
    dg_status st = check_labels(labels, N, K, D);
    if (st != DG_STATUS_OK || dtable == NULL) return st;
    for (int n = 0; n < N; n++) {
        /* forward: out[n, :] = table[labels[n], :]  =>  dtable[labels[n], :] += dout[n, :] */
        float *drow = dtable + (size_t)labels[n] * (size_t)D;
        const float *dout_n = dout + (size_t)n * (size_t)D;
        for (int d = 0; d < D; d++) drow[d] += dout_n[d];
    }
    return DG_STATUS_OK;
}
