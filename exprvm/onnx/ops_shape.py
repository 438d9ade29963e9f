"""Import rows: constants, shapes and data movement (reshape, transpose, concat, slice,
gather, expand, pad, split, tile).

Shape arithmetic (Shape -> Gather -> Concat -> Reshape, as exporters write it) is known
at import time when every shape is static, so it folds into plain numpy values and the
graph keeps only the data movement itself. Shape-like inputs (a Reshape's shape, a
Slice's axes) must be known then: the checks refuse a model computing them at run time.
A Slice's starts and ends may be computed at run time (a loop body's x[i:i+1]) when
ends - starts is known at import: a Gather of that many rows from the start.
"""
import numpy as np

from .. import ops as ev
from ..core import Node
from .ops_math import broadcast_shapes, known, opt
from .table import imports


def ints(v):
    return [int(i) for i in np.asarray(v).reshape(-1).tolist()]


def axis_of(b, axis, rank, what="axis"):
    """A possibly negative axis as a non-negative one, refused when out of range."""
    if not -rank <= axis < max(rank, 1):
        b.fail(f"{what} {axis} is out of range for a {rank}-d input")
    return axis % max(rank, 1)


def reshaped(x, shape):
    return np.reshape(x, shape) if known(x) else ev.reshape(x, shape)


# -- constants and shapes ---------------------------------------------------------------------

@imports("Constant", attrs={"value": ("t", None), "value_float": ("f", None), "value_floats": ("floats", None),
                            "value_int": ("i", None), "value_ints": ("ints", None),
                            "value_string": ("s", None), "value_strings": ("strings", None)},
         notes="string and sparse values")
def constant(b, ins, at):
    given = [k for k, v in at.items() if v is not None]
    if len(given) != 1:
        b.fail(f"a Constant needs exactly one value attribute, got {given or 'none'}")
    k = given[0]
    if k in ("value_string", "value_strings"):
        b.refuse(f"a string constant ({k})", k)
    if k == "value":
        return at[k]
    return np.asarray(at[k], np.float32 if k.startswith("value_float") else np.int64)


@imports("Shape", attrs={"start": ("i", 0), "end": ("i", None)})
def shape(b, ins, at):
    return np.array(tuple(ins[0].shape)[at["start"]:at["end"]], np.int64)


@imports("Size")
def size(b, ins, at):
    return np.array(int(np.prod(ins[0].shape, dtype=np.int64)), np.int64)


@imports("ConstantOfShape", attrs={"value": ("t", None)}, static=(0,))
def constant_of_shape(b, ins, at):
    value = at["value"] if at["value"] is not None else np.zeros(1, np.float32)
    if value.size != 1:
        b.fail(f"value must hold one element, got shape {value.shape}")
    return np.full(b.limit(ints(ins[0])), value.reshape(()), value.dtype)


@imports("Identity")
def identity(b, ins, at):
    return ins[0]


@imports("Dropout", attrs={"seed": ("i", 0)}, static=(1, 2), outputs=2, notes="training_mode=1")
def dropout(b, ins, at):
    x, training = ins[0], opt(ins, 2)
    if training is not None and bool(np.asarray(training).reshape(-1)[0]):
        b.refuse("Dropout in training mode (training_mode=1)", "training_mode")
    if len(b.step.proto.output) < 2 or not b.step.proto.output[1]:
        return x
    return x, np.ones(b.limit(x.shape), np.bool_)    # NOTE: in inference every element is kept


# -- reshapes -------------------------------------------------------------------------------

@imports("Reshape", attrs={"allowzero": ("i", 0)}, static=(1,))
def reshape(b, ins, at):
    x, want = ins[0], ints(ins[1])
    shape = list(want)
    if not at["allowzero"]:
        for i, d in enumerate(want):
            if d == 0:
                if i >= len(x.shape):
                    b.fail(f"shape {want} copies axis {i} (a 0) of a {len(x.shape)}-d input")
                shape[i] = x.shape[i]
    size = int(np.prod(x.shape, dtype=np.int64))
    if shape.count(-1) > 1 or any(d < -1 for d in shape):
        b.fail(f"shape {want} is not a valid target shape")
    if -1 in shape:
        rest = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        if rest == 0 or size % rest:
            b.fail(f"cannot reshape {tuple(x.shape)} to {want}")
        shape[shape.index(-1)] = size // rest
    if int(np.prod(shape, dtype=np.int64)) != size:
        b.fail(f"cannot reshape {tuple(x.shape)} ({size} elements) to {want}")
    return reshaped(x, tuple(shape))


