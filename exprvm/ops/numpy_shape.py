"""numpy's axis-moving functions as compositions of reshape, transpose, getitem and
broadcast_to: expand_dims, squeeze, ravel, flatten, moveaxis, swapaxes, rollaxis,
flip / fliplr / flipud, rot90, roll, atleast_1d / 2d / 3d and broadcast_arrays.

Each is exact (it moves elements, never computes them) and differentiable through its
parts' VJPs. In: a node or an array (a list of nodes is stacked first). Out: a node or
an array of numpy's shape.
"""
import math

import numpy as np

from ..core import Row, ndim_of, norm_axis, shape_of
from ..errors import ShapeError, UnsupportedError
from .argcheck import arg_errors
from .functions import composite

X = ("f", (2, 3, 4), -1.0, 1.0)
M = ("f", (3, 4), -1.0, 1.0)


def _one_axis(axis, ndim, op):
    with arg_errors(op):
        return norm_axis(axis, ndim, op)[0]


@composite("expand_dims", Row((M,), {"axis": (0, 3)}, ref=lambda x, axis: x[None, :, :, None]))
def expand_dims(a, axis):
    """numpy.expand_dims: new axes of length 1 at the positions axis (an int or a tuple)."""
    shape = shape_of(a)
    with arg_errors("expand_dims", a):
        axes = norm_axis(axis, len(shape) + (1 if isinstance(axis, (int, np.integer)) else len(axis)))
    it = iter(shape)
    return reshape(a, tuple(1 if i in axes else next(it) for i in range(len(shape) + len(axes))))


@composite("squeeze", Row((("f", (3, 1, 4, 1), -1.0, 1.0),), {"axis": 1}, ref=lambda x, axis: x[:, 0]))
def squeeze(a, axis=None):
    """numpy.squeeze: drop axes of length 1 (all of them, or those named; naming an axis
    of another length is a ShapeError)."""
    shape = shape_of(a)
    with arg_errors("squeeze", a):
        if axis is None:
            axes = tuple(i for i, n in enumerate(shape) if n == 1)
        else:
            axes = norm_axis(axis, len(shape))
            bad = [i for i in axes if shape[i] != 1]
            if bad:
                raise ShapeError(f"cannot squeeze axis {bad[0]} of length {shape[bad[0]]} (shape {shape})")
    return reshape(a, tuple(n for i, n in enumerate(shape) if i not in axes))


@composite("ravel", Row((X,), ref=lambda x: np.array([v for v in x.flat])))
def ravel(a, order="C"):
    """numpy.ravel: the elements as one vector, in C order (the only order offered)."""
    with arg_errors("ravel", a):
        _c_order(order)
    return reshape(a, (math.prod(shape_of(a)),))


def _c_order(order):
    if order not in ("C", "K", "A"):
        raise UnsupportedError(f"order={order!r} is not supported: nodes are laid out in C order")


@composite("flatten", Row((X,), ref=lambda x: np.concatenate([r.reshape(-1) for r in x])))
def flatten(a, order="C"):
    """ndarray.flatten: ravel (a new node never aliases its operand)."""
    return ravel(a, order)


@composite("moveaxis", Row((X,), {"source": 0, "destination": -1}, ref=lambda x, source, destination:
                          np.einsum("ijk->jki", x)))
def moveaxis(a, source, destination):
    """numpy.moveaxis: move axes source to positions destination; the others keep their order."""
    nd = ndim_of(a)
    with arg_errors("moveaxis", a):
        src = _axes_list(source, nd)
        dst = _axes_list(destination, nd)
        if len(src) != len(dst):
            raise ShapeError(f"source {source!r} and destination {destination!r} differ in length")
    order = [i for i in range(nd) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(a, tuple(order))


def _axes_list(axes, nd):
    """Axes in the given order (not sorted), each checked and made non-negative."""
    seq = [axes] if isinstance(axes, (int, np.integer)) else list(axes)
    out = [norm_axis(int(a), nd)[0] for a in seq]
    if len(set(out)) != len(out):
        raise ShapeError(f"repeated axis in {axes!r}")
    return out


@composite("swapaxes", Row((X,), {"axis1": 0, "axis2": 2}, ref=lambda x, axis1, axis2: np.einsum("ijk->kji", x)))
def swapaxes(a, axis1, axis2):
    """numpy.swapaxes: exchange two axes."""
    nd = ndim_of(a)
    i, j = _one_axis(axis1, nd, "swapaxes"), _one_axis(axis2, nd, "swapaxes")
    order = list(range(nd))
    order[i], order[j] = j, i
    return transpose(a, tuple(order))


@composite("rollaxis", Row((X,), {"axis": 2, "start": 0}, ref=lambda x, axis, start: np.einsum("ijk->kij", x)))
def rollaxis(a, axis, start=0):
    """numpy.rollaxis: move axis back to position start (numpy's older moveaxis)."""
    nd = ndim_of(a)
    ax = _one_axis(axis, nd, "rollaxis")
    with arg_errors("rollaxis", a):
        if not -nd <= start <= nd:
            raise ShapeError(f"start {start} is out of range for a {nd}-d operand")
    start = start % (nd + 1) if start < 0 else start
    if ax < start:
        start -= 1
    return moveaxis(a, ax, start) if ax != start else a


@composite("flip", Row((X,), {"axis": (0, 2)}, ref=lambda x, axis: np.array(x.tolist()[::-1])[:, :, ::-1]))
def flip(m, axis=None):
    """numpy.flip: reverse the order of elements along axis (None: every axis); a view."""
    nd = ndim_of(m)
    with arg_errors("flip", m):
        axes = norm_axis(axis, nd)
    return m[tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(nd))]


