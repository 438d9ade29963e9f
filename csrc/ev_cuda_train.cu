// Solver updates on device parameters: SGD, Momentum (nesterov too), Adam /
// AdamW, each one pass over a parameter, with the host solvers' gradient
// preparation fused in front (exprvm/train/solvers.py, same order of
// operations, each step rounded to T as numpy rounds it):
//
//   g = clip(g, -clip, clip)            (clip > 0)
//   g = g * scale                       (scale: device scalar of a global-norm clip, or NULL)
//   g = g + l1 * sign(w);  g = g + w * l2
//
// A global-norm clip needs the norm of every clipped gradient before any
// update: ev_cuda_sumsq_* accumulates each parameter's sum of squares into one
// device double, ev_cuda_clip_scale turns it into the scale, and the updates
// read that scale from device memory: no copy to the host, no sync.  A NaN or Inf
// gradient sets EV_STATUS_NONFINITE in the status word (reported at the next sync).
#include <stddef.h>
#include <math.h>
#include <stdint.h>

#include "ev_cuda_launch.h"

extern "C" {
#include "ev_cuda.h"
}

namespace {

EV_KD float ev_sqrt(float x) { return sqrtf(x); }
EV_KD double ev_sqrt(double x) { return sqrt(x); }

template <class T>
struct Prep {
    T clip, l1, l2;
    const double* scale;
    int* status;        // EV_STATUS_NONFINITE is set here for a NaN / Inf gradient
};

template <class T>
EV_KD T clip_to(T g, T c) {
    g = (g < -c) ? -c : g;      // NaN stays NaN, as in numpy.clip
    return (g > c) ? c : g;
}

template <class T>
EV_KD T sign_of(T w) { return (w > 0) ? (T)1 : ((w < 0) ? (T)-1 : w); }  // sign(+-0)=+-0, NaN

template <class T>
EV_KD T prepared(const Prep<T>& p, T g, T w) {
    if (g - g != 0 && p.status) EV_ATOMIC_OR(p.status, EV_STATUS_NONFINITE);  // NaN or +-Inf
    if (p.clip > 0) g = clip_to(g, p.clip);
    if (p.scale) g = g * (T)(*p.scale);
    if (p.l1 != 0) g = g + sign_of(w) * p.l1;
    if (p.l2 != 0) g = g + w * p.l2;
    return g;
}

template <class T>
struct StepArgs {
    T* w;
    T* s1;          // momentum: velocity; adam: m
    T* s2;          // adam: v
    const T* g;
    Prep<T> prep;
    T lr, a, b, one_minus_a, one_minus_b, sq_scale, eps, decay;
    int nesterov;
};

template <class T>
struct Sgd {
    EV_KD static void run(const StepArgs<T>& p, int64_t i) {
        const T g = prepared(p.prep, p.g[i], p.w[i]) * p.lr;
        p.w[i] = p.w[i] - g;
    }
};

template <class T>
struct Momentum {  // a: momentum
    EV_KD static void run(const StepArgs<T>& p, int64_t i) {
        const T g = prepared(p.prep, p.g[i], p.w[i]) * p.lr;
        const T v = p.s1[i] * p.a - g;
        p.s1[i] = v;
        p.w[i] = p.w[i] + (p.nesterov ? v * p.a - g : v);
    }
};

template <class T>
struct Adam {  // a, b: beta1, beta2; lr: lr / (1 - beta1^t); sq_scale: 1 / sqrt(1 - beta2^t)
    EV_KD static void run(const StepArgs<T>& p, int64_t i) {
        const T g = prepared(p.prep, p.g[i], p.w[i]);
        T w = p.w[i];
        if (p.decay != 1) w = w * p.decay;          // AdamW's decoupled decay
        const T m = p.s1[i] * p.a + g * p.one_minus_a;
        const T v = p.s2[i] * p.b + (g * g) * p.one_minus_b;
        p.s1[i] = m;
        p.s2[i] = v;
        T d = ev_sqrt(v);
        if (p.sq_scale != 1) d = d * p.sq_scale;
        d = d + p.eps;
        p.w[i] = w - (m / d) * p.lr;
    }
};

template <class T>
struct SumSqArgs {
    const T* g;
    T clip;
    double* acc;
    int64_t n, parts;
};

template <class T>
struct SumSq {  // part i sums elements i, i + parts, ...: coalesced, one atomic per part
    EV_KD static void run(const SumSqArgs<T>& a, int64_t i) {
        double s = 0;
        for (int64_t k = i; k < a.n; k += a.parts) {
            const double v = (double)(a.clip > 0 ? clip_to(a.g[k], a.clip) : a.g[k]);
            s += v * v;
        }
        EV_ATOMIC_ADD(a.acc, s);
    }
};

struct ScaleArgs {
    double* acc;
    double max_norm;
};

struct ClipScale {
    EV_KD static void run(const ScaleArgs& a, int64_t) {
        const double norm = ev_sqrt(*a.acc);
        *a.acc = norm > a.max_norm ? a.max_norm / norm : 1.0;
    }
};

template <class T>
Prep<T> prep_of(T clip, T l1, T l2, const double* scale) {
    Prep<T> p = {clip, l1, l2, scale, ev_status_word()};
    return p;
}

}  // namespace

