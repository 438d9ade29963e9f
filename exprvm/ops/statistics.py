"""Statistics over axes: var, std, norm (numpy's axis=, keepdims=, ddof=, ord=), and
argmax / argmin (integer results, no gradient).

In: a float node or array. Out: the reduced value (float; int64 for argmax/argmin).
"""
import numpy as np

from ..core import Row, apply, defop, lift, ndim_of, norm_axis, same_float_dtype
from ..errors import DTypeError, ExprError, ShapeError
from .argcheck import arg_errors

X = ("f", (3, 4, 2), -2.0, 2.0)


def _safe(v):
    """v with its zeros replaced by ones: a divisor whose numerator is zero wherever v is."""
    return where(v > 0, v, 1)

# -- var / std ----------------------------------------------------------------------------


def _var_rule(x, axis, ddof, keepdims):
    dt = same_float_dtype(x)
    n = axis_size(x.shape, axis)
    if n - ddof <= 0:
        raise ShapeError(f"ddof={ddof} leaves no degrees of freedom: {n} element(s) over axes {axis} "
                         f"of {x.shape}")
    return reduced_shape(x.shape, axis, keepdims), dt


def _var_vjp(g, ans, x, axis, ddof, keepdims):
    centred = x - mean(x, axis=axis, keepdims=True)
    return kept_dims(g, x, axis, keepdims) * centred * (2.0 / (axis_size(tuple(x.shape), axis) - ddof))


def _std_vjp(g, ans, x, axis, ddof, keepdims):
    # NOTE: where std is 0 every element equals the mean, so the numerator is 0 too
    centred = x - mean(x, axis=axis, keepdims=True)
    n = axis_size(tuple(x.shape), axis) - ddof
    return kept_dims(g, x, axis, keepdims) * centred / (_safe(kept_dims(ans, x, axis, keepdims)) * n)


def _ref_var(x, axis, ddof, keepdims):
    n = axis_size(x.shape, axis)
    m = np.sum(x, axis=axis, keepdims=True) / n
    return np.sum((x - m) ** 2, axis=axis, keepdims=keepdims) / (n - ddof)


_var = defop("var", lambda x, axis, ddof, keepdims: np.var(x, axis=axis, ddof=ddof, keepdims=keepdims),
             _var_rule, vjp=(_var_vjp,),
             row=Row((X,), {"axis": (0, 2), "ddof": 1, "keepdims": False}, ref=_ref_var))
_std = defop("std", lambda x, axis, ddof, keepdims: np.std(x, axis=axis, ddof=ddof, keepdims=keepdims),
             _var_rule, vjp=(_std_vjp,),
             row=Row((X,), {"axis": (1,), "ddof": 0, "keepdims": True},
                     ref=lambda x, axis, ddof, keepdims: np.sqrt(_ref_var(x, axis, ddof, keepdims))))


def var(x, axis=None, ddof=0, keepdims=False):
    """Variance over axis (None: all), dividing by N - ddof (numpy.var)."""
    with arg_errors("var", x):
        axes = norm_axis(axis, ndim_of(x))
    return apply("var", x, axis=axes, ddof=int(ddof), keepdims=bool(keepdims))


def std(x, axis=None, ddof=0, keepdims=False):
    """Standard deviation over axis (numpy.std); its gradient is 0 where the std is 0."""
    with arg_errors("std", x):
        axes = norm_axis(axis, ndim_of(x))
    return apply("std", x, axis=axes, ddof=int(ddof), keepdims=bool(keepdims))

# -- norm -------------------------------------------------------------------------------------


def _norm(x, ord, axis, keepdims):
    x = np.asarray(x)
    if ord == 1:
        return np.sum(np.abs(x), axis=axis, keepdims=keepdims)
    if ord == "inf":
        return np.max(np.abs(x), axis=axis, keepdims=keepdims)
    return np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims))


def _norm_rule(x, ord, axis, keepdims):
    dt = same_float_dtype(x)
    if ord == "inf" and axis_size(x.shape, axis) == 0:
        raise ShapeError(f"the inf-norm of an empty operand {x.shape} over axes {axis} is undefined")
    return reduced_shape(x.shape, axis, keepdims), dt


def _norm_vjp(g, ans, x, ord, axis, keepdims):
    gk = kept_dims(g, x, axis, keepdims)
    if ord == 1:
        return gk * sign(x)
    if ord == "inf":
        # ties at the maximum share the gradient, so the total is preserved
        hit = astype(equal(abs(x), kept_dims(ans, x, axis, keepdims)), x.dtype)
        return gk * sign(x) * hit / sum(hit, axis=axis, keepdims=True)
    return gk * x / _safe(kept_dims(ans, x, axis, keepdims))


_norm_op = defop("norm", _norm, _norm_rule, vjp=(_norm_vjp,),
                 row=Row((X,), {"ord": 2, "axis": (0, 2), "keepdims": False},
                         ref=lambda x, ord, axis, keepdims: np.linalg.norm(x, axis=axis, keepdims=keepdims)))

_ORDS = {None: 2, "fro": 2, 2: 2, 1: 1, np.inf: "inf", "inf": "inf"}


