"""CUDA kernel wrappers over DeviceArray (arrays.py; public as ev.cuda.DeviceArray).

Two forms, one set of checks (type, dtype, shape, strides, not freed, within the
allocation), made before anything is launched:

  eager   fn(..., out=None) -> out: checked and launched at once; out=None allocates
          a new DeviceArray (owned by the current tidy scope, if any)
  bound   bind_<op>(..., out) -> (fn, args): checked once; fn(*args) is one bare
          launch whose CUDA error code is checked (what a compiled program runs)

This file: the elementwise kernels (equal shapes, contiguous), broadcasting and
strided binary ops and `where` (any views: slices, transposes, broadcasts), and
strided copies. Reductions, softmax, cross-entropy, take and concat are in
nn.py. Launches are asynchronous on the default stream; DeviceArray.numpy()
and exprvm.cuda.synchronize() wait for them.
"""
import math

import numpy as np

from exprvm.errors import DTypeError, IndexRangeError, KernelError, NumericError, ShapeError
from exprvm.device import loader
from exprvm.kernels.checks import SUFFIX, kernel_dtype, same_shape
from exprvm.device.arrays import DeviceArray

BCAST_OPS = ("add", "sub", "mul", "div", "maximum", "minimum")
MAX_DIMS = 8                # EV_MAX_DIMS of csrc/ev_cuda_launch.h
BOOL = np.dtype(np.bool_)
I64 = np.dtype(np.int64)
I32 = np.dtype(np.int32)


def device_pointer(a, dt, op, name, contiguous=False):
    """a's device pointer, after checking it is a live DeviceArray of dtype dt whose
    elements lie in its allocation (and, if asked, C-contiguous)."""
    # NOTE: the exact type, and the size checked against the bytes really allocated: a
    # subclass or a changed .size would send the kernel past the end of the allocation.
    if type(a) is not DeviceArray:
        raise KernelError(f"{op}: {name} must be an exprvm.cuda.DeviceArray, got {type(a).__name__}")
    if dt is not None and a.dtype != dt:
        raise DTypeError(f"{op}: {name} has dtype {a.dtype}, kernel is {dt}")
    ptr = a._device()  # KernelError once freed
    if contiguous and not a.contiguous:
        raise KernelError(f"{op}: {name} must be C-contiguous, got strides {a.strides}")
    if a.contiguous and a.size * a.dtype.itemsize > a._allocated:
        raise KernelError(f"{op}: {name} claims {a.size} elements, its allocation holds "
                          f"{a._allocated // a.dtype.itemsize}")
    return ptr


_ptr = device_pointer     # the name the elementwise wrappers below use


def _out(out, shape, dt, op):
    if out is None:
        out = DeviceArray(shape, dt)
    elif type(out) is DeviceArray and out.shape != tuple(shape):
        raise ShapeError(f"{op}: out has shape {out.shape}, result has shape {tuple(shape)}")
    return out, device_pointer(out, dt, op, "out", contiguous=True)


def checked(cfn, op):
    """A callable running cfn(*args) and raising KernelError on a CUDA error code."""
    def launch(*args):
        rc = cfn(*args)
        if rc:
            loader.check_kernel(rc, op)
    return launch


def lib_fn(name):
    return getattr(loader.load()[1], name)


def int64s(values):
    """A cffi int64_t[] of values (kept alive by the args that hold it)."""
    ffi, _ = loader.load()
    return ffi.new("int64_t[]", [int(v) for v in values] or [0])


def broadcast_shape(op, *arrays):
    try:
        return np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        raise ShapeError(f"{op}: shapes {', '.join(str(a.shape) for a in arrays)} do not broadcast") from None