@imports("Flatten", attrs={"axis": ("i", 1)})
def flatten(b, ins, at):
    x = ins[0]
    r = len(x.shape)
    axis = at["axis"]
    if not -r <= axis <= r:
        b.fail(f"axis {axis} is out of range for a {r}-d input")
    axis = axis + r if axis < 0 else axis
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    return reshaped(x, (outer, int(np.prod(x.shape[axis:], dtype=np.int64))))


@imports("Squeeze", attrs={"axes": ("ints", None)}, static=(1,))
def squeeze(b, ins, at):
    x = ins[0]
    axes = at["axes"] if at["axes"] is not None else opt(ins, 1)
    r = len(x.shape)
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    axes = {axis_of(b, a, r) for a in ints(axes)}
    if any(x.shape[a] != 1 for a in axes):
        b.fail(f"cannot squeeze axes {sorted(axes)} of shape {tuple(x.shape)}: not all have length 1")
    return reshaped(x, tuple(d for i, d in enumerate(x.shape) if i not in axes))


@imports("Unsqueeze", attrs={"axes": ("ints", None)}, static=(1,))
def unsqueeze(b, ins, at):
    x = ins[0]
    axes = at["axes"] if at["axes"] is not None else opt(ins, 1)
    if axes is None:
        b.fail("Unsqueeze needs axes")
    r = len(x.shape) + len(ints(axes))
    axes = sorted(axis_of(b, a, r) for a in ints(axes))
    if len(set(axes)) != len(axes):
        b.fail(f"axes {axes} repeat")
    shape, rest = [], iter(x.shape)
    for i in range(r):
        shape.append(1 if i in axes else next(rest))
    return reshaped(x, tuple(shape))


@imports("Transpose", attrs={"perm": ("ints", None)})
def transpose(b, ins, at):
    x = ins[0]
    perm = at["perm"] if at["perm"] is not None else list(reversed(range(len(x.shape))))
    if sorted(perm) != list(range(len(x.shape))):
        b.fail(f"perm {perm} is not a permutation of {len(x.shape)} axes")
    return np.transpose(x, perm) if known(x) else ev.transpose(x, tuple(perm))


# -- joining and cutting -----------------------------------------------------------------

@imports("Concat", attrs={"axis": ("i", 0)})
def concat(b, ins, at):
    xs = [v for v in ins if v is not None]
    if not xs:
        b.fail("Concat needs at least one input")
    axis = axis_of(b, at["axis"], len(xs[0].shape))
    if known(*xs):
        return np.concatenate(xs, axis=axis)
    xs = [v for v in xs if v.shape[axis] != 0] or xs[:1]   # NOTE: an empty piece adds nothing
    return xs[0] if len(xs) == 1 else ev.concat(xs, axis=axis)


def python_slice(start, end, step, n):
    """ONNX's clamped slice of an axis of length n, as a Python slice numpy reads the same."""
    start, stop, step = slice(start, end, step).indices(n)
    if not len(range(start, stop, step)):
        return slice(0, 0, 1)
    return slice(start, None if stop < 0 else stop, step)


def _offset(v):
    """(base, offset) with v == base + offset whatever value the node base takes: through
    reshapes, integer casts and additions of constants (base None: v is known)."""
    off = np.zeros((), np.int64)
    while isinstance(v, Node):
        x = v.inputs[0] if v.inputs else None
        if v.op in ("reshape", "astype") and v.dtype.kind in "iu" and x.dtype.kind in "iu":
            v = x
        elif v.op in ("add", "sub") and v.inputs[1].op == "const":
            c = np.asarray(v.inputs[1].value).reshape(-1)
            off, v = (off + c if v.op == "add" else off - c), x
        elif v.op == "add" and x.op == "const":
            off, v = off + np.asarray(x.value).reshape(-1), v.inputs[1]
        else:
            return v, off
    return None, off


