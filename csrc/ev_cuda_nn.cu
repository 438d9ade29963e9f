// Device kernels for a training step: strided and broadcasting elementwise ops
// (bias adds, where, slice / transpose / concat copies), reductions over an
// axis (sum, mean, max), softmax / log-softmax / cross-entropy and its fused
// gradient, take (embedding) and its scatter-add gradient.
//
// Shapes arrive from Python already simplified (exprvm/kernels/device.py):
// strided operands as (ndim, shape, strides in elements) with contiguous
// dimensions merged; reductions and row ops as (outer, length, inner), the
// axis in the middle.  Every entry returns a CUDA error code (0: launched).
// Bad indices never touch memory out of bounds: the element becomes NaN and
// EV_STATUS_INDEX is set in the status word (read by ev_cuda_status).
#include <stddef.h>
#include <stdint.h>

#include "ev_cuda_launch.h"

extern "C" {
#include "ev_cuda.h"
}

namespace {

template <class T> EV_KD T ev_nan();
template <> EV_KD float ev_nan<float>() { return evm__i2f(0x7fc00000); }
template <> EV_KD double ev_nan<double>() { return evm__i2d(0x7ff8000000000000LL); }

template <class T> EV_KD T ev_neg_inf();
template <> EV_KD float ev_neg_inf<float>() { return evm__i2f((int32_t)0xff800000u); }
template <> EV_KD double ev_neg_inf<double>() { return evm__i2d((int64_t)0xfff0000000000000ULL); }

// NaN propagates, as in numpy.maximum / numpy.minimum.
template <class T> EV_KD T ev_max(T u, T v) { return (u > v || u != u) ? u : v; }
template <class T> EV_KD T ev_min(T u, T v) { return (u < v || u != u) ? u : v; }

EV_KD float ev_exp(float x) { return evm_exp_f32(x); }
EV_KD double ev_exp(double x) { return evm_exp_f64(x); }
// log(s) for a softmax denominator s >= 1: log1p(s - 1), as the C kernels compute it
EV_KD float ev_log_sum(float s) { return evm_log1p_f32(s - 1.0f); }
EV_KD double ev_log_sum(double s) { return evm_log1p_f64(s - 1.0); }

struct OpAdd { template <class T> EV_KD static T f(T u, T v) { return u + v; } };
struct OpSub { template <class T> EV_KD static T f(T u, T v) { return u - v; } };
struct OpMul { template <class T> EV_KD static T f(T u, T v) { return u * v; } };
struct OpDiv { template <class T> EV_KD static T f(T u, T v) { return u / v; } };
struct OpMax { template <class T> EV_KD static T f(T u, T v) { return ev_max(u, v); } };
struct OpMin { template <class T> EV_KD static T f(T u, T v) { return ev_min(u, v); } };

// ---- strided elementwise ---------------------------------------------------

template <class T>
struct StridedArgs {
    EvStrides s;
    const T* a;
    const T* b;
    const uint8_t* c;
    T* out;
};

template <class T, class Op>
struct Bcast {
    EV_KD static void run(const StridedArgs<T>& p, int64_t i) {
        int64_t off[2];
        ev_offsets<2>(p.s, i, off);
        p.out[i] = Op::f(p.a[off[0]], p.b[off[1]]);
    }
};

template <class T>
struct Where {
    EV_KD static void run(const StridedArgs<T>& p, int64_t i) {
        int64_t off[3];
        ev_offsets<3>(p.s, i, off);
        p.out[i] = p.c[off[0]] ? p.a[off[1]] : p.b[off[2]];
    }
};

// out (strides 1) <- x (strides 0): any view into any view.
template <class T>
struct Copy {
    EV_KD static void run(const StridedArgs<T>& p, int64_t i) {
        int64_t off[2];
        ev_offsets<2>(p.s, i, off);
        p.out[off[1]] = p.a[off[0]];
    }
};

template <class T>
struct Fill {
    EV_KD static void run(const StridedArgs<T>& p, int64_t i) { p.out[i] = p.a[0]; }
};

template <class T, class Op>
int bcast(const T* a, const T* b, T* out, int ndim, const int64_t* shape, const int64_t* as,
          const int64_t* bs, int64_t n) {
    StridedArgs<T> p;
    int rc = ev_strides(&p.s, ndim, shape, as, bs, NULL);
    if (rc) return rc;
    p.a = a; p.b = b; p.c = NULL; p.out = out;
    return ev_launch<Bcast<T, Op> >(p, n);
}

// ---- concatenation: up to EV_CONCAT_MAX contiguous pieces per launch ----------

template <class T>
struct ConcatArgs {
    const T* src[EV_CONCAT_MAX];
    int64_t start[EV_CONCAT_MAX + 1];   // where piece k starts along the axis, from s0
    int k;
    int64_t inner, axis_len, s0, span;  // out is (outer, axis_len, inner); rows [s0, s0+span)
    T* out;
};

template <class T>
struct Concat {
    EV_KD static void run(const ConcatArgs<T>& p, int64_t i) {
        const int64_t in = i % p.inner;
        const int64_t r = (i / p.inner) % p.span;
        const int64_t o = i / (p.inner * p.span);
        int k = 0;
        while (k + 1 < p.k && p.start[k + 1] <= r) k++;
        const int64_t len = p.start[k + 1] - p.start[k];
        p.out[(o * p.axis_len + p.s0 + r) * p.inner + in] =
            p.src[k][(o * len + (r - p.start[k])) * p.inner + in];
    }
};

template <class T>
int concat(int k, const T* const* srcs, const int64_t* lens, T* out, int64_t outer,
           int64_t axis_len, int64_t inner, int64_t s0) {
    if (k <= 0 || k > EV_CONCAT_MAX || outer < 0 || inner < 0 || s0 < 0) return EV_ERR_ARGS;
    ConcatArgs<T> p;
    p.k = k; p.inner = inner; p.axis_len = axis_len; p.s0 = s0; p.out = out;
    p.start[0] = 0;
    for (int j = 0; j < k; j++) {
        if (lens[j] < 0) return EV_ERR_ARGS;
        p.src[j] = srcs[j];
        p.start[j + 1] = p.start[j] + lens[j];
    }
    p.span = p.start[k];
    if (s0 + p.span > axis_len) return EV_ERR_ARGS;
    if (p.span == 0 || inner == 0) return 0;
    return ev_launch<Concat<T> >(p, outer * p.span * inner);
}

// ---- reductions over the middle axis of (outer, r, inner) ----------------------

template <class T>
struct ReduceArgs {
    const T* x;
    T* out;
    int64_t r, inner, parts;  // parts: interleaved partial sums per output (1: direct)
    T scale;                  // multiplies the result (mean: 1 / count)
};

// Partial p of output (o, in) reduces rows p, p + parts, p + 2 parts, ...: adjacent
// threads read adjacent addresses (coalesced) whatever inner is.
template <class T, bool kMax>
struct ReducePart {
    EV_KD static void run(const ReduceArgs<T>& a, int64_t i) {
        const int64_t in = i % a.inner;
        const int64_t part = (i / a.inner) % a.parts;
        const int64_t o = i / (a.inner * a.parts);
        const T* x = a.x + o * a.r * a.inner + in;
        T acc = kMax ? ev_neg_inf<T>() : (T)0;
        for (int64_t row = part; row < a.r; row += a.parts) {
            const T v = x[row * a.inner];
            acc = kMax ? ev_max(acc, v) : acc + v;
        }
        a.out[i] = kMax ? acc : acc * a.scale;
    }
};

template <class T, bool kMax>
int reduce(const T* x, T* out, T* partial, int64_t outer, int64_t r, int64_t inner,
           int64_t parts, T scale) {
    if (outer < 0 || r < 0 || inner < 0 || parts < 1) return EV_ERR_ARGS;
    if (parts == 1 || partial == NULL) {
        ReduceArgs<T> a = {x, out, r, inner, 1, scale};
        return ev_launch<ReducePart<T, kMax> >(a, outer * inner);
    }
    // partial is (outer, parts, inner); the second pass reduces its middle axis
    ReduceArgs<T> first = {x, partial, r, inner, parts, (T)1};
    int rc = ev_launch<ReducePart<T, kMax> >(first, outer * parts * inner);
    if (rc) return rc;
    ReduceArgs<T> second = {partial, out, parts, inner, 1, scale};
    return ev_launch<ReducePart<T, kMax> >(second, outer * inner);
}

// ---- softmax family: one thread per row of (outer, c, inner) -----------------------
// NOTE: a thread per row walks its row three times; fine for class counts up to
// a few thousand (the rows are many); a block per row would suit huge rows.

template <class T, class I = int64_t>
struct RowArgs {
    const T* x;
    const I* t;         // cross-entropy targets, one per row
    T* out;
    int64_t c, inner;
    int* status;
};

template <class T>
EV_KD T row_max(const T* x, int64_t c, int64_t stride) {
    T m = x[0];
    for (int64_t j = 1; j < c; j++) m = ev_max(m, x[j * stride]);
    return m;
}

template <class T, bool kLog>
struct Softmax {
    EV_KD static void run(const RowArgs<T>& a, int64_t i) {
        const int64_t in = i % a.inner, o = i / a.inner, st = a.inner;
        const T* x = a.x + o * a.c * st + in;
        T* y = a.out + o * a.c * st + in;
        const T m = row_max(x, a.c, st);
        T s = 0;
        for (int64_t j = 0; j < a.c; j++) {
            const T e = ev_exp(x[j * st] - m);
            if (!kLog) y[j * st] = e;
            s += e;
        }
        if (kLog) {
            const T ls = ev_log_sum(s);
            for (int64_t j = 0; j < a.c; j++) y[j * st] = (x[j * st] - m) - ls;
        } else {
            for (int64_t j = 0; j < a.c; j++) y[j * st] = y[j * st] / s;
        }
    }
};

// Rows of (n, c): loss[r] = log(sum exp(z - m)) - (z[t] - m).
template <class T, class I>
struct Xent {
    EV_KD static void run(const RowArgs<T, I>& a, int64_t r) {
        const T* z = a.x + r * a.c;
        const int64_t t = (int64_t)a.t[r];
        if (t < 0 || t >= a.c) {
            if (a.status) EV_ATOMIC_OR(a.status, EV_STATUS_INDEX);
            a.out[r] = ev_nan<T>();
            return;
        }
        const T m = row_max(z, a.c, (int64_t)1);
        T s = 0;
        for (int64_t j = 0; j < a.c; j++) s += ev_exp(z[j] - m);
        a.out[r] = ev_log_sum(s) - (z[t] - m);
    }
};

// Rows of (n, c): softmax(z) - one_hot(t), the gradient of cross_entropy.
template <class T, class I>
struct XentGrad {
    EV_KD static void run(const RowArgs<T, I>& a, int64_t r) {
        const T* z = a.x + r * a.c;
        T* o = a.out + r * a.c;
        const int64_t t = (int64_t)a.t[r];
        if (t < 0 || t >= a.c) {
            if (a.status) EV_ATOMIC_OR(a.status, EV_STATUS_INDEX);
            for (int64_t j = 0; j < a.c; j++) o[j] = ev_nan<T>();
            return;
        }
        const T m = row_max(z, a.c, (int64_t)1);
        T s = 0;
        for (int64_t j = 0; j < a.c; j++) {
            o[j] = ev_exp(z[j] - m);
            s += o[j];
        }
        for (int64_t j = 0; j < a.c; j++) o[j] = o[j] / s;
        o[t] -= 1;
    }
};

// One-hot rows of (n, depth): out[r, j] = (j == t[r]); a bad id makes its row NaN.
template <class T, class I>
struct OneHot {
    EV_KD static void run(const RowArgs<T, I>& a, int64_t i) {
        const int64_t r = i / a.c, j = i % a.c;
        const int64_t t = (int64_t)a.t[r];
        if (t < 0 || t >= a.c) {
            if (a.status && j == 0) EV_ATOMIC_OR(a.status, EV_STATUS_INDEX);
            a.out[i] = ev_nan<T>();
            return;
        }
        a.out[i] = (j == t) ? (T)1 : (T)0;
    }
};

// ---- take and its scatter-add gradient over (outer, n, inner) ----------------------

template <class T, class I>
struct TakeArgs {
    const T* x;
    const I* idx;
    T* out;
    int64_t n, inner, m;  // n: rows of the table axis; m: indices
    int* status;
};

template <class T, class I>
struct Take {  // i over out (outer, m, inner)
    EV_KD static void run(const TakeArgs<T, I>& a, int64_t i) {
        const int64_t in = i % a.inner, j = (i / a.inner) % a.m, o = i / (a.inner * a.m);
        const int64_t id = (int64_t)a.idx[j];
        if (id < 0 || id >= a.n) {
            if (a.status) EV_ATOMIC_OR(a.status, EV_STATUS_INDEX);
            a.out[i] = ev_nan<T>();
            return;
        }
        a.out[i] = a.x[(o * a.n + id) * a.inner + in];
    }
};

template <class T, class I>
struct TakeGrad {  // i over g (outer, m, inner); out (outer, n, inner) zeroed first
    EV_KD static void run(const TakeArgs<T, I>& a, int64_t i) {
        const int64_t in = i % a.inner, j = (i / a.inner) % a.m, o = i / (a.inner * a.m);
        const int64_t id = (int64_t)a.idx[j];
        if (id < 0 || id >= a.n) {
            if (a.status) EV_ATOMIC_OR(a.status, EV_STATUS_INDEX);
            return;
        }
        EV_ATOMIC_ADD(&a.out[(o * a.n + id) * a.inner + in], a.x[i]);
    }
};

}  // namespace

