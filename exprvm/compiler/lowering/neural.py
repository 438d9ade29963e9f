"""Lowering rows of the softmax family, cross-entropy and one_hot (ops/neural.py), and of
cross-entropy's fused gradient xent_grad (ops/internal.py), numpy and C side by side."""
import math

import numpy as np

from .kernel_calls import c_xent
from .shape import check_index, unsigned
from .table import Lowered, lowers, seq


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


def _rows(logits_shape):
    n = math.prod(logits_shape[:-1])
    return n, logits_shape[-1]


def _flat_targets(t, n, c):
    """Row offsets into the flattened (n, c) logits, and flat / unsigned views of t."""
    return np.arange(n, dtype=np.intp) * c, t.reshape(-1), unsigned(t)


def _cross_entropy(ins, out, tmps):
    z, t = ins
    n, c = _rows(z.shape)
    m, s, idx = tmps
    z2, s_flat, out1 = z.reshape(n, c), s.reshape(-1), out.reshape(-1)
    offs, tf, tu = _flat_targets(t, n, c)
    m1 = m.reshape(-1)
    s2 = s.reshape(n, c)

    def run():
        check_index(tu, c, "cross_entropy target", t.dtype.kind == "i")
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
    n = math.prod(t.shape)
    offs, tf, tu = _flat_targets(t, n, depth)
    flat = out.reshape(-1)

    def run():
        check_index(tu, depth, "one_hot", t.dtype.kind == "i")
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
        check_index(tu, c, "cross_entropy target", t.dtype.kind == "i")
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



@lowers("softmax")
def _softmax_row(req):
    axis = req.params["axis"]
    keep = tuple(1 if i == axis else s for i, s in enumerate(req.shape))
    return Lowered(seq(_softmax(axis)), tmps=((keep, req.dtype),), inplace=(0,))


@lowers("log_softmax")
def _log_softmax_row(req):
    axis = req.params["axis"]
    keep = tuple(1 if i == axis else s for i, s in enumerate(req.shape))
    return Lowered(seq(_log_softmax(axis)), tmps=((keep, req.dtype), (req.shape, req.dtype)), inplace=(0,))


@lowers("cross_entropy")
def _cross_entropy_row(req):
    return Lowered(_cross_entropy, tmps=_xent_tmps(req.in_shapes[0], req.dtype), flattens=(0, 1))


lowers("cross_entropy", "c")(c_xent)


@lowers("xent_grad")
def _xent_grad_row(req):
    n, c = _rows(req.in_shapes[0])
    return Lowered(_xent_grad, tmps=(((n, 1), req.dtype), ((n,), np.dtype(np.intp)), ((n,), req.dtype)),
                   flattens=(0, 1))


lowers("xent_grad", "c")(c_xent)


@lowers("one_hot")
def _one_hot_row(req):
    n = math.prod(req.in_shapes[0])
    return Lowered(_one_hot, tmps=(((n,), np.dtype(np.intp)),), flattens=(0,))
