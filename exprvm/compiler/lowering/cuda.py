"""Lowering rows of the instructions placed on a CUDA device (compiler/placement.py):
exprvm.kernels' CUDA kernels and cuBLAS over DeviceArrays, and the transfers.

Every row here is also the placement's test of whether an op can run on the device:
placement.py asks it with layouts=None (shapes and dtypes only), so a row that
accepts an instruction then accepts it with any operand layout. Operands a kernel
needs C-contiguous but which arrive strided (views of device registers) are
gathered into scratch buffers first, never refused. A row returns None only for
what placement can see: dtypes, an advanced index, axes that are not one run.
build() checks every DeviceArray once (type, dtype, shape, allocation) and returns
a bare, error-checked launch.
"""
import numpy as np

from ...core import FLOAT_DTYPES, is_basic_index
from ...kernels import KERNEL_OPS
from ...device import cublas
from ...device import launch as dk
from ...device import nn as dn
from ...device.arrays import DeviceArray
from .table import ALL, Lowered, fake_array, lowers

BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div",
          "maximum": "maximum", "minimum": "minimum"}
EQUAL_SHAPE = ("add", "sub", "mul", "div")      # ops with a plain equal-shape kernel too
INDEX = (np.dtype(np.int64), np.dtype(np.int32))     # index dtypes the device kernels take
BOOL = np.dtype(np.bool_)
VIEWS = ("reshape", "transpose", "broadcast_to", "getitem")   # copies when not made views


def _floats(req, *positions):
    return req.dtype in FLOAT_DTYPES and all(req.in_dtypes[p] == req.dtype for p in positions)


def _strided(req, p):
    lay = req.layouts[p] if req.layouts else None
    return lay is not None and not lay.flags.c_contiguous


def _gather(req, positions, build, need=None, **kw):
    """A Lowered whose build first copies the operands at `positions` that arrive strided
    (or those listed in `need`) into scratch: their own tmps, ahead of any the kernel
    asks for in kw["tmps"]."""
    need = [p for p in positions if _strided(req, p)] if need is None else list(need)
    own = tuple((req.in_shapes[p], req.in_dtypes[p]) for p in need)

    def gathered(ins, out, tmps):
        ins, pre = list(ins), []
        for k, p in enumerate(need):
            pre.append(dk.bind_copy(ins[p], tmps[k]))
            ins[p] = tmps[k]
        fn, args = build(ins, out, tmps[len(need):])
        if not pre:
            return fn, args
        steps = pre + [(fn, args)]

        def run():
            for f, a in steps:
                f(*a)
        return run, ()
    inplace = kw.pop("inplace", ())
    return Lowered(gathered, tmps=own + tuple(kw.pop("tmps", ())), inplace=() if need else inplace,
                   kernel="cuda", **kw)


# -- transfers ---------------------------------------------------------------------------

@lowers("to_device", "cuda")
def _to_device(req):
    return Lowered(lambda ins, out, tmps: (out.set, (ins[0],)), kernel="cuda")


def _to_host(ins, out, tmps):
    src = ins[0]

    def run():
        src.numpy(out)
        # NOTE: the copy waited for the device anyway; an index a kernel met out of range
        # is reported here, where the step's results reach the host.
        dk.check_status("a device kernel before this copy to the host")
    return run, ()


@lowers("to_host", "cuda")
def _to_host_row(req):
    return Lowered(_to_host, kernel="cuda")


@lowers("copy", "cuda")
def _copy(req):
    return Lowered(lambda ins, out, tmps: dk.bind_copy(ins[0], out), kernel="cuda")


# -- elementwise --------------------------------------------------------------------------

def _unary(op):
    def row(req):
        if not _floats(req, 0):
            return None
        return _gather(req, (0,), lambda ins, out, tmps: dk.bind_unary(op, ins[0], out), inplace=ALL)
    return row


