"""Internal ops: the fused forms that VJPs and compiler passes build directly.

A kernel op's VJP builds its fused gradient op itself (tanh's VJP is
unary_grad(ans, ans, g, op="tanh")), so the compiler has nothing to recognise
and the compiled program does not depend on how a VJP formula is spelled. Each
is a real op: numpy impl, shape rule, test row and, where it can appear under
ev.grad, its own VJP, so that grad-of-grad works through it.

unary_grad(x, ans, g, op)      op's gradient given its input x, its result ans and
                               the upstream gradient g (an op that reads only one of
                               x and ans is passed that one twice, so the other's
                               buffer may die early)
xent_grad(logits, t)           softmax(logits) - one_hot(t): cross_entropy's gradient
copy(x)                        a private copy (compiler-made, for .grad buffers)
"""
import numpy as np

from ..core import FLOAT_DTYPES, Row, apply, defop, same_float_dtype
from ..errors import ShapeError
from ..kernels import reference
from ..kernels.eager import eager_unary_grad
from . import refs
from .elementwise import sigmoid, square, where
from .neural import logit_rows, softmax
from .reduce import sum
from .shape import check_range

# Second-order rules: per kernel op, the VJPs of unary_grad wrt (x, ans, g) given
# the upstream gradient gg (None: the formula does not read that operand).
_SECOND = {
    "tanh": (None, lambda gg, x, ans, g: -2.0 * gg * g * ans, lambda gg, x, ans, g: gg * (1 - ans * ans)),
    "sigmoid": (None, lambda gg, x, ans, g: gg * g * (1 - 2.0 * ans), lambda gg, x, ans, g: gg * ans * (1 - ans)),
    "exp": (None, lambda gg, x, ans, g: gg * g, lambda gg, x, ans, g: gg * ans),
    "expm1": (None, lambda gg, x, ans, g: gg * g, lambda gg, x, ans, g: gg * (ans + 1)),
    "log1p": (lambda gg, x, ans, g: -gg * g / square(1 + x), None, lambda gg, x, ans, g: gg / (1 + x)),
    "cube": (lambda gg, x, ans, g: 6.0 * gg * g * x, None, lambda gg, x, ans, g: 3.0 * gg * square(x)),
    "square": (lambda gg, x, ans, g: 2.0 * gg * g, None, lambda gg, x, ans, g: 2.0 * gg * x),
    "relu": (None, None, lambda gg, x, ans, g: where(x > 0, gg, 0)),
    "softplus": (lambda gg, x, ans, g: gg * g * sigmoid(x) * (1 - sigmoid(x)), None,
                 lambda gg, x, ans, g: gg * sigmoid(x)),
}
assert set(_SECOND) == set(reference.KERNEL_OPS)
_KERNEL_OPS = frozenset(reference.KERNEL_OPS)


def _same_shape_rule(*xs, op):
    x0 = xs[0]
    dt, shape = x0.dtype, x0.shape
    if dt in FLOAT_DTYPES and op in _KERNEL_OPS:    # NOTE: the hot case first (every gate's
        for x in xs:                                # gradient under ev.grad)
            if x.dtype is not dt or x.shape != shape:
                break
        else:
            return shape, dt
    dt = same_float_dtype(*xs)
    for x in xs[1:]:
        if x.shape != xs[0].shape:
            raise ShapeError(f"operands of {op} differ in shape: " + ", ".join(str(y.shape) for y in xs))
    if op not in reference.KERNEL_OPS:
        raise ShapeError(f"no kernel op {op!r}; kernel ops are {reference.KERNEL_OPS}")
    return xs[0].shape, dt


def _second(i):
    def vjp(gg, ans, x, a, g, op):
        fn = _SECOND[op][i]
        return None if fn is None else fn(gg, x, a, g)
    return vjp


def _unary_grad_impl(x, ans, g, op):
    return reference.GRAD[op](np.asarray(x), np.asarray(ans), np.asarray(g), None)


_unary_grad = defop(
    "unary_grad", _unary_grad_impl, _same_shape_rule, vjp=(_second(0), _second(1), _second(2)),
    elementwise=True, eager=eager_unary_grad(_unary_grad_impl),
    row=Row((("f", (3, 4), 0.1, 2.0), ("f", (3, 4), 0.1, 0.9), ("f", (3, 4), -2.0, 2.0)), {"op": "tanh"},
            ref=refs.elementwise(lambda x, ans, g, op: g * (1.0 - ans) * (1.0 + ans))))


def unary_grad(x, ans, g, op):
    """op's gradient wrt its input, given the input x, the result ans and the upstream g."""
    return apply("unary_grad", x, ans, g, op=op)


# -- cross-entropy's gradient --------------------------------------------------------

def _xent_grad_impl(z, t):
    z = np.asarray(z)
    check_range(t, z.shape[-1], "cross_entropy target")
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    idx = np.asarray(t)[..., None]
    np.put_along_axis(p, idx, np.take_along_axis(p, idx, axis=-1) - 1, axis=-1)
    return p


def _xent_grad_rule(z, t):
    dt = same_float_dtype(z)
    if t.dtype.kind not in "iu" or t.shape != z.shape[:-1]:
        raise ShapeError(f"targets {t.shape} {t.dtype.name} must be integers of the logits' "
                         f"leading shape {z.shape[:-1]}")
    return z.shape, dt


def _xent_grad_vjp(gg, ans, z, t):
    s = softmax(z, -1)      # d(softmax(z) - onehot)/dz is softmax's Jacobian
    return s * (gg - sum(gg * s, axis=-1, keepdims=True))


_xent_grad = defop(
    "xent_grad", _xent_grad_impl, _xent_grad_rule, vjp=(_xent_grad_vjp, None), int_args=(1,), batch=logit_rows,
    row=Row((("f", (5, 4), -2.0, 2.0), ("i", (5,), 4)),
            ref=lambda z, t: np.exp(z) / np.exp(z).sum(-1, keepdims=True) - np.eye(z.shape[-1])[t]))


def xent_grad(logits, targets):
    """The gradient of ``cross_entropy(logits, targets)`` with respect to the logits,
    ``softmax(logits) - one_hot(targets)``, as one op (the VJP of cross-entropy builds it,
    so that it runs as one fused kernel).

    Parameters
    ----------
    logits : Node or array
        ``(..., classes)``, float32 or float64.
    targets : Node or array of int
        ``logits.shape[:-1]``, class ids.

    Returns
    -------
    Node or numpy.ndarray
    """
    return apply("xent_grad", logits, targets)


# -- compiler-made fusions and copies ------------------------------------------------------

_copy = defop(
    "copy", lambda x: np.array(x, copy=True), lambda x: (x.shape, x.dtype),
    vjp=(lambda g, ans, x: g,), elementwise=True,
    row=Row((("f", (3, 4), -1.0, 1.0),), ref=lambda x: x + 0.0))
