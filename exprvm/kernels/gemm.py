"""The C float32 matrix product of csrc/ev_gemm.c.

    out = gemm.matmul(a, b)              # a (batch, m, k), b (batch, k, n): out (batch, m, n)
    gemm.matmul(a, b, out2d)             # out2d (m, n) = the sum over the batch of a[i] @ b[i]
    gemm.wide()                          # built for 512-bit vectors
    gemm.preferred()                     # do the conv runners and matmul[c] use it? (the gate)
    with gemm.forced(False): ...         # the other path, for tests and benchmarks

The convolutions call the C product from C (csrc/ev_conv_gemm.c); this checked call
is the kernel's own entry point, fuzzed against numpy by the tests. Operands are
numpy views of any strides (a transpose, a weight broadcast over the batch with
stride 0): the kernel packs them itself, so nothing is copied. Checked: exact
ndarray type, float32, every element a view reaches inside its base array's buffer,
out writable, with contiguous rows that do not overlap, and apart from a and b.
"""
import contextlib
import threading

import numpy as np

from exprvm.errors import KernelError, ShapeError
from exprvm.kernels import host

_F32 = np.dtype(np.float32)
_choice = {"own": None}
_choice_lock = threading.Lock()


def available():
    """Is the C product built (the extension loads and has it)?"""
    return host._ev_c is not None and hasattr(host._ev_c.lib, "ev_gemm_f32")


def wide():
    """Is it built for 512-bit vectors?"""
    return available() and bool(host._ev_c.lib.ev_gemm_wide())


def preferred():
    """Do the float32 conv runners and the matmul[c] lowering make their products here
    rather than with numpy's BLAS? Read when a program is compiled and bound.

    The gate is wide(), from measurements (benchmarks/bench_gemm.py, bench_conv.py; the
    README's "exprvm's own matrix product"): built for 512-bit vectors on an AVX-512 CPU
    the product takes 0.3-0.7x OpenBLAS's time on one thread, and the convolutions built
    on it 1.0-1.1x PyTorch's; on an AVX2 CPU its 512-bit vectors are emulated with
    256-bit halves and it is several times slower than OpenBLAS, whose AVX2 kernels win.
    forced() overrides it (tests run both paths on every machine)."""
    own = _choice["own"]
    if own is not None:
        return own and available()
    return wide()


@contextlib.contextmanager
def forced(own):
    """Inside the block, preferred() is `own` (True: exprvm's product wherever it is built,
    False: the BLAS path), for programs compiled in it. For tests and benchmarks."""
    with _choice_lock:
        saved, _choice["own"] = _choice["own"], bool(own)
    try:
        yield
    finally:
        with _choice_lock:
            _choice["own"] = saved


def work_shape():
    """The shape of the float32 work buffer the C product packs its panels into."""
    return (int(host._ev_c.lib.ev_gemm_work_f32()),)


def _owner(v):
    base = v
    while isinstance(base.base, np.ndarray):
        base = base.base
    return base


