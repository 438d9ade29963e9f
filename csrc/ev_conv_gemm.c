/* float32 convolutions made one sample at a time with ev_gemm (see ev_conv.h).
 *
 * Why per sample: the whole batch's columns (c*kh*kw x oh*ow per sample, 14 MB for
 * batch 32, 16 channels, 3x3, 28x28) do not fit in L2; one sample's working set
 * is still in cache when the product reads it.
 *
 * Stride 1 (any padding and dilation) needs no columns at all.  In the sample's
 * zero-padded copy xp (c x Hp x Wp), the columns' row for tap (ch, i, j) is xp read
 * from ch*Hp*Wp + i*dh*Wp + j*dw onwards, if outputs are numbered on the padded
 * width, q = oy*Wp + ox: so the product reads B's rows in place at those offsets
 * (ev_mat with an offset table), over Q = (oh-1)*Wp + ow positions of which those
 * with ox >= ow are discarded (wasted work: (Wp - ow) / Wp of it).  The input
 * gradient of a stride-1 conv is itself a stride-1 conv of gy (padding (kh-1)*dh
 * - ph) with the kernel flipped and its channel axes swapped.  Other strides take
 * the sample's im2col columns, then col2im for the input gradient.
 *
 * Layouts per sample and group gi (og = o/groups, kg = c/groups*kh*kw, P = oh*ow):
 *   forward      out[gi*og .., P]  = W_g (og x kg) @ cols_g (kg x P)
 *   grad input   cols_g (kg x P)    = W_g^T (kg x og) @ gy[gi*og .., P], then col2im
 *   grad weight  W_g^T (kg x og)   += cols_g (kg x P) @ gy[gi*og .., P]^T, over the batch
 * (the weight gradient is made transposed so that the columns, the big operand,
 * are A, read in place, and only gy's small transpose is packed).
 */
#include <stdint.h>
#include <string.h>
#include "ev_conv.h"
#include "ev_gemm.h"

static int64_t ev__max(int64_t a, int64_t b) { return a > b ? a : b; }

/* The sizes of one sample's buffers. */
typedef struct {
    int64_t og, kg, P;        /* out channels per group, taps per group, outputs per plane */
    int64_t Hp, Wp, Q;        /* stride 1: padded plane, outputs numbered on its width */
} ev__sizes;

static ev__sizes ev__sizes_of(const ev_conv_geom* g, int64_t o, int64_t groups) {
    ev__sizes z;
    z.og = o / groups;
    z.kg = g->c / groups * g->kh * g->kw;
    z.P = g->oh * g->ow;
    z.Hp = g->oh + (g->kh - 1) * g->dh;
    z.Wp = g->ow + (g->kw - 1) * g->dw;
    z.Q = (g->oh - 1) * z.Wp + g->ow;
    return z;
}

static int ev__stride1(const ev_conv_geom* g) { return g->sh == 1 && g->sw == 1; }

/* The input-gradient conv of a stride-1 conv g: over gy (o channels, oh x ow), out
 * x's plane; NULL-like (c = 0) when a padding would be negative. */
static ev_conv_geom ev__transposed(const ev_conv_geom* g, int64_t o) {
    ev_conv_geom t = *g;
    t.c = o;
    t.h = g->oh;
    t.w = g->ow;
    t.ph = (g->kh - 1) * g->dh - g->ph;
    t.pw = (g->kw - 1) * g->dw - g->pw;
    t.oh = g->h;
    t.ow = g->w;
    const int64_t pb = g->h + (g->kh - 1) * g->dh - g->oh - t.ph, pr = g->w + (g->kw - 1) * g->dw - g->ow - t.pw;
    if (t.ph < 0 || t.pw < 0 || pb < 0 || pr < 0) t.c = 0;
    return t;
}

/* The work buffer's parts, in the one order ev_conv_gemm_work_f32 sizes them.
 * im2col path: the sample's columns, the weight gradient's transpose (kg x o), the
 * product's panels. */
typedef struct {
    float *cols, *dwt, *panels;
} ev__cols_parts;