def elem_strides(a):
    return tuple(s // a.dtype.itemsize for s in a.strides)


def simplify(shape, *strides):
    """shape and per-operand element strides with size-1 dimensions dropped and adjacent
    dimensions merged wherever every operand allows: fewer index divisions per element."""
    dims = [(n, [s[d] for s in strides]) for d, n in enumerate(shape) if n != 1]
    merged = []
    for n, st in dims:
        if merged:
            pn, pst = merged[-1]
            if all(p == q * n for p, q in zip(pst, st)):
                merged[-1] = (pn * n, st)
                continue
        merged.append((n, st))
    if len(merged) > MAX_DIMS:
        raise ShapeError(f"more than {MAX_DIMS} dimensions after merging: {tuple(shape)}")
    return [n for n, _ in merged], [[st[k] for _, st in merged] for k in range(len(strides))]


def broadcast_strides(a, shape):
    """a's element strides read as an operand of `shape` (0 where a broadcasts)."""
    if len(a.shape) > len(shape):
        raise ShapeError(f"cannot broadcast {a.shape} to {tuple(shape)}")
    pad = len(shape) - len(a.shape)
    st = (0,) * pad + elem_strides(a)
    dims = (1,) * pad + a.shape
    for n, m in zip(dims, shape):
        if n != m and n != 1:
            raise ShapeError(f"cannot broadcast {a.shape} to {tuple(shape)}")
    return [0 if n == 1 and m != 1 else s for n, m, s in zip(dims, shape, st)]


def _c_elem_strides(shape):
    out, acc = [], 1
    for n in reversed(shape):
        out.append(acc)
        acc *= max(n, 1)
    return list(reversed(out))


# -- elementwise, equal shapes, contiguous -----------------------------------------------

def unary(op, dt):
    dt = kernel_dtype(dt)
    cfn = lib_fn(f"ev_cuda_{op}_{SUFFIX[dt]}")

    def run(x, out=None):
        px = _ptr(x, dt, op, "x", contiguous=True)
        out, po = _out(out, x.shape, dt, op)
        loader.check_kernel(cfn(px, po, x.size), op)
        return out
    return run


def unary_grad(op, dt):
    dt = kernel_dtype(dt)
    gop = op + "_grad"
    cfn = lib_fn(f"ev_cuda_{gop}_{SUFFIX[dt]}")

    def run(x, ans, g, out=None):
        ptrs = [_ptr(a, dt, gop, name, contiguous=True) for name, a in (("x", x), ("ans", ans), ("g", g))]
        shape = same_shape(gop, (("x", x), ("ans", ans), ("g", g)))
        out, po = _out(out, shape, dt, gop)
        loader.check_kernel(cfn(*ptrs, po, x.size), gop)
        return out
    return run


def binary(op, dt):
    dt = kernel_dtype(dt)
    cfn = lib_fn(f"ev_cuda_{op}_{SUFFIX[dt]}")

    def run(a, b, out=None):
        pa, pb = _ptr(a, dt, op, "a", contiguous=True), _ptr(b, dt, op, "b", contiguous=True)
        shape = same_shape(op, (("a", a), ("b", b)))
        out, po = _out(out, shape, dt, op)
        loader.check_kernel(cfn(pa, pb, po, a.size), op)
        return out
    return run


def bind_unary(op, x, out):
    dt = out.dtype
    px, po = _ptr(x, dt, op, "x", contiguous=True), _out(out, x.shape, dt, op)[1]
    return checked(lib_fn(f"ev_cuda_{op}_{SUFFIX[dt]}"), op), (px, po, x.size)


def bind_unary_grad(op, x, ans, g, out):
    dt, gop = out.dtype, op + "_grad"
    shape = same_shape(gop, (("x", x), ("ans", ans), ("g", g)))
    ptrs = [_ptr(a, dt, gop, n, contiguous=True) for n, a in (("x", x), ("ans", ans), ("g", g))]
    po = _out(out, shape, dt, gop)[1]
    return checked(lib_fn(f"ev_cuda_{gop}_{SUFFIX[dt]}"), gop), (*ptrs, po, out.size)


# -- broadcasting / strided -----------------------------------------------------------------

def bind_bcast(op, a, b, out):
    """out = a <op> b with numpy broadcasting; a and b may be any views."""
    if op not in BCAST_OPS:
        raise KernelError(f"no broadcasting CUDA kernel for {op!r}; there are {BCAST_OPS}")
    dt = out.dtype
    shape = broadcast_shape(op, a, b)
    pa, pb = _ptr(a, dt, op, "a"), _ptr(b, dt, op, "b")
    po = _out(out, shape, dt, op)[1]
    dims, (sa, sb, _) = simplify(shape, broadcast_strides(a, shape), broadcast_strides(b, shape),
                                 _c_elem_strides(shape))
    cfn = lib_fn(f"ev_cuda_bcast_{op}_{SUFFIX[dt]}")
    return checked(cfn, op), (pa, pb, po, len(dims), int64s(dims), int64s(sa), int64s(sb), out.size)


def bind_where(c, x, y, out):
    """out = c ? x : y with broadcasting; c a bool DeviceArray."""
    dt = out.dtype
    shape = broadcast_shape("where", c, x, y)
    pc, px, py = _ptr(c, BOOL, "where", "condition"), _ptr(x, dt, "where", "x"), _ptr(y, dt, "where", "y")
    po = _out(out, shape, dt, "where")[1]
    dims, (sc, sx, sy, _) = simplify(shape, broadcast_strides(c, shape), broadcast_strides(x, shape),
                                     broadcast_strides(y, shape), _c_elem_strides(shape))
    return checked(lib_fn(f"ev_cuda_where_{SUFFIX[dt]}"), "where"), (
        pc, px, py, po, len(dims), int64s(dims), int64s(sc), int64s(sx), int64s(sy), out.size)


def bind_copy(x, out):
    """out[...] = x: any view into any view of the same shape and dtype (one memcpy when
    both are contiguous). Elements of 4 or 8 bytes (floats and ints alike, bit for bit)."""
    if type(x) is not DeviceArray or type(out) is not DeviceArray:
        raise KernelError(f"copy: DeviceArrays expected, got {type(x).__name__} -> {type(out).__name__}")
    if x.dtype != out.dtype or x.shape != out.shape:
        raise ShapeError(f"copy: {x.shape} {x.dtype} into {out.shape} {out.dtype}")
    px, po = _ptr(x, x.dtype, "copy", "x"), _ptr(out, x.dtype, "copy", "out")
    if x.contiguous and out.contiguous:
        return checked(lib_fn("ev_cuda_memcpy_dtod"), "copy"), (po, px, x.nbytes)
    sfx = {4: "f32", 8: "f64"}.get(x.dtype.itemsize)
    if sfx is None:
        raise DTypeError(f"copy: strided copies move 4- or 8-byte elements, not {x.dtype}")
    dims, (sx, so) = simplify(x.shape, elem_strides(x), elem_strides(out))
    return checked(lib_fn(f"ev_cuda_copy_strided_{sfx}"), "copy"), (
        px, po, len(dims), int64s(dims), int64s(sx), int64s(so), x.size)


def bind_zero(out):
    """out[...] = 0 (all bits zero: 0.0 for floats)."""
    po = _ptr(out, out.dtype, "zero", "out", contiguous=True)
    return checked(lib_fn("ev_cuda_memset"), "zero"), (po, 0, out.nbytes)


def eager(bind, *args):
    """Run a bind_* once: bind(*args) -> (fn, a); fn(*a). Returns the last argument (out)."""
    fn, a = bind(*args)
    fn(*a)
    return args[-1]


def copy_strided(x):
    """A new C-contiguous DeviceArray holding view x's elements."""
    out = DeviceArray(x.shape, x.dtype)
    try:
        return eager(bind_copy, x, out)
    except BaseException:
        out.free()
        raise


def bcast(op, a, b, out=None):
    if out is None:
        out = DeviceArray(broadcast_shape(op, a, b), a.dtype)
    return eager(lambda a, b, o: bind_bcast(op, a, b, o), a, b, out)


def where(c, x, y, out=None):
    if out is None:
        out = DeviceArray(broadcast_shape("where", c, x, y), x.dtype)
    return eager(bind_where, c, x, y, out)


# -- the status word -----------------------------------------------------------------------

STATUS_INDEX, STATUS_NONFINITE = 1, 2      # bits of the status word (ev_cuda_launch.h)


def check_status(where="a device kernel"):
    """Raise IndexRangeError if a kernel met an index out of range since the last check,
    NumericError if a solver update met a NaN / Inf gradient (the word is cleared). Waits
    for the device: call it where a step syncs anyway."""
    ffi, lib = loader.load()
    word = ffi.new("int*")
    loader.check(lib.ev_cuda_status(word, 1), "reading the CUDA status word", KernelError)
    if word[0] & STATUS_INDEX:
        raise IndexRangeError(f"{where}: an index out of range reached take, take_grad or "
                              "cross_entropy on the device (its outputs are NaN)")
    if word[0] & STATUS_NONFINITE:
        raise NumericError(f"{where}: a NaN or Inf gradient reached a solver update on the device "
                           "(the parameters it updated hold NaN / Inf now)")


def nbytes_of(shape, dtype):
    return math.prod(shape) * np.dtype(dtype).itemsize
