"""Lowering rows of the elementwise ops (ops/elementwise.py). Ops registered with a
ufunc and no params need no row: the table calls the ufunc into the output."""
from functools import partial

import numpy as np

from ...kernels import KERNEL_OPS
from .kernel_calls import c_unary
from .table import ALL, Lowered, lowers, seq

for _op in KERNEL_OPS:       # each kernel op's C row: one bare call of ev_<op>_<f32|f64>
    lowers(_op, "c")(c_unary(_op))


def _cube(x, out):
    np.multiply(x, x, out)
    np.multiply(out, x, out)


def sigmoid_into(x, out, e, neg):
    """The op's own overflow-free form, e = exp(-|x|), one out= call at a time."""
    np.abs(x, e)
    np.negative(e, e)
    np.exp(e, e)
    np.less(x, 0, neg)
    np.add(e, 1, out)
    np.divide(e, out, e)
    np.reciprocal(out, out)
    np.copyto(out, e, where=neg)


@lowers("cube")
def _cube_row(req):
    return Lowered(seq(_cube))


@lowers("sigmoid")
def _sigmoid_row(req):
    return Lowered(seq(sigmoid_into), tmps=((req.shape, req.dtype), (req.shape, np.dtype(bool))), inplace=ALL)


@lowers("softplus")
def _softplus_row(req):
    return Lowered(lambda ins, out, tmps: (np.logaddexp, (0, ins[0], out)), inplace=ALL)


@lowers("relu")
def _relu_row(req):
    return Lowered(lambda ins, out, tmps: (partial(np.maximum, out=out), (ins[0], 0)), inplace=ALL)


def _leaky_relu(alpha):
    def run(x, out, mask):
        np.greater(x, 0, mask)
        np.multiply(x, alpha, out)
        np.copyto(out, x, where=mask)
    return run


@lowers("leaky_relu")
def _leaky_relu_row(req):
    return Lowered(seq(_leaky_relu(req.params.get("alpha", 0.01))), tmps=((req.shape, np.dtype(bool)),))


def _where(c, x, y, out):
    np.copyto(out, y)
    np.copyto(out, x, where=c)


@lowers("where")
def _where_row(req):
    return Lowered(seq(_where), inplace=(2,))


def _astype(x, out):
    np.copyto(out, x, casting="unsafe")


@lowers("astype")
def _astype_row(req):
    return Lowered(seq(_astype))
