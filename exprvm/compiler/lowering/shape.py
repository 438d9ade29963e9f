"""Lowering rows of the ops that move data (ops/shape.py): gathers and their scatters,
copies for reshapes that cannot be views, concatenations. Views (reshape, transpose,
broadcast_to, basic getitem) take no instruction at all: the compiler makes them once
when a program is bound."""
import math

import numpy as np

from ... import kernels
from ...core import FLOAT_DTYPES, is_basic_index
from ...errors import IndexRangeError
from .kernel_calls import contiguous
from .table import Lowered, lowers


def check_index(flat_unsigned, n, what, signed=True):
    """Every index in [0, n)? One reduction over the unsigned view catches negatives too.
    signed: the ids' own dtype is signed (the message shows their values as they are)."""
    if flat_unsigned.size and np.maximum.reduce(flat_unsigned) >= n:
        ids = flat_unsigned.view(flat_unsigned.dtype.str.replace("u", "i")) if signed else flat_unsigned
        raise IndexRangeError(f"{what}: index out of range [0, {n}): min {ids.min()}, max {ids.max()}")


def unsigned(t):
    flat = t.reshape(-1)
    return flat.view(np.dtype(flat.dtype.str.replace("i", "u"))) if flat.dtype.kind == "i" else flat


def _take(axis):
    def build(ins, out, tmps):
        x, idx = ins
        n = x.shape[axis]
        idx_u = unsigned(idx) if idx.flags.c_contiguous else None
        signed = idx.dtype.kind == "i"

        def run():
            # NOTE: take would wrap negative ids around; they are errors, as in the op itself.
            check_index(idx_u if idx_u is not None else unsigned(np.ascontiguousarray(idx)), n, "take",
                        signed)
            x.take(idx, axis, out)
        return run, ()
    return build


def _take_grad(axis):
    def build(ins, out, tmps):
        g, idx = ins
        where = (slice(None),) * axis + (idx,)

        def run():
            out.fill(0)
            np.add.at(out, where, g)
        return run, ()
    return build


SCATTER_BY_MATMUL_MAX = 1 << 22     # elements of the one-hot matrix take_grad's scatter may use


def _take_grad_onehot(ins, out, tmps):
    """Scatter-add rows of g into out (axis 0) as one_hot(idx).T @ g: one BLAS call
    instead of np.add.at, which is slow per row."""
    g, idx = ins
    oh, flat_pos = tmps
    v, n = oh.shape
    flat_idx = idx.reshape(-1)
    idx_u = unsigned(idx)
    g2 = g.reshape(n, -1)
    out2 = out.reshape(v, -1)
    cols = np.arange(n, dtype=np.intp)
    oh_flat = oh.reshape(-1)

    def run():
        check_index(idx_u, v, "take_grad index", idx.dtype.kind == "i")
        np.multiply(flat_idx, n, flat_pos)
        np.add(flat_pos, cols, flat_pos)
        oh.fill(0)
        oh_flat.put(flat_pos, 1)
        np.matmul(oh, g2, out2)
    return run, ()


def _stack(axis):
    def build(ins, out, tmps):
        # NOTE: np.stack expands its operands on every call, in Python; the operands'
        # buffers are fixed, so they are expanded once here (views) and concatenated.
        return np.concatenate, (tuple(np.expand_dims(x, axis) for x in ins), axis, out)
    return build


def _getitem_grad(index):
    def build(ins, out, tmps):
        g, = ins
        if is_basic_index(index):
            # NOTE: out[1] of a vector is a scalar, not a view; out[1, ...] is a 0-d view
            view = out[index if Ellipsis in index else index + (Ellipsis,)]

            def run():
                out.fill(0)
                np.copyto(view, g)
        else:
            def run():
                out.fill(0)
                np.add.at(out, index, g)
        return run, ()
    return build


def _reshape_copy(ins, out, tmps):
    x, = ins
    return np.copyto, (out.reshape(x.shape), x)



@lowers("take")
def _take_row(req):
    return Lowered(_take(req.params["axis"]))


@lowers("take_grad")
def _take_grad_row(req):
    shape = req.shape
    n = math.prod(req.in_shapes[1])
    if req.params["axis"] == 0 and len(shape) >= 1 and shape[0] * n <= SCATTER_BY_MATMUL_MAX:
        return Lowered(_take_grad_onehot, tmps=(((shape[0], n), req.dtype), ((n,), np.dtype(np.intp))),
                       flattens=(0, 1))
    return Lowered(_take_grad(req.params["axis"]))


@lowers("take_grad", "c")
def _take_grad_c(req):
    """Axis 0, int64 ids, contiguous operands: one C loop adding each row of g into its
    row of out (a batch-1 char-RNN's embedding gradient: 25 rows; the one-hot matmul
    above costs a BLAS call and a fill of rows x ids)."""
    if (req.params["axis"] != 0 or req.dtype not in FLOAT_DTYPES or req.in_dtypes[1] != np.int64
            or not req.shape or not all(contiguous(f) for f in req.layouts)):
        return None

    def build(ins, out, tmps):
        return kernels.bind_scatter_rows(ins[0], ins[1], out, "c"), ()
    return Lowered(build, kernel="c")


@lowers("getitem_grad")
def _getitem_grad_row(req):
    return Lowered(_getitem_grad(req.params["index"]))


@lowers("reshape")          # a reshape that cannot be a view of its operand
def _reshape_row(req):
    return Lowered(_reshape_copy)


@lowers("concat")
def _concat_row(req):
    axis = req.params["axis"]
    return Lowered(lambda ins, out, tmps: (np.concatenate, (tuple(ins), axis, out)))


@lowers("stack")
def _stack_row(req):
    return Lowered(_stack(req.params["axis"]))


@lowers("copy")
def _copy_row(req):
    return Lowered(lambda ins, out, tmps: (np.copyto, (out, ins[0])))
