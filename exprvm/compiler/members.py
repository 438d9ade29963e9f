"""What may join a fused group: the member test the fusion pass (fusion.py) and the slice
pushing before it (slices.py) share.

In: one IR Val. Out: its class, (shape, float dtype), equal for Vals that may share one
generated kernel, or None. An operand joins as "full" (the group's shape), a "row"
broadcast along the leading axes, a "col" (one value per row) or a "scalar" (a size-1
constant is written into the kernel's source as a literal).
"""
import math

import numpy as np

from ..core import FLOAT_DTYPES
from .lowering.scalar import SCALAR, fusable, result_kind

BOOL = np.dtype(bool)
# NOTE: asked for every Val: the ops that may join a group when they have no params, and
# their result kind (SCALAR is complete once lowering.scalar is imported)
_PLAIN_KINDS = {op: result_kind(op) for op in SCALAR if fusable(op, {})}


def size(shape):
    """The element count of shape."""
    return math.prod(shape)    # NOTE: not np.prod: a Python call per use, on the compile path


def broadcast_kind(xshape, shape):
    """How an operand of xshape broadcasts over a group of `shape`, or None."""
    if tuple(xshape) == tuple(shape):
        return "full"
    if size(xshape) == 1 and len(xshape) <= len(shape):
        return "scalar"
    if shape and xshape and xshape[-1] == shape[-1] and all(d == 1 for d in xshape[:-1]) \
            and len(xshape) <= len(shape):
        return "row"
    if len(shape) >= 2 and tuple(xshape) == tuple(shape[:-1]) + (1,):
        return "col"
    return None


def literal(x, t):
    """The Python value of a size-1 constant of dtype t (or bool), else None."""
    if x.kind != "const" or x.value is None or x.value.size != 1 or x.dtype not in (t, BOOL):
        return None
    v = x.value.reshape(-1)[0]
    return bool(v) if x.dtype == BOOL else float(v)


def member_class(v, keep, roots):
    """(shape, float dtype) of an op that may join a group, else None."""
    # NOTE: runs for every Val: `0 in shape` is an empty shape's test without a call
    if v.kind != "op" or 0 in v.shape:
        return None
    kind = _PLAIN_KINDS.get(v.op) if not v.params else result_kind(v.op) if fusable(v.op, v.params) else None
    if kind is None:
        return None
    shape = v.shape
    if kind == "bool":
        floats = [x.dtype for x in v.ins if x.dtype != BOOL]
        if v.dtype != BOOL or id(v) in keep or id(v) in roots or len(set(floats)) != 1:
            return None
        t = floats[0]
        if t not in FLOAT_DTYPES:
            return None
    else:
        t = v.dtype
        if t not in FLOAT_DTYPES:
            return None
    for pos, x in enumerate(v.ins):
        d = x.dtype
        if d is not t and d != t:       # NOTE: identity first: the usual case, with no comparison call
            if d != BOOL or not (v.op == "where" and pos == 0) and literal(x, t) is None:
                return None
        elif x.shape == shape:      # NOTE: the common case first: an operand of the group's shape
            continue
        if literal(x, t) is None and broadcast_kind(x.shape, shape) is None:
            return None
    return (shape, t)       # NOTE: the dtype itself: dtype.str makes a new string per call
