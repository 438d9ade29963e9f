"""Lowering: how each op runs on the tape with a preallocated output buffer.

lower(op, ...) returns a Lowered record: build(ins, out, tmps) -> (fn, args)
is called once when the machine binds the program to arrays; the run loop then
calls fn(*args). Ops whose numpy form takes out= (ufuncs, reductions, matmul,
take, concatenate) write straight into their buffer; composite ops (softmax,
cross_entropy, one_hot, ...) are short sequences of out= calls over scratch
buffers the planner provides.

Ops that still allocate on every run (documented, `allocates=True`): logsumexp,
advanced-index getitem, dropout_mask and any op registered without an entry
here (user ops): they call the op's numpy reference and copy the result.
"""
import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from ..errors import ExprError, IndexRangeError
from ..kernels.reference import GRAD, unary_add, unary_grad_add
from ..core import OPS

ALL = "all"  # every input position may share the output buffer


@dataclass
class Lowered:
    build: Callable             # build(ins, out, tmps) -> (fn, args)
    tmps: tuple = ()            # scratch buffers wanted: ((shape, dtype), ...)
    inplace: object = ()        # input positions the output may alias exactly, or ALL
    allocates: bool = False
    kernel: str = "numpy"
    name: str = ""              # shown in the disassembly instead of the op name
    flattens: tuple = ()        # input positions build() reshapes: they must reshape as views


def _ufunc(uf):
    if uf in (np.maximum, np.minimum):  # NOTE: positional out= is deprecated for these two
        return lambda ins, out, tmps: (partial(uf, out=out), tuple(ins))
    return lambda ins, out, tmps: (uf, (*ins, out))


def _seq(fn):
    """A kernel written as a Python function fn(*ins, out, *tmps)."""
    return lambda ins, out, tmps: (fn, (*ins, out, *tmps))


def is_basic_index(index):
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in index)


def check_index(flat_unsigned, n, what):
    """Every index in [0, n)? One reduction over the unsigned view catches negatives too."""
    if flat_unsigned.size and np.maximum.reduce(flat_unsigned) >= n:
        signed = flat_unsigned.view(flat_unsigned.dtype.str.replace("u", "i"))
        raise IndexRangeError(f"{what}: index out of range [0, {n}): min {signed.min()}, max {signed.max()}")


def _unsigned(t):
    flat = t.reshape(-1)
    return flat.view(np.dtype(flat.dtype.str.replace("i", "u"))) if flat.dtype.kind == "i" else flat


# -- elementwise kernels that are not single ufuncs --------------------------------

def _cube(x, out):
    np.multiply(x, x, out)
    np.multiply(out, x, out)


def _sigmoid(x, out, e, neg):
    # The op's own overflow-free form, e = exp(-|x|), one out= call at a time.
    np.abs(x, e)
    np.negative(e, e)
    np.exp(e, e)
    np.less(x, 0, neg)
    np.add(e, 1, out)
    np.divide(e, out, e)
    np.reciprocal(out, out)
    np.copyto(out, e, where=neg)


def _leaky_relu(alpha):
    def run(x, out, mask):
        np.greater(x, 0, mask)
        np.multiply(x, alpha, out)
        np.copyto(out, x, where=mask)
    return run


def _where(c, x, y, out):
    np.copyto(out, y)
    np.copyto(out, x, where=c)


def _astype(x, out):
    np.copyto(out, x, casting="unsafe")


# -- reductions ------------------------------------------------------------------------

def _reduce(uf, axis, keepdims):
    return lambda ins, out, tmps: (uf.reduce, (ins[0], axis, None, out, keepdims))


def _mean(axis, keepdims, count):
    def run(x, out):
        np.add.reduce(x, axis, None, out, keepdims)
        np.divide(out, count, out)
    return run


def _softmax(axis):
    def run(x, out, m):
        np.maximum.reduce(x, axis, None, m, True)
        np.subtract(x, m, out)
        np.exp(out, out)
        np.add.reduce(out, axis, None, m, True)
        np.divide(out, m, out)
    return run


def _log_softmax(axis):
    def run(x, out, m, e):
        np.maximum.reduce(x, axis, None, m, True)
        np.subtract(x, m, out)
        np.exp(out, e)
        np.add.reduce(e, axis, None, m, True)
        np.log(m, m)
        np.subtract(out, m, out)
    return run


# -- cross-entropy, one_hot and its fused gradient -------------------------------------

def _rows(logits_shape):
    n = int(np.prod(logits_shape[:-1], dtype=np.int64))
    return n, logits_shape[-1]


def _flat_targets(t, n, c):
    """Row offsets into the flattened (n, c) logits, and flat / unsigned views of t."""
    return np.arange(n, dtype=np.intp) * c, t.reshape(-1), _unsigned(t)


