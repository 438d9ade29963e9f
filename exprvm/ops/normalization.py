"""Batch and layer normalization, named as torch.nn.functional.

    batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5)
    layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5)

Both normalize with the statistics of their axes, (x - mean) / sqrt(var + eps)
(var biased), then scale and shift per channel (batch_norm: axis 1) or per element
of normalized_shape (layer_norm). The normalizing itself is one op each
("batch_norm" over every axis but 1, "layer_norm" over the trailing axes), whose
VJP is written with exprvm ops, so it differentiates again:

    dx = rstd * (g - mean(g) - y * mean(g * y)),   rstd = 1 / sqrt(var(x) + eps)

Unlike torch, batch_norm never writes the running statistics: in a graph a
value cannot change under a node that has read it. batch_norm_update(x,
running_mean, running_var, momentum) returns the new values as nodes (torch's
rule: new = (1 - momentum) * old + momentum * batch, the batch variance unbiased),
which a machine writes back into the state leaves after each run (ev.nn.BatchNorm2d
hands them over; see its docstring).
"""
import math

import numpy as np

from ..core import Row, apply, defop, same_float_dtype, shape_of
from ..errors import ShapeError
from . import refs
from .conv import param_error


def _normalize(x, axes, eps):
    x = np.asarray(x)
    xc = x - x.mean(axis=axes, keepdims=True)
    var = np.mean(xc * xc, axis=axes, keepdims=True)
    return xc / np.sqrt(var + eps)


def _normalize_vjp(g, ans, x, axes, eps):
    xc = x - mean(x, axis=axes, keepdims=True)
    rstd = 1.0 / sqrt(mean(xc * xc, axis=axes, keepdims=True) + eps)
    return rstd * (g - mean(g, axis=axes, keepdims=True) - ans * mean(g * ans, axis=axes, keepdims=True))


def _count(shape, axes):
    return math.prod([shape[a] for a in axes])


def _axes_rule(batch):
    def rule(x, axes, eps):
        dt = same_float_dtype(x)
        want = (0,) + tuple(range(2, x.ndim)) if batch else tuple(range(x.ndim - len(axes), x.ndim))
        if x.ndim < (2 if batch else 1) or tuple(axes) != want:
            raise ShapeError(f"axes {axes} do not fit an input of shape {x.shape}")
        if batch and _count(x.shape, axes) < 2:
            raise ShapeError(f"training needs more than one value per channel, input {x.shape}")
        return x.shape, dt
    return rule


def _ref(x, axes, eps):
    return refs.normalized(x, axes, eps)


defop("batch_norm", _normalize, _axes_rule(True), vjp=(_normalize_vjp,),
      row=Row((("f", (4, 3, 2, 3), -1.0, 1.0),), {"axes": (0, 2, 3), "eps": 1e-5}, ref=_ref),
      doc="x normalized per channel (axis 1) with the statistics of the other axes")
defop("layer_norm", _normalize, _axes_rule(False), vjp=(_normalize_vjp,),
      row=Row((("f", (3, 4, 5), -1.0, 1.0),), {"axes": (1, 2), "eps": 1e-5}, ref=_ref),
      doc="x normalized with the statistics of its trailing axes")


def _channel_vector(op, name, v, c, *xs):
    if v is not None and tuple(shape_of(v)) != (c,):
        raise param_error(op, f"{name} must have shape ({c},) (one per channel), got {tuple(shape_of(v))}", *xs)


def _batch_layout(op, x, *named):
    shape = tuple(shape_of(x))
    if len(shape) < 2:
        raise param_error(op, f"input must be at least 2-d (N, C, ...), got shape {shape}", x)
    for name, v in named:
        _channel_vector(op, name, v, shape[1], x, v)
    return (0,) + tuple(range(2, len(shape))), (1, shape[1]) + (1,) * (len(shape) - 2)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Per-channel normalization of x (N, C, ...): with the batch's statistics when
    training, else with running_mean and running_var; then * weight + bias (each (C,)).
    The running statistics are read, never written (see batch_norm_update)."""
    axes, bshape = _batch_layout("batch_norm", x, ("running_mean", running_mean), ("running_var", running_var),
                                 ("weight", weight), ("bias", bias))
    if training:
        y = apply("batch_norm", x, axes=axes, eps=float(eps))
        if weight is not None:
            y = y * reshape(weight, bshape)
        return y if bias is None else y + reshape(bias, bshape)
    if running_mean is None or running_var is None:
        raise param_error("batch_norm", "evaluation (training=False) needs running_mean and running_var", x)
    # NOTE: one scale and one shift per channel, so the big tensor sees two ops
    scale = 1.0 / sqrt(running_var + float(eps))
    if weight is not None:
        scale = scale * weight
    shift = -running_mean * scale
    if bias is not None:
        shift = shift + bias
    return x * reshape(scale, bshape) + reshape(shift, bshape)


def batch_norm_update(x, running_mean, running_var, momentum=0.1):
    """(new_mean, new_var): the running statistics after seeing batch x, by torch's rule
    new = (1 - momentum) * old + momentum * batch, the batch variance unbiased."""
    if not 0.0 <= momentum <= 1.0:
        raise param_error("batch_norm_update", f"momentum must be in [0, 1], got {momentum}", x)
    axes, bshape = _batch_layout("batch_norm_update", x, ("running_mean", running_mean),
                                 ("running_var", running_var))
    n = _count(tuple(shape_of(x)), axes)
    if n < 2:
        raise param_error("batch_norm_update", f"needs more than one value per channel, input {shape_of(x)}", x)
    mu = mean(x, axis=axes)
    var = mean(square(x - reshape(mu, bshape)), axis=axes) * (n / (n - 1.0))
    m = float(momentum)
    return running_mean * (1.0 - m) + mu * m, running_var * (1.0 - m) + var * m


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """x normalized over its trailing dims normalized_shape, then * weight + bias
    (each of shape normalized_shape); as torch.nn.functional.layer_norm."""
    ns = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    shape = tuple(shape_of(x))
    if not ns or len(shape) < len(ns) or shape[len(shape) - len(ns):] != ns:
        raise param_error("layer_norm", f"normalized_shape {ns} must be the trailing dims of the input {shape}", x)
    for name, v in (("weight", weight), ("bias", bias)):
        if v is not None and tuple(shape_of(v)) != ns:
            raise param_error("layer_norm", f"{name} must have shape {ns}, got {tuple(shape_of(v))}", x, v)
    y = apply("layer_norm", x, axes=tuple(range(len(shape) - len(ns), len(shape))), eps=float(eps))
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


from .elementwise import sqrt, square  # noqa: E402
from .reduce import mean  # noqa: E402
from .shape import reshape  # noqa: E402
