"""CUDA wrappers for a training step's row ops: reductions over axes (sum, mean, max),
softmax / log-softmax, cross-entropy and its fused gradient, take (embedding) and its
scatter-add gradient, and concatenation. Same two forms and checks as device.py:
bind_<op>(..., out) -> (fn, args) checked once, and eager <op>(..., out=None) -> out.

Shapes are passed to the kernels as (outer, length, inner) around the axis an op
works on; inputs must be C-contiguous (the lowering rows gather a strided operand
into a scratch buffer first), except concat's pieces, which may be any views.
"""
import math

import numpy as np

from exprvm.errors import DTypeError, KernelError, ShapeError
from exprvm.device import loader
from exprvm.kernels.checks import SUFFIX
from exprvm.device.launch import I64, I32, bind_copy, checked, device_pointer, eager, int64s, lib_fn
from exprvm.device.arrays import DeviceArray

CONCAT_MAX = 32             # EV_CONCAT_MAX of csrc/ev_cuda.h
PARALLEL = 1 << 18          # threads a reduction aims for before it splits its rows


def around(shape, axis):
    """(outer, length, inner) of shape around one axis."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def reduce_plan(shape, axes):
    """(outer, r, inner) when the reduced axes form one run after dropping size-1
    dimensions (every reduction the step needs: all axes, leading axes, the last
    axis ...), else None."""
    axes = set(a % len(shape) for a in axes) if shape else set()
    kept = [(n, d in axes) for d, n in enumerate(shape) if n != 1]
    flags = [red for _, red in kept]
    sizes = [n for n, _ in kept]
    if True not in flags:
        return math.prod(sizes), 1, 1
    first, last = flags.index(True), len(flags) - 1 - flags[::-1].index(True)
    if not all(flags[first:last + 1]):
        return None
    return (math.prod(sizes[:first]), math.prod(sizes[first:last + 1]),
            math.prod(sizes[last + 1:]))


def reduce_parts(outer, r, inner):
    """Interleaved partials per output: 1 (one pass) when the outputs alone give enough
    threads or the rows are short, else about sqrt(r), bounded by the thread target."""
    if r <= 64 or outer * inner >= PARALLEL:
        return 1
    return max(1, min(math.isqrt(r) + 1, PARALLEL // max(outer * inner, 1), r))


def reduce_scratch(shape, axes):
    """Elements of scratch a reduction needs (0: none), for the planner."""
    plan = reduce_plan(shape, axes)
    if plan is None:
        return 0
    outer, r, inner = plan
    parts = reduce_parts(outer, r, inner)
    return 0 if parts == 1 else outer * parts * inner


def bind_reduce(kind, x, out, axes, partial=None):
    """out = sum / mean / max of x over `axes` (keepdims or not: out's shape decides);
    partial: reduce_scratch() elements of scratch for the two-pass form, or None."""
    if kind not in ("sum", "mean", "max"):
        raise KernelError(f"no CUDA reduction {kind!r}")
    dt = out.dtype
    plan = reduce_plan(x.shape, axes)
    if plan is None:
        raise ShapeError(f"{kind}: axes {tuple(axes)} of {x.shape} are not one run of dimensions")
    outer, r, inner = plan
    if out.size != outer * inner:
        raise ShapeError(f"{kind}: out {out.shape} does not hold the reduction of {x.shape} over {tuple(axes)}")
    px = device_pointer(x, dt, kind, "x", contiguous=True)
    po = device_pointer(out, dt, kind, "out", contiguous=True)
    # NOTE: without scratch, one pass (a thread per output walks its whole row)
    parts = reduce_parts(outer, r, inner) if partial is not None else 1
    if parts > 1:
        if partial.size < outer * parts * inner:
            raise ShapeError(f"{kind}: needs {outer * parts * inner} elements of scratch, got {partial.size}")
        pp = device_pointer(partial, dt, kind, "partial", contiguous=True)
    else:
        pp = loader.load()[0].NULL
    if kind == "max":
        return checked(lib_fn(f"ev_cuda_reduce_max_{SUFFIX[dt]}"), kind), (px, po, pp, outer, r, inner, parts)
    count = math.prod(x.shape[a] for a in set(a % x.ndim for a in axes)) if x.ndim else 1
    scale = 1.0 / count if kind == "mean" else 1.0
    return checked(lib_fn(f"ev_cuda_reduce_sum_{SUFFIX[dt]}"), kind), (px, po, pp, outer, r, inner, parts, scale)


def bind_softmax(x, out, axis=-1, log=False):
    dt, name = out.dtype, "log_softmax" if log else "softmax"
    if x.shape != out.shape:
        raise ShapeError(f"{name}: out {out.shape} for x {x.shape}")
    outer, c, inner = around(x.shape, axis % max(x.ndim, 1))
    px = device_pointer(x, dt, name, "x", contiguous=True)
    po = device_pointer(out, dt, name, "out", contiguous=True)
    return checked(lib_fn(f"ev_cuda_{name}_{SUFFIX[dt]}"), name), (px, po, outer, c, inner)


INDEX_DTYPES = {I64: "", I32: "_i32"}     # index dtype -> the kernels' symbol infix


def index_infix(name, idx):
    if idx.dtype not in INDEX_DTYPES:
        raise DTypeError(f"{name}: indices must be int64 or int32 on the device, got {idx.dtype}")
    return INDEX_DTYPES[idx.dtype]


def _xent(name, z, t, out, out_shape):
    dt = out.dtype
    if z.ndim < 1 or t.shape != z.shape[:-1] or out.shape != out_shape:
        raise ShapeError(f"{name}: logits {z.shape}, targets {t.shape}, out {out.shape}")
    infix = index_infix(name, t)
    pz = device_pointer(z, dt, name, "logits", contiguous=True)
    pt = device_pointer(t, t.dtype, name, "targets", contiguous=True)
    po = device_pointer(out, dt, name, "out", contiguous=True)
    cfn = lib_fn(f"ev_cuda_{name}{infix}_{SUFFIX[dt]}")
    return checked(cfn, name), (pz, pt, po, math.prod(t.shape), z.shape[-1])


def bind_cross_entropy(z, t, out):
    """out (...) = logsumexp(z) - z[t] over the last axis of logits z (..., C)."""
    return _xent("cross_entropy", z, t, out, t.shape)


def bind_xent_grad(z, t, out):
    """out (..., C) = softmax(z) - one_hot(t): cross_entropy's gradient for a weight of 1."""
    return _xent("xent_grad", z, t, out, z.shape)


def bind_one_hot(t, out):
    """out (..., depth) = one_hot(t): 1.0 in the column of each id, 0.0 elsewhere."""
    dt = out.dtype
    if out.shape[:-1] != t.shape or out.ndim < 1:
        raise ShapeError(f"one_hot: out {out.shape} for ids {t.shape}")
    infix = index_infix("one_hot", t)
    pt = device_pointer(t, t.dtype, "one_hot", "ids", contiguous=True)
    po = device_pointer(out, dt, "one_hot", "out", contiguous=True)
    return checked(lib_fn(f"ev_cuda_one_hot{infix}_{SUFFIX[dt]}"), "one_hot"), (pt, po, t.size, out.shape[-1])


def one_hot(t, depth, dtype=np.float32, out=None):
    return eager(bind_one_hot, t, _new(t.shape + (depth,), dtype) if out is None else out)


def _take_args(name, table_shape, idx, axis):
    outer, n, inner = around(table_shape, axis)
    return outer, n, inner, idx.size


def _bind_rows(op, data, idx, out, axis, table_shape, rows_of):
    """One launch of a gather (take) or its scatter-add (take_grad): data holds the gathered
    rows (take's out, take_grad's g), table_shape is the indexed array's."""
    dt = out.dtype
    if not 0 <= axis < max(len(table_shape), 1):      # NOTE: never wrapped silently
        raise ShapeError(f"{op}: axis {axis} out of range for {table_shape}")
    want = table_shape[:axis] + idx.shape + table_shape[axis + 1:]
    if rows_of.shape != want:
        raise ShapeError(f"{op}: {rows_of.shape} where {want} is expected for {table_shape}")
    infix = index_infix(op, idx)
    dims = _take_args(op, table_shape, idx, axis)
    pd = device_pointer(data, dt, op, "x" if op == "take" else "g", contiguous=True)
    pi = device_pointer(idx, idx.dtype, op, "indices", contiguous=True)
    po = device_pointer(out, dt, op, "out", contiguous=True)
    return checked(lib_fn(f"ev_cuda_{op}{infix}_{SUFFIX[dt]}"), op), (pd, pi, po, *dims)


def bind_take(x, idx, out, axis=0):
    """out = numpy.take(x, idx, axis); an index out of range gives NaN and sets the status word."""
    return _bind_rows("take", x, idx, out, axis, x.shape, out)


def bind_take_grad(g, idx, out, axis=0):
    """out = zeros, then out[idx along axis] += g (repeated indices accumulate)."""
    return _bind_rows("take_grad", g, idx, out, axis, out.shape, g)


def bind_concat(xs, out, axis=0):
    """out = numpy.concatenate(xs, axis): contiguous pieces CONCAT_MAX per launch, strided
    ones by a strided copy each."""
    dt = out.dtype
    axis %= max(out.ndim, 1)
    outer, total, inner = around(out.shape, axis)
    device_pointer(out, dt, "concat", "out", contiguous=True)
    calls, run, start = [], [], 0
    ffi = loader.load()[0]

    def flush():
        if not run:
            return
        ctype = "float*[]" if dt.itemsize == 4 else "double*[]"
        srcs = ffi.new(ctype, [p for p, _ in run])
        lens = int64s([n for _, n in run])
        calls.append((checked(lib_fn(f"ev_cuda_concat_{SUFFIX[dt]}"), "concat"),
                      (len(run), srcs, lens, out._device(), outer, total, inner, run_start[0])))
        run.clear()

    run_start = [0]
    for j, x in enumerate(xs):
        n = x.shape[axis] if x.ndim > axis else -1
        if x.ndim != out.ndim or x.shape[:axis] + x.shape[axis + 1:] != out.shape[:axis] + out.shape[axis + 1:]:
            raise ShapeError(f"concat: piece {j} {x.shape} does not fit {out.shape} along axis {axis}")
        p = device_pointer(x, dt, "concat", f"piece {j}")
        if x.contiguous:
            if not run:
                run_start[0] = start
            run.append((p, n))
            if len(run) == CONCAT_MAX:
                flush()
        else:
            flush()
            region = out[(slice(None),) * axis + (slice(start, start + n),)]
            calls.append(bind_copy(x, region))
        start += n
    flush()
    if start != total:
        raise ShapeError(f"concat: pieces give {start} along axis {axis}, out has {total}")

    def concat():
        for fn, args in calls:
            fn(*args)
    return concat, ()


def _new(shape, dt):
    return DeviceArray(tuple(shape), dt)


def reduce(kind, x, axes, keepdims=False, out=None):
    axes = tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in np.atleast_1d(axes))
    shape = tuple(1 if d in axes else n for d, n in enumerate(x.shape)) if keepdims else \
        tuple(n for d, n in enumerate(x.shape) if d not in axes)
    out = _new(shape, x.dtype) if out is None else out
    plan = reduce_plan(x.shape, axes)
    need = reduce_scratch(x.shape, axes) if plan else 0
    partial = _new((need,), x.dtype) if need else None
    try:
        return eager(lambda x, o: bind_reduce(kind, x, o, axes, partial), x, out)
    finally:
        if partial is not None:
            partial.free()


