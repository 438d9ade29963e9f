"""matmul (numpy's rules for vector, matrix and batched operands) and outer."""
import numpy as np

from ..errors import ShapeError, UnsupportedError
from ..core import FLOAT_DTYPES
from ..core import Row, defop, ndim_of, same_float_dtype, unbroadcast
from . import refs
from .shape import reshape, swapaxes_last, transpose


def broadcast_batch(a, b):
    try:
        return np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ShapeError(f"batch dimensions do not broadcast: {a.shape} @ {b.shape}") from None


def _matmul_rule(a, b):
    sa, sb = a.shape, b.shape
    if len(sa) == 2 and len(sb) == 2 and a.dtype is b.dtype and a.dtype in FLOAT_DTYPES:
        if sa[1] != sb[0]:      # NOTE: the common matrix case first; node building is hot
            raise ShapeError(f"inner dimensions differ: {sa} @ {sb}")
        return (sa[0], sb[1]), a.dtype
    dt = same_float_dtype(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("matmul needs operands of at least 1 dimension")
    k_b = b.shape[-2] if b.ndim >= 2 else b.shape[0]
    if a.shape[-1] != k_b:
        raise ShapeError(f"inner dimensions differ: {a.shape} @ {b.shape}")
    batch = ()
    if a.ndim > 2 or b.ndim > 2:
        batch = broadcast_batch(a, b)
    rows = a.shape[-2:-1] if a.ndim >= 2 else ()
    cols = b.shape[-1:] if b.ndim >= 2 else ()
    return tuple(batch) + rows + cols, dt


def _as_batched(a, b, g):
    """Lift 1-d operands to matrices (numpy's matmul promotion) for the general VJP."""
    a2 = a if len(a.shape) > 1 else reshape(a, (1,) + tuple(a.shape))
    b2 = b if len(b.shape) > 1 else reshape(b, tuple(b.shape) + (1,))
    out2 = np.broadcast_shapes(tuple(a2.shape[:-2]), tuple(b2.shape[:-2])) + (a2.shape[-2], b2.shape[-1])
    return a2, b2, reshape(g, out2)


def _vjp_a(g, ans, a, b):
    na, nb = len(a.shape), len(b.shape)
    # NOTE: .T is a property of both Node and ndarray: arrays skip apply().
    if na == 2 and nb == 2:
        return matmul(g, b.T)
    if na == 1 and nb == 1:
        return g * b
    if na == 2 and nb == 1:
        return outer(g, b)
    if na == 1 and nb == 2:
        return matmul(b, g)
    a2, b2, g2 = _as_batched(a, b, g)
    return reshape(unbroadcast(matmul(g2, swapaxes_last(b2)), a2.shape), a.shape)


def _vjp_b(g, ans, a, b):
    na, nb = len(a.shape), len(b.shape)
    if na == 2 and nb == 2:
        return matmul(a.T, g)
    if na == 1 and nb == 1:
        return g * a
    if na == 2 and nb == 1:
        return matmul(g, a)
    if na == 1 and nb == 2:
        return outer(a, g)
    a2, b2, g2 = _as_batched(a, b, g)
    return reshape(unbroadcast(matmul(swapaxes_last(a2), g2), b2.shape), b.shape)


def _matmul(a, b):
    # NOTE: an inner dimension of 1 is an outer product; numpy's matmul takes a slow
    # path for it (~3x a broadcast multiply), and the gradient of h @ W with a
    # batch of one is exactly that shape.
    # (np.ndim/np.shape are Python calls: plain attributes first, for the LispMachine's sake)
    if type(a) is np.ndarray and type(b) is np.ndarray:
        if a.ndim == 2 and b.ndim == 2 and a.shape[1] == 1:
            return np.multiply(a, b)
    elif np.ndim(a) == 2 and np.ndim(b) == 2 and np.shape(a)[1] == 1:
        return np.multiply(a, b)
    return np.matmul(a, b)


def _matmul_batch(in_shapes, shape, params):
    # rows of a matrix against one shared matrix: k copies are one taller product
    return ("b", "s") if len(in_shapes[0]) == 2 and len(in_shapes[1]) == 2 else None


matmul = defop("matmul", _matmul, _matmul_rule, vjp=(_vjp_a, _vjp_b), ufunc=np.matmul, batch=_matmul_batch,
               row=Row((("f", (2, 3, 4), -1.0, 1.0), ("f", (4, 5), -1.0, 1.0)), ref=refs.matmul))


def _outer_rule(a, b):
    dt = same_float_dtype(a, b)
    if a.ndim != 1 or b.ndim != 1:
        raise ShapeError(f"outer needs two vectors, got {a.shape} and {b.shape}")
    return (a.shape[0], b.shape[0]), dt


_outer = defop("outer", np.outer, _outer_rule,
              vjp=(lambda g, ans, a, b: matmul(g, b), lambda g, ans, a, b: matmul(transpose(g), a)),
              row=Row((("f", (3,), -1.0, 1.0), ("f", (4,), -1.0, 1.0)), ref=lambda a, b: a[:, None] * b[None, :]))


def outer(a, b, out=None):
    """numpy.outer: every element of a (flattened) times every element of b (flattened)."""
    if out is not None:
        raise UnsupportedError("outer: out= is not supported: an op makes a new node")
    if ndim_of(a) != 1:
        a = reshape(a, (-1,))
    if ndim_of(b) != 1:
        b = reshape(b, (-1,))
    return _outer(a, b)


def dot(a, b):
    """numpy.dot: for 1-d and 2-d operands the matrix product (matmul); with a 0-d operand
    the product; above 2-d a sum product over the last axis of a and the second-to-last of
    b, so the result has a's other axes then b's (not matmul's broadcast batches)."""
    na, nb = ndim_of(a), ndim_of(b)
    if na == 0 or nb == 0:
        return multiply(a, b)
    if na <= 2 and nb <= 2:
        return matmul(a, b)
    return tensordot(a, b, ((na - 1,), (max(nb - 2, 0),)))


from .contraction import tensordot  # noqa: E402
from .elementwise import multiply  # noqa: E402