#define EV_TRAIN(T, sfx)                                                                      \
    extern "C" int ev_cuda_sgd_##sfx(T* w, const T* g, int64_t n, T lr, T clip, T l1, T l2,   \
                                     const double* scale) {                                   \
        StepArgs<T> p = {};                                                                   \
        p.w = w; p.g = g; p.prep = prep_of(clip, l1, l2, scale); p.lr = lr;                   \
        return ev_launch<Sgd<T> >(p, n);                                                      \
    }                                                                                         \
    extern "C" int ev_cuda_momentum_##sfx(T* w, T* velocity, const T* g, int64_t n, T lr,     \
                                          T momentum, int nesterov, T clip, T l1, T l2,       \
                                          const double* scale) {                              \
        StepArgs<T> p = {};                                                                   \
        p.w = w; p.s1 = velocity; p.g = g; p.prep = prep_of(clip, l1, l2, scale);             \
        p.lr = lr; p.a = momentum; p.nesterov = nesterov;                                     \
        return ev_launch<Momentum<T> >(p, n);                                                 \
    }                                                                                         \
    extern "C" int ev_cuda_adam_##sfx(T* w, T* m, T* v, const T* g, int64_t n, T lr_t,        \
                                      T beta1, T one_minus_beta1, T beta2,                    \
                                      T one_minus_beta2, T sq_scale, T eps, T decay, T clip,  \
                                      T l1, T l2, const double* scale) {                      \
        StepArgs<T> p = {};                                                                   \
        p.w = w; p.s1 = m; p.s2 = v; p.g = g; p.prep = prep_of(clip, l1, l2, scale);          \
        p.lr = lr_t; p.a = beta1; p.one_minus_a = one_minus_beta1; p.b = beta2;               \
        p.one_minus_b = one_minus_beta2; p.sq_scale = sq_scale; p.eps = eps; p.decay = decay; \
        return ev_launch<Adam<T> >(p, n);                                                     \
    }                                                                                         \
    extern "C" int ev_cuda_sumsq_##sfx(const T* g, T clip, double* acc, int64_t n,            \
                                       int64_t parts) {                                       \
        if (n < 0 || parts < 1) return EV_ERR_ARGS;                                           \
        SumSqArgs<T> a = {g, clip, acc, n, parts < n ? parts : (n ? n : 1)};                  \
        return ev_launch<SumSq<T> >(a, n ? a.parts : 0);                                      \
    }

EV_TRAIN(float, f32)
EV_TRAIN(double, f64)

extern "C" int ev_cuda_clip_scale(double* acc, double max_norm) {
    ScaleArgs a = {acc, max_norm};
    return ev_launch<ClipScale>(a, 1);
}
