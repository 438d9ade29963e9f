"""numpy reference of every kernel op, forward and gradient.

This is the "numpy" backend and the truth the C and CUDA kernels are tested
against.  Every function writes into ``out`` and returns it.  Temporaries are
computed before the final ufunc writes ``out``, so ``out`` may be the same
array as an input (in place).

sigmoid and softplus use the overflow-free forms (``e^-|x|``) so they agree
with the C kernels for every finite and infinite input, including
sigmoid(-100) in float32, which ``1/(1+exp(100))`` would round to 0.
"""
import numpy as np

KERNEL_OPS = ("tanh", "sigmoid", "exp", "expm1", "log1p", "cube", "square", "relu", "softplus")
BINARY_OPS = ("add", "sub", "mul", "div")


def _sigmoid(x, out):
    z = np.exp(-np.abs(x))
    return np.divide(np.where(x >= 0, 1, z), 1 + z, out=out)


def _softplus(x, out):
    return np.add(np.maximum(x, 0), np.log1p(np.exp(-np.abs(x))), out=out)


def _relu(x, out):
    # NaN propagates like numpy.maximum; adding +0 turns maximum(-0, 0)'s
    # possible -0 into +0, as the C kernel returns.
    return np.add(np.maximum(x, 0), 0, out=out)


def _select(mask, g, out):
    # where(), not g * mask: the C kernel returns 0 where x <= 0 even for an
    # inf or NaN gradient, and 0 * inf would be NaN.
    r = np.where(mask, g, 0)
    if out is None:
        return r
    out[...] = r
    return out


FORWARD = {
    "tanh": lambda x, out: np.tanh(x, out=out),
    "sigmoid": _sigmoid,
    "exp": lambda x, out: np.exp(x, out=out),
    "expm1": lambda x, out: np.expm1(x, out=out),
    "log1p": lambda x, out: np.log1p(x, out=out),
    "cube": lambda x, out: np.multiply(x * x, x, out=out),
    "square": lambda x, out: np.multiply(x, x, out=out),
    "relu": _relu,
    "softplus": _softplus,
}

# (x, ans, g, out) -> out, where ans is the forward result and g the
# upstream gradient.  Same formulas, same evaluation order as csrc/ev_math.h.
GRAD = {
    "tanh": lambda x, ans, g, out: np.multiply(g, 1 - ans * ans, out=out),
    "sigmoid": lambda x, ans, g, out: np.multiply(g * ans, 1 - ans, out=out),
    "exp": lambda x, ans, g, out: np.multiply(g, ans, out=out),
    "expm1": lambda x, ans, g, out: np.multiply(g, ans + 1, out=out),
    "log1p": lambda x, ans, g, out: np.divide(g, 1 + x, out=out),
    "cube": lambda x, ans, g, out: np.multiply(3 * x * x, g, out=out),
    "square": lambda x, ans, g, out: np.multiply(2 * x, g, out=out),
    "relu": lambda x, ans, g, out: _select(x > 0, g, out),
    "softplus": lambda x, ans, g, out: np.multiply(g, _sigmoid(x, None), out=out),
}


BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
}

assert set(FORWARD) == set(GRAD) == set(KERNEL_OPS)