def _dynamic_slice(b, x, starts, ends, axes, steps):
    """Slice with starts and ends computed at run time, ends - starts known at import."""
    k = int(np.prod(starts.shape))
    (sb, so), (eb, eo) = _offset(starts), _offset(ends)
    if sb is None or sb is not eb or len(starts.shape) != 1 or tuple(ends.shape) != (k,) or \
            (steps is not None and not known(steps)) or (axes is not None and not known(axes)):
        b.refuse("a Slice whose starts and ends are computed at run time, unless ends - starts is known "
                 "at import,")
    sizes = np.broadcast_to(np.asarray(eo) - np.asarray(so), (k,))
    axes = ints(axes) if axes is not None else list(range(k))
    if any(st != 1 for st in (ints(steps) if steps is not None else [])) or len(axes) != k:
        b.refuse("a Slice with steps other than 1, or starts and ends computed at run time,")
    starts = ev.astype(starts, np.int64) if starts.dtype != np.int64 else starts
    for j, a in enumerate(axes):
        a = axis_of(b, a, len(x.shape))
        n = x.shape[a]
        s = ev.getitem(starts, (j,))
        # NOTE: a start past either end is not clamped as ONNX does: the Gather raises at run time
        s = ev.where(s < 0, s + n, s)
        x = ev.take(x, s + np.arange(max(int(sizes[j]), 0), dtype=np.int64), axis=a)
    return x


@imports("Slice", static=(3, 4), bind=(1, 2), notes="starts and ends computed at run time, unless ends - "
                                                   "starts is known at import (then a Gather)")
def slice_(b, ins, at):
    if not known(ins[1], ins[2]):
        return _dynamic_slice(b, ins[0], ins[1], ins[2], opt(ins, 3), opt(ins, 4))
    x, starts, ends = ins[0], ints(ins[1]), ints(ins[2])
    r = len(x.shape)
    axes = ints(opt(ins, 3)) if opt(ins, 3) is not None else list(range(len(starts)))
    steps = ints(opt(ins, 4)) if opt(ins, 4) is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        b.fail("starts, ends, axes and steps differ in length")
    index = [slice(None)] * r
    for a, s, e, st in zip(axes, starts, ends, steps):
        a = axis_of(b, a, r)
        if st == 0:
            b.fail("a step of 0")
        index[a] = python_slice(s, e, st, x.shape[a])
    return x[tuple(index)] if known(x) else ev.getitem(x, tuple(index))


@imports("Split", attrs={"axis": ("i", 0), "split": ("ints", None), "num_outputs": ("i", None)},
         static=(1,), outputs=1 << 16)