@lowers("unary_grad", "cuda")
def _unary_grad(req):
    op = req.params["op"]
    if op not in KERNEL_OPS or not _floats(req, 0, 1, 2):
        return None
    return _gather(req, (0, 1, 2), lambda ins, out, tmps: dk.bind_unary_grad(op, *ins, out),
                   inplace=ALL, name=op + "_grad")


def _binary(op):
    def row(req):
        if not _floats(req, 0, 1):
            return None
        if (op in EQUAL_SHAPE and req.in_shapes[0] == req.in_shapes[1] == req.shape
                and not _strided(req, 0) and not _strided(req, 1)):
            dt = req.dtype
            return Lowered(lambda ins, out, tmps: (dk.binary(op, dt), (*ins, out)), inplace=ALL,
                           kernel="cuda")
        return Lowered(lambda ins, out, tmps: dk.bind_bcast(op, *ins, out), inplace=ALL, kernel="cuda")
    return row


@lowers("where", "cuda")
def _where(req):
    if req.in_dtypes[0] != BOOL or not _floats(req, 1, 2):
        return None
    return Lowered(lambda ins, out, tmps: dk.bind_where(*ins, out), inplace=ALL, kernel="cuda")


# -- reductions and row ops ---------------------------------------------------------------

def _reduce(kind):
    def row(req):
        axes = tuple(req.params["axis"])
        if not _floats(req, 0) or dn.reduce_plan(req.in_shapes[0], axes) is None:
            return None
        need = dn.reduce_scratch(req.in_shapes[0], axes)

        def build(ins, out, tmps):
            # NOTE: scratch the emitter left on the host cannot serve: one pass instead
            partial = tmps[0] if need and type(tmps[0]) is DeviceArray else None
            return dn.bind_reduce(kind, ins[0], out, axes, partial)
        return _gather(req, (0,), build, tmps=(((need,), req.dtype),) if need else ())
    return row


def _softmax(log):
    def row(req):
        if not _floats(req, 0):
            return None
        axis = req.params["axis"]
        return _gather(req, (0,), lambda ins, out, tmps: dn.bind_softmax(ins[0], out, axis, log),
                       inplace=(0,))
    return row


def _xent(bind):
    def row(req):
        if not _floats(req, 0) or req.in_dtypes[1] not in INDEX:
            return None
        return _gather(req, (0, 1), lambda ins, out, tmps: bind(ins[0], ins[1], out))
    return row


lowers("cross_entropy", "cuda")(_xent(dn.bind_cross_entropy))
lowers("xent_grad", "cuda")(_xent(dn.bind_xent_grad))


@lowers("one_hot", "cuda")
def _one_hot(req):
    if req.dtype not in FLOAT_DTYPES or req.in_dtypes[0] not in INDEX:
        return None
    return _gather(req, (0,), lambda ins, out, tmps: dn.bind_one_hot(ins[0], out))


# -- data movement ------------------------------------------------------------------------

def _rows(bind):
    """The device row of take or take_grad (float data, integer ids)."""
    def row(req):
        if not _floats(req, 0) or req.in_dtypes[1] not in INDEX:
            return None
        axis = req.params["axis"]
        return _gather(req, (0, 1), lambda ins, out, tmps: bind(ins[0], ins[1], out, axis))
    return row


lowers("take", "cuda")(_rows(dn.bind_take))
lowers("take_grad", "cuda")(_rows(dn.bind_take_grad))


@lowers("concat", "cuda")
def _concat(req):
    if not _floats(req, *range(len(req.in_dtypes))):
        return None
    axis = req.params["axis"]
    return Lowered(lambda ins, out, tmps: dn.bind_concat(list(ins), out, axis), kernel="cuda")


@lowers("stack", "cuda")
def _stack(req):
    if not _floats(req, *range(len(req.in_dtypes))):
        return None
    axis = req.params["axis"]

    def build(ins, out, tmps):
        # NOTE: each operand as a (..., 1, ...) view, then one concatenation kernel
        return dn.bind_concat([x.apply_view(lambda a: np.expand_dims(a, axis)) for x in ins], out, axis)
    return Lowered(build, kernel="cuda")