def _cross_entropy(ins, out, tmps):
    z, t = ins
    n, c = _rows(z.shape)
    m, s, idx = tmps
    z2, s_flat, out1 = z.reshape(n, c), s.reshape(-1), out.reshape(-1)
    offs, tf, tu = _flat_targets(t, n, c)
    m1 = m.reshape(-1)
    s2 = s.reshape(n, c)

    def run():
        check_index(tu, c, "cross_entropy target")
        np.maximum.reduce(z2, 1, None, m, True)
        np.subtract(z2, m, s2)
        np.add(tf, offs, idx)
        s_flat.take(idx, 0, out1)
        np.exp(s2, s2)
        np.add.reduce(s2, 1, None, m, True)
        np.log(m, m)
        np.subtract(m1, out1, out1)
    return run, ()


def _xent_tmps(zshape, dtype):
    n, c = _rows(zshape)
    return ((n, 1), dtype), ((n, c), dtype), ((n,), np.dtype(np.intp))


def _one_hot(ins, out, tmps):
    t, = ins
    idx, = tmps
    depth = out.shape[-1]
    n = int(np.prod(t.shape, dtype=np.int64))
    offs, tf, tu = _flat_targets(t, n, depth)
    flat = out.reshape(-1)

    def run():
        check_index(tu, depth, "one_hot")
        out.fill(0)
        np.add(tf, offs, idx)
        flat.put(idx, 1)
    return run, ()


def _xent_grad(ins, out, tmps):
    """softmax(z) - one_hot(t): the gradient of cross_entropy summed with weight 1."""
    z, t = ins
    n, c = _rows(z.shape)
    m, idx, picked = tmps
    z2, o2, flat = z.reshape(n, c), out.reshape(n, c), out.reshape(-1)
    offs, tf, tu = _flat_targets(t, n, c)

    def run():
        check_index(tu, c, "cross_entropy target")
        np.maximum.reduce(z2, 1, None, m, True)
        np.subtract(z2, m, o2)
        np.exp(o2, o2)
        np.add.reduce(o2, 1, None, m, True)
        np.divide(o2, m, o2)
        np.add(tf, offs, idx)
        flat.take(idx, 0, picked)
        np.subtract(picked, 1, picked)
        flat.put(idx, picked)
    return run, ()


# -- data movement -----------------------------------------------------------------

def _take(axis):
    def build(ins, out, tmps):
        x, idx = ins
        n = x.shape[axis]
        idx_u = _unsigned(idx) if idx.flags.c_contiguous else None

        def run():
            # NOTE: take would wrap negative ids around; they are errors, as in the op itself.
            check_index(idx_u if idx_u is not None else _unsigned(np.ascontiguousarray(idx)), n, "take")
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


ONE_HOT_MAX = 1 << 22     # elements of the one-hot matrix a scatter may use


def _take_grad_onehot(ins, out, tmps):
    """Scatter-add rows of g into out (axis 0) as one_hot(idx).T @ g: one BLAS call
    instead of np.add.at, which is slow per row."""
    g, idx = ins
    oh, flat_pos = tmps
    v, n = oh.shape
    flat_idx = idx.reshape(-1)
    idx_u = _unsigned(idx)
    g2 = g.reshape(n, -1)
    out2 = out.reshape(v, -1)
    cols = np.arange(n, dtype=np.intp)
    oh_flat = oh.reshape(-1)

    def run():
        check_index(idx_u, v, "take_grad index")
        np.multiply(flat_idx, n, flat_pos)
        np.add(flat_pos, cols, flat_pos)
        oh.fill(0)
        oh_flat.put(flat_pos, 1)
        np.matmul(oh, g2, out2)
    return run, ()


def _matmul(ins, out, tmps):
    a, b = ins
    # NOTE: for matrices np.dot is matmul with less dispatch around the BLAS call (~0.4 us
    # a call, a quarter of a batch-1 RNN step's matmul); it needs a C-contiguous out.
    if a.ndim == 2 and b.ndim == 2 and out.flags.c_contiguous and a.dtype == b.dtype == out.dtype:
        return np.dot, (a, b, out)
    return np.matmul, (a, b, out)


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
            view = out[index]

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


def _copy(ins, out, tmps):
    return np.copyto, (out, ins[0])


def _outer(ins, out, tmps):
    a, b = ins
    return np.multiply, (a.reshape(-1, 1), b.reshape(1, -1), out)


def generic(op, params):
    """Any op: its numpy reference, copied into the output (allocates every run)."""
    return Lowered(_wrap(op, params), allocates=True)


def _xent_grad_ref(z, t):
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    p = e / np.sum(e, axis=-1, keepdims=True)
    return p - np.eye(z.shape[-1], dtype=z.dtype)[t]


