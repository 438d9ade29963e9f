"""Argument checks shared by every host kernel wrapper (numpy and C backends).

Policy, the same for every backend so that errors do not depend on it:
  * arrays must be exactly ``numpy.ndarray`` (no subclass, no look-alike: either
    could report a size its buffer does not have; KernelError) of exactly the
    kernel's dtype (float32 or float64, native byte order): anything else is a
    DTypeError, never a cast;
  * inputs that are not C-contiguous and aligned are copied transparently;
    so is an input that partially overlaps ``out`` (numpy's own semantics);
  * ``out`` must have the input's shape (ShapeError) and be C-contiguous,
    aligned and writable (KernelError): a copy would silently drop the result;
  * ``out=None`` allocates a fresh array.
"""
import numpy as np

from exprvm.errors import DTypeError, KernelError, ShapeError

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
KERNEL_DTYPES = (F32, F64)
SUFFIX = {F32: "f32", F64: "f64"}
CTYPE = {F32: "float", F64: "double"}


def kernel_dtype(dtype):
    """np.dtype for a kernel dtype spec (np.float32, "float64", ...)."""
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise DTypeError(f"not a dtype: {dtype!r}") from e
    if dt not in KERNEL_DTYPES:
        raise DTypeError(f"kernels take float32 or float64, not {dt}")
    return dt


def check_input(x, dt, op, name="x"):
    """x as a C-contiguous aligned ndarray of dtype dt (copied if needed)."""
    if type(x) is not np.ndarray:
        raise KernelError(f"{op}: {name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype is not dt and x.dtype != dt:
        raise DTypeError(f"{op}: {name} has dtype {x.dtype}, kernel is {dt}")
    flags = x.flags
    if not (flags.c_contiguous and flags.aligned):
        x = np.array(x, dtype=dt, order="C", copy=True)
    return x


def check_out(out, shape, dt, op):
    """out validated for writing a result of `shape`, or a new array."""
    if out is None:
        return np.empty(shape, dt)
    if type(out) is not np.ndarray:
        raise KernelError(f"{op}: out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype is not dt and out.dtype != dt:
        raise DTypeError(f"{op}: out has dtype {out.dtype}, kernel is {dt}")
    if out.shape != shape:
        raise ShapeError(f"{op}: out has shape {out.shape}, result has shape {shape}")
    flags = out.flags
    if not flags.writeable:
        raise KernelError(f"{op}: out is read-only")
    if not (flags.c_contiguous and flags.aligned):
        raise KernelError(f"{op}: out must be C-contiguous and aligned (a copy would lose the result)")
    return out


def _address(a):
    return a.__array_interface__["data"][0]


def separate(x, out):
    """x, copied if it partially overlaps out.

    The kernels allow out to be exactly x (in place).  Arrays that own their
    memory can only overlap by being the same object, which keeps the common
    case free of the (slower) memory-bounds test.
    """
    if x is out or (x.base is None and out.base is None):
        return x
    if np.may_share_memory(x, out) and _address(x) != _address(out):
        return x.copy()
    return x


def same_shape(op, names_arrays):
    """ShapeError unless every array has the first one's shape."""
    (n0, a0), *rest = names_arrays
    for name, a in rest:
        if a.shape != a0.shape:
            raise ShapeError(f"{op}: {name} has shape {a.shape}, {n0} has shape {a0.shape}")
    return a0.shape
