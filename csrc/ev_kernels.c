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

/* An elementwise add fused in front: the sum is formed in a register, never stored. */
#define EV_UNARY_ADD(op, T, sfx)                                              \
    void ev_##op##_add_##sfx(const T* a, const T* b, T* out, int64_t n) {    \
        if (n < EV_PAR_MIN) {                                                 \
            _Pragma("omp simd")                                               \
            for (int64_t i = 0; i < n; i++)                                   \
                out[i] = evm_##op##_##sfx(a[i] + b[i]);                       \
            return;                                                           \
        }                                                                     \
        _Pragma("omp parallel for simd schedule(dynamic, EV_CHUNK)")         \
        for (int64_t i = 0; i < n; i++) out[i] = evm_##op##_##sfx(a[i] + b[i]); \
    }

#define EV_UNARY_GRAD_ADD(op, T, sfx)                                         \
    void ev_##op##_grad_add_##sfx(const T* x, const T* ans, const T* g,      \
                                  const T* h, T* out, int64_t n) {            \
        if (n < EV_PAR_MIN) {                                                 \
            _Pragma("omp simd")                                               \
            for (int64_t i = 0; i < n; i++)                                   \
                out[i] = evm_##op##_grad_##sfx(x[i], ans[i], g[i] + h[i]);    \
            return;                                                           \
        }                                                                     \
        _Pragma("omp parallel for simd schedule(dynamic, EV_CHUNK)")         \
        for (int64_t i = 0; i < n; i++)                                       \
            out[i] = evm_##op##_grad_##sfx(x[i], ans[i], g[i] + h[i]);        \
    }

#define EV_OP(op)                    \
    EV_UNARY(op, float, f32)         \
    EV_UNARY(op, double, f64)        \
    EV_UNARY_GRAD(op, float, f32)    \
    EV_UNARY_GRAD(op, double, f64)   \
    EV_UNARY_ADD(op, float, f32)     \
    EV_UNARY_ADD(op, double, f64)    \
    EV_UNARY_GRAD_ADD(op, float, f32) \
    EV_UNARY_GRAD_ADD(op, double, f64)

EV_OP(tanh)
EV_OP(sigmoid)
EV_OP(exp)
EV_OP(expm1)
EV_OP(log1p)
EV_OP(cube)
EV_OP(square)
EV_OP(relu)
EV_OP(softplus)
