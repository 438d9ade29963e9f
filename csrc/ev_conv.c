/* Convolution and pooling kernels: im2col / col2im (the matrix products run in
 * BLAS through numpy) and 2-d max / average pooling with their gradients.
 * See ev_conv.h for the layouts and the geometry.
 *
 * Every loop runs over (sample, channel) planes; a plane's output (cols rows, a
 * pooled plane, or a dx plane) is written by one thread only, so planes split
 * across threads with no reduction.  Each row of taps is clipped to the input
 * once (ev__span): the padding is written as zeros and never read.
 *
 * The Python wrappers (exprvm/kernels/conv.py) check dtype, contiguity and every
 * buffer's real size against the geometry before calling here; these functions
 * check only the geometry itself.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "ev_conv.h"

/* Below this many elements touched, threads cost more than they save: these loops
 * are copies and compares, memory-bound, and a thread waiting at the join for a
 * partner descheduled by another process costs milliseconds. */
#define EV_CONV_PAR_MIN ((int64_t)1 << 18)

static int ev__geom_ok(const ev_conv_geom* g) {
    return g->n >= 0 && g->c >= 0 && g->h >= 1 && g->w >= 1 && g->kh >= 1 && g->kw >= 1
        && g->sh >= 1 && g->sw >= 1 && g->ph >= 0 && g->pw >= 0 && g->dh >= 1 && g->dw >= 1
        && g->oh >= 1 && g->ow >= 1;
}