def softmax(x, axis=-1, out=None, log=False):
    return eager(lambda x, o: bind_softmax(x, o, axis, log), x, _new(x.shape, x.dtype) if out is None else out)


def cross_entropy(z, t, out=None):
    return eager(bind_cross_entropy, z, t, _new(t.shape, z.dtype) if out is None else out)


def xent_grad(z, t, out=None):
    return eager(bind_xent_grad, z, t, _new(z.shape, z.dtype) if out is None else out)


def take(x, idx, axis=0, out=None):
    axis %= max(x.ndim, 1)
    shape = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
    return eager(lambda x, i, o: bind_take(x, i, o, axis), x, idx, _new(shape, x.dtype) if out is None else out)


def take_grad(g, idx, shape, axis=0, out=None):
    return eager(lambda g, i, o: bind_take_grad(g, i, o, axis), g, idx, _new(shape, g.dtype) if out is None else out)


def concat(xs, axis=0, out=None):
    if out is None:
        axis_ = axis % xs[0].ndim
        shape = list(xs[0].shape)
        shape[axis_] = sum(x.shape[axis_] for x in xs)
        out = _new(shape, xs[0].dtype)
    return eager(lambda xs, o: bind_concat(xs, o, axis), list(xs), out)


__all__ = ["around", "reduce_plan", "reduce_parts", "reduce_scratch", "bind_reduce", "bind_softmax",
           "bind_cross_entropy", "bind_xent_grad", "bind_one_hot", "one_hot", "bind_take", "bind_take_grad", "bind_concat",
           "reduce", "softmax", "cross_entropy", "xent_grad", "take", "take_grad", "concat"]
