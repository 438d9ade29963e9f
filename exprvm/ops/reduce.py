"""Reductions with numpy's axis= and keepdims= semantics."""
import math

import numpy as np

from ..core import ndim_of, Row, apply, defop, norm_axis, same_float_dtype
from ..errors import ShapeError
from . import refs



def reduced_shape(shape, axis, keepdims):
    """The shape a reduction over ``axis`` (a tuple or set of ints) leaves of ``shape``:
    the reduced axes as 1s (keepdims) or dropped."""
    if keepdims:
        return tuple(1 if i in axis else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axis)


def _rule(x, axis, keepdims):
    same_float_dtype(x)
    return reduced_shape(x.shape, axis, keepdims), x.dtype


def _extreme_rule(x, axis, keepdims):
    """max's and min's rule: as numpy, nothing to take the extreme of is an error (here when
    the node is built, not when it runs)."""
    if any(x.shape[a] == 0 for a in axis):
        raise ShapeError(f"the maximum or minimum of an empty axis (shape {x.shape}, axis {axis}) "
                         "has no value")
    return _rule(x, axis, keepdims)


def _sum_rule(x, axis, keepdims):
    """sum's rule: a float operand keeps its dtype; a bool or integer one counts, with
    numpy's result dtype (int64 for bool), and no gradient flows into it."""
    if x.dtype.kind in "biu":
        return reduced_shape(x.shape, axis, keepdims), np.sum(np.zeros(0, x.dtype)).dtype
    return _rule(x, axis, keepdims)


def kept_dims(v, x, axis, keepdims):
    """A value reduced from ``x`` over ``axis``, reshaped to broadcast against ``x`` again."""
    return v if keepdims else v.reshape(reduced_shape(tuple(x.shape), axis, True))


def axis_size(shape, axis):
    """How many elements of ``shape`` a reduction over ``axis`` combines into one."""
    return math.prod([shape[a] for a in axis])


def _extreme_vjp(g, ans, x, axis, keepdims):
    # Ties share the gradient equally, so the total is preserved.
    mask = astype(equal(x, kept_dims(ans, x, axis, keepdims)), x.dtype)
    return mask * kept_dims(g, x, axis, keepdims) / sum(mask, axis=axis, keepdims=True)


def _logsumexp(x, axis, keepdims):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


X = ("f", (3, 4, 2), -2.0, 2.0)
_sum = defop("sum", lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims), _sum_rule,
             vjp=(lambda g, ans, x, axis, keepdims: broadcast_to(kept_dims(g, x, axis, keepdims), x.shape),),
             row=Row((X,), {"axis": (1,), "keepdims": False}, ref=refs.sum))
_mean = defop("mean", lambda x, axis, keepdims: np.mean(x, axis=axis, keepdims=keepdims), _rule,
              vjp=(lambda g, ans, x, axis, keepdims:
                   broadcast_to(kept_dims(g, x, axis, keepdims), x.shape) / axis_size(x.shape, axis),),
              row=Row((X,), {"axis": (0, 2), "keepdims": True}, ref=refs.mean))
_max = defop("max", lambda x, axis, keepdims: np.max(x, axis=axis, keepdims=keepdims), _extreme_rule,
             vjp=(_extreme_vjp,), row=Row((X,), {"axis": (2,), "keepdims": False}, ref=refs.max))
_min = defop("min", lambda x, axis, keepdims: np.min(x, axis=axis, keepdims=keepdims), _extreme_rule,
             vjp=(_extreme_vjp,), row=Row((X,), {"axis": (0, 1, 2), "keepdims": False}, ref=refs.min))
_lse = defop("logsumexp", _logsumexp, _rule,
             vjp=(lambda g, ans, x, axis, keepdims:
                  kept_dims(g, x, axis, keepdims) * exp(x - kept_dims(ans, x, axis, keepdims)),),
             row=Row((X,), {"axis": (1,), "keepdims": False},
                     ref=lambda x, axis, keepdims: np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))))


def _reduction(name):
    def reduce(x, axis=None, keepdims=False):
        return apply(name, x, axis=norm_axis(axis, ndim_of(x), name), keepdims=bool(keepdims))
    reduce.__name__ = name
    reduce.__doc__ = f"{name} over axis (None: all axes), like numpy.{name}"
    return reduce


sum = _reduction("sum")
mean = _reduction("mean")
max = _reduction("max")
min = _reduction("min")
logsumexp = _reduction("logsumexp")

from .elementwise import astype, equal, exp  # noqa: E402
from .shape import broadcast_to  # noqa: E402
