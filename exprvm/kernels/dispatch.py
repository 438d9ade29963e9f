"""The one dispatch point for kernels: backend choice and kernel lookup.

A machine asks for a kernel once, at compile time, and keeps the returned
function; lookups are cached, so asking again is cheap too.

Backends:
  "numpy"  reference.py, always available;
  "c"      the cffi extension built at install time (host.py);
  "cuda"   the nvcc-built library; its kernels take exprvm.cuda.DeviceArray, not
           numpy arrays. They live in the device package (exprvm.device), which
           imports this one and hands it its kernels (provide_cuda): kernels/ never
           imports the device.

The initial backend is $EXPRVM_BACKEND if set and available, else "c" when
the extension is built, else "numpy" (with one warning per process).  It is
resolved on first use, never at import, so importing exprvm probes no GPU.
"""
import os
import threading
import warnings

from exprvm.errors import BackendError, KernelError
from exprvm.kernels import host
from exprvm.kernels.checks import kernel_dtype
from exprvm.kernels.reference import BINARY_OPS, KERNEL_OPS

BACKENDS = ("numpy", "c", "cuda")

_lock = threading.Lock()
_state = {"backend": None}
_cache = {}
_cuda_kernels = {}      # what exprvm.device provides: status, unary, unary_grad, binary


def provide_cuda(status, unary, unary_grad, binary):
    """The CUDA backend's functions, handed over by the device package as it loads:
    status() -> (available, reason); unary(op, dtype), unary_grad(op, dtype) and
    binary(op, dtype) -> kernels over DeviceArrays."""
    _cuda_kernels.update(status=status, unary=unary, unary_grad=unary_grad, binary=binary)


def forget(backend):
    """Drop the cached kernels of `backend` (the CUDA library was swapped: the host twin)."""
    with _lock:
        for key in [k for k in _cache if k[3] == backend]:
            del _cache[key]


def _cuda_status():
    status = _cuda_kernels.get("status")
    return (False, "the device package (exprvm.device) is not loaded") if status is None else status()


def backend_status(name):
    """(available, reason) for one backend, without asking about the others: a compile for
    the host asks about "c" alone, and never loads the CUDA driver (let alone builds the
    CUDA library) on the way."""
    _check_name(name)
    if name == "numpy":
        return True, "reference"
    return host.C_STATUS if name == "c" else _cuda_status()


def backends():
    """{name: (available, reason)} for every backend."""
    return {name: backend_status(name) for name in BACKENDS}


def _check_name(name):
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {BACKENDS}")


def _require(name):
    ok, reason = backend_status(name)
    if not ok:
        raise BackendError(f"backend {name!r} is not available: {reason}")


def set_backend(name):
    """Make `name` the default backend for kernels looked up from now on."""
    _require(name)
    with _lock:
        _state["backend"] = name


def _initial():
    env = os.environ.get("EXPRVM_BACKEND")
    if env:
        try:
            _require(env)
            return env
        except BackendError as e:
            warnings.warn(f"EXPRVM_BACKEND={env!r} ignored: {e}", RuntimeWarning, stacklevel=4)
    if host.C_STATUS[0]:
        return "c"
    warnings.warn(f"exprvm runs its kernels on numpy: {host.C_STATUS[1]}", RuntimeWarning, stacklevel=4)
    return "numpy"


def get_backend():
    """The default backend's name."""
    with _lock:
        if _state["backend"] is None:
            _state["backend"] = _initial()
        return _state["backend"]


def _resolve(op, ops, dtype, backend):
    if op not in ops:
        raise KernelError(f"no kernel {op!r}; kernels are {ops}")
    dt = kernel_dtype(dtype)
    backend = get_backend() if backend is None else backend
    _require(backend)
    return dt, backend


def available(op, dtype, backend):
    """Whether `backend` is usable and has a kernel for op and dtype."""
    try:
        _resolve(op, KERNEL_OPS + BINARY_OPS, dtype, backend)
    except (KernelError, BackendError, TypeError, ValueError):
        return False
    return True


