"""Independent numpy references for the op test table (Row.ref), for the ops whose
formula is more than a line.

In: numpy arrays and an op's params. Out: the op's result, computed by another route than
the op's impl (reductions through a product with ones and a sort, gathers through fancy
indexing, scatters through bincount, matmul through a broadcast product and a sum,
concat and stack through slice assignment), so that a machine checked against a
reference is not checked against the code it runs. Plain numpy only: nothing here
imports an op.
"""
import builtins
import math
import string

import numpy as np


def _rows(x, axis):
    """x with the reduced axes moved last and flattened into one: (kept..., k)."""
    x = np.asarray(x)
    kept = [i for i in range(x.ndim) if i not in axis]
    moved = np.transpose(x, kept + list(axis))
    k = int(np.prod([x.shape[a] for a in axis], dtype=np.int64))
    return moved.reshape(tuple(x.shape[i] for i in kept) + (k,)), k


def _keep(r, x, axis, keepdims):
    if not keepdims:
        return r
    return r.reshape(tuple(1 if i in axis else n for i, n in enumerate(np.shape(x))))


def sum(x, axis, keepdims):
    r, k = _rows(x, axis)
    return _keep(r @ np.ones(k, r.dtype), x, axis, keepdims)


def mean(x, axis, keepdims):
    r, k = _rows(x, axis)
    return _keep((r @ np.ones(k, r.dtype)) / k, x, axis, keepdims)


def max(x, axis, keepdims):
    r, _ = _rows(x, axis)
    return _keep(np.sort(r, axis=-1)[..., -1], x, axis, keepdims)


def min(x, axis, keepdims):
    r, _ = _rows(x, axis)
    return _keep(np.sort(r, axis=-1)[..., 0], x, axis, keepdims)


def reshape(x, shape):
    out = np.empty(shape, np.asarray(x).dtype)
    out.flat[:] = np.asarray(x).flat     # the same elements in the same (C) order
    return out


def transpose(x, axes):
    letters = string.ascii_lowercase[:np.ndim(x)]
    return np.einsum(f"{letters}->{''.join(letters[a] for a in axes)}", x)


def concat(*xs, axis):
    shape = list(xs[0].shape)
    shape[axis] = builtins.sum(x.shape[axis] for x in xs)
    out = np.empty(shape, xs[0].dtype)
    start = 0
    for x in xs:
        out[(slice(None),) * axis + (slice(start, start + x.shape[axis]),)] = x
        start += x.shape[axis]
    return out


def stack(*xs, axis):
    shape = xs[0].shape[:axis] + (len(xs),) + xs[0].shape[axis:]
    out = np.empty(shape, xs[0].dtype)
    for i, x in enumerate(xs):
        out[(slice(None),) * axis + (i,)] = x
    return out


def getitem(x, index):
    """x[index] for an index of ints and slices, one axis at a time with np.take."""
    x = np.asarray(x)
    for axis in reversed(range(len(index))):   # last first: earlier axes keep their numbers
        i = index[axis]
        n = x.shape[axis]
        x = np.take(x, i % n if isinstance(i, int) else np.arange(n)[i], axis=axis)
    return x


def _scatter(positions, g, shape, dtype):
    """zeros(shape) with g added at the flat positions (repeats accumulate)."""
    size = int(np.prod(shape, dtype=np.int64))
    flat = np.bincount(np.ravel(positions), weights=np.ravel(g).astype(np.float64), minlength=size)
    return flat.astype(dtype).reshape(shape)


def getitem_grad(g, index, shape):
    positions = getitem(np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape), index)
    return _scatter(positions, g, shape, np.asarray(g).dtype)


def take(x, idx, axis):
    return np.asarray(x)[(slice(None),) * axis + (np.asarray(idx),)]


def take_grad(g, idx, axis, shape):
    positions = take(np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape), idx, axis)
    return _scatter(positions, g, shape, np.asarray(g).dtype)


def matmul(a, b):
    """numpy's matmul rules (1-d operands promoted, batch axes broadcast) as a broadcast
    product summed over the inner axis."""
    a, b = np.asarray(a), np.asarray(b)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    out = (a2[..., :, :, None] * b2[..., None, :, :]).sum(axis=-2)
    if b.ndim == 1:
        out = out[..., 0]
    if a.ndim == 1:
        out = out[..., 0, :] if b.ndim > 1 else out[..., 0]
    return out


def sign(x):
    x = np.asarray(x)
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


# -- Python scalars, one element at a time ---------------------------------------------------

def elementwise(fn):
    """A reference that applies fn to Python floats, one broadcast element at a time
    (double-precision scalar arithmetic and `math`, never numpy's ufuncs); fn also
    receives the op's params as keywords."""
    def ref(*xs, **params):
        arrays = np.broadcast_arrays(*[np.asarray(x, np.float64) for x in xs])
        out = np.empty(arrays[0].shape)
        for idx in np.ndindex(out.shape):
            out[idx] = fn(*(float(a[idx]) for a in arrays), **params)
        return out
    return ref


def erf(x):
    """The error function by its Taylor series, summed with math.fsum (|x| < 3), and by
    1 - erfc beyond: not math.erf, which the op's impl falls back to."""
    def one(v):
        if v != v:
            return v
        if abs(v) >= 3.0:
            return math.copysign(1.0 - math.erfc(abs(v)), v)
        terms, term, n = [], v, 0
        while True:
            terms.append(term / (2 * n + 1))
            n += 1
            term *= -v * v / n
            if abs(term) < 1e-18 * abs(v) and n > 3:
                break
        return 2.0 / math.sqrt(math.pi) * math.fsum(terms)
    return elementwise(one)(x)


def normalized(x, axes, eps):
    """(x - mean) / sqrt(var + eps) over `axes`, the statistics of each slice summed in
    Python with math.fsum (numpy's mean and var are what the op uses)."""
    x = np.asarray(x, np.float64)
    rows, k = _rows(x, tuple(axes))
    out = np.empty(rows.shape)
    for idx in np.ndindex(rows.shape[:-1]):
        vals = [float(v) for v in rows[idx]]
        mean = math.fsum(vals) / k
        var = math.fsum((v - mean) ** 2 for v in vals) / k
        out[idx] = [(v - mean) / math.sqrt(var + eps) for v in vals]
    kept = [i for i in range(x.ndim) if i not in axes]
    moved = out.reshape(tuple(x.shape[i] for i in kept) + tuple(x.shape[a] for a in axes))
    return np.transpose(moved, np.argsort(kept + list(axes)))
