"""numpy's joining, splitting and tiling functions as compositions of concat, getitem,
reshape, broadcast_to and take: hstack, vstack, dstack, column_stack, row_stack,
append, array_split, hsplit, vsplit, dsplit, repeat and tile.

Each is exact and differentiable through its parts' VJPs (a repeated or tiled element's
gradient is the sum over its copies). In: nodes or arrays (lists of nodes are stacked).
Out: a node (a list of nodes for the splits), or arrays when no node is given.
"""
import numpy as np

from ..core import Row, ndim_of, norm_axis, shape_of
from ..errors import ShapeError
from .argcheck import arg_errors
from .functions import composite, listed

A = ("f", (2, 3), -1.0, 1.0)
B = ("f", (2, 2), -1.0, 1.0)
V = ("f", (3,), -1.0, 1.0)


def _seq(tup, op):
    tup = list(tup)
    if not tup:
        with arg_errors(op):
            raise ShapeError("needs at least one array")
    return tup


@composite("hstack", Row((A, B), ref=lambda a, b: np.concatenate([a.T, b.T]).T), call=listed(lambda t: hstack(t)),
           sequence=True)
def hstack(tup):
    """numpy.hstack: concatenation along axis 1 (axis 0 for 1-d operands)."""
    arrs = atleast_1d(*_seq(tup, "hstack"))
    arrs = arrs if isinstance(arrs, list) else [arrs]
    return concat(arrs, axis=0 if ndim_of(arrs[0]) == 1 else 1)


@composite("vstack", Row((V, ("f", (2, 3), -1.0, 1.0)), ref=lambda a, b: np.array([list(a)] + b.tolist())),
           call=listed(lambda t: vstack(t)), sequence=True)
def vstack(tup):
    """numpy.vstack (and row_stack): concatenation along axis 0 of the operands as 2-d."""
    arrs = atleast_2d(*_seq(tup, "vstack"))
    return concat(arrs if isinstance(arrs, list) else [arrs], axis=0)


row_stack = vstack


@composite("dstack", Row((A, A), ref=lambda a, b: np.stack([a, b], axis=-1)), call=listed(lambda t: dstack(t)),
           sequence=True)
def dstack(tup):
    """numpy.dstack: concatenation along axis 2 of the operands as 3-d."""
    arrs = atleast_3d(*_seq(tup, "dstack"))
    return concat(arrs if isinstance(arrs, list) else [arrs], axis=2)


@composite("column_stack", Row((V, ("f", (3, 2), -1.0, 1.0)), ref=lambda a, b: np.hstack([a[:, None], b])),
           call=listed(lambda t: column_stack(t)), sequence=True)
def column_stack(tup):
    """numpy.column_stack: 1-d operands as columns, 2-d ones as they are, along axis 1."""
    arrs = [reshape(a, (shape_of(a)[0], 1)) if ndim_of(a) == 1 else atleast_2d(a)
            for a in _seq(tup, "column_stack")]
    return concat(arrs, axis=1)


@composite("append", Row((A, ("f", (1, 3), -1.0, 1.0)), {"axis": 0}, ref=lambda a, b, axis: np.vstack([a, b])))
def append(arr, values, axis=None):
    """numpy.append: values after arr along axis (None: both flattened)."""
    if axis is None:
        return concat([ravel(arr), ravel(values)], axis=0)
    return concat([arr, values], axis=axis)


# -- splits ------------------------------------------------------------------------------------

def _bounds(n, indices_or_sections, op, even):
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if k <= 0:
            raise ShapeError(f"number of sections must be positive, got {k}")
        if even and n % k:
            raise ShapeError(f"length {n} does not divide into {k} equal sections")
        # numpy.array_split: the first n % k sections are one longer
        size, extra = divmod(n, k)
        sizes = [size + 1] * extra + [size] * (k - extra)
        return [0] + list(np.cumsum(sizes))
    return [0] + [int(i) for i in indices_or_sections] + [n]


def _split(ary, indices_or_sections, axis, op, even):
    shape = shape_of(ary)
    with arg_errors(op, ary):
        if not shape:
            raise ShapeError("cannot split a 0-d operand")
        ax = norm_axis(axis, len(shape))[0]
        bounds = _bounds(shape[ax], indices_or_sections, op, even)
    lead = (slice(None),) * ax
    return [ary[lead + (slice(a, b),)] for a, b in zip(bounds, bounds[1:])]


def _glue(parts):
    """A row's call of a split: the pieces joined again, each weighted differently."""
    return concat([p * float(i + 1) for i, p in enumerate(parts)], axis=0)


@composite("array_split", Row((("f", (7, 2), -1.0, 1.0),), {"indices_or_sections": 3},
                              ref=lambda x, indices_or_sections: np.concatenate([x[:3], 2 * x[3:5], 3 * x[5:]])),
           call=lambda x, indices_or_sections: _glue(array_split(x, indices_or_sections)))
def array_split(ary, indices_or_sections, axis=0):
    """numpy.array_split: split into sections that may differ in length by one (the first
    ones longer), or at the given indices."""
    return _split(ary, indices_or_sections, axis, "array_split", even=False)