def _operand(v, op, name, writable=False):
    """(pointer to v's first element, its element strides): v a view of an exact,
    C-contiguous numpy array whose buffer holds every element v reaches."""
    if type(v) is not np.ndarray:
        raise KernelError(f"{op}: {name} must be a numpy.ndarray, got {type(v).__name__}")
    if v.dtype != _F32:
        raise KernelError(f"{op}: {name} has dtype {v.dtype}; the C product is float32")
    if writable and not v.flags.writeable:
        raise KernelError(f"{op}: {name} is read-only")
    base = _owner(v)
    if not base.flags.c_contiguous:
        raise KernelError(f"{op}: {name} must be a view of a C-contiguous array")
    item = 4
    if any(s < 0 or s % item for s in v.strides):
        raise KernelError(f"{op}: {name} has strides {v.strides}: the C product takes non-negative "
                          "whole-element strides")
    strides = tuple(s // item for s in v.strides)
    first = (v.__array_interface__["data"][0] - base.__array_interface__["data"][0])
    if first % item or base.__array_interface__["data"][0] % item:
        raise KernelError(f"{op}: {name} does not start on a float's boundary")
    first //= item
    floats = base.nbytes // item      # the base may be any dtype (a compiled program's byte arena)
    p = host.pointer(base, "float[]", floats, op, writable)
    last = first + sum((d - 1) * s for d, s in zip(v.shape, strides)) if v.size else first
    if first < 0 or (v.size and last >= floats):
        raise KernelError(f"{op}: {name} reaches outside its array's buffer")
    return p, p + first, strides


def _call(a, b, out, op, accumulate):
    """The checked arguments of ev_gemm_f32 for a (batch, m, k) @ b (batch, k, n) into
    out, bar the work buffer; None when out is empty (nothing to compute). The first
    item keeps the buffers the pointers point into alive."""
    if type(a) is not np.ndarray or type(b) is not np.ndarray or type(out) is not np.ndarray:
        raise KernelError(f"{op}: a, b and out must be numpy.ndarrays")
    if a.ndim != 3 or b.ndim != 3:
        raise ShapeError(f"{op}: the C product takes (batch, m, k) @ (batch, k, n), got {a.shape} @ {b.shape}")
    batch, m, k = a.shape
    if b.shape[:2] != (batch, k):
        raise ShapeError(f"{op}: cannot multiply {a.shape} by {b.shape}")
    n = b.shape[2]
    want = (batch, m, n) if out.ndim == 3 else (m, n)
    if out.shape != want:
        raise ShapeError(f"{op}: out has shape {out.shape}, the product {want}")
    if out.size == 0:
        return None
    if out.strides[-1] != 4:
        raise KernelError(f"{op}: out's rows must be contiguous")
    for other, name in ((a, "a"), (b, "b")):
        if np.may_share_memory(out, other):
            raise KernelError(f"{op}: out overlaps {name}")
    keep_a, pa, (a_batch, a_rs, a_cs) = _operand(a, op, "a")
    keep_b, pb, (b_batch, b_rs, b_cs) = _operand(b, op, "b")
    keep_c, pc, c_strides = _operand(out, op, "out", writable=True)
    c_batch, c_rs = (c_strides[0], c_strides[1]) if out.ndim == 3 else (0, c_strides[0])
    if (m > 1 and c_rs < n) or (out.ndim == 3 and batch > 1 and c_batch < (m - 1) * c_rs + n):
        raise KernelError(f"{op}: out's rows or batches overlap (strides {out.strides})")
    return ((keep_a, keep_b, keep_c, a, b, out), batch, m, n, k, pa, a_batch, a_rs, a_cs, pb, b_batch, b_rs,
            b_cs, pc, c_batch, c_rs, int(bool(accumulate)))


def _work_pointer(work, op, *operands):
    if type(work) is not np.ndarray or work.dtype != _F32 or work.shape != work_shape() \
            or not (work.flags.c_contiguous and work.flags.writeable):
        raise KernelError(f"{op}: work must be a writable float32 array of shape {work_shape()}")
    for x in operands:
        if np.may_share_memory(work, x):
            raise KernelError(f"{op}: work overlaps an operand")
    return host.pointer(work, "float[]", work.size, op, writable=True)


def matmul(a, b, out=None, accumulate=False):
    """out = a @ b for a (batch, m, k) and b (batch, k, n), or out (m, n) = the sum over
    the batch of a[i] @ b[i]; accumulate: added to what out holds. A checked call
    (every argument validated, see the module's docstring); it allocates its work."""
    if out is None and type(a) is np.ndarray and type(b) is np.ndarray and a.ndim == b.ndim == 3:
        out = np.zeros(a.shape[:2] + b.shape[2:], _F32)
    call = _call(a, b, out, "gemm", accumulate)
    if call is None:
        return out
    work = np.empty(work_shape(), _F32)
    if host._ev_c.lib.ev_gemm_f32(*call[1:], _work_pointer(work, "gemm"), work.size):
        raise KernelError("gemm: the C product rejected its sizes")
    return out


def bind(a, b, out, work, op):
    """(fn, args) for a compiled program: fn(*args) makes out (m, n) = a (m, k) @ b (k, n)
    in one C call (one thread) over the fixed buffers, all checked now; work of
    work_shape()."""
    if a.ndim != 2 or b.ndim != 2 or out.ndim != 2:
        raise ShapeError(f"{op}: the bound C product takes matrices, got {a.shape} @ {b.shape} -> {out.shape}")
    call = _call(a[None], b[None], out[None], op, False)
    if call is None:
        return (lambda: None), ()
    pw = _work_pointer(work, op, a, b, out)
    fn, keep = host._ev_c.lib.ev_gemm_f32, (call[0], work)

    def run(*args):
        if fn(*args):
            raise KernelError(f"{op}: the C product rejected its sizes")
    run.keep = keep             # the buffers behind the pointers live as long as the runner
    return run, (*call[1:], pw, work.size)