// ---- entry points ----------------------------------------------------------------------

#define EV_BCAST(name, Op, T, sfx)                                                            \
    extern "C" int ev_cuda_bcast_##name##_##sfx(const T* a, const T* b, T* out, int ndim,     \
                                                const int64_t* shape, const int64_t* as,      \
                                                const int64_t* bs, int64_t n) {               \
        return bcast<T, Op>(a, b, out, ndim, shape, as, bs, n);                               \
    }

#define EV_NN(T, sfx)                                                                          \
    EV_BCAST(add, OpAdd, T, sfx)                                                               \
    EV_BCAST(sub, OpSub, T, sfx)                                                               \
    EV_BCAST(mul, OpMul, T, sfx)                                                               \
    EV_BCAST(div, OpDiv, T, sfx)                                                               \
    EV_BCAST(maximum, OpMax, T, sfx)                                                           \
    EV_BCAST(minimum, OpMin, T, sfx)                                                           \
    extern "C" int ev_cuda_where_##sfx(const uint8_t* c, const T* x, const T* y, T* out,       \
                                       int ndim, const int64_t* shape, const int64_t* cs,      \
                                       const int64_t* xs, const int64_t* ys, int64_t n) {      \
        StridedArgs<T> p;                                                                      \
        int rc = ev_strides(&p.s, ndim, shape, cs, xs, ys);                                    \
        if (rc) return rc;                                                                     \
        p.c = c; p.a = x; p.b = y; p.out = out;                                                \
        return ev_launch<Where<T> >(p, n);                                                     \
    }                                                                                          \
    extern "C" int ev_cuda_copy_strided_##sfx(const T* x, T* out, int ndim,                    \
                                              const int64_t* shape, const int64_t* xs,         \
                                              const int64_t* os, int64_t n) {                  \
        StridedArgs<T> p;                                                                      \
        int rc = ev_strides(&p.s, ndim, shape, xs, os, NULL);                                  \
        if (rc) return rc;                                                                     \
        p.a = x; p.b = NULL; p.c = NULL; p.out = out;                                          \
        return ev_launch<Copy<T> >(p, n);                                                      \
    }                                                                                          \
    extern "C" int ev_cuda_fill_##sfx(T* out, const T* value, int64_t n) {                     \
        StridedArgs<T> p;                                                                      \
        p.s.ndim = 0; p.a = value; p.b = NULL; p.c = NULL; p.out = out;                        \
        return ev_launch<Fill<T> >(p, n);                                                      \
    }                                                                                          \
    extern "C" int ev_cuda_concat_##sfx(int k, const T* const* srcs, const int64_t* lens,      \
                                        T* out, int64_t outer, int64_t axis_len,               \
                                        int64_t inner, int64_t s0) {                           \
        return concat<T>(k, srcs, lens, out, outer, axis_len, inner, s0);                      \
    }                                                                                          \
    extern "C" int ev_cuda_reduce_sum_##sfx(const T* x, T* out, T* partial, int64_t outer,     \
                                            int64_t r, int64_t inner, int64_t parts,           \
                                            T scale) {                                         \
        return reduce<T, false>(x, out, partial, outer, r, inner, parts, scale);               \
    }                                                                                          \
    extern "C" int ev_cuda_reduce_max_##sfx(const T* x, T* out, T* partial, int64_t outer,     \
                                            int64_t r, int64_t inner, int64_t parts) {         \
        return reduce<T, true>(x, out, partial, outer, r, inner, parts, (T)1);                 \
    }                                                                                          \
    extern "C" int ev_cuda_softmax_##sfx(const T* x, T* out, int64_t outer, int64_t c,         \
                                         int64_t inner) {                                      \
        if (c <= 0) return outer * inner > 0 && c < 0 ? EV_ERR_ARGS : 0;                       \
        RowArgs<T> a = {x, NULL, out, c, inner, NULL};                                         \
        return ev_launch<Softmax<T, false> >(a, outer * inner);                                \
    }                                                                                          \
    extern "C" int ev_cuda_log_softmax_##sfx(const T* x, T* out, int64_t outer, int64_t c,     \
                                             int64_t inner) {                                  \
        if (c <= 0) return outer * inner > 0 && c < 0 ? EV_ERR_ARGS : 0;                       \
        RowArgs<T> a = {x, NULL, out, c, inner, NULL};                                         \
        return ev_launch<Softmax<T, true> >(a, outer * inner);                                 \
    }