static ev__cols_parts ev__cols_layout(float* work, const ev_conv_geom* g, const ev__sizes* z, int64_t o) {
    ev__cols_parts w;
    w.cols = work;
    w.dwt = w.cols + g->c * g->kh * g->kw * z->P;
    w.panels = w.dwt + z->kg * o;
    return w;
}

/* Stride 1: the padded sample, its tap offsets (int64, 8-byte aligned), the wide
 * output (or gy widened, o x Q), the product's panels, then (weight gradient only)
 * the gradient's transpose. */
typedef struct {
    float* xp;
    int64_t* off;
    float *wide, *panels, *dwt;
} ev__s1_parts;

static ev__s1_parts ev__s1_layout(float* work, const ev_conv_geom* g, const ev__sizes* z, int64_t o) {
    ev__s1_parts w;
    w.xp = work;
    w.off = (int64_t*)(((uintptr_t)(w.xp + g->c * z->Hp * z->Wp) + 7) & ~(uintptr_t)7);
    w.wide = (float*)(w.off + z->kg);
    w.panels = w.wide + o * z->Q;
    w.dwt = w.panels + ev_gemm_work_f32();
    return w;
}

/* Floats of the stride-1 layout up to the transpose (+ 2: the offsets' alignment). */
static int64_t ev__s1_work(const ev_conv_geom* g, int64_t o, int64_t groups) {
    const ev__sizes z = ev__sizes_of(g, o, groups);
    return g->c * z.Hp * z.Wp + 2 * z.kg + 2 + o * z.Q + ev_gemm_work_f32();
}

int64_t ev_conv_gemm_work_f32(const ev_conv_geom* g, int64_t o, int64_t groups) {
    if (groups < 1 || o < 1 || g->c < 1 || g->oh < 1 || g->ow < 1) return -1;
    const ev__sizes z = ev__sizes_of(g, o, groups);
    int64_t need = g->c * g->kh * g->kw * z.P + z.kg * o + ev_gemm_work_f32();      /* ev__cols_layout */
    if (ev__stride1(g)) {
        need = ev__max(need, ev__s1_work(g, o, groups) + z.kg * o);          /* forward; weight grad */
        const ev_conv_geom t = ev__transposed(g, o);
        if (t.c) need = ev__max(need, o * g->c / groups * g->kh * g->kw + ev__s1_work(&t, g->c, groups));
    }
    return need;
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

/* xp (c x Hp x Wp) = one sample x, zero-padded as g says (stride 1). */
static void ev__pad(const float* x, float* xp, const ev_conv_geom* g, const ev__sizes* z) {
    memset(xp, 0, (size_t)(g->c * z->Hp * z->Wp) * sizeof(float));
    /* the plane sits at (ph, pw); rows or columns of x past the padded plane are
     * never read by any window (a window's last tap is at most Hp - 1) */
    const int64_t rows = g->h < z->Hp - g->ph ? g->h : z->Hp - g->ph;
    const int64_t cols = g->w < z->Wp - g->pw ? g->w : z->Wp - g->pw;
    for (int64_t ch = 0; ch < g->c; ch++)
        for (int64_t y = 0; y < rows; y++) {
            const float* src = x + (ch * g->h + y) * g->w;
            float* dst = xp + (ch * z->Hp + g->ph + y) * z->Wp + g->pw;
            for (int64_t i = 0; i < cols; i++) dst[i] = src[i];
        }
}

/* off[t] for the kg taps (ch, i, j) of one group: where the tap's row starts in xp. */
static void ev__taps(int64_t* off, const ev_conv_geom* g, const ev__sizes* z, int64_t channels) {
    int64_t t = 0;
    for (int64_t ch = 0; ch < channels; ch++)
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++) off[t++] = (ch * z->Hp + i * g->dh) * z->Wp + j * g->dw;
}

