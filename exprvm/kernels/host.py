"""Host kernel wrappers: the C extension (cffi API mode) and numpy.

Two flavours per op:
  * checked(x, out=None)      every argument validated (see checks.py);
  * bound()                   buffers fixed at bind time, validated and their
                              pointers taken once: a bare C call per run (what a
                              compiled program uses).

NOTE: every pointer handed to C comes from `pointer()`: an object is trusted for
nothing it says about itself.
A bytearray subclass claiming `.size == 4194304` over 16 bytes passed the old
duck-typed fast path and C wrote 16 MiB past its end.
"""
import importlib.util

import numpy as np

from exprvm.errors import IndexRangeError, KernelError
from exprvm.kernels import reference
from exprvm.kernels.checks import CTYPE, SUFFIX, check_input, check_out, same_shape, separate

try:
    from exprvm.kernels import _ev_c
except ImportError as e:  # not built (no compiler at install time, a bare source tree) or broken
    _ev_c = None
    _why = ("is not built" if importlib.util.find_spec("exprvm.kernels._ev_c") is None
            else f"failed to load ({e})")
    C_STATUS = (False, f"C extension exprvm.kernels._ev_c {_why}; "
                       "run `pip install -e .` or `python -m exprvm.kernels.build_c`")
else:
    C_STATUS = (True, f"cffi extension, {_ev_c.lib.ev_num_threads()} OpenMP thread(s)")


def pointer(a, cdecl, n, op, writable=False):
    """A C pointer to a's buffer, which must be an exact numpy.ndarray whose real buffer
    holds at least n items of cdecl, or KernelError naming op."""
    if type(a) is not np.ndarray:
        raise KernelError(f"{op}: expected a numpy.ndarray, got {type(a).__name__}")
    try:
        p = _ev_c.ffi.from_buffer(cdecl, a, require_writable=writable)
    except (TypeError, ValueError, BufferError) as e:
        raise KernelError(f"{op}: cannot pass this array to C: {e}") from None
    if len(p) < n:
        raise KernelError(f"{op}: the buffer holds {len(p)} elements, the kernel needs {n}")
    return p


def _c_function(op, dt, grad):
    name = f"ev_{op}_grad_{SUFFIX[dt]}" if grad else f"ev_{op}_{SUFFIX[dt]}"
    return getattr(_ev_c.lib, name)


# ---- checked -------------------------------------------------------------

def checked_unary(backend, op, dt):
    if backend == "numpy":
        ref = reference.FORWARD[op]

        def run(x, out=None):
            x = check_input(x, dt, op)
            out = check_out(out, x.shape, dt, op)
            return ref(x, out)
        return run

    cfn, cdecl = _c_function(op, dt, False), CTYPE[dt] + "[]"

    def run(x, out=None):
        x = check_input(x, dt, op)
        out = check_out(out, x.shape, dt, op)
        x = separate(x, out)
        n = x.size
        if n:
            cfn(pointer(x, cdecl, n, op), pointer(out, cdecl, n, op, writable=True), n)
        return out
    return run


def checked_unary_grad(backend, op, dt):
    gop = op + "_grad"
    if backend == "numpy":
        ref = reference.GRAD[op]

        def run(x, ans, g, out=None):
            x, ans, g = check_input(x, dt, gop), check_input(ans, dt, gop, "ans"), check_input(g, dt, gop, "g")
            shape = same_shape(gop, (("x", x), ("ans", ans), ("g", g)))
            return ref(x, ans, g, check_out(out, shape, dt, gop))
        return run

    cfn, cdecl = _c_function(op, dt, True), CTYPE[dt] + "[]"

    def run(x, ans, g, out=None):
        x, ans, g = check_input(x, dt, gop), check_input(ans, dt, gop, "ans"), check_input(g, dt, gop, "g")
        shape = same_shape(gop, (("x", x), ("ans", ans), ("g", g)))
        out = check_out(out, shape, dt, gop)
        x, ans, g = separate(x, out), separate(ans, out), separate(g, out)
        n = x.size
        if n:
            cfn(pointer(x, cdecl, n, gop), pointer(ans, cdecl, n, gop), pointer(g, cdecl, n, gop),
                pointer(out, cdecl, n, gop, writable=True), n)
        return out
    return run


def checked_binary(op, dt):
    """add/sub/mul/div on host arrays of one shape.  numpy's ufuncs are
    already vectorized loops, so the C backend uses them too."""
    ufunc = reference.BINARY[op]

    def run(a, b, out=None):
        a, b = check_input(a, dt, op, "a"), check_input(b, dt, op, "b")
        shape = same_shape(op, (("a", a), ("b", b)))
        return ufunc(a, b, out=check_out(out, shape, dt, op))
    return run


# ---- bound: fixed buffers --------------------------------------------------

def _fixed(a, dt, op, name):
    """a validated for binding: no silent copy, since a copy would not see
    later writes to a."""
    b = check_input(a, dt, op, name)
    if b is not a:
        raise KernelError(f"{op}: {name} must be C-contiguous and aligned to be bound")
    return a


