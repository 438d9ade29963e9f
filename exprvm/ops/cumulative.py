"""Running sums and products: cumsum, cumprod and prod (ops), diff (a composition).

cumsum's gradient is the reversed running sum of g. cumprod's and prod's gradients are
the products of all other elements, made without dividing by x, so they are exact
where x has zeros (a division by x gives NaN there): prod's as the product of the
elements before and after each one, cumprod's through the first zero of each line
(see _cumprod_vjp). Both are built of cumsum, cumprod, flip and where, so grad-of-grad
works.

In: a float node or array; axis an int (None: the flattened operand). Out: the same dtype.
"""
import numpy as np

from ..core import Row, apply, defop, ndim_of, norm_axis, same_float_dtype, shape_of
from ..errors import ShapeError, UnsupportedError
from .argcheck import arg_errors
from .functions import composite

X = ("f", (3, 4, 2), -2.0, 2.0)


def _line_rule(x, axis):
    return x.shape, same_float_dtype(x)


def _reversed_cumsum(g, axis):
    return flip(cumsum(flip(g, axis), axis), axis)


_cumsum = defop("cumsum", lambda x, axis: np.cumsum(x, axis=axis), _line_rule,
                vjp=(lambda g, ans, x, axis: _reversed_cumsum(g, axis),),
                row=Row((X,), {"axis": 1},
                        ref=lambda x, axis: np.einsum("ijk,jl->ilk", x, np.triu(np.ones((4, 4))))))


def _cumprod_vjp(g, ans, x, axis):
    # d cumprod_j / d x_i = prod_{k <= j, k != i} x_k for j >= i. Before a line's first zero
    # z that is sum_{j >= i} g_j ans_j / x_i (ans_j is 0 from z on); at z it is
    # sum_{j >= z} g_j c_j, c the cumprod with x_z read as 1; after z every term holds x_z.
    zeros = astype(equal(x, 0), x.dtype)
    seen = cumsum(zeros, axis)
    before = equal(seen, 0)
    first = logical_and(equal(zeros, 1), equal(seen, 1))
    upto = _reversed_cumsum(g * ans, axis) / where(before, x, 1)
    at = _reversed_cumsum(g * cumprod(where(first, 1, x), axis), axis)
    return where(before, upto, where(first, at, 0))


def _ref_cumprod(x, axis):
    out = np.ones_like(x)
    run = np.ones_like(np.take(x, 0, axis))
    for i in range(x.shape[axis]):
        run = run * np.take(x, i, axis)
        idx = [slice(None)] * x.ndim
        idx[axis] = i
        out[tuple(idx)] = run
    return out


_cumprod = defop("cumprod", lambda x, axis: np.cumprod(x, axis=axis), _line_rule, vjp=(_cumprod_vjp,),
                 row=Row((("f", (3, 4, 2), 0.5, 1.5),), {"axis": 1}, ref=_ref_cumprod))


def _running(name):
    def fn(a, axis=None, dtype=None, out=None):
        with arg_errors(name, a):
            _no_dtype_out(name, dtype, out)
        if axis is None:
            return apply(name, ravel(a), axis=0)
        with arg_errors(name, a):
            ax = norm_axis(axis, ndim_of(a))[0]
        return apply(name, a, axis=ax)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (f"numpy.{name}: the running {'sum' if name == 'cumsum' else 'product'} along axis "
                  f"(None: of the flattened operand).")
    return fn


def _no_dtype_out(name, dtype, out):
    if out is not None:
        raise UnsupportedError("out= is not supported: an op makes a new node")
    if dtype is not None:
        raise UnsupportedError("dtype= is not supported: cast with ev.astype")


cumsum = _running("cumsum")
cumprod = _running("cumprod")

# -- prod ----------------------------------------------------------------------------------


def _prod_rule(x, axis, keepdims):
    return reduced_shape(x.shape, axis, keepdims), same_float_dtype(x)