@composite("fliplr", Row((M,), ref=lambda x: x[:, [3, 2, 1, 0]]))
def fliplr(m):
    """numpy.fliplr: reverse axis 1."""
    _at_least(m, 2, "fliplr")
    return flip(m, 1)


@composite("flipud", Row((M,), ref=lambda x: x[[2, 1, 0]]))
def flipud(m):
    """numpy.flipud: reverse axis 0."""
    _at_least(m, 1, "flipud")
    return flip(m, 0)


def _at_least(m, n, op):
    with arg_errors(op, m):
        if ndim_of(m) < n:
            raise ShapeError(f"needs an operand of at least {n} dimensions, got {shape_of(m)}")


@composite("rot90", Row((X,), {"k": 1, "axes": (1, 2)}, ref=lambda x, k, axes: np.stack([r.T[::-1] for r in x])))
def rot90(m, k=1, axes=(0, 1)):
    """numpy.rot90: rotate by 90 degrees k times in the plane of axes, from the first
    axis toward the second."""
    nd = ndim_of(m)
    with arg_errors("rot90", m):
        if len(axes) != 2:
            raise ShapeError(f"axes must name two axes, got {axes!r}")
        a0, a1 = _axes_list(axes, nd)
    k = int(k) % 4
    if k == 0:
        return m
    if k == 2:
        return flip(flip(m, a0), a1)
    order = list(range(nd))
    order[a0], order[a1] = a1, a0
    if k == 1:
        return transpose(flip(m, a1), tuple(order))
    return flip(transpose(m, tuple(order)), a1)


@composite("roll", Row((X,), {"shift": (1, -2), "axis": (0, 2)},
                       ref=lambda x, shift, axis: np.take(np.take(x, [1, 0], 0), [2, 3, 0, 1], 2)))
def roll(a, shift, axis=None):
    """numpy.roll: shift elements along axis, those past the end coming back at the start
    (axis None: along the flattened operand, then the shape is restored)."""
    if axis is None:
        return reshape(roll(ravel(a), shift, 0), shape_of(a))
    shape = shape_of(a)
    shifts = [shift] if isinstance(shift, (int, np.integer)) else list(shift)
    axes = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
    with arg_errors("roll", a):
        if len(shifts) == 1 and len(axes) > 1:
            shifts = shifts * len(axes)
        if len(shifts) != len(axes):
            raise ShapeError(f"shift {shift!r} and axis {axis!r} differ in length")
        axes = [norm_axis(int(x), len(shape))[0] for x in axes]
    total = {}
    for s, ax in zip(shifts, axes):
        total[ax] = total.get(ax, 0) + int(s)
    out = a
    for ax, s in total.items():
        n = shape[ax]
        s = s % n if n else 0
        if s:
            lead = (slice(None),) * ax
            out = concat([out[lead + (slice(n - s, None),)], out[lead + (slice(0, n - s),)]], axis=ax)
    return out


def _atleast_shape(shape, n):
    """numpy's placements of the new axes: () -> (1, ...), (k,) -> (1, k) or (1, k, 1),
    (m, k) -> (m, k, 1)."""
    if len(shape) >= n:
        return shape
    if n == 3 and shape:
        return ((1,) if len(shape) == 1 else ()) + shape + (1,)
    return (1,) * (n - len(shape)) + shape


def _atleast(n):
    def fn(*arys):
        outs = []
        for a in arys:
            a = a if hasattr(a, "shape") else np.asarray(a)
            shape = shape_of(a)
            outs.append(a if len(shape) >= n else reshape(a, _atleast_shape(shape, n)))
        return outs[0] if len(outs) == 1 else outs
    return fn


_atleast_1d, _atleast_2d, _atleast_3d = _atleast(1), _atleast(2), _atleast(3)


@composite("atleast_1d", Row((("f", (), -1.0, 1.0),), ref=lambda x: x.reshape(1)))
def atleast_1d(*arys):
    """numpy.atleast_1d: 0-d operands as (1,); one result per operand (a list for several)."""
    return _atleast_1d(*arys)


@composite("atleast_2d", Row((("f", (3,), -1.0, 1.0),), ref=lambda x: x[None, :]))
def atleast_2d(*arys):
    """numpy.atleast_2d: (k,) as (1, k), 0-d as (1, 1)."""
    return _atleast_2d(*arys)


@composite("atleast_3d", Row((("f", (3, 4), -1.0, 1.0),), ref=lambda x: x[:, :, None]))
def atleast_3d(*arys):
    """numpy.atleast_3d: (k,) as (1, k, 1), (m, k) as (m, k, 1), 0-d as (1, 1, 1)."""
    return _atleast_3d(*arys)


@composite("broadcast_arrays", Row((("f", (3, 1), -1.0, 1.0), ("f", (4,), -1.0, 1.0)),
                                   ref=lambda a, b: a * b),
           call=lambda a, b: broadcast_arrays(a, b)[0] * broadcast_arrays(a, b)[1])
def broadcast_arrays(*args):
    """numpy.broadcast_arrays: every operand broadcast to their common shape (a list)."""
    shapes = [shape_of(a) for a in args]
    with arg_errors("broadcast_arrays", *args):
        try:
            shape = tuple(np.broadcast_shapes(*shapes))
        except ValueError:
            raise ShapeError(f"cannot broadcast shapes {' and '.join(map(str, shapes))}") from None
    return [broadcast_to(a, shape) for a in args]


from .shape import broadcast_to, concat, reshape, transpose  # noqa: E402
