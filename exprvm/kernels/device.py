"""CUDA kernel wrappers over DeviceArray (device_array.py; public as ev.cuda.DeviceArray).

Same contract as the host wrappers: fn(x, out=None) -> out, every argument
checked (type, dtype, shape, not freed) before the launch; out=None
allocates a new DeviceArray (owned by the current tidy scope, if any).
Launches are asynchronous on the default stream; DeviceArray.numpy() and
exprvm.cuda.synchronize() wait for them.
"""
from exprvm.errors import DTypeError, KernelError, ShapeError
from exprvm.kernels import cuda_loader
from exprvm.kernels.checks import SUFFIX, same_shape
from exprvm.kernels.device_array import DeviceArray


def _ptr(a, dt, op, name, cls):
    # NOTE: the exact type, and the size checked against the bytes really allocated: a
    # subclass or a changed .size would send the kernel past the end of the allocation.
    if type(a) is not cls:
        raise KernelError(f"{op}: {name} must be an exprvm.cuda.DeviceArray, got {type(a).__name__}")
    if a.dtype != dt:
        raise DTypeError(f"{op}: {name} has dtype {a.dtype}, kernel is {dt}")
    ptr = a._device()  # KernelError once freed
    if a.size * dt.itemsize > a._allocated:
        raise KernelError(f"{op}: {name} claims {a.size} elements, its allocation holds "
                          f"{a._allocated // dt.itemsize}")
    return ptr


def _out(out, shape, dt, op, cls):
    if out is None:
        out = cls(shape, dt)
    elif type(out) is cls and out.shape != shape:
        raise ShapeError(f"{op}: out has shape {out.shape}, result has shape {shape}")
    return out, _ptr(out, dt, op, "out", cls)


def unary(op, dt):
    _, lib = cuda_loader.load()
    cfn, cls = getattr(lib, f"ev_cuda_{op}_{SUFFIX[dt]}"), DeviceArray

    def run(x, out=None):
        px = _ptr(x, dt, op, "x", cls)
        out, po = _out(out, x.shape, dt, op, cls)
        cuda_loader.check_kernel(cfn(px, po, x.size), op)
        return out
    return run


def unary_grad(op, dt):
    _, lib = cuda_loader.load()
    gop = op + "_grad"
    cfn, cls = getattr(lib, f"ev_cuda_{gop}_{SUFFIX[dt]}"), DeviceArray

    def run(x, ans, g, out=None):
        ptrs = [_ptr(a, dt, gop, name, cls) for name, a in (("x", x), ("ans", ans), ("g", g))]
        shape = same_shape(gop, (("x", x), ("ans", ans), ("g", g)))
        out, po = _out(out, shape, dt, gop, cls)
        cuda_loader.check_kernel(cfn(*ptrs, po, x.size), gop)
        return out
    return run


def binary(op, dt):
    _, lib = cuda_loader.load()
    cfn, cls = getattr(lib, f"ev_cuda_{op}_{SUFFIX[dt]}"), DeviceArray

    def run(a, b, out=None):
        pa, pb = _ptr(a, dt, op, "a", cls), _ptr(b, dt, op, "b", cls)
        shape = same_shape(op, (("a", a), ("b", b)))
        out, po = _out(out, shape, dt, op, cls)
        cuda_loader.check_kernel(cfn(pa, pb, po, a.size), op)
        return out
    return run