def _view_copy(op):
    """A view op the compiler did not make a view (a device register, a strided base):
    the view of the operand, copied."""
    def row(req):
        p = req.params
        if (req.in_dtypes[0] != req.dtype or req.dtype.itemsize not in (4, 8)
                or (op == "getitem" and not is_basic_index(p["index"]))):
            return None       # NOTE: ints too (index feeds reshaped), moved bit for bit
        if op == "reshape":
            return Lowered(lambda ins, out, tmps: dk.bind_copy(ins[0], out.reshape(ins[0].shape)), kernel="cuda")
        make = {"transpose": lambda a: np.transpose(a, p["axes"]),
                "broadcast_to": lambda a: np.broadcast_to(a, p["shape"]),
                "getitem": lambda a: a[tuple(p["index"]) + (() if Ellipsis in p["index"] else (Ellipsis,))]}[op]
        return Lowered(lambda ins, out, tmps: dk.bind_copy(ins[0].apply_view(make), out), kernel="cuda")
    return row


@lowers("getitem_grad", "cuda")
def _getitem_grad(req):
    index = req.params["index"]
    if not _floats(req, 0) or not is_basic_index(index):
        return None
    full = tuple(index) + (() if Ellipsis in index else (Ellipsis,))

    def build(ins, out, tmps):
        zero, copy = dk.bind_zero(out), dk.bind_copy(ins[0], out.apply_view(lambda a: a[full]))

        def run():
            zero[0](*zero[1])
            copy[0](*copy[1])
        return run, ()
    return Lowered(build, kernel="cuda")


# -- matrix products ----------------------------------------------------------------------

def _as_2d(x, side):
    """A 1-D operand as the matrix numpy's matmul treats it as."""
    if x.ndim != 1:
        return x
    return x.reshape(1, x.shape[0]) if side == "a" else x.reshape(x.shape[0], 1)


def _out_2d(out, a, b):
    if a.ndim == 1 and b.ndim == 1:
        return out.reshape(1, 1)
    if a.ndim == 1:
        return out.reshape(out.shape[:-1] + (1, out.shape[-1]))
    if b.ndim == 1:
        return out.reshape(out.shape + (1,))
    return out


def _gemm_ok(shapes, strides, dtype, out_shape):
    fakes = []
    for shape, st in zip(shapes, strides):
        f = fake_array(tuple(shape), dtype)
        fakes.append(f if st is None else st)
    a, b = _as_2d(fakes[0], "a"), _as_2d(fakes[1], "b")
    try:
        cublas.plan_gemm(a, b, _out_2d(fake_array(tuple(out_shape), dtype), fakes[0], fakes[1]))
        return True
    except Exception:   # noqa: BLE001 - any refusal of plan_gemm means: not this layout
        return False


@lowers("matmul", "cuda")
def _matmul(req):
    if not _floats(req, 0, 1):
        return None
    if not _gemm_ok(req.in_shapes, (None, None), req.dtype, req.shape):
        return None                     # a batch broadcast no strided-batched GEMM expresses
    lays = [req.layouts[p] if req.layouts else None for p in (0, 1)]
    need = [] if _gemm_ok(req.in_shapes, lays, req.dtype, req.shape) else [p for p in (0, 1) if _strided(req, p)]

    def build(ins, out, tmps):
        a, b = ins
        return cublas.bind_matmul(_as_2d(a, "a"), _as_2d(b, "b"), _out_2d(out, a, b))
    return _gather(req, (0, 1), build, need=need)


for _op, _kernel in BINARY.items():
    lowers(_op, "cuda")(_binary(_kernel))
for _op in (*KERNEL_OPS, "neg"):
    lowers(_op, "cuda")(_unary(_op))
for _kind in ("sum", "mean", "max"):
    lowers(_kind, "cuda")(_reduce(_kind))
lowers("softmax", "cuda")(_softmax(False))
lowers("log_softmax", "cuda")(_softmax(True))
for _op in VIEWS:
    lowers(_op, "cuda")(_view_copy(_op))
