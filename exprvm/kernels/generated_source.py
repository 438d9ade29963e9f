"""The C source of one fused kernel (exprvm/kernels/generated.py's Kernel), as text.

In: the element type, the inputs' kinds, one C expression per member, the members stored.
Out: a `rows` function looping over R rows of C elements (gcc vectorizes the inner loop:
`omp simd`, every member's formula inlined; csrc/ev_math.h supplies exp, tanh, sigmoid...)
and the entry point NAME(m, p, keep): m holds R, C, the thread count, each output's offset
and row stride and each input's row stride (int64); p each output's base address (one
packed array's, or a member's own array where the compiler stores it elsewhere), then
each input's; keep is unused (a cffi handle that keeps the arrays alive while a caller holds
the arguments).
With threads > 1 (and OpenMP) rows, or chunks of a single row, are shared out dynamically.
"""

BLOCK = 16384               # elements a thread takes at a time when a kernel is split

PRELUDE = """#include <stdint.h>
#include <math.h>
#include "ev_math.h"
#ifdef _OPENMP
#include <omp.h>
#endif
/* Exactly a * b, and exactly x, as fused multiply-adds of -0 where the target has
 * them: the compiler (-ffp-contract=fast, for ev_math.h) cannot contract such a value
 * into a following add, as numpy's separate ops and the C kernels' stores cannot be. */
#if defined(__FMA__) || defined(FP_FAST_FMAF)
#define EVM_MUL_F32(a, b) fmaf((a), (b), -0.0f)
#define EVM_MUL_F64(a, b) fma((a), (b), -0.0)
#define EVM_KEEP_F32(x) fmaf((x), 1.0f, -0.0f)
#define EVM_KEEP_F64(x) fma((x), 1.0, -0.0)
#else
#define EVM_MUL_F32(a, b) ((a) * (b))
#define EVM_MUL_F64(a, b) ((a) * (b))
#define EVM_KEEP_F32(x) (x)
#define EVM_KEEP_F64(x) (x)
#endif
"""


def source(k, name):
    """The C source of kernel k, its entry point called `name`."""
    T = k.ctype
    load, hoist, row = [], [], []
    nout = len(k.outputs)
    for i, (kind, is_bool) in enumerate(k.inputs):
        ct = "uint8_t" if is_bool else T
        load.append(f"    const {ct}* const in{i} = (const {ct}*)p[{i + nout}]; "
                    f"const int64_t ld{i} = m[{3 + 2 * nout + i}];")
        val = "int" if is_bool else T
        conv = " != 0" if is_bool else ""
        if kind == "scalar":
            hoist.append(f"    const {val} a{i} = in{i}[0]{conv};")
        elif kind == "col":
            row.append(f"        const {val} a{i} = in{i}[r * ld{i}]{conv};")
        else:       # full, or row (ld 0)
            row.append(f"        const {ct}* const in{i}r = in{i} + r * ld{i};")
    inner = []
    for i, (kind, is_bool) in enumerate(k.inputs):
        if kind in ("full", "row"):
            inner.append(f"            const {'int' if is_bool else T} a{i} = in{i}r[c]{' != 0' if is_bool else ''};")
    for j, (res, expr) in enumerate(k.stmts):
        inner.append(f"            const {'int' if res == 'bool' else T} v{j} = {expr};")
    for q, j in enumerate(k.outputs):
        load.append(f"    const int64_t off{q} = m[{3 + 2 * q}], old{q} = m[{4 + 2 * q}];")
        load.append(f"    {T}* const ob{q} = ({T}*)p[{q}];")
        row.append(f"        {T}* const o{q} = ob{q} + off{q} + r * old{q};")
        inner.append(f"            o{q}[c] = v{j};")
    lines = [
        f"static void {name}_rows(int64_t r0, int64_t r1, int64_t c0, int64_t c1, const int64_t* m, char** p) {{",
        *load, *hoist,
        "    for (int64_t r = r0; r < r1; r++) {",
        *row,
        "#pragma omp simd",
        "        for (int64_t c = c0; c < c1; c++) {",
        *inner,
        "        }",
        "    }",
        "}",
        f"void {name}(const int64_t* m, char** p, void* keep) {{",
        "    (void)keep;     /* the caller's handle on the arrays p points into */",
        "    const int64_t R = m[0], C = m[1], nt = m[2];",
        "#ifdef _OPENMP",
        "    if (nt > 1 && omp_get_max_threads() > 1) {   /* the caller's OpenMP limit caps nt */",
        "        const int64_t cap = omp_get_max_threads();",
        "        const int64_t nt_ = nt < cap ? nt : cap;",
        "        if (R == 1) {",
        f"            const int64_t nb = (C + {BLOCK} - 1) / {BLOCK};",
        "#pragma omp parallel for num_threads((int)nt_) schedule(dynamic, 1)",
        "            for (int64_t b = 0; b < nb; b++) {",
        f"                const int64_t c0 = b * {BLOCK}, c1 = c0 + {BLOCK} < C ? c0 + {BLOCK} : C;",
        f"                {name}_rows(0, 1, c0, c1, m, p);",
        "            }",
        "        } else {",
        f"            const int64_t rb = C >= {BLOCK} ? 1 : {BLOCK} / (C > 0 ? C : 1);",
        "            const int64_t nb = (R + rb - 1) / rb;",
        "#pragma omp parallel for num_threads((int)nt_) schedule(dynamic, 1)",
        "            for (int64_t b = 0; b < nb; b++) {",
        "                const int64_t r0 = b * rb, r1 = r0 + rb < R ? r0 + rb : R;",
        f"                {name}_rows(r0, r1, 0, C, m, p);",
        "            }",
        "        }",
        "        return;",
        "    }",
        "#endif",
        "    (void)nt;",
        f"    {name}_rows(0, R, 0, C, m, p);",
        "}",
    ]
    return "\n".join(lines) + "\n"


def decl(name):
    """The declaration of an entry point (the cffi cdef)."""
    return f"void {name}(const int64_t* m, char** p, void* keep);"
