"""Ops that move data without arithmetic: reshape, transpose, broadcast, concat,
stack, indexing and gathers (whose gradients scatter)."""
import math

import numpy as np

from ..errors import DTypeError, IndexRangeError, ShapeError
from ..core.rules import arg_error, int_tuple, passthrough
from . import refs
from ..core import OPS, is_basic_index, ndim_of, shape_of, Row, build_node, apply, defop, norm_axis, unbroadcast




# -- reshape / transpose / broadcast_to ------------------------------------------------

def _reshape_rule(x, shape):
    if any(s < 0 for s in shape):
        raise ShapeError(f"negative dimension in shape {shape} (one -1 may stand for the "
                         f"length the others leave of {x.size} elements)")
    if math.prod(shape) != x.size:
        raise ShapeError(f"cannot reshape {x.shape} ({x.size} elements) to {shape}")
    return shape, x.dtype


_reshape = defop("reshape", lambda x, shape: np.reshape(x, shape), _reshape_rule,
                 vjp=(lambda g, ans, x, shape: reshape(g, shape_of(x)),),
                 row=Row((("f", (3, 4), -1.0, 1.0),), {"shape": (2, 6)}, ref=refs.reshape), view=True,
                 identity=passthrough)


def reshape(x, shape):
    """The elements of ``x`` in a new shape, as ``numpy.reshape`` (a view on the tape).

    Parameters
    ----------
    x : Node or array
    shape : tuple of int
        The new shape; one entry may be -1 (inferred from the size).

    Returns
    -------
    Node or numpy.ndarray

    Raises
    ------
    ShapeError
        If the sizes differ.

    Examples
    --------
    >>> import numpy as np, exprvm as ev
    >>> ev.reshape(np.arange(6.0), (2, -1)).shape
    (2, 3)
    """
    shape = int_tuple(shape, "shape", "reshape")
    if shape.count(-1) == 1:
        known = math.prod(s for s in shape if s != -1)
        size = int(math.prod(shape_of(x)))
        shape = tuple(size // known if known and s == -1 else s for s in shape)
    return apply("reshape", x, shape=shape)


def _transpose_rule(x, axes):
    if sorted(axes) != list(range(x.ndim)):
        raise ShapeError(f"axes {axes} are not a permutation of {x.ndim} axes")
    return tuple(x.shape[a] for a in axes), x.dtype


_transpose = defop("transpose", lambda x, axes: np.transpose(x, axes), _transpose_rule,
                   vjp=(lambda g, ans, x, axes: transpose(g, tuple(np.argsort(axes))),),
                   row=Row((("f", (2, 3, 4), -1.0, 1.0),), {"axes": (2, 0, 1)}, ref=refs.transpose),
                   view=True,
                   identity=lambda ins, shape, dtype, p: 0 if tuple(p["axes"]) == tuple(range(len(shape))) else None)


def transpose(x, axes=None):
    """The axes of ``x`` permuted, as ``numpy.transpose`` (a view on the tape).

    Parameters
    ----------
    x : Node or array
    axes : tuple of int, optional
        A permutation of the axes; by default they are reversed.

    Returns
    -------
    Node or numpy.ndarray

    Raises
    ------
    ShapeError
        If ``axes`` is not a permutation of ``x``'s axes.

    Examples
    --------
    >>> import numpy as np, exprvm as ev
    >>> ev.transpose(np.zeros((2, 3, 4)), (2, 0, 1)).shape
    (4, 2, 3)
    """
    axes = tuple(reversed(range(ndim_of(x)))) if axes is None else int_tuple(axes, "axes", "transpose")
    return apply("transpose", x, axes=axes)


def swapaxes_last(x):
    n = ndim_of(x)
    return transpose(x, tuple(range(n - 2)) + (n - 1, n - 2))


def _broadcast_rule(x, shape):
    try:
        if np.broadcast_shapes(x.shape, shape) != tuple(shape):
            raise ValueError
    except ValueError:
        raise ShapeError(f"cannot broadcast {x.shape} to {shape}") from None
    return tuple(shape), x.dtype


_broadcast_to = defop("broadcast_to", lambda x, shape: np.broadcast_to(x, shape), _broadcast_rule,
                      vjp=(lambda g, ans, x, shape: unbroadcast(g, shape_of(x)),),
                      row=Row((("f", (3, 1), -1.0, 1.0),), {"shape": (2, 3, 4)},
                              ref=lambda x, shape: x + np.zeros(shape, x.dtype)), view=True,
                      identity=passthrough)


def broadcast_to(x, shape):
    """``x`` repeated to ``shape`` by numpy's broadcasting rules, as ``numpy.broadcast_to``
    (a view on the tape; the gradient sums over the broadcast axes).

    Parameters
    ----------
    x : Node or array
    shape : tuple of int

    Returns
    -------
    Node or numpy.ndarray

    Raises
    ------
    ShapeError
        If ``x`` does not broadcast to ``shape``.
    """
    return apply("broadcast_to", x, shape=int_tuple(shape, "shape", "broadcast_to"))


# -- concat / stack ------------------------------------------------------------------

def _concat_rule(*xs, axis):
    dts = {x.dtype for x in xs}
    if len(dts) > 1:
        raise DTypeError("operands mix dtypes " + " and ".join(sorted(d.name for d in dts)))
    first = xs[0].shape
    for x in xs[1:]:
        if x.ndim != len(first) or any(a != b for i, (a, b) in enumerate(zip(x.shape, first)) if i != axis):
            raise ShapeError(f"shapes {[x.shape for x in xs]} differ off axis {axis}")
    return first[:axis] + (sum(x.shape[axis] for x in xs),) + first[axis + 1:], xs[0].dtype


def _concat_vjp(i, g, ans, *xs, axis):
    start = sum(shape_of(x)[axis] for x in xs[:i])
    return getitem(g, (slice(None),) * axis + (slice(start, start + shape_of(xs[i])[axis]),))


_concat = defop("concat", lambda *xs, axis: np.concatenate(xs, axis=axis), _concat_rule,
                vjp=(_concat_vjp,), variadic=True,
                row=Row((("f", (2, 3), -1.0, 1.0), ("f", (2, 1), -1.0, 1.0)), {"axis": 1}, ref=refs.concat))


def concat(xs, axis=0):
    """Join arrays along an existing axis, as ``numpy.concatenate`` (also ``ev.concatenate``).

    Parameters
    ----------
    xs : sequence of Node or array
        At least one; equal shapes except along ``axis``, one dtype.
    axis : int, default 0

    Returns
    -------
    Node or numpy.ndarray
        Its gradient is the slices of the incoming gradient, one per operand.

    Raises
    ------
    ShapeError, DTypeError
        If the other axes or the dtypes differ.

    Examples
    --------
    >>> import numpy as np, exprvm as ev
    >>> ev.concat([np.ones((2, 3)), np.zeros((2, 1))], axis=1).shape
    (2, 4)
    """
    xs = _operands(xs, "concat")
    return apply("concat", *xs, axis=norm_axis(axis, ndim_of(xs[0]), "concat")[0])


def _operands(xs, op):
    xs = list(xs)
    if not xs:
        raise arg_error(op, "needs at least one array")
    return xs


concatenate = concat


def _stack_rule(*xs, axis):
    if len({x.shape for x in xs}) > 1:
        raise ShapeError(f"stack needs equal shapes, got {[x.shape for x in xs]}")
    if len({x.dtype for x in xs}) > 1:
        raise DTypeError("operands mix dtypes " + " and ".join(sorted({x.dtype.name for x in xs})))
    s = xs[0].shape
    return s[:axis] + (len(xs),) + s[axis:], xs[0].dtype


_stack = defop("stack", lambda *xs, axis: np.stack(xs, axis=axis), _stack_rule,
               vjp=(lambda i, g, ans, *xs, axis: getitem(g, (slice(None),) * axis + (i,)),), variadic=True,
               row=Row((("f", (2, 3), -1.0, 1.0), ("f", (2, 3), -1.0, 1.0)), {"axis": 1}, ref=refs.stack))


def stack(xs, axis=0):
    """Join arrays of one shape along a new axis, as ``numpy.stack``.

    Parameters
    ----------
    xs : sequence of Node or array
        At least one; one shape and one dtype.
    axis : int, default 0
        Where the new axis goes in the result.

    Returns
    -------
    Node or numpy.ndarray

    Raises
    ------
    ShapeError, DTypeError
        If the shapes or dtypes differ.

    Examples
    --------
    >>> import numpy as np, exprvm as ev
    >>> ev.stack([np.ones(3), np.zeros(3)], axis=1).shape
    (3, 2)
    """
    xs = _operands(xs, "stack")
    return apply("stack", *xs, axis=norm_axis(axis, ndim_of(xs[0]) + 1, "stack")[0])


# -- indexing ------------------------------------------------------------------------

def _basic_shape(shape, index):
    """The shape x[index] has for an index of plain ints and slices and at most one
    Ellipsis (the common cases: a time step's row, a gate's columns `z[..., a:b]`), or
    None when numpy must work it out. One pass: each int or slice reads the next axis,
    the Ellipsis passes over the axes the others leave."""
    ndim = len(shape)
    out = []
    d = 0                   # the next axis of shape
    ellipsis = False
    for i in index:
        t = type(i)
        if t is slice:
            if d == ndim:
                return None
            try:
                start, stop, step = i.indices(shape[d])
            except TypeError:       # a bound that is no integer (a float, a node): numpy's
                return None         # message, as a ShapeError (_index_shape)
            # NOTE: range() only for a step other than 1: it costs more than the rest
            out.append((stop - start if stop > start else 0) if step == 1 else len(range(start, stop, step)))
            d += 1
        elif t is int:
            if d == ndim or not -shape[d] <= i < shape[d]:
                return None
            d += 1
        elif i is Ellipsis and not ellipsis:
            ellipsis = True
            skip = ndim - (len(index) - 1)
            if skip < 0:
                return None
            out.extend(shape[d:d + skip])
            d += skip
        else:
            return None
    return tuple(out) + shape[d:]


def _index_shape(shape, index):
    # A zero-stride view indexes for free and gives numpy's exact result shape.
    try:
        return np.broadcast_to(np.empty((), np.int8), shape)[index].shape
    except (IndexError, TypeError, ValueError) as e:
        raise ShapeError(f"index {index!r} does not fit shape {shape}: {e}") from None


def _scatter(g, index, shape):
    out = np.zeros(shape, dtype=g.dtype)
    if is_basic_index(index):
        out[index] = g
    else:
        np.add.at(out, index, g)  # repeated indices accumulate
    return out


def _getitem_rule(x, index):
    shape = _basic_shape(x.shape, index)
    return (_index_shape(x.shape, index) if shape is None else shape), x.dtype


_getitem = defop("getitem", lambda x, index: x[index], _getitem_rule,
                 vjp=(lambda g, ans, x, index: apply("getitem_grad", g, index=index, shape=shape_of(x)),),
                 row=Row((("f", (4, 5), -1.0, 1.0),), {"index": (slice(1, 3), 2)}, ref=refs.getitem),
                 view=True)
_getitem_grad = defop("getitem_grad", lambda g, index, shape: _scatter(g, index, shape),
                      lambda g, index, shape: (tuple(shape), g.dtype),
                      vjp=(lambda gg, ans, g, index, shape: getitem(gg, index),),
                      row=Row((("f", (2,), -1.0, 1.0),), {"index": (slice(1, 3), 2), "shape": (4, 5)},
                              ref=refs.getitem_grad))
_getitem_op = OPS["getitem"]


def getitem(x, index):
    """``x[index]``: basic indexing (ints and slices) and integer-array indexing, as numpy.

    Parameters
    ----------
    x : Node or array
    index : int, slice, array of int or a tuple of them
        A node may not index: gather rows with ``ev.take(x, indices, axis)``.

    Returns
    -------
    Node or numpy.ndarray
        Basic indexing is a view on the tape; the gradient scatters back into ``x``'s shape.

    Raises
    ------
    IndexRangeError
        For an index outside its axis.
    """
    if not isinstance(index, tuple):
        index = (index,)
    for i in index:
        t = type(i)
        if t is not int and t is not slice and i is not Ellipsis and i is not None:
            # NOTE: a bool becomes an array: True == 1 in a CSE key, but x[True] is not x[1].
            index = tuple(np.asarray(i) if isinstance(i, (list, bool, np.bool_)) else i for i in index)
            if any(hasattr(i, "graph") for i in index):
                raise ShapeError("indexing with a node: use ev.take(x, indices, axis)")
            break
    return build_node(_getitem_op, (x,), {"index": index})


def _take_rule(x, idx, axis):
    if idx.dtype.kind not in "iu":
        raise DTypeError(f"indices must be integers, got {idx.dtype.name}")
    if not 0 <= axis < x.ndim:
        raise ShapeError(f"axis {axis} out of range for {x.shape}")
    return x.shape[:axis] + idx.shape + x.shape[axis + 1:], x.dtype


def _take_grad_rule(g, idx, axis, shape):
    return tuple(shape), g.dtype


def _take_scatter(g, idx, axis, shape):
    out = np.zeros(shape, dtype=g.dtype)
    np.add.at(out, (slice(None),) * axis + (idx,), g)
    return out


def check_range(idx, n, what):
    """Indices must lie in [0, n): negative ones would wrap silently, large ones crash."""
    idx = np.asarray(idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexRangeError(f"{what}: index out of range [0, {n}): min {idx.min()}, max {idx.max()}")


def _take_impl(x, idx, axis):
    check_range(idx, np.shape(x)[axis], "take")
    return np.take(x, idx, axis=axis)


_take = defop("take", _take_impl, _take_rule,
              vjp=(lambda g, ans, x, idx, axis: apply("take_grad", g, idx, axis=axis, shape=shape_of(x)), None),
              int_args=(1,), row=Row((("f", (5, 3), -1.0, 1.0), ("i", (4,), 5)), {"axis": 0}, ref=refs.take),
              batch=lambda in_shapes, shape, p: ("s", "b") if p["axis"] == 0 and len(in_shapes[1]) >= 1 else None)
_take_grad = defop("take_grad", _take_scatter, _take_grad_rule,
                   vjp=(lambda gg, ans, g, idx, axis, shape: take(gg, idx, axis), None),
                   int_args=(1,), row=Row((("f", (4, 3), -1.0, 1.0), ("i", (4,), 5)), {"axis": 0, "shape": (5, 3)},
                                          ref=refs.take_grad))


def take(x, indices, axis=0):
    """Gather along axis (numpy.take); the gradient scatters and accumulates repeats."""
    # NOTE: norm_axis, not axis % ndim: axis=5 on a 2-d x is an error, as in numpy.
    return apply("take", x, indices, axis=norm_axis(axis, max(ndim_of(x), 1), "take")[0])


def embedding(table, ids):
    """Rows of an embedding table: take(table, ids, axis=0)."""
    return take(table, ids, axis=0)