def _bound(backend, name, ref, dt, named, out):
    """thunk() -> out: one bare call of the C kernel ev_<name>_<dtype> (or of its
    numpy reference ref) over fixed buffers of one shape and dtype: named is
    ((argument name, array), ...), out comes last."""
    ins = tuple(_fixed(a, dt, name, n) for n, a in named)
    out = check_out(out, same_shape(name, tuple(zip((n for n, _ in named), ins))), dt, name)
    if any(separate(a, out) is not a for a in ins):
        raise KernelError(f"{name}: out partially overlaps an input")
    if backend == "numpy":
        return lambda: ref(*ins, out)
    cfn = getattr(_ev_c.lib, f"ev_{name}_{SUFFIX[dt]}")
    cdecl, n = CTYPE[dt] + "[]", out.size
    ptrs = tuple(pointer(a, cdecl, n, name) for a in ins) + (pointer(out, cdecl, n, name, writable=True),)

    def run():
        cfn(*ptrs, n)
        return out
    return run


def bound_unary(backend, op, dt, x, out):
    return _bound(backend, op, reference.FORWARD[op], dt, (("x", x),), out)


def bound_unary_grad(backend, op, dt, x, ans, g, out):
    return _bound(backend, op + "_grad", reference.GRAD[op], dt, (("x", x), ("ans", ans), ("g", g)), out)


def bound_scatter_rows(dt, g, ids, out):
    """A bare call of the row scatter-add (take's gradient along axis 0) for fixed buffers:
    out (rows, ...) is zeroed, then out[ids[k]] += g[k] for each k (g of shape
    ids.shape + out.shape[1:]). An id outside [0, rows) raises IndexRangeError, as numpy's
    lowering does, and leaves out unwritten."""
    op = "take_grad"
    g = _fixed(g, dt, op, "g")
    if not (type(ids) is np.ndarray and ids.dtype == np.int64 and ids.flags.c_contiguous
            and ids.flags.aligned):
        raise KernelError(f"{op}: ids must be a C-contiguous int64 array")
    if type(out) is not np.ndarray:
        raise KernelError(f"{op}: out must be a numpy.ndarray, got {type(out).__name__}")
    out = check_out(out, out.shape, dt, op)
    if out.ndim < 1 or g.shape != ids.shape + out.shape[1:]:
        raise KernelError(f"{op}: g {g.shape} must be ids {ids.shape} + the rows' shape {out.shape[1:]}")
    if separate(g, out) is not g or separate(ids, out) is not ids:
        raise KernelError(f"{op}: out overlaps an input")
    rows, n = out.shape[0], ids.size
    width = out.size // rows if rows else 0
    cfn = getattr(_ev_c.lib, f"ev_scatter_rows_{SUFFIX[dt]}")
    cdecl = CTYPE[dt] + "[]"
    pg, pi = pointer(g, cdecl, n * width, op), pointer(ids, "int64_t[]", n, op)
    po = pointer(out, cdecl, out.size, op, writable=True)

    def run():
        if cfn(pg, pi, po, n, width, rows) >= 0:
            raise IndexRangeError(f"take_grad index: index out of range [0, {rows}): "
                                  f"min {ids.min()}, max {ids.max()}")
        return out
    return run


def bound_xent(op, dt, z, t, out):
    """A bare call of the softmax cross-entropy kernel (op "cross_entropy": out holds
    the per-row losses, t.shape) or of its gradient (op "xent_grad": out is z's shape),
    for fixed buffers. An id outside [0, classes) raises IndexRangeError, as numpy's
    lowering does, and leaves out unwritten."""
    grad = op == "xent_grad"
    z = _fixed(z, dt, op, "logits")
    if not (type(t) is np.ndarray and t.dtype == np.int64 and t.flags.c_contiguous
            and t.flags.aligned):
        raise KernelError(f"{op}: targets must be a C-contiguous int64 array")
    if z.ndim < 1 or t.shape != z.shape[:-1]:
        raise KernelError(f"{op}: targets {t.shape} must match the logits' leading shape {z.shape[:-1]}")
    out = check_out(out, z.shape if grad else t.shape, dt, op)
    if separate(z, out) is not z or separate(t, out) is not t:
        raise KernelError(f"{op}: out overlaps an input")
    c, n = z.shape[-1], t.size
    cfn = getattr(_ev_c.lib, f"ev_{op.replace('cross_entropy', 'xent')}_{SUFFIX[dt]}")
    cdecl = CTYPE[dt] + "[]"
    pz, pt = pointer(z, cdecl, z.size, op), pointer(t, "int64_t[]", n, op)
    po = pointer(out, cdecl, out.size, op, writable=True)

    def run():
        if cfn(pz, pt, po, n, c) >= 0:
            raise IndexRangeError(f"cross_entropy target: index out of range [0, {c}): "
                                  f"min {t.min()}, max {t.max()}")
        return out
    return run


def dlpack_capsule_destructor():
    """The address of the C extension's DLPack capsule destructor (csrc/ev_dlpack.c), or
    None without the extension (exprvm.device.dlpack's exported capsules use it)."""
    if _ev_c is None or not hasattr(_ev_c.lib, "ev_dlpack_capsule_destructor"):
        return None
    return int(_ev_c.ffi.cast("uintptr_t", _ev_c.ffi.addressof(_ev_c.lib, "ev_dlpack_capsule_destructor")))
