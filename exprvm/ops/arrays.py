"""Array ops: clip, stop_gradient, pad (numpy.pad's modes) and split.

In: nodes or arrays. Out: clip, stop_gradient and pad give one node; split gives a
list of nodes (slices of its operand, so their gradients are getitem's).
"""
import numpy as np

from ..core import Node, Row, apply, defop, lift, ndim_of, norm_axis, shape_of, unary_rule
from ..errors import DTypeError, ExprError, ShapeError
from .argcheck import arg_errors

F34 = ("f", (3, 4), -2.0, 2.0)

# -- clip ------------------------------------------------------------------------------------


def _clip_rule(x, lo, hi):
    return unary_rule(x)


def _clip(x, lo, hi):
    return np.clip(x, lo, hi)


def _clip_vjp(g, ans, x, lo, hi):
    # NOTE: the gradient passes at the bounds themselves, as torch.clamp's does
    if lo is not None:
        g = where(x >= lo, g, 0)
    return g if hi is None else where(x <= hi, g, 0)


_clip_op = defop("clip", _clip, _clip_rule, vjp=(_clip_vjp,), elementwise=True,
                 row=Row((F34,), {"lo": -1.0, "hi": 0.5},
                         ref=lambda x, lo, hi: np.where(x < lo, lo, np.where(x > hi, hi, x))))


def clip(x, a_min=None, a_max=None):
    """Limit x to [a_min, a_max] (numpy.clip); either bound may be None. Number bounds
    make one clip op whose gradient passes where a_min <= x <= a_max; a bound that is a
    node is taken through maximum / minimum instead."""
    with arg_errors("clip", x, a_min, a_max):
        if a_min is None and a_max is None:
            raise ExprError("give a_min, a_max or both")
        if isinstance(a_min, Node) or isinstance(a_max, Node):
            out = x if a_min is None else maximum(x, a_min)
            return out if a_max is None else minimum(out, a_max)
        lo = None if a_min is None else float(a_min)
        hi = None if a_max is None else float(a_max)
        if lo is not None and hi is not None and lo > hi:
            raise ExprError(f"a_min {lo} is above a_max {hi}")
    return apply("clip", x, lo=lo, hi=hi)

# -- stop_gradient ---------------------------------------------------------------------------


stop_gradient = defop(
    "stop_gradient", np.positive, lambda x: (x.shape, x.dtype), ufunc=np.positive, elementwise=True,
    row=Row((F34,), ref=lambda x: x + 0, grad=False),
    doc="x itself, through which no gradient flows (jax.lax.stop_gradient, torch's detach): "
        "a cost that reaches a parameter only through it has a zero gradient there.")

# -- pad -------------------------------------------------------------------------------------
MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


def _pad_width(pad_width, ndim):
    """numpy's pad_width forms (n, (before, after), or one pair per axis) as a tuple of pairs."""
    w = np.asarray(pad_width)
    if w.dtype.kind not in "iu" and not (w.dtype.kind == "f" and np.all(w == np.round(w))):
        raise ShapeError(f"pad_width must be integers, got {pad_width!r}")
    try:
        w = np.broadcast_to(w.astype(np.int64), (ndim, 2))
    except ValueError:
        raise ShapeError(f"pad_width {pad_width!r} does not fit a {ndim}-d operand: give n, "
                         f"(before, after) or {ndim} such pairs") from None
    if (w < 0).any():
        raise ShapeError(f"pad_width {pad_width!r} has a negative width")
    return tuple((int(a), int(b)) for a, b in w)


def _pad_rule(x, pad_width, mode, value):
    if x.dtype.kind not in "fiub":
        raise DTypeError(f"cannot pad a {x.dtype.name} operand")
    if len(pad_width) != x.ndim:
        raise ShapeError(f"pad_width has {len(pad_width)} pairs for a {x.ndim}-d operand")
    for axis, (n, (a, b)) in enumerate(zip(x.shape, pad_width)):
        if n == 0 and (a or b) and mode != "constant":
            raise ShapeError(f"mode {mode!r} cannot pad the empty axis {axis} of {x.shape}")
    return tuple(n + a + b for n, (a, b) in zip(x.shape, pad_width)), x.dtype


def _pad(x, pad_width, mode, value):
    if mode == "constant":
        return np.pad(x, pad_width, mode="constant", constant_values=value)
    return np.pad(x, pad_width, mode=mode)


