"""Sorting and selecting: argsort and take_along_axis (ops), sort, partition,
argpartition and select (compositions).

sort(a) is take_along_axis(a, argsort(a)): the permutation is an integer node with no
gradient, and the gradient flows back through it (take_along_axis's VJP scatters g to
where each element came from). partition is sort: numpy leaves the order inside each
side of the kth element unspecified, and a sorted line is one of the orders it allows
(the kth element, and which elements lie on each side, are numpy's).

In: float nodes or arrays; axis an int (None: the flattened operand).
"""
import numpy as np

from ..core import Row, apply, defop, ndim_of, norm_axis, shape_of
from ..errors import DTypeError, IndexRangeError, ShapeError, UnsupportedError
from .argcheck import arg_errors
from .functions import composite

X = ("f", (3, 5), -2.0, 2.0)


def _argsort_rule(x, axis):
    if x.dtype.kind not in "fiub":
        raise DTypeError(f"cannot sort {x.dtype.name} values")
    return x.shape, np.dtype(np.int64)


def _ref_argsort(x, axis):
    # the stable order by definition: by value, then by position
    moved = np.moveaxis(x, axis, -1)
    out = np.array([sorted(range(moved.shape[-1]), key=lambda i, r=r: (r[i], i))
                    for r in moved.reshape(-1, moved.shape[-1])], dtype=np.int64)
    return np.moveaxis(out.reshape(moved.shape), -1, axis)


_argsort = defop("argsort", lambda x, axis: np.argsort(x, axis=axis, kind="stable"), _argsort_rule,
                 row=Row((X,), {"axis": 1}, grad=False, ref=_ref_argsort))

# -- take_along_axis ---------------------------------------------------------------------------


def _along_shape(xs, ishape, axis):
    if len(ishape) != len(xs):
        raise ShapeError(f"indices {ishape} and operand {xs} differ in number of dimensions")
    out = []
    for d, (n, m) in enumerate(zip(xs, ishape)):
        if d == axis:
            out.append(m)
        elif n == m or n == 1 or m == 1:
            out.append(max(n, m) if min(n, m) else 0)
        else:
            raise ShapeError(f"indices {ishape} do not broadcast against operand {xs} off axis {axis}")
    return tuple(out)


def _along_rule(x, idx, axis):
    if idx.dtype.kind not in "iu":
        raise DTypeError(f"indices must be integers, got {idx.dtype.name}")
    if not 0 <= axis < x.ndim:
        raise ShapeError(f"axis {axis} is out of range for {x.shape}")
    return _along_shape(x.shape, idx.shape, axis), x.dtype


def _full_index(idx, axis, xshape, out_shape):
    """The fancy index of take_along_axis: idx on axis, positions elsewhere (0 where x has
    length 1 and broadcasts)."""
    n = xshape[axis]
    idx = np.asarray(idx)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexRangeError(f"take_along_axis: index out of range [-{n}, {n}): min {idx.min()}, "
                              f"max {idx.max()}")
    nd = len(xshape)
    index = []
    for d in range(nd):
        if d == axis:
            index.append(np.broadcast_to(idx % max(n, 1), out_shape))
        else:
            pos = np.arange(out_shape[d]) if xshape[d] == out_shape[d] else np.zeros(out_shape[d], np.int64)
            index.append(pos.reshape((-1,) + (1,) * (nd - d - 1)))
    return tuple(index)


def _take_along(x, idx, axis):
    x = np.asarray(x)
    out_shape = _along_shape(x.shape, np.shape(idx), axis)
    return x[_full_index(idx, axis, x.shape, out_shape)]


def _take_along_grad(g, idx, axis, shape):
    g = np.asarray(g)
    out = np.zeros(shape, g.dtype)
    np.add.at(out, _full_index(idx, axis, tuple(shape), g.shape), g)    # repeats accumulate
    return out


def _ref_take_along(x, idx, axis):
    return np.array([[x[i, idx[i, j]] for j in range(idx.shape[1])] for i in range(idx.shape[0])])


def _ref_take_along_grad(g, idx, axis, shape):
    out = np.zeros(shape)
    for i in range(idx.shape[0]):
        for j in range(idx.shape[1]):
            out[i, idx[i, j]] += g[i, j]
    return out.astype(g.dtype)


_along = defop("take_along_axis", _take_along, _along_rule, int_args=(1,),
               vjp=(lambda g, ans, x, idx, axis:
                    apply("take_along_axis_grad", g, idx, axis=axis, shape=shape_of(x)), None),
               row=Row((("f", (3, 4), -1.0, 1.0), ("i", (3, 6), 4)), {"axis": 1}, ref=_ref_take_along))
