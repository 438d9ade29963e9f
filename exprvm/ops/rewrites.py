"""Numerical-stability rewrites applied while a node is built.

log(1 + x) -> log1p(x), exp(x) - 1 -> expm1(x), log(sigmoid(x)) -> -softplus(-x),
log(softmax(x)) -> log_softmax(x), and x ** 2 / 3 / 0.5 -> square / cube / sqrt.
"""
import numpy as np

from .registry import REWRITES


def _const(node, v):
    return node.op == "const" and node.value.size > 0 and bool(np.all(node.value == v))


def _log(x):
    if x.op == "add":
        a, b = x.inputs
        for one, other in ((a, b), (b, a)):
            if _const(one, 1) and other.shape == x.shape:
                return _ops.log1p(other)
    if x.op == "sigmoid":
        return -_ops.softplus(-x.inputs[0])
    if x.op == "softmax":
        return _ops.log_softmax(x.inputs[0], axis=x.params["axis"])
    return None


def _sub(a, b):
    if a.op == "exp" and _const(b, 1) and a.shape == np.broadcast_shapes(a.shape, b.shape):
        return _ops.expm1(a.inputs[0])
    return None


def _pow(x, y):
    if y.op != "const" or y.value.ndim != 0:
        return None
    return {2.0: _ops.square, 3.0: _ops.cube, 0.5: _ops.sqrt}.get(float(y.value), lambda _: None)(x)


REWRITES.update({"log": _log, "sub": _sub, "pow": _pow})


from .. import ops as _ops  # noqa: E402
