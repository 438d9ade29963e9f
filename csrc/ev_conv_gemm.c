/* float32 convolutions as per-sample im2col + ev_gemm_f32 (see ev_conv.h).
 *
 * Why per sample: the whole batch's columns (c*kh*kw x oh*ow per sample, 14 MB for
 * batch 32, 16 channels, 3x3, 28x28) do not fit in L2, so a batch-wide im2col
 * followed by one product moves them through memory twice; one sample's columns
 * (450 KB there) are still in L2 when the product packs them.
 *
 * Layouts per sample and group gi (og = o/groups, kg = c/groups*kh*kw, P = oh*ow):
 *   forward      out[gi*og .., P]  = W_g (og x kg) @ cols_g (kg x P)
 *   grad input   cols_g (kg x P)    = W_g^T (kg x og) @ gy[gi*og .., P], then col2im
 *   grad weight  W_g^T (kg x og)   += cols_g (kg x P) @ gy[gi*og .., P]^T, over the batch
 */
#include <stdint.h>
#include "ev_conv.h"
#include "ev_gemm.h"

static int64_t ev__cols(const ev_conv_geom* g) { return g->c * g->kh * g->kw * g->oh * g->ow; }

/* The columns, the weight gradient's transpose (kg x o), and the product's panels. */
int64_t ev_conv_gemm_work_f32(const ev_conv_geom* g, int64_t o, int64_t groups) {
    if (groups < 1) return -1;
    return ev__cols(g) + g->c / groups * g->kh * g->kw * o + ev_gemm_work_f32();
}

/* A geometry, groups and work the per-sample loops can use? */
static int ev__ok(const ev_conv_geom* g, int64_t o, int64_t groups, int64_t work_size) {
    return g->n >= 0 && g->c >= 1 && o >= 1 && groups >= 1 && g->c % groups == 0 && o % groups == 0
        && g->h >= 1 && g->w >= 1 && g->oh >= 1 && g->ow >= 1 && work_size >= ev_conv_gemm_work_f32(g, o, groups);
}

/* The geometry of one sample of g. */
static ev_conv_geom ev__one(const ev_conv_geom* g) {
    ev_conv_geom s = *g;
    s.n = 1;
    return s;
}

int ev_conv2d_gemm_f32(const float* x, const float* w, float* out, const ev_conv_geom* g, int64_t o,
                       int64_t groups, float* work, int64_t work_size) {
    if (!ev__ok(g, o, groups, work_size)) return -1;
    const ev_conv_geom one = ev__one(g);
    const int64_t og = o / groups, kg = g->c / groups * g->kh * g->kw, P = g->oh * g->ow;
    float* cols = work;
    float* gw = work + ev__cols(g) + kg * o;
    for (int64_t s = 0; s < g->n; s++) {
        if (ev_im2col_f32(x + s * g->c * g->h * g->w, cols, &one)) return -1;
        if (ev_gemm_f32(groups, og, P, kg, w, og * kg, kg, 1, cols, kg * P, P, 1,
                        out + s * o * P, og * P, P, 0, gw, ev_gemm_work_f32())) return -1;
    }
    return 0;
}

int ev_conv2d_grad_input_gemm_f32(const float* gy, const float* w, float* dx, const ev_conv_geom* g, int64_t o,
                                  int64_t groups, float* work, int64_t work_size) {
    if (!ev__ok(g, o, groups, work_size)) return -1;
    const ev_conv_geom one = ev__one(g);
    const int64_t og = o / groups, kg = g->c / groups * g->kh * g->kw, P = g->oh * g->ow;
    float* cols = work;
    float* gw = work + ev__cols(g) + kg * o;
    for (int64_t s = 0; s < g->n; s++) {
        if (ev_gemm_f32(groups, kg, P, og, w, og * kg, 1, kg, gy + s * o * P, og * P, P, 1,
                        cols, kg * P, P, 0, gw, ev_gemm_work_f32())) return -1;
        if (ev_col2im_f32(cols, dx + s * g->c * g->h * g->w, &one)) return -1;
    }
    return 0;
}

int ev_conv2d_grad_weight_gemm_f32(const float* x, const float* gy, float* dw, const ev_conv_geom* g, int64_t o,
                                   int64_t groups, float* work, int64_t work_size) {
    if (!ev__ok(g, o, groups, work_size)) return -1;
    const ev_conv_geom one = ev__one(g);
    const int64_t og = o / groups, kg = g->c / groups * g->kh * g->kw, P = g->oh * g->ow;
    float* cols = work;
    float* dwt = work + ev__cols(g);
    float* gw = dwt + kg * o;
    /* NOTE: made as dw^T = cols @ gy^T (kg x og per group): the columns (the big
     * operand) are then A, read in place row by row, and only gy's small transpose
     * is packed; dw = cols^T's way round would pack the columns transposed. */
    for (int64_t s = 0; s < g->n; s++) {
        if (ev_im2col_f32(x + s * g->c * g->h * g->w, cols, &one)) return -1;
        if (ev_gemm_f32(groups, kg, og, P, cols, kg * P, P, 1, gy + s * o * P, og * P, 1, P,
                        dwt, kg * og, og, s > 0, gw, ev_gemm_work_f32())) return -1;
    }
    for (int64_t gi = 0; gi < groups; gi++)
        for (int64_t i = 0; i < og; i++)
            for (int64_t j = 0; j < kg; j++) dw[(gi * og + i) * kg + j] = g->n ? dwt[(gi * kg + j) * og + i] : 0.0f;
    return 0;
}
