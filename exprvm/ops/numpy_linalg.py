"""numpy's matrix-shaped functions as compositions: diagonal, trace, diag, tril, triu,
inner, vdot, cross, kron and linspace (with node bounds).

Each is exact and differentiable through its parts: diagonal is a take over the
flattened last two axes, diag pads each element with a row of zeros so the flat layout
puts it on the diagonal, tril / triu select with a constant mask, inner and kron are
tensordot and broadcast products.

In: nodes or arrays (lists of nodes are stacked). Out: a node, or an array.
"""
import numpy as np

from ..core import Node, Row, ndim_of, norm_axis, shape_of
from ..errors import ShapeError, UnsupportedError
from .argcheck import arg_errors
from .functions import composite

M = ("f", (3, 4), -1.0, 1.0)
X = ("f", (2, 3, 3), -1.0, 1.0)


def _dtype_of(*xs):
    for x in xs:
        if isinstance(x, Node) or isinstance(x, np.ndarray):
            if x.dtype.kind == "f":
                return x.dtype
    return np.dtype(np.float64)


@composite("diagonal", Row((X,), {"offset": 1, "axis1": 1, "axis2": 2},
                           ref=lambda x, offset, axis1, axis2: np.array([[r[0, 1], r[1, 2]] for r in x])))
def diagonal(a, offset=0, axis1=0, axis2=1):
    """numpy.diagonal: the elements a[..., i, i + offset] of the plane (axis1, axis2), as
    a's last axis."""
    shape = shape_of(a)
    with arg_errors("diagonal", a):
        if len(shape) < 2:
            raise ShapeError(f"needs an operand of at least 2 dimensions, got {shape}")
        i1, i2 = (norm_axis(int(x), len(shape))[0] for x in (axis1, axis2))
        if i1 == i2:
            raise ShapeError(f"axis1 and axis2 are the same axis {i1}")
    rest = [d for d in range(len(shape)) if d not in (i1, i2)]
    n1, n2 = shape[i1], shape[i2]
    offset = int(offset)
    r0, c0 = max(-offset, 0), max(offset, 0)
    length = max(0, min(n1 - r0, n2 - c0))
    flat = reshape(transpose(a, tuple(rest) + (i1, i2)), tuple(shape[d] for d in rest) + (n1 * n2,))
    return take(flat, (np.arange(length) + r0) * n2 + np.arange(length) + c0, axis=len(rest))


@composite("trace", Row((M,), {"offset": -1}, ref=lambda x, offset: x[1, 0] + x[2, 1]))
def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    """numpy.trace: the sum of diagonal(a, offset, axis1, axis2)."""
    with arg_errors("trace", a):
        _plain(dtype, out)
    return sum(diagonal(a, offset, axis1, axis2), axis=-1)


def _plain(dtype, out):
    if dtype is not None or out is not None:
        raise UnsupportedError("dtype= and out= are not supported")


@composite("diag", Row((("f", (3,), -1.0, 1.0),), {"k": 1},
                       ref=lambda v, k: np.eye(4, k=1) * np.concatenate([v, [0.0]])[:, None]))
def diag(v, k=0):
    """numpy.diag: a 1-d v as the k-th diagonal of a square matrix, or the k-th diagonal
    of a 2-d v."""
    shape = shape_of(v)
    k = int(k)
    if len(shape) == 2:
        return diagonal(v, k)
    with arg_errors("diag", v):
        if len(shape) != 1:
            raise ShapeError(f"needs a 1-d or 2-d operand, got {shape}")
    m = shape[0]
    n = m + abs(k)
    # each element followed by n zeros: element j lands at j * (n + 1), on the diagonal
    rows = pad(reshape(v, (m, 1)), ((0, 0), (0, n)))
    start = max(-k, 0) * n + max(k, 0)
    flat = pad(reshape(rows, (m * (n + 1),)), ((start, max(0, n * n - start - m * (n + 1))),))
    return reshape(flat[:n * n], (n, n))


def _triangle(m, k, lower, op):
    shape = shape_of(m)
    with arg_errors(op, m):
        if len(shape) < 2:
            raise ShapeError(f"needs an operand of at least 2 dimensions, got {shape}")
    n, c = shape[-2], shape[-1]
    mask = np.tri(n, c, int(k), dtype=bool) if lower else ~np.tri(n, c, int(k) - 1, dtype=bool)
    return where(mask, m, 0)


@composite("tril", Row((X,), {"k": 0}, ref=lambda x, k: x * (np.arange(3)[:, None] >= np.arange(3))))
def tril(m, k=0):
    """numpy.tril: the elements on and below the k-th diagonal of the last two axes, zeros above."""
    return _triangle(m, k, True, "tril")


@composite("triu", Row((M,), {"k": 1}, ref=lambda x, k: x * (np.arange(3)[:, None] + 1 <= np.arange(4))))
def triu(m, k=0):
    """numpy.triu: the elements on and above the k-th diagonal of the last two axes, zeros below."""
    return _triangle(m, k, False, "triu")


@composite("inner", Row((("f", (2, 4), -1.0, 1.0), ("f", (3, 4), -1.0, 1.0)),
                        ref=lambda a, b: (a[:, None, :] * b[None, :, :]).sum(-1)))