_along_grad = defop("take_along_axis_grad", _take_along_grad,
                    lambda g, idx, axis, shape: (tuple(shape), g.dtype), int_args=(1,),
                    vjp=(lambda gg, ans, g, idx, axis, shape: apply("take_along_axis", gg, idx, axis=axis),
                         None),
                    row=Row((("f", (3, 6), -1.0, 1.0), ("i", (3, 6), 4)), {"axis": 1, "shape": (3, 4)},
                            ref=_ref_take_along_grad))


def take_along_axis(arr, indices, axis):
    """numpy.take_along_axis: arr's elements at indices along axis (indices has arr's
    number of dimensions); the gradient scatters back, repeats accumulating."""
    if axis is None:
        return take_along_axis(ravel(arr), indices, 0)
    with arg_errors("take_along_axis", arr):
        ax = norm_axis(axis, ndim_of(arr))[0]
    return apply("take_along_axis", arr, indices, axis=ax)

# -- sort and friends ----------------------------------------------------------------------------


def _axis_or_flat(a, axis, op):
    if axis is None:
        return ravel(a), 0
    with arg_errors(op, a):
        if ndim_of(a) == 0:
            raise ShapeError("cannot sort a 0-d operand along an axis")
        return a, norm_axis(axis, ndim_of(a))[0]


def _sort_kind(kind, op):
    with arg_errors(op):
        if kind not in (None, "quicksort", "mergesort", "heapsort", "stable"):
            raise ShapeError(f"unknown kind {kind!r}")


def argsort(a, axis=-1, kind=None, order=None):
    """numpy.argsort: the indices that sort a along axis (stable: equal values keep their
    order, whatever kind says); int64, no gradient."""
    _sort_kind(kind, "argsort")
    _no_order(order, "argsort")
    a, ax = _axis_or_flat(a, axis, "argsort")
    return apply("argsort", a, axis=ax)


def _no_order(order, op):
    if order is not None:
        raise UnsupportedError(f"{op}: order= (structured arrays) is not supported")


@composite("sort", Row((X,), {"axis": 1}, ref=lambda x, axis: np.array([sorted(r) for r in x])))
def sort(a, axis=-1, kind=None, order=None):
    """numpy.sort along axis (None: of the flattened operand); the gradient of each sorted
    element goes back to where it came from."""
    _sort_kind(kind, "sort")
    _no_order(order, "sort")
    a, ax = _axis_or_flat(a, axis, "sort")
    return take_along_axis(a, apply("argsort", a, axis=ax), ax)


def _check_kth(a, kth, axis, op):
    n = shape_of(a)[axis]
    with arg_errors(op, a):
        for k in np.atleast_1d(np.asarray(kth)):
            if not -n <= int(k) < n:
                raise ShapeError(f"kth {int(k)} is out of range for axis {axis} of length {n}")


def _partition_ref(x, kth, axis):
    # numpy's contract only: the kth element in place, no larger one before it
    got = np.sort(x, axis=axis)
    want = np.partition(x, kth, axis=axis)
    assert np.array_equal(np.take(got, kth, axis), np.take(want, kth, axis))
    return got


@composite("partition", Row((X,), {"kth": 2, "axis": 1}, ref=_partition_ref))
def partition(a, kth, axis=-1, kind="introselect", order=None):
    """numpy.partition: the kth element in its sorted place, the smaller ones before it
    and the larger after. The order inside each side, which numpy leaves unspecified,
    is sorted here (one of the orders numpy allows)."""
    _no_order(order, "partition")
    a, ax = _axis_or_flat(a, axis, "partition")
    _check_kth(a, kth, ax, "partition")
    return sort(a, axis=ax)


def argpartition(a, kth, axis=-1, kind="introselect", order=None):
    """numpy.argpartition: indices that partition a (here: that sort it, one of the
    orders numpy allows); int64, no gradient."""
    _no_order(order, "argpartition")
    a, ax = _axis_or_flat(a, axis, "argpartition")
    _check_kth(a, kth, ax, "argpartition")
    return apply("argsort", a, axis=ax)

# -- select ------------------------------------------------------------------------------------


@composite("select", Row((("f", (3, 4), -1.0, 1.0), ("f", (4,), -1.0, 1.0)),
                         ref=lambda a, b: np.where(a > 0.3, a, np.where(b < 0, b, 0.5))),
           call=lambda a, b: select([a > 0.3, b < 0], [a, b], 0.5), sequence=2)
def select(condlist, choicelist, default=0):
    """numpy.select: where the first true condition picks its choice, else default; the
    gradient goes to the choice picked."""
    conds, choices = list(condlist), list(choicelist)
    with arg_errors("select"):
        if len(conds) != len(choices):
            raise ShapeError(f"{len(conds)} conditions for {len(choices)} choices")
        if not conds:
            raise ShapeError("needs at least one condition")
    out = default
    for c, v in reversed(list(zip(conds, choices))):
        out = where(c, v, out)
    return out


from .elementwise import where  # noqa: E402
from .numpy_shape import ravel  # noqa: E402