def _prod_vjp(g, ans, x, axis, keepdims):
    # the product of the others, as (product before) * (product after) along the
    # reduced axes laid out as one line: no division, exact where x has zeros
    shape = tuple(shape_of(x))
    kept = [i for i in range(len(shape)) if i not in axis]
    perm = tuple(kept) + tuple(axis)
    k = axis_size(shape, axis)
    lines = reshape(transpose(x, perm), tuple(shape[i] for i in kept) + (k,))
    nd = len(kept) + 1
    edge = ((0, 0),) * (nd - 1)
    before = cumprod(pad(lines[..., :-1], edge + ((1, 0),), constant_values=1.0), axis=nd - 1)
    after = flip(cumprod(flip(pad(lines[..., 1:], edge + ((0, 1),), constant_values=1.0), nd - 1),
                         axis=nd - 1), nd - 1)
    gk = reshape(g, tuple(shape[i] for i in kept) + (1,))
    others = reshape(gk * before * after, tuple(shape[i] for i in perm))
    return transpose(others, tuple(int(i) for i in np.argsort(perm)))


def _ref_prod(x, axis, keepdims):
    return np.exp(np.sum(np.log(np.abs(x)), axis=axis, keepdims=keepdims)) * \
        np.where(np.sum(x < 0, axis=axis, keepdims=keepdims) % 2, -1.0, 1.0)


_prod = defop("prod", lambda x, axis, keepdims: np.prod(x, axis=axis, keepdims=keepdims), _prod_rule,
              vjp=(_prod_vjp,), row=Row((X,), {"axis": (0, 2), "keepdims": False}, ref=_ref_prod))


def prod(a, axis=None, dtype=None, out=None, keepdims=False):
    """numpy.prod over axis (None: all axes). Its gradient is the product of the other
    elements, exact where a has zeros."""
    with arg_errors("prod", a):
        _no_dtype_out("prod", dtype, out)
        axes = norm_axis(axis, ndim_of(a))
    return apply("prod", a, axis=axes, keepdims=bool(keepdims))

# -- diff ----------------------------------------------------------------------------------


@composite("diff", Row((("f", (3, 5), -2.0, 2.0),), {"n": 2, "axis": 1},
                       ref=lambda x, n, axis: x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]))
def diff(a, n=1, axis=-1, prepend=None, append=None):
    """numpy.diff: the n-th difference along axis, a[1:] - a[:-1] n times; prepend and
    append (numbers or arrays) are joined to a along axis first."""
    nd = ndim_of(a)
    with arg_errors("diff", a):
        if nd == 0:
            raise ShapeError("diff needs an operand of at least 1 dimension")
        if int(n) < 0:
            raise ShapeError(f"order n must be non-negative, got {n}")
        ax = norm_axis(axis, nd)[0]
    parts = []
    for extra in (prepend, append):
        if extra is None:
            parts.append(None)
            continue
        if ndim_of(extra) == 0:
            shape = list(shape_of(a))
            shape[ax] = 1
            extra = broadcast_to(extra, tuple(shape)) if hasattr(extra, "graph") else \
                np.broadcast_to(np.asarray(extra, dtype=getattr(a, "dtype", None)), tuple(shape))
        parts.append(extra)
    if parts[0] is not None or parts[1] is not None:
        a = concat([p for p in (parts[0], a, parts[1]) if p is not None], axis=ax)
    lead = (slice(None),) * ax
    for _ in range(int(n)):
        a = a[lead + (slice(1, None),)] - a[lead + (slice(None, -1),)]
    return a


from .arrays import pad  # noqa: E402
from .elementwise import astype, equal, where  # noqa: E402
from .numpy_elementwise import logical_and  # noqa: E402
from .numpy_shape import flip, ravel  # noqa: E402
from .reduce import axis_size, reduced_shape  # noqa: E402
from .shape import broadcast_to, concat, reshape, transpose  # noqa: E402
