"""The lowering table: how each op runs on the tape, one row per (op, backend).

A row is a function of a Request (the instruction's op, params, operand shapes,
dtypes and memory layouts) that returns a Lowered record, or None when it cannot
take this instance (a strided operand, an integer dtype, ...): the lookup then falls
back to the op's "numpy" row, then to a ufunc call (ops registered with `ufunc=`),
and last to the op's numpy impl, copied into the output (allocates every run).

    @lowers("softmax")                  # the numpy row
    def _softmax(req): ...
    @lowers("softmax", "c")             # the C backend's row, next to it
    def _softmax_c(req): ...

Lowered.build(ins, out, tmps) -> (fn, args) is called once, when a machine binds
the program to arrays; the run loop then calls fn(*args) and nothing else.
"""
import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import numpy as np

from ...core import OPS
from ...errors import CompileError

ALL = "all"  # every input position may share the output buffer

ROWS = {}    # (op, backend) -> row(req) -> Lowered or None


@dataclass
class Lowered:
    build: Callable             # build(ins, out, tmps) -> (fn, args)
    tmps: tuple = ()            # scratch buffers wanted: ((shape, dtype), ...)
    inplace: object = ()        # input positions the output may alias exactly, or ALL
    allocates: bool = False
    kernel: str = "numpy"
    name: str = ""              # shown in the disassembly instead of the op name
    flattens: tuple = ()        # input positions build() reshapes: they must reshape as views
    bodies: tuple = ()          # a loop or a branch: the nested Programs it runs (build None:
                                # machines/loops.py binds them)
    meta: Optional[dict] = None  # a loop's own description for its runner (offsets, counts)
    members: tuple = ()         # a value of several stored members (a fused group): each one's
                                # basic index in it; build(ins, out, tmps, {q: array}) then
                                # stores member q in that array instead (Instr.redirect)


@dataclass
class Request:
    """What a row sees of one instruction."""
    op: str
    params: dict
    in_shapes: list
    in_dtypes: list
    shape: tuple
    dtype: np.dtype
    layouts: list               # per input: an array with its real strides (no data), or None
    device: str = "cpu"
    backend: Optional[str] = None

    @property
    def nbytes(self):
        return math.prod(self.shape) * self.dtype.itemsize


def lowers(op, backend="numpy"):
    """Register the decorated function as the row of `op` on `backend`."""
    def register(fn):
        key = (op, backend)
        if key in ROWS:
            raise CompileError(f"lowering of {op!r} on {backend!r} is registered twice")
        ROWS[key] = fn
        return fn
    return register


def has_row(op, backend):
    return (op, backend) in ROWS


def lower(req):
    """The Lowered record for an instruction (see the module docstring for the order)."""
    if req.backend not in (None, "numpy"):
        row = ROWS.get((req.op, req.backend))
        if row is not None:
            low = row(req)
            if low is not None:
                return low
    row = ROWS.get((req.op, "numpy"))
    if row is not None:
        low = row(req)
        if low is not None:
            return low
    opdef = OPS.get(req.op)
    if opdef is None:
        raise CompileError(f"no lowering for op {req.op!r}")
    if opdef.ufunc is not None and not req.params:
        return Lowered(ufunc_call(opdef.ufunc), inplace=ALL if opdef.elementwise else ())
    return generic(req.op, req.params)


def ufunc_call(uf):
    """build() of a ufunc writing into the output buffer."""
    if uf in (np.maximum, np.minimum):  # NOTE: positional out= is deprecated for these two
        return lambda ins, out, tmps: (partial(uf, out=out), tuple(ins))
    return lambda ins, out, tmps: (uf, (*ins, out))


def seq(fn):
    """build() of a kernel written as a Python function fn(*ins, out, *tmps)."""
    return lambda ins, out, tmps: (fn, (*ins, out, *tmps))


def generic(op, params):
    """Any op: its numpy impl, copied into the output (allocates every run)."""
    impl = OPS[op].impl

    def build(ins, out, tmps):
        def run(*xs):
            np.copyto(out, impl(*xs, **params), casting="unsafe")
        return run, tuple(ins)
    return Lowered(build, allocates=True)


# -- layouts -----------------------------------------------------------------------------

_FAKES = {}


def fake_array(shape, dtype):
    """An array with real strides and no real memory, to ask numpy whether a view exists."""
    # NOTE: never read from it: only its shape and strides are real.
    key = (shape, dtype)
    f = _FAKES.get(key)
    if f is None:
        if len(_FAKES) > 4096:
            _FAKES.clear()
        f = _FAKES[key] = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape,
                                                          _c_strides(shape, np.dtype(dtype).itemsize))
    return f


def _c_strides(shape, itemsize):
    out, acc = [], itemsize
    for s in reversed(shape):
        out.append(acc)
        acc *= max(int(s), 1)
    return tuple(reversed(out))