def inner(a, b):
    """numpy.inner: the sum product over the last axes of a and b (a product for 0-d)."""
    na, nb = ndim_of(a), ndim_of(b)
    if na == 0 or nb == 0:
        return multiply(a, b)
    return tensordot(a, b, ((na - 1,), (nb - 1,)))


@composite("vdot", Row((M, M), ref=lambda a, b: np.einsum("ij,ij->", a, b)))
def vdot(a, b):
    """numpy.vdot of real operands: the sum product of the flattened a and b."""
    return sum(multiply(ravel(a), ravel(b)))


def _cross_parts(x, axis, op):
    shape = shape_of(x)
    with arg_errors(op, x):
        ax = norm_axis(axis, len(shape))[0]
        if shape[ax] not in (2, 3):
            raise ShapeError(f"vectors along axis {ax} must have 2 or 3 components, got {shape[ax]}")
    lead = (slice(None),) * ax
    parts = [x[lead + (i,)] for i in range(shape[ax])]
    return parts + [None] * (3 - len(parts))


@composite("cross", Row((("f", (4, 3), -1.0, 1.0), ("f", (3,), -1.0, 1.0)),
                        ref=lambda a, b: np.stack([a[:, 1] * b[2] - a[:, 2] * b[1], a[:, 2] * b[0] - a[:, 0] * b[2],
                                                   a[:, 0] * b[1] - a[:, 1] * b[0]], axis=-1)))
def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """numpy.cross of 3- (or 2-) component vectors along axisa / axisb (axis= sets all
    three); two 2-vectors give the z component alone."""
    if axis is not None:
        axisa = axisb = axisc = axis
    a0, a1, a2 = _cross_parts(a, axisa, "cross")
    b0, b1, b2 = _cross_parts(b, axisb, "cross")
    z = a0 * b1 - a1 * b0
    if a2 is None and b2 is None:
        return z
    x = (a1 * b2 if b2 is not None else 0) - (a2 * b1 if a2 is not None else 0)
    y = (a2 * b0 if a2 is not None else 0) - (a0 * b2 if b2 is not None else 0)
    x, y, z = broadcast_arrays(x, y, z)
    out = stack([x, y, z], axis=-1)
    return moveaxis(out, -1, axisc) if axisc not in (-1, ndim_of(out) - 1) else out


@composite("kron", Row((("f", (2, 3), -1.0, 1.0), ("f", (2, 2), -1.0, 1.0)),
                       ref=lambda a, b: np.block([[a[i, j] * b for j in range(3)] for i in range(2)])))
def kron(a, b):
    """numpy.kron: the Kronecker product, block (i, j) of the result a[i, j] * b."""
    sa, sb = shape_of(a), shape_of(b)
    nd = max(len(sa), len(sb))
    sa, sb = (1,) * (nd - len(sa)) + tuple(sa), (1,) * (nd - len(sb)) + tuple(sb)
    wa = reshape(a, tuple(x for n in sa for x in (n, 1)))
    wb = reshape(b, tuple(x for n in sb for x in (1, n)))
    return reshape(multiply(wa, wb), tuple(m * n for m, n in zip(sa, sb)))

# -- linspace ----------------------------------------------------------------------------------


@composite("linspace", Row((("f", (2,), -1.0, 1.0), ("f", (2,), 2.0, 3.0)), {"num": 5},
                           ref=lambda a, b, num: np.array([a + (b - a) * i / 4 for i in range(5)])))
def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    """numpy.linspace: num evenly spaced values from start to stop (stop excluded without
    endpoint), start and stop nodes (gradients reach them) or arrays of any broadcast shape."""
    if not isinstance(start, Node) and not isinstance(stop, Node):
        return np.linspace(start, stop, num, endpoint, retstep, dtype, axis)
    num = int(num)
    with arg_errors("linspace", start, stop):
        if num < 0:
            raise ShapeError(f"num must be non-negative, got {num}")
        if dtype is not None and np.dtype(dtype) != _dtype_of(start, stop):
            raise UnsupportedError(f"dtype={np.dtype(dtype).name} differs from the bounds' dtype; "
                                   f"cast with ev.astype")
    dt = _dtype_of(start, stop)
    start, stop = (x if isinstance(x, Node) else np.asarray(x, dt) for x in (start, stop))
    div = (num - 1) if endpoint else num
    delta = stop - start
    nd = ndim_of(delta)
    t = np.arange(num, dtype=dt).reshape((num,) + (1,) * nd)
    step = delta / div if div > 0 else delta * np.nan
    y = start + t * step if num > 0 else start * np.zeros((0,) + (1,) * nd, dt)
    if endpoint and num > 1:    # the last value is stop itself, as numpy makes it
        shape = shape_of(y)
        y = concat([y[:-1], broadcast_to(reshape(stop, (1,) + shape_of(stop)) if ndim_of(stop) else
                                         reshape(stop, (1,) * len(shape)), (1,) + shape[1:])], axis=0)
    if axis != 0:
        y = moveaxis(y, 0, axis)
    return (y, step) if retstep else y


from .contraction import tensordot  # noqa: E402
from .elementwise import multiply, where  # noqa: E402
from .numpy_shape import broadcast_arrays, moveaxis, ravel  # noqa: E402
from .reduce import sum  # noqa: E402
from .arrays import pad  # noqa: E402
from .shape import broadcast_to, concat, reshape, stack, take, transpose  # noqa: E402