def _lookup(kind, op, ops, dtype, backend, make):
    dt, backend = _resolve(op, ops, dtype, backend)
    key = (kind, op, dt.char, backend)
    fn = _cache.get(key)
    if fn is None:
        fn = _cache[key] = make(backend, op, dt)
    return fn


def _cuda(kind):
    fn = _cuda_kernels.get(kind)
    if fn is None:
        raise BackendError("the CUDA backend needs the device package (exprvm.device), not loaded")
    return fn


def unary(op, dtype, backend=None):
    """fn(x, out=None) -> out computing op elementwise, with every argument checked."""
    def make(b, op, dt):
        return _cuda("unary")(op, dt) if b == "cuda" else host.checked_unary(b, op, dt)
    return _lookup("unary", op, KERNEL_OPS, dtype, backend, make)


def unary_grad(op, dtype, backend=None):
    """fn(x, ans, g, out=None) -> out: the gradient of op wrt x, given the
    forward result ans and the upstream gradient g."""
    def make(b, op, dt):
        return _cuda("unary_grad")(op, dt) if b == "cuda" else host.checked_unary_grad(b, op, dt)
    return _lookup("grad", op, KERNEL_OPS, dtype, backend, make)


def binary(op, dtype, backend=None):
    """fn(a, b, out=None) -> out for op in add/sub/mul/div, same shapes (no
    broadcasting).  Host backends use numpy's ufuncs."""
    def make(b, op, dt):
        return _cuda("binary")(op, dt) if b == "cuda" else host.checked_binary(op, dt)
    return _lookup("binary", op, BINARY_OPS, dtype, backend, make)


def _dtype_of(op, x):
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        raise KernelError(f"{op}: expected an array, got {type(x).__name__}")
    return dtype


def bind_unary(op, x, out, backend=None):
    """thunk() -> out computing op(x) into out, for buffers that live as long
    as a compiled program (its registers).  Everything is validated here;
    a call is one C call."""
    dt, backend = _resolve(op, KERNEL_OPS, _dtype_of(op, x), backend)
    if backend == "cuda":
        fn = _cuda("unary")(op, dt)
        return lambda: fn(x, out)
    return host.bound_unary(backend, op, dt, x, out)


def bind_unary_grad(op, x, ans, g, out, backend=None):
    """thunk() -> out computing op's gradient into out; see bind_unary."""
    dt, backend = _resolve(op, KERNEL_OPS, _dtype_of(op, x), backend)
    if backend == "cuda":
        fn = _cuda("unary_grad")(op, dt)
        return lambda: fn(x, ans, g, out)
    return host.bound_unary_grad(backend, op, dt, x, ans, g, out)


def bind_xent(op, z, t, out, backend=None):
    """thunk() -> out for softmax cross-entropy: op "cross_entropy" writes the loss of
    each row of logits z against the int64 class ids t, op "xent_grad" its gradient
    softmax(z) - onehot(t). The C backend only (numpy runs the ops' own lowering)."""
    dt = kernel_dtype(_dtype_of(op, z))
    backend = get_backend() if backend is None else backend
    if backend != "c":
        raise BackendError(f"{op}: the cross-entropy kernels are C kernels; backend {backend!r} has none")
    _require(backend)
    return host.bound_xent(op, dt, z, t, out)


def bind_scatter_rows(g, ids, out, backend=None):
    """thunk() -> out for take's gradient along axis 0: out zeroed, then out[ids[k]] += g[k]
    (int64 ids, repeated ids accumulating). The C backend only."""
    dt = kernel_dtype(_dtype_of("take_grad", out))
    backend = get_backend() if backend is None else backend
    if backend != "c":
        raise BackendError(f"take_grad: the row scatter is a C kernel; backend {backend!r} has none")
    _require(backend)
    return host.bound_scatter_rows(dt, g, ids, out)


def _reset_for_tests():
    """Forget the chosen backend so the next get_backend() re-reads the environment."""
    with _lock:
        _state["backend"] = None