# numpy references of the ops only the compiler makes
INTERNAL = {"xent_grad": _xent_grad_ref,
            "unary_grad": lambda x, ans, g, op: GRAD[op](x, ans, g, None),
            "unary_add": lambda a, b, op: unary_add(op, a, b, None),
            "unary_grad_add": lambda x, ans, g, h, op: unary_grad_add(op, x, ans, g, h, None)}


def _wrap(op, params):
    impl = INTERNAL[op] if op in INTERNAL else OPS[op].impl

    def build(ins, out, tmps):
        def run(*xs):
            np.copyto(out, impl(*xs, **params), casting="unsafe")
        return run, tuple(ins)
    return build


# -- the table ----------------------------------------------------------------------------

def lower(op, in_shapes, in_dtypes, shape, dtype, params):
    """How to run `op` into a preallocated output of (shape, dtype)."""
    p = params
    opdef = OPS.get(op)
    if op == "copy":
        return Lowered(_copy)
    if op == "xent_grad":
        n, c = _rows(in_shapes[0])
        return Lowered(_xent_grad, tmps=(((n, 1), dtype), ((n,), np.dtype(np.intp)), ((n,), dtype)),
                       flattens=(0, 1))
    if op == "unary_grad":
        return Lowered(lambda ins, out, tmps: (GRAD[p["op"]], (*ins, out)), allocates=True,
                       name=p["op"] + "_grad")
    if op in ("unary_add", "unary_grad_add"):   # run by a kernel backend; this is the fallback
        return Lowered(_wrap(op, p), allocates=True)
    if op == "cube":
        return Lowered(_seq(_cube))
    if op == "sigmoid":
        return Lowered(_seq(_sigmoid), tmps=((shape, dtype), (shape, np.dtype(bool))), inplace=ALL)
    if op == "softplus":
        return Lowered(lambda ins, out, tmps: (np.logaddexp, (0, ins[0], out)), inplace=ALL)
    if op == "relu":
        return Lowered(lambda ins, out, tmps: (partial(np.maximum, out=out), (ins[0], 0)), inplace=ALL)
    if op == "leaky_relu":
        return Lowered(_seq(_leaky_relu(p.get("alpha", 0.01))), tmps=((shape, np.dtype(bool)),))
    if op == "where":
        return Lowered(_seq(_where), inplace=(2,))
    if op == "astype":
        return Lowered(_seq(_astype))
    if op in ("sum", "max", "min"):
        uf = {"sum": np.add, "max": np.maximum, "min": np.minimum}[op]
        return Lowered(_reduce(uf, p["axis"], p["keepdims"]))
    if op == "mean":
        count = int(np.prod([in_shapes[0][a] for a in p["axis"]], dtype=np.int64))
        return Lowered(_seq(_mean(p["axis"], p["keepdims"], count)))
    if op == "softmax":
        keep = tuple(1 if i == p["axis"] else s for i, s in enumerate(shape))
        return Lowered(_seq(_softmax(p["axis"])), tmps=((keep, dtype),), inplace=(0,))
    if op == "log_softmax":
        keep = tuple(1 if i == p["axis"] else s for i, s in enumerate(shape))
        return Lowered(_seq(_log_softmax(p["axis"])), tmps=((keep, dtype), (shape, dtype)), inplace=(0,))
    if op == "cross_entropy":
        return Lowered(_cross_entropy, tmps=_xent_tmps(in_shapes[0], dtype), flattens=(0, 1))
    if op == "one_hot":
        n = int(np.prod(in_shapes[0], dtype=np.int64))
        return Lowered(_one_hot, tmps=(((n,), np.dtype(np.intp)),), flattens=(0,))
    if op == "take":
        return Lowered(_take(p["axis"]))
    if op == "take_grad":
        n = math.prod(in_shapes[1])
        if p["axis"] == 0 and shape[0] * n <= ONE_HOT_MAX and len(shape) >= 1:
            return Lowered(_take_grad_onehot, tmps=(((shape[0], n), dtype), ((n,), np.dtype(np.intp))),
                           flattens=(0, 1))
        return Lowered(_take_grad(p["axis"]))
    if op == "getitem_grad":
        return Lowered(_getitem_grad(p["index"]))
    if op == "reshape":
        return Lowered(_reshape_copy)
    if op == "concat":
        return Lowered(lambda ins, out, tmps: (np.concatenate, (tuple(ins), p["axis"], out)))
    if op == "stack":
        return Lowered(_stack(p["axis"]))
    if op == "outer":
        return Lowered(_outer)
    if op == "matmul":
        return Lowered(_matmul)
    if opdef is not None and opdef.ufunc is not None and not p:
        return Lowered(_ufunc(opdef.ufunc), inplace=ALL if opdef.elementwise else ())
    if opdef is None:
        raise ExprError(f"no lowering for op {op!r}")
    return Lowered(_wrap(op, p), allocates=True)