def split(b, ins, at):
    x = ins[0]
    axis = axis_of(b, at["axis"], len(x.shape))
    n = x.shape[axis]
    parts = at["split"] if at["split"] is not None else opt(ins, 1)
    k = len(b.step.proto.output)
    if parts is not None:
        sizes = ints(parts)
    else:
        k = at["num_outputs"] or k
        each = -(-n // k)
        sizes = [min(each, n - i * each) for i in range(k)]
    if sum(sizes) != n or any(s < 0 for s in sizes):
        b.fail(f"split sizes {sizes} do not add up to axis {axis}'s length {n}")
    lead, out, start = (slice(None),) * axis, [], 0
    for s in sizes:
        index = lead + (slice(start, start + s),)
        out.append(x[index] if known(x) else ev.getitem(x, index))
        start += s
    return tuple(out)


@imports("Gather", attrs={"axis": ("i", 0)})
def gather(b, ins, at):
    x, idx = ins
    axis = axis_of(b, at["axis"], len(x.shape))
    if idx.dtype.kind not in "iu":
        b.fail(f"indices must be integers, got {idx.dtype}")
    b.limit(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1:]))
    if known(idx):
        n = x.shape[axis]
        idx = np.asarray(idx, np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            b.fail(f"indices out of range [-{n}, {n}): min {idx.min()}, max {idx.max()}")
        idx = np.where(idx < 0, idx + n, idx)
        if known(x):
            return np.take(x, idx, axis=axis)
    else:   # NOTE: negative indices count from the end; exact in float64 below 2**53
        f = ev.astype(idx, np.float64)
        idx = ev.astype(ev.where(f < 0.0, f + float(x.shape[axis]), f), np.int64)
    return ev.take(x, idx, axis=axis)


@imports("Expand", static=(1,))
def expand(b, ins, at):
    x = ins[0]
    shape = broadcast_shapes(b, tuple(x.shape), tuple(ints(ins[1])))
    return np.broadcast_to(x, shape).copy() if known(x) else ev.broadcast_to(x, shape)


@imports("Tile", static=(1,))
def tile(b, ins, at):
    x, reps = ins[0], ints(ins[1])
    if len(reps) != len(x.shape) or any(r < 0 for r in reps):
        b.fail(f"repeats {reps} do not fit a {len(x.shape)}-d input")
    b.limit(tuple(r * d for r, d in zip(reps, x.shape)))
    if known(x):
        return np.tile(x, reps)
    # NOTE: x as (1, d0, 1, d1, ...) broadcast to (r0, d0, r1, d1, ...): row k*d0 + i is x[i]
    spread = tuple(v for d in x.shape for v in (1, d))
    wide = tuple(v for r, d in zip(reps, x.shape) for v in (r, d))
    return ev.reshape(ev.broadcast_to(ev.reshape(x, spread), wide), tuple(r * d for r, d in zip(reps, x.shape)))


@imports("Range", static=(0, 1, 2))
def range_(b, ins, at):
    start, limit, delta = (np.asarray(v).reshape(()) for v in ins)
    if delta == 0:
        b.fail("a delta of 0")
    n = max(int(np.ceil((limit - start) / delta)), 0)
    b.limit((n,))
    return (start + delta * np.arange(n)).astype(start.dtype)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


@imports("Pad", attrs={"mode": ("s", "constant")}, static=(1, 2, 3),
         check=lambda at: None if at["mode"] in _PAD_MODES else ("mode", repr(at["mode"])))
def pad(b, ins, at):
    x, pads = ins[0], ints(ins[1])
    value = opt(ins, 2)
    r = len(x.shape)
    axes = [axis_of(b, a, r) for a in ints(opt(ins, 3))] if opt(ins, 3) is not None else list(range(r))
    if len(pads) != 2 * len(axes):
        b.fail(f"pads {pads} do not fit {len(axes)} axes")
    widths, crop = [(0, 0)] * r, [slice(None)] * r
    for k, a in enumerate(axes):
        lo, hi = pads[k], pads[k + len(axes)]
        widths[a] = (max(lo, 0), max(hi, 0))
        n = x.shape[a] + max(lo, 0) + max(hi, 0)
        crop[a] = slice(-min(lo, 0), n + min(hi, 0))   # NOTE: negative pads crop
    b.limit(tuple(x.shape[a] + widths[a][0] + widths[a][1] for a in range(r)))
    fill = 0.0 if value is None or np.asarray(value).size == 0 else np.asarray(value).reshape(-1)[0]
    mode = _PAD_MODES[at["mode"]]
    if known(x):
        kw = {"constant_values": fill} if mode == "constant" else {}
        return np.pad(x, widths, mode=mode, **kw)[tuple(crop)]
    y = ev.pad(x, widths, mode=mode, constant_values=float(fill)) if any(w != (0, 0) for w in widths) else x
    return y if all(c == slice(None) for c in crop) else ev.getitem(y, tuple(crop))


@imports("Trilu", attrs={"upper": ("i", 1)}, static=(1,))
def trilu(b, ins, at):
    x, k = ins[0], opt(ins, 1)
    if len(x.shape) < 2:
        b.fail(f"input {tuple(x.shape)} must be at least 2-d")
    k = 0 if k is None else ints(k)[0]
    rows, cols = x.shape[-2:]
    keep = (np.triu if at["upper"] else np.tril)(np.ones((rows, cols), np.bool_), k)
    if known(x):
        return np.where(keep, x, np.zeros((), np.asarray(x).dtype))
    # NOTE: a gather from the rows with one zero appended (any dtype: exprvm's where and
    # arithmetic are float only): element k is itself where kept, else the zero
    lead = tuple(x.shape[:-2])
    flat = ev.reshape(x, lead + (rows * cols,))
    padded = ev.concat([flat, np.zeros(lead + (1,), x.dtype)], axis=len(lead))
    index = np.where(keep.reshape(-1), np.arange(rows * cols), rows * cols)
    return ev.reshape(ev.take(padded, index, axis=len(lead)), tuple(x.shape))