def norm(x, ord=None, axis=None, keepdims=False):
    """numpy.linalg.norm. Over any axes: ord None or "fro" (the Euclidean / Frobenius
    norm). Over one axis (a vector): ord 1, 2, inf and any p > 0 (3, 4, 0.5, ...). Over
    two axes (a matrix): ord "nuc" and 2 (sum and largest of the singular values, whose
    second derivative is not offered), 1 and inf (largest column / row sum of ``abs(x)``).
    Gradients are 0 where the norm is 0."""
    x = lift(x)
    with arg_errors("norm", x):
        nd = ndim_of(x)
        axes = norm_axis(axis, nd)
        if axis is None and ord is not None and nd == 2:
            axes = (0, 1)           # numpy: an ord and no axis on a matrix is a matrix norm
        vector = len(axes) == 1 or (axis is None and nd <= 1)
        number = not isinstance(ord, str) and ord is not None and np.isscalar(ord)
        if ord in (None, "fro"):
            kind = "euclid"
        elif len(axes) == 2 and (ord == "nuc" or (number and ord in (1, 2, np.inf))):
            kind = "matrix"
        elif vector and (ord == "inf" or (number and ord > 0)):
            kind = "vector"
        elif vector or len(axes) == 2:
            raise ExprError(f"ord {ord!r} is not supported over {len(axes)} axis(es): vectors take "
                            f"None, 1, 2, inf or any number > 0; matrices None, 'fro', 'nuc', 1, 2, inf")
        else:
            raise ExprError(f"ord={ord!r} needs one axis (a vector norm) or two (a matrix norm), got "
                            f"axes {axes} of a {nd}-d operand (ord=None is the Frobenius norm over any axes)")
    keepdims = bool(keepdims)
    if kind == "matrix":    # numpy reads the pair in its order: (rows, columns)
        pair = axes if axis is None else tuple(a % nd for a in axis)
        return matrix_norm(x, ord, pair, keepdims)
    if kind == "vector" and ord not in _ORDS:
        return pnorm(x, ord, axes, keepdims)
    return apply("norm", x, ord=_ORDS[ord], axis=axes, keepdims=keepdims)

# -- argmax / argmin ------------------------------------------------------------------------


def _arg_rule(x, axis, keepdims):
    if x.dtype.kind not in "fiub":
        raise DTypeError(f"needs a numeric operand, got {x.dtype.name}")
    if axis is None:
        if x.size == 0:
            raise ShapeError(f"an empty operand {x.shape} has no extreme element")
        return ((1,) * x.ndim if keepdims else ()), np.dtype(np.int64)
    if x.shape[axis] == 0:
        raise ShapeError(f"axis {axis} of {x.shape} is empty: it has no extreme element")
    return reduced_shape(x.shape, (axis,), keepdims), np.dtype(np.int64)


def _first_index(x, axis, keepdims, extreme):
    """The first position along axis (None: of the flattened x) holding the extreme value."""
    x = np.asarray(x)
    if axis is None:
        out = _first_index(x.reshape(-1), 0, False, extreme)
        return out.reshape((1,) * x.ndim) if keepdims else out
    n = x.shape[axis]
    pos = np.arange(n).reshape((n,) + (1,) * (x.ndim - axis - 1))
    hit = x == extreme(x, axis=axis, keepdims=True)
    return np.min(np.where(hit, pos, n), axis=axis, keepdims=keepdims)


_argmax = defop("argmax", lambda x, axis, keepdims: np.argmax(x, axis=axis, keepdims=keepdims), _arg_rule,
                row=Row((("f", (3, 5, 2), -2.0, 2.0),), {"axis": 1, "keepdims": False}, grad=False,
                        ref=lambda x, axis, keepdims: _first_index(x, axis, keepdims, np.max)))
_argmin = defop("argmin", lambda x, axis, keepdims: np.argmin(x, axis=axis, keepdims=keepdims), _arg_rule,
                row=Row((("f", (3, 5, 2), -2.0, 2.0),), {"axis": None, "keepdims": True}, grad=False,
                        ref=lambda x, axis, keepdims: _first_index(x, axis, keepdims, np.min)))


def _arg(name, doc):
    def fn(x, axis=None, keepdims=False):
        with arg_errors(name, x):
            ax = None if axis is None else norm_axis(axis, ndim_of(x))
            if ax is not None and len(ax) != 1:
                raise ExprError(f"axis must be one int or None, got {axis!r}")
        return apply(name, x, axis=None if ax is None else ax[0], keepdims=bool(keepdims))
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return fn


argmax = _arg("argmax", "Index of the first maximum along axis (None: of the flattened operand), "
                        "int64, like numpy.argmax; not differentiable.")
argmin = _arg("argmin", "Index of the first minimum along axis (None: of the flattened operand), "
                        "int64, like numpy.argmin; not differentiable.")


from .elementwise import abs, astype, equal, sign, where  # noqa: E402
from .reduce import axis_size, kept_dims, mean, reduced_shape, sum  # noqa: E402
from .norms import matrix_norm, pnorm  # noqa: E402
