/* CPU kernels of exprvm: one loop per op and dtype over ev_math.h.
 *
 * Build: gcc -O3 (with -march=native where the builder allows it) and
 * -fopenmp when available.  `omp simd` tells gcc the loop carries no
 * dependence, so it vectorizes without a runtime alias check; that is also
 * what makes exact in-place use (out == x) take the vector path.  Large arrays
 * are split across threads; below EV_PAR_MIN the fork/join costs more than it
 * saves.  NOTE: that test is a plain branch, not an OpenMP `if` clause: a
 * false `if` still enters the runtime (~2 us), which small arrays cannot
 * afford.  Without OpenMP the pragmas are ignored and the loops stay serial.
 *
 * The Python wrappers (exprvm/kernels/cpu.py) validate dtype, contiguity,
 * alignment, sizes and writability before calling here: these functions
 * trust their arguments.
 */
#include <stdint.h>
#include "ev_kernels.h"
#include "ev_math.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define EV_PAR_MIN ((int64_t)1 << 15)
/* Threads take chunks of this many elements as they come free, rather than
 * a fixed half each: when another process holds a core, the thread that
 * runs does most of the work instead of waiting for the one that does not. */
#define EV_CHUNK 16384

int ev_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* NOTE: a macro per loop shape instead of 36 hand-copied loops; the math
 * itself lives in ev_math.h as evm_<op>_<sfx> and evm_<op>_grad_<sfx>. */
#define EV_UNARY(op, T, sfx)                                                  \
    void ev_##op##_##sfx(const T* x, T* out, int64_t n) {                     \
        if (n < EV_PAR_MIN) {                                                 \
            _Pragma("omp simd")                                               \
            for (int64_t i = 0; i < n; i++) out[i] = evm_##op##_##sfx(x[i]);  \
            return;                                                           \
        }                                                                     \
        _Pragma("omp parallel for simd schedule(dynamic, EV_CHUNK)")         \
        for (int64_t i = 0; i < n; i++) out[i] = evm_##op##_##sfx(x[i]);      \
    }

#define EV_UNARY_GRAD(op, T, sfx)                                             \
    void ev_##op##_grad_##sfx(const T* x, const T* ans, const T* g, T* out,  \
                              int64_t n) {                                    \
        if (n < EV_PAR_MIN) {                                                 \
            _Pragma("omp simd")                                               \
            for (int64_t i = 0; i < n; i++)                                   \
                out[i] = evm_##op##_grad_##sfx(x[i], ans[i], g[i]);           \
            return;                                                           \
        }                                                                     \
        _Pragma("omp parallel for simd schedule(dynamic, EV_CHUNK)")         \
        for (int64_t i = 0; i < n; i++)                                       \
            out[i] = evm_##op##_grad_##sfx(x[i], ans[i], g[i]);               \
    }

#define EV_OP(op)                    \
    EV_UNARY(op, float, f32)         \
    EV_UNARY(op, double, f64)        \
    EV_UNARY_GRAD(op, float, f32)    \
    EV_UNARY_GRAD(op, double, f64)

EV_OP(tanh)
EV_OP(sigmoid)
EV_OP(exp)
EV_OP(expm1)
EV_OP(log1p)
EV_OP(cube)
EV_OP(square)
EV_OP(relu)
EV_OP(softplus)

/* Softmax cross-entropy, row by row, in the order of exprvm's numpy lowering:
 * the row's max m (NaN propagates, as in np.maximum), s = sum exp(z - m), then
 * log(s) = log1p(s - 1) (s >= 1, so s - 1 loses nothing that matters). */
static int64_t ev__bad_target(const int64_t* t, int64_t n, int64_t c) {
    for (int64_t r = 0; r < n; r++)
        if (t[r] < 0 || t[r] >= c) return r;
    return -1;
}

#define EV_XENT(T, sfx)                                                       \
    static T ev__row_max_##sfx(const T* row, int64_t c) {                    \
        T m = row[0];                                                         \
        for (int64_t j = 1; j < c; j++)                                       \
            m = (row[j] > m || row[j] != row[j]) ? row[j] : m;                \
        return m;                                                             \
    }                                                                         \
    int64_t ev_xent_##sfx(const T* z, const int64_t* t, T* loss, int64_t n,  \
                          int64_t c) {                                        \
        int64_t bad = ev__bad_target(t, n, c);                                \
        if (bad >= 0) return bad;                                             \
        for (int64_t r = 0; r < n; r++) {                                     \
            const T* row = z + r * c;                                         \
            const T m = ev__row_max_##sfx(row, c);                            \
            T s = 0;                                                          \
            _Pragma("omp simd reduction(+:s)")                                \
            for (int64_t j = 0; j < c; j++) s += evm_exp_##sfx(row[j] - m);   \
            loss[r] = evm_log1p_##sfx(s - 1) - (row[t[r]] - m);              \
        }                                                                     \
        return -1;                                                            \
    }                                                                         \
    int64_t ev_xent_grad_##sfx(const T* z, const int64_t* t, T* out,         \
                               int64_t n, int64_t c) {                        \
        int64_t bad = ev__bad_target(t, n, c);                                \
        if (bad >= 0) return bad;                                             \
        for (int64_t r = 0; r < n; r++) {                                     \
            const T* row = z + r * c;                                         \
            T* o = out + r * c;                                               \
            const T m = ev__row_max_##sfx(row, c);                            \
            T s = 0;                                                          \
            _Pragma("omp simd reduction(+:s)")                                \
            for (int64_t j = 0; j < c; j++) {                                 \
                o[j] = evm_exp_##sfx(row[j] - m);                             \
                s += o[j];                                                    \
            }                                                                 \
            _Pragma("omp simd")                                               \
            for (int64_t j = 0; j < c; j++) o[j] = o[j] / s;                  \
            o[t[r]] -= 1;                                                     \
        }                                                                     \
        return -1;                                                            \
    }

EV_XENT(float, f32)
EV_XENT(double, f64)

#define EV_SCATTER_ROWS(T, sfx)                                                    \
    int64_t ev_scatter_rows_##sfx(const T* g, const int64_t* ids, T* out, int64_t n, \
                                  int64_t width, int64_t rows) {                   \
        int64_t bad = ev__bad_target(ids, n, rows);                                \
        if (bad >= 0) return bad;                                                  \
        for (int64_t i = 0; i < rows * width; i++) out[i] = 0;                     \
        for (int64_t k = 0; k < n; k++) {                                          \
            const T* src = g + k * width;                                          \
            T* dst = out + ids[k] * width;                                         \
            _Pragma("omp simd")                                                    \
            for (int64_t j = 0; j < width; j++) dst[j] += src[j];                  \
        }                                                                          \
        return -1;                                                                 \
    }

EV_SCATTER_ROWS(float, f32)
EV_SCATTER_ROWS(double, f64)