// cross-entropy, one_hot and take, for int64 (name_sfx) and int32 (name_i32_sfx) indices
#define EV_INDEXED(T, sfx, I, isfx)                                                            \
    extern "C" int ev_cuda_cross_entropy##isfx##_##sfx(const T* z, const I* t, T* out,         \
                                                       int64_t n, int64_t c) {                 \
        if (c <= 0) return n > 0 ? EV_ERR_ARGS : 0;                                            \
        RowArgs<T, I> a = {z, t, out, c, 1, ev_status_word()};                                 \
        return ev_launch<Xent<T, I> >(a, n);                                                   \
    }                                                                                          \
    extern "C" int ev_cuda_xent_grad##isfx##_##sfx(const T* z, const I* t, T* out, int64_t n,  \
                                                   int64_t c) {                                \
        if (c <= 0) return n > 0 ? EV_ERR_ARGS : 0;                                            \
        RowArgs<T, I> a = {z, t, out, c, 1, ev_status_word()};                                 \
        return ev_launch<XentGrad<T, I> >(a, n);                                               \
    }                                                                                          \
    extern "C" int ev_cuda_one_hot##isfx##_##sfx(const I* t, T* out, int64_t n, int64_t depth) {  \
        if (n < 0 || depth < 0) return EV_ERR_ARGS;                                            \
        RowArgs<T, I> a = {NULL, t, out, depth, 1, ev_status_word()};                          \
        return ev_launch<OneHot<T, I> >(a, n * depth);                                         \
    }                                                                                          \
    extern "C" int ev_cuda_take##isfx##_##sfx(const T* x, const I* idx, T* out, int64_t outer, \
                                              int64_t n, int64_t inner, int64_t m) {           \
        if (outer < 0 || n < 0 || inner < 0 || m < 0) return EV_ERR_ARGS;                      \
        TakeArgs<T, I> a = {x, idx, out, n, inner, m, ev_status_word()};                       \
        return ev_launch<Take<T, I> >(a, outer * m * inner);                                   \
    }                                                                                          \
    extern "C" int ev_cuda_take_grad##isfx##_##sfx(const T* g, const I* idx, T* out,           \
                                                   int64_t outer, int64_t n, int64_t inner,    \
                                                   int64_t m) {                                \
        if (outer < 0 || n < 0 || inner < 0 || m < 0) return EV_ERR_ARGS;                      \
        int rc = ev_zero(out, (size_t)(outer * n * inner) * sizeof(T));                        \
        if (rc) return rc;                                                                     \
        TakeArgs<T, I> a = {g, idx, out, n, inner, m, ev_status_word()};                       \
        return ev_launch<TakeGrad<T, I> >(a, outer * m * inner);                               \
    }

EV_NN(float, f32)
EV_NN(double, f64)
EV_INDEXED(float, f32, int64_t, )
EV_INDEXED(double, f64, int64_t, )
EV_INDEXED(float, f32, int32_t, _i32)
EV_INDEXED(double, f64, int32_t, _i32)