/* Stride-1 forward, no columns (see the top of this file). */
static int ev__forward_s1(const float* x, const float* w, float* out, const ev_conv_geom* g, int64_t o,
                          int64_t groups, float* work) {
    const ev__sizes z = ev__sizes_of(g, o, groups);
    const int64_t cg = g->c / groups, plane = z.Hp * z.Wp;
    const ev__s1_parts parts = ev__s1_layout(work, g, &z, o);
    float *xp = parts.xp, *wide = parts.wide, *gw = parts.panels;
    int64_t* off = parts.off;
    ev__taps(off, g, &z, cg);
    for (int64_t s = 0; s < g->n; s++) {
        ev__pad(x + s * g->c * g->h * g->w, xp, g, &z);
        for (int64_t gi = 0; gi < groups; gi++) {
            const ev_mat a = {w + gi * z.og * z.kg, NULL, z.kg, 1};
            const ev_mat b = {xp + gi * cg * plane, off, 0, 1};
            if (ev_gemm_mat_f32(z.og, z.Q, z.kg, &a, &b, wide + gi * z.og * z.Q, z.Q, 0, gw, ev_gemm_work_f32()))
                return -1;
        }
        float* os = out + s * o * z.P;
        for (int64_t r = 0; r < o; r++)
            for (int64_t oy = 0; oy < g->oh; oy++) {
                const float* src = wide + r * z.Q + oy * z.Wp;
                float* dst = os + (r * g->oh + oy) * g->ow;
                for (int64_t ox = 0; ox < g->ow; ox++) dst[ox] = src[ox];
            }
    }
    return 0;
}

int ev_conv2d_gemm_f32(const float* x, const float* w, float* out, const ev_conv_geom* g, int64_t o,
                       int64_t groups, float* work, int64_t work_size) {
    if (!ev__ok(g, o, groups, work_size)) return -1;
    if (ev__stride1(g)) return ev__forward_s1(x, w, out, g, o, groups, work);
    const ev_conv_geom one = ev__one(g);
    const ev__sizes z = ev__sizes_of(g, o, groups);
    const ev__cols_parts parts = ev__cols_layout(work, g, &z, o);
    float *cols = parts.cols, *gw = parts.panels;
    for (int64_t s = 0; s < g->n; s++) {
        if (ev_im2col_f32(x + s * g->c * g->h * g->w, cols, &one)) return -1;
        if (ev_gemm_f32(groups, z.og, z.P, z.kg, w, z.og * z.kg, z.kg, 1, cols, z.kg * z.P, z.P, 1,
                        out + s * o * z.P, z.og * z.P, z.P, 0, gw, ev_gemm_work_f32())) return -1;
    }
    return 0;
}

int ev_conv2d_grad_input_gemm_f32(const float* gy, const float* w, float* dx, const ev_conv_geom* g, int64_t o,
                                  int64_t groups, float* work, int64_t work_size) {
    if (!ev__ok(g, o, groups, work_size)) return -1;
    const ev__sizes z = ev__sizes_of(g, o, groups);
    const int64_t cg = g->c / groups;
    if (ev__stride1(g)) {
        const ev_conv_geom t = ev__transposed(g, o);
        if (t.c) {
            /* the flipped kernel wt (c, og, kh, kw): wt[gi*cg + ch, r, i, j] = w[gi*og + r, ch, kh-1-i, kw-1-j] */
            float* wt = work;
            for (int64_t gi = 0; gi < groups; gi++)
                for (int64_t ch = 0; ch < cg; ch++)
                    for (int64_t r = 0; r < z.og; r++)
                        for (int64_t i = 0; i < g->kh; i++)
                            for (int64_t j = 0; j < g->kw; j++)
                                wt[(((gi * cg + ch) * z.og + r) * g->kh + i) * g->kw + j] =
                                    w[(((gi * z.og + r) * cg + ch) * g->kh + g->kh - 1 - i) * g->kw + g->kw - 1 - j];
            return ev__forward_s1(gy, wt, dx, &t, g->c, groups, wt + o * cg * g->kh * g->kw);
        }
    }
    const ev_conv_geom one = ev__one(g);
    const ev__cols_parts parts = ev__cols_layout(work, g, &z, o);
    float *cols = parts.cols, *gw = parts.panels;
    for (int64_t s = 0; s < g->n; s++) {
        if (ev_gemm_f32(groups, z.kg, z.P, z.og, w, z.og * z.kg, 1, z.kg, gy + s * o * z.P, z.og * z.P, z.P, 1,
                        cols, z.kg * z.P, z.P, 0, gw, ev_gemm_work_f32())) return -1;
        if (ev_col2im_f32(cols, dx + s * g->c * g->h * g->w, &one)) return -1;
    }
    return 0;
}