/* The outputs o in [lo, hi) of a row of `count` whose tap o*s + off lies in [0, size). */
static void ev__span(int64_t count, int64_t s, int64_t off, int64_t size, int64_t* lo, int64_t* hi) {
    if (off >= 0 && off + (count - 1) * s < size) {    /* all taps inside: no division */
        *lo = 0;
        *hi = count;
        return;
    }
    int64_t a = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t b = size - 1 - off < 0 ? 0 : (size - 1 - off) / s + 1;
    if (a > count) a = count;
    if (b > count) b = count;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* NOTE: the plane loop is written twice (serial, and `omp parallel for`) rather than
 * with an OpenMP `if` clause: a false `if` still enters the runtime (~2 us). */
#ifdef _OPENMP
#define EV__PLANES(planes, work, body)                                        \
    if ((work) < EV_CONV_PAR_MIN) {                                           \
        for (int64_t p = 0; p < (planes); p++) body                           \
    } else {                                                                  \
        _Pragma("omp parallel for schedule(static)")                         \
        for (int64_t p = 0; p < (planes); p++) body                           \
    }
#else
#define EV__PLANES(planes, work, body)                                        \
    for (int64_t p = 0; p < (planes); p++) body
#endif

#define EV_IM2COL(T, sfx)                                                     \
    static void ev__im2col_plane_##sfx(const T* x, T* cols, const ev_conv_geom* g) { \
        const int64_t ohw = g->oh * g->ow;                                    \
        for (int64_t i = 0; i < g->kh; i++)                                   \
            for (int64_t j = 0; j < g->kw; j++) {                             \
                T* row = cols + (i * g->kw + j) * ohw;                        \
                const int64_t off = j * g->dw - g->pw;                        \
                int64_t lo, hi;                                               \
                ev__span(g->ow, g->sw, off, g->w, &lo, &hi);                  \
                for (int64_t oy = 0; oy < g->oh; oy++) {                      \
                    T* r = row + oy * g->ow;                                  \
                    const int64_t iy = oy * g->sh - g->ph + i * g->dh;        \
                    if (iy < 0 || iy >= g->h || lo == hi) {                   \
                        for (int64_t ox = 0; ox < g->ow; ox++) r[ox] = 0;     \
                        continue;                                             \
                    }                                                         \
                    const T* xr = x + iy * g->w;                              \
                    for (int64_t ox = 0; ox < lo; ox++) r[ox] = 0;            \
                    if (g->sw == 1) {                                         \
                        /* a loop, not memcpy: rows are short (a call each   \
                         * cost as much as the copy) */                        \
                        const T* xs = xr + off;                               \
                        _Pragma("omp simd")                                   \
                        for (int64_t ox = lo; ox < hi; ox++) r[ox] = xs[ox];  \
                    } else                                                    \
                        for (int64_t ox = lo; ox < hi; ox++) r[ox] = xr[ox * g->sw + off]; \
                    for (int64_t ox = hi; ox < g->ow; ox++) r[ox] = 0;        \
                }                                                             \
            }                                                                 \
    }                                                                         \
    static void ev__col2im_plane_##sfx(const T* cols, T* x, const ev_conv_geom* g) { \
        const int64_t ohw = g->oh * g->ow;                                    \
        memset(x, 0, (size_t)(g->h * g->w) * sizeof(T));                      \
        for (int64_t i = 0; i < g->kh; i++)                                   \
            for (int64_t j = 0; j < g->kw; j++) {                             \
                const T* row = cols + (i * g->kw + j) * ohw;                  \
                const int64_t off = j * g->dw - g->pw;                        \
                int64_t lo, hi;                                               \
                ev__span(g->ow, g->sw, off, g->w, &lo, &hi);                  \
                for (int64_t oy = 0; oy < g->oh; oy++) {                      \
                    const int64_t iy = oy * g->sh - g->ph + i * g->dh;        \
                    if (iy < 0 || iy >= g->h) continue;                       \
                    const T* r = row + oy * g->ow;                            \
                    T* xr = x + iy * g->w;                                    \
                    _Pragma("omp simd")                                       \
                    for (int64_t ox = lo; ox < hi; ox++) xr[ox * g->sw + off] += r[ox]; \
                }                                                             \
            }                                                                 \
    }                                                                         \
    int ev_im2col_##sfx(const T* x, T* cols, const ev_conv_geom* g) {         \
        if (!ev__geom_ok(g)) return -1;                                       \
        const int64_t planes = g->n * g->c, hw = g->h * g->w;                 \
        const int64_t rows = g->kh * g->kw * g->oh * g->ow;                   \
        EV__PLANES(planes, planes * rows,                                     \
                   { ev__im2col_plane_##sfx(x + p * hw, cols + p * rows, g); }) \
        return 0;                                                             \
    }                                                                         \
    int ev_col2im_##sfx(const T* cols, T* x, const ev_conv_geom* g) {         \
        if (!ev__geom_ok(g)) return -1;                                       \
        const int64_t planes = g->n * g->c, hw = g->h * g->w;                 \
        const int64_t rows = g->kh * g->kw * g->oh * g->ow;                   \
        EV__PLANES(planes, planes * rows,                                     \
                   { ev__col2im_plane_##sfx(cols + p * rows, x + p * hw, g); }) \
        return 0;                                                             \
    }

/* The window (oy, ox)'s real rows [*i0, *i1) and columns [*j0, *j1) as tap indices. */
static void ev__window(const ev_conv_geom* g, int64_t oy, int64_t ox,
                       int64_t* i0, int64_t* i1, int64_t* j0, int64_t* j1) {
    int64_t lo, hi;
    ev__span(g->kh, g->dh, oy * g->sh - g->ph, g->h, &lo, &hi);
    *i0 = lo; *i1 = hi;
    ev__span(g->kw, g->dw, ox * g->sw - g->pw, g->w, &lo, &hi);
    *j0 = lo; *j1 = hi;
}

#define EV_POOL(T, sfx)                                                       \
    static void ev__max_plane_##sfx(const T* x, T* out, int64_t* am, const ev_conv_geom* g) { \
        if (g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0 \
                && g->dh == 1 && g->dw == 1) {                                \
            /* NOTE: the common 2x2/2 window, with the general loop's rule: taps in */ \
            /* row-major order, the first max wins a tie, a NaN beats any number */ \
            const int64_t w = g->w, ow = g->ow;                               \
            for (int64_t oy = 0; oy < g->oh; oy++)                            \
                for (int64_t ox = 0; ox < ow; ox++) {                         \
                    int64_t at = 2 * oy * w + 2 * ox, best_at = at;           \
                    T best = x[at];                                           \
                    const int64_t taps[3] = {at + 1, at + w, at + w + 1};     \
                    for (int k = 0; k < 3; k++) {                             \
                        const T v = x[taps[k]];                               \
                        if (v > best || (v != v && best == best)) {           \
                            best = v;                                         \
                            best_at = taps[k];                                \
                        }                                                     \
                    }                                                         \
                    if (out) out[oy * ow + ox] = best;                        \
                    if (am) am[oy * ow + ox] = best_at;                       \
                }                                                             \
            return;                                                           \
        }                                                                     \
        for (int64_t oy = 0; oy < g->oh; oy++)                                \
            for (int64_t ox = 0; ox < g->ow; ox++) {                          \
                int64_t i0, i1, j0, j1, best_at = -1;                         \
                T best = (T)-INFINITY;                                        \
                ev__window(g, oy, ox, &i0, &i1, &j0, &j1);                    \
                for (int64_t i = i0; i < i1; i++) {                           \
                    const int64_t iy = oy * g->sh - g->ph + i * g->dh;        \
                    for (int64_t j = j0; j < j1; j++) {                       \
                        const int64_t at = iy * g->w + ox * g->sw - g->pw + j * g->dw; \
                        const T v = x[at];                                    \
                        if (best_at < 0 || v > best || (v != v && best == best)) { \
                            best = v;                                         \
                            best_at = at;                                     \
                        }                                                     \
                    }                                                         \
                }                                                             \
                if (out) out[oy * g->ow + ox] = best;                         \
                if (am) am[oy * g->ow + ox] = best_at;                        \
            }                                                                 \
    }                                                                         \
    int ev_max_pool2d_##sfx(const T* x, T* out, int64_t* argmax, const ev_conv_geom* g) { \
        if (!ev__geom_ok(g)) return -1;                                       \
        const int64_t planes = g->n * g->c, hw = g->h * g->w, ohw = g->oh * g->ow; \
        EV__PLANES(planes, planes * ohw * g->kh * g->kw,                      \
                   { ev__max_plane_##sfx(x + p * hw, out ? out + p * ohw : NULL, \
                                         argmax ? argmax + p * ohw : NULL, g); }) \
        return 0;                                                             \
    }                                                                         \
    int ev_max_pool2d_grad_##sfx(const T* gout, const int64_t* argmax, T* dx, \
                                 const ev_conv_geom* g) {                     \
        if (!ev__geom_ok(g)) return -1;                                       \
        const int64_t planes = g->n * g->c, hw = g->h * g->w, ohw = g->oh * g->ow; \
        for (int64_t k = 0; k < planes * ohw; k++)                            \
            if (argmax[k] < -1 || argmax[k] >= hw) return -2;                 \
        EV__PLANES(planes, planes * (hw + ohw), {                             \
            T* d = dx + p * hw;                                               \
            const T* gp = gout + p * ohw;                                     \
            const int64_t* ap = argmax + p * ohw;                             \
            memset(d, 0, (size_t)hw * sizeof(T));                             \
            for (int64_t k = 0; k < ohw; k++)                                 \
                if (ap[k] >= 0) d[ap[k]] += gp[k];                            \
        })                                                                    \
        return 0;                                                             \
    }                                                                         \
    static void ev__avg_plane_##sfx(const T* x, T* out, const ev_conv_geom* g) { \
        const T scale = (T)1 / (T)(g->kh * g->kw);                            \
        for (int64_t oy = 0; oy < g->oh; oy++)                                \
            for (int64_t ox = 0; ox < g->ow; ox++) {                          \
                int64_t i0, i1, j0, j1;                                       \
                T s = 0;                                                      \
                ev__window(g, oy, ox, &i0, &i1, &j0, &j1);                    \
                for (int64_t i = i0; i < i1; i++)                             \
                    for (int64_t j = j0; j < j1; j++)                         \
                        s += x[(oy * g->sh - g->ph + i * g->dh) * g->w + ox * g->sw - g->pw + j * g->dw]; \
                out[oy * g->ow + ox] = s * scale;                             \
            }                                                                 \
    }                                                                         \
    static void ev__avg_grad_plane_##sfx(const T* gp, T* d, const ev_conv_geom* g) { \
        const T scale = (T)1 / (T)(g->kh * g->kw);                            \
        memset(d, 0, (size_t)(g->h * g->w) * sizeof(T));                      \
        for (int64_t oy = 0; oy < g->oh; oy++)                                \
            for (int64_t ox = 0; ox < g->ow; ox++) {                          \
                int64_t i0, i1, j0, j1;                                       \
                const T share = gp[oy * g->ow + ox] * scale;                  \
                ev__window(g, oy, ox, &i0, &i1, &j0, &j1);                    \
                for (int64_t i = i0; i < i1; i++)                             \
                    for (int64_t j = j0; j < j1; j++)                         \
                        d[(oy * g->sh - g->ph + i * g->dh) * g->w + ox * g->sw - g->pw + j * g->dw] += share; \
            }                                                                 \
    }                                                                         \
    int ev_avg_pool2d_##sfx(const T* x, T* out, const ev_conv_geom* g) {      \
        if (!ev__geom_ok(g)) return -1;                                       \
        const int64_t planes = g->n * g->c, hw = g->h * g->w, ohw = g->oh * g->ow; \
        EV__PLANES(planes, planes * ohw * g->kh * g->kw,                      \
                   { ev__avg_plane_##sfx(x + p * hw, out + p * ohw, g); })   \
        return 0;                                                             \
    }                                                                         \
    int ev_avg_pool2d_grad_##sfx(const T* gout, T* dx, const ev_conv_geom* g) { \
        if (!ev__geom_ok(g)) return -1;                                       \
        const int64_t planes = g->n * g->c, hw = g->h * g->w, ohw = g->oh * g->ow; \
        EV__PLANES(planes, planes * (hw + ohw * g->kh * g->kw),               \
                   { ev__avg_grad_plane_##sfx(gout + p * ohw, dx + p * hw, g); }) \
        return 0;                                                             \
    }

EV_IM2COL(float, f32)
EV_IM2COL(double, f64)
EV_POOL(float, f32)
EV_POOL(double, f64)
