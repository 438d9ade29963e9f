"""Lowering rows of the internal ops (ops/internal.py): a kernel op's gradient
(unary_grad), numpy and C side by side.

On numpy each kernel op's gradient is a short sequence of out= calls over one scratch
buffer (the same formula and order as exprvm.kernels.reference.GRAD, so no backend
rounds differently from the reference), allocating nothing.
"""
import numpy as np

from .elementwise import sigmoid_into
from .kernel_calls import c_unary_grad
from .table import ALL, Lowered, lowers


def _tanh(x, ans, g, out, t):
    np.multiply(ans, ans, t)
    np.subtract(1, t, t)
    np.multiply(g, t, out)


def _sigmoid(x, ans, g, out, t):
    np.multiply(g, ans, t)
    np.subtract(1, ans, out)
    np.multiply(t, out, out)


def _exp(x, ans, g, out, t):
    np.multiply(g, ans, out)


def _expm1(x, ans, g, out, t):
    np.add(ans, 1, t)
    np.multiply(g, t, out)


def _log1p(x, ans, g, out, t):
    np.add(1, x, t)
    np.divide(g, t, out)


def _cube(x, ans, g, out, t):
    np.multiply(3, x, t)
    np.multiply(t, x, t)
    np.multiply(t, g, out)


def _square(x, ans, g, out, t):
    np.multiply(2, x, t)
    np.multiply(t, g, out)


def _relu(x, ans, g, out, mask):
    # NOTE: a copy and a masked zero, not g * (x > 0): 0 * inf would be NaN where the
    # kernels (and the reference) give 0.
    np.less_equal(x, 0, mask)
    np.copyto(out, g)
    np.copyto(out, 0, where=mask)


def _softplus(x, ans, g, out, s, e, neg):
    sigmoid_into(x, s, e, neg)
    np.multiply(g, s, out)


# op -> (sequence, scratch kinds: "f" a float buffer like the output, "b" a bool mask)
GRAD_SEQ = {"tanh": (_tanh, "f"), "sigmoid": (_sigmoid, "f"), "exp": (_exp, "f"), "expm1": (_expm1, "f"),
            "log1p": (_log1p, "f"), "cube": (_cube, "f"), "square": (_square, "f"), "relu": (_relu, "b"),
            "softplus": (_softplus, "ffb")}


@lowers("unary_grad")
def _unary_grad_row(req):
    if any(s != req.shape for s in req.in_shapes):
        return None
    fn, kinds = GRAD_SEQ[req.params["op"]]
    tmps = tuple((req.shape, req.dtype if k == "f" else np.dtype(bool)) for k in kinds)
    return Lowered(lambda ins, out, t: (fn, (*ins, out, *t)), tmps=tmps, inplace=ALL,
                   name=req.params["op"] + "_grad")


lowers("unary_grad", "c")(c_unary_grad)