def _sources(shape, pad_width, mode):
    """For each element of the padded array, the flat index of the x element it copies
    (-1 for a constant): pad's adjoint sums the gradient back through this map."""
    idx = np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape)
    return _pad(idx, pad_width, mode, -1)


def _pad_grad(g, pad_width, mode, shape):
    g = np.asarray(g)
    if mode == "constant":   # the common case: the gradient is the inner block
        inner = tuple(slice(a, a + n) for n, (a, _) in zip(shape, pad_width))
        return np.array(g[inner], copy=True)
    src = _sources(tuple(shape), pad_width, mode).reshape(-1)
    size = int(np.prod(shape, dtype=np.int64))
    out = np.bincount(src, weights=g.reshape(-1).astype(np.float64), minlength=size)
    return out.astype(g.dtype).reshape(shape)


def _pad_grad_rule(g, pad_width, mode, shape):
    return tuple(shape), g.dtype


def _ref_pad(x, pad_width, mode, value):
    out = np.full(tuple(n + a + b for n, (a, b) in zip(x.shape, pad_width)), value, x.dtype)
    out[tuple(slice(a, a + n) for n, (a, _) in zip(x.shape, pad_width))] = x
    return out


def _ref_pad_grad(g, pad_width, mode, shape):
    # the adjoint by its definition: d<g, pad(x)>/dx_j = <g, pad(e_j)> for each basis e_j
    out = np.zeros(int(np.prod(shape)), np.float64)
    for j in range(out.size):
        e = np.zeros(out.size)
        e[j] = 1.0
        out[j] = np.sum(g * np.pad(e.reshape(shape), pad_width, mode=mode))
    return out.reshape(shape)


_pad_op = defop("pad", _pad, _pad_rule,
                vjp=(lambda g, ans, x, pad_width, mode, value:
                     apply("pad_grad", g, pad_width=pad_width, mode=mode, shape=shape_of(x)),),
                row=Row((F34,), {"pad_width": ((1, 2), (0, 3)), "mode": "constant", "value": 1.5},
                        ref=_ref_pad))
_pad_grad_op = defop("pad_grad", _pad_grad, _pad_grad_rule,
                     vjp=(lambda gg, ans, g, pad_width, mode, shape:
                          apply("pad", gg, pad_width=pad_width, mode=mode, value=0.0),),
                     row=Row((("f", (5, 6), -1.0, 1.0),),
                             {"pad_width": ((1, 1), (2, 1)), "mode": "reflect", "shape": (3, 3)},
                             ref=_ref_pad_grad))


def pad(x, pad_width, mode="constant", constant_values=0.0):
    """numpy.pad for modes constant, edge, reflect, symmetric and wrap. The gradient
    sums each padded element's gradient back into the element it copies."""
    with arg_errors("pad", x):
        if mode not in MODES:
            raise ExprError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        width = _pad_width(pad_width, ndim_of(x))
    return apply("pad", x, pad_width=width, mode=mode,
                 value=float(constant_values) if mode == "constant" else 0.0)

# -- split -----------------------------------------------------------------------------------


def split(x, indices_or_sections, axis=0):
    """numpy.split: a list of slices of x along axis, at the given indices or into that many
    equal sections. Each piece is x[..., a:b], so its gradient is getitem's."""
    x = lift(x)
    shape = shape_of(x)
    with arg_errors("split", x):
        if not shape:
            raise ShapeError("cannot split a 0-d operand")
        (ax,) = norm_axis(axis, len(shape))
        n = shape[ax]
        if isinstance(indices_or_sections, (int, np.integer)):
            k = int(indices_or_sections)
            if k <= 0 or n % k:
                raise ShapeError(f"axis {ax} of {shape} (length {n}) does not divide into {k} "
                                 f"equal sections (for uneven pieces give the indices)")
            bounds = [i * (n // k) for i in range(k + 1)]
        else:   # numpy's own rule: piece i is x[bounds[i]:bounds[i + 1]], with Python's slicing
            bounds = [0] + [int(i) for i in indices_or_sections] + [n]
    lead = (slice(None),) * ax
    return [x[lead + (slice(a, b),)] for a, b in zip(bounds, bounds[1:])]


from .elementwise import maximum, minimum, where  # noqa: E402