/* dw (o, cg, kh, kw) from its transpose dwt (groups of kg x og); zeros for no samples. */
static void ev__untranspose(const float* dwt, float* dw, const ev_conv_geom* g, const ev__sizes* z,
                            int64_t groups) {
    for (int64_t gi = 0; gi < groups; gi++)
        for (int64_t i = 0; i < z->og; i++)
            for (int64_t j = 0; j < z->kg; j++)
                dw[(gi * z->og + i) * z->kg + j] = g->n ? dwt[(gi * z->kg + j) * z->og + i] : 0.0f;
}

/* Stride-1 weight gradient: A = the padded sample's tap rows in place (kg x Q),
 * B = gy widened to the padded width (zeros at the discarded positions), transposed. */
static int ev__grad_weight_s1(const float* x, const float* gy, float* dw, const ev_conv_geom* g, int64_t o,
                              int64_t groups, float* work) {
    const ev__sizes z = ev__sizes_of(g, o, groups);
    const int64_t cg = g->c / groups, plane = z.Hp * z.Wp;
    const ev__s1_parts parts = ev__s1_layout(work, g, &z, o);
    float *xp = parts.xp, *gyw = parts.wide, *gw = parts.panels, *dwt = parts.dwt;
    int64_t* off = parts.off;
    ev__taps(off, g, &z, cg);
    for (int64_t s = 0; s < g->n; s++) {
        ev__pad(x + s * g->c * g->h * g->w, xp, g, &z);
        const float* gs = gy + s * o * z.P;
        for (int64_t r = 0; r < o; r++)
            for (int64_t oy = 0; oy < g->oh; oy++) {
                float* dst = gyw + r * z.Q + oy * z.Wp;
                const float* src = gs + (r * g->oh + oy) * g->ow;
                const int64_t pad = oy + 1 < g->oh ? z.Wp - g->ow : 0;
                for (int64_t ox = 0; ox < g->ow; ox++) dst[ox] = src[ox];
                for (int64_t ox = 0; ox < pad; ox++) dst[g->ow + ox] = 0.0f;
            }
        for (int64_t gi = 0; gi < groups; gi++) {
            const ev_mat a = {xp + gi * cg * plane, off, 0, 1};
            const ev_mat b = {gyw + gi * z.og * z.Q, NULL, 1, z.Q};
            if (ev_gemm_mat_f32(z.kg, z.og, z.Q, &a, &b, dwt + gi * z.kg * z.og, z.og, s > 0, gw,
                                ev_gemm_work_f32()))
                return -1;
        }
    }
    ev__untranspose(dwt, dw, g, &z, groups);
    return 0;
}

int ev_conv2d_grad_weight_gemm_f32(const float* x, const float* gy, float* dw, const ev_conv_geom* g, int64_t o,
                                   int64_t groups, float* work, int64_t work_size) {
    if (!ev__ok(g, o, groups, work_size)) return -1;
    if (ev__stride1(g)) return ev__grad_weight_s1(x, gy, dw, g, o, groups, work);
    const ev_conv_geom one = ev__one(g);
    const ev__sizes z = ev__sizes_of(g, o, groups);
    const ev__cols_parts parts = ev__cols_layout(work, g, &z, o);
    float *cols = parts.cols, *dwt = parts.dwt, *gw = parts.panels;
    for (int64_t s = 0; s < g->n; s++) {
        if (ev_im2col_f32(x + s * g->c * g->h * g->w, cols, &one)) return -1;
        if (ev_gemm_f32(groups, z.kg, z.og, z.P, cols, z.kg * z.P, z.P, 1, gy + s * o * z.P, z.og * z.P, 1, z.P,
                        dwt, z.kg * z.og, z.og, s > 0, gw, ev_gemm_work_f32())) return -1;
    }
    ev__untranspose(dwt, dw, g, &z, groups);
    return 0;
}