def _axis_split(axis, least):
    def fn(ary, indices_or_sections):
        name = {0: "vsplit", 1: "hsplit", 2: "dsplit"}[axis]
        with arg_errors(name, ary):
            if ndim_of(ary) < least:
                raise ShapeError(f"needs an operand of at least {least} dimensions, got {shape_of(ary)}")
        ax = 0 if (axis == 1 and ndim_of(ary) == 1) else axis
        return _split(ary, indices_or_sections, ax, name, even=True)
    return fn


_hsplit, _vsplit, _dsplit = _axis_split(1, 1), _axis_split(0, 2), _axis_split(2, 3)
_GLUE1 = dict(call=lambda x, indices_or_sections: concat(
    [p * float(i + 1) for i, p in enumerate(hsplit(x, indices_or_sections))], axis=1))


@composite("hsplit", Row((("f", (2, 4), -1.0, 1.0),), {"indices_or_sections": 2},
                         ref=lambda x, indices_or_sections: np.hstack([x[:, :2], 2 * x[:, 2:]])), **_GLUE1)
def hsplit(ary, indices_or_sections):
    """numpy.hsplit: equal sections (or at indices) along axis 1 (axis 0 for 1-d)."""
    return _hsplit(ary, indices_or_sections)


@composite("vsplit", Row((("f", (4, 2), -1.0, 1.0),), {"indices_or_sections": [1]},
                         ref=lambda x, indices_or_sections: np.vstack([x[:1], 2 * x[1:]])),
           call=lambda x, indices_or_sections: _glue(vsplit(x, indices_or_sections)))
def vsplit(ary, indices_or_sections):
    """numpy.vsplit: equal sections (or at indices) along axis 0 of a 2-d or more operand."""
    return _vsplit(ary, indices_or_sections)


@composite("dsplit", Row((("f", (1, 2, 4), -1.0, 1.0),), {"indices_or_sections": 2},
                         ref=lambda x, indices_or_sections: np.concatenate([x[..., :2], 2 * x[..., 2:]], axis=0)),
           call=lambda x, indices_or_sections: _glue(dsplit(x, indices_or_sections)))
def dsplit(ary, indices_or_sections):
    """numpy.dsplit: equal sections (or at indices) along axis 2 of a 3-d or more operand."""
    return _dsplit(ary, indices_or_sections)

# -- repeat / tile -----------------------------------------------------------------------------


@composite("repeat", Row((A,), {"repeats": 2, "axis": 1}, ref=lambda x, repeats, axis: x[:, [0, 0, 1, 1, 2, 2]]))
def repeat(a, repeats, axis=None):
    """numpy.repeat: each element repeats times along axis (None: of the flattened
    operand); repeats an int, or one count per element. The gradient sums the copies."""
    if axis is None:
        a, axis = ravel(a), 0
    shape = shape_of(a)
    with arg_errors("repeat", a):
        ax = norm_axis(axis, len(shape))[0]
        counts = np.asarray(repeats)
        if counts.dtype.kind not in "iu" or (counts < 0).any():
            raise ShapeError(f"repeats must be non-negative integers, got {repeats!r}")
        if counts.ndim > 1 or (counts.ndim == 1 and counts.size not in (1, shape[ax])):
            raise ShapeError(f"repeats {repeats!r} does not fit axis {ax} of length {shape[ax]}")
    if counts.ndim == 0 or counts.size == 1:
        r = int(counts.reshape(-1)[0])
        # (.., n, ..) -> (.., n, 1, ..) broadcast to (.., n, r, ..) -> (.., n * r, ..)
        wide = broadcast_to(reshape(a, shape[:ax + 1] + (1,) + shape[ax + 1:]),
                            shape[:ax + 1] + (r,) + shape[ax + 1:])
        return reshape(wide, shape[:ax] + (shape[ax] * r,) + shape[ax + 1:])
    return take(a, np.repeat(np.arange(shape[ax]), counts), axis=ax)


@composite("tile", Row((A,), {"reps": (2, 1, 2)}, ref=lambda x, reps: np.array([np.hstack([x, x])] * 2)))
def tile(A, reps):
    """numpy.tile: A repeated reps times along each axis (reps an int or a tuple; the
    shorter of A's shape and reps is padded with ones on the left)."""
    reps = (int(reps),) if isinstance(reps, (int, np.integer)) else tuple(int(r) for r in reps)
    shape = shape_of(A)
    with arg_errors("tile", A):
        if any(r < 0 for r in reps):
            raise ShapeError(f"reps must be non-negative, got {reps}")
    nd = max(len(shape), len(reps))
    shape = (1,) * (nd - len(shape)) + tuple(shape)
    reps = (1,) * (nd - len(reps)) + reps
    # (a0, a1) -> (1, a0, 1, a1) broadcast to (r0, a0, r1, a1) -> (r0 * a0, r1 * a1)
    inter = sum(((1, n) for n in shape), ())
    wide = broadcast_to(reshape(A, inter), sum(((r, n) for r, n in zip(reps, shape)), ()))
    return reshape(wide, tuple(r * n for r, n in zip(reps, shape)))


from .numpy_shape import atleast_1d, atleast_2d, atleast_3d, ravel  # noqa: E402
from .shape import broadcast_to, concat, reshape, take  # noqa: E402
