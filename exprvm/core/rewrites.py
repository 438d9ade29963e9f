"""Numerical-stability rewrites applied while a node is built.

log(1 + x) -> log1p(x), exp(x) - 1 -> expm1(x), log(sigmoid(x)) -> -softplus(-x),
log(softmax(x)) -> log_softmax(x), and x ** 2 / 3 / 0.5 -> square / cube / sqrt.
"""
import numpy as np

from .op import REWRITES, apply


def _const(node, v):
    return node.op == "const" and node.value.size > 0 and bool(np.all(node.value == v))


def _log(x):
    if x.op == "add":
        a, b = x.inputs
        for one, other in ((a, b), (b, a)):
            if _const(one, 1) and other.shape == x.shape:
                return apply("log1p", other)
    if x.op == "sigmoid":
        return -apply("softplus", -x.inputs[0])
    if x.op == "softmax":
        return apply("log_softmax", x.inputs[0], axis=x.params["axis"])
    return None


def _sub(a, b):
    if a.op == "exp" and _const(b, 1) and a.shape == np.broadcast_shapes(a.shape, b.shape):
        return apply("expm1", a.inputs[0])
    return None


def _pow(x, y):
    if y.op != "const" or y.value.ndim != 0:
        return None
    name = {2.0: "square", 3.0: "cube", 0.5: "sqrt"}.get(float(y.value))
    return None if name is None else apply(name, x)


REWRITES.update({"log": _log, "sub": _sub, "pow": _pow})
