"""The fused elementwise op: its record (compiler-made, like the other internal ops) and
its lowering rows, numpy and C side by side.

    fused(*inputs, group=FusedGroup)    every member of a group of elementwise ops over one
                                        shape, in one instruction (compiler/fusion.py makes
                                        them); its value is the one stored member, or the k
                                        stored members stacked, (k,) + shape, or side by side
                                        along the last axis (layout "concat": the layout of
                                        a concatenation the program reads)

FusedGroup is plain data: the members in order, each an op, its params and its operands
(("in", i) an input, ("v", j) an earlier member, ("lit", x) a scalar constant), and which
members are stored. It holds no dtype: one group runs in float32 or float64 alike.

numpy row: every member's numpy impl in order (the per-op path; allocates). C row: one
generated kernel (exprvm/kernels/generated.py) over the operands in place; an operand
whose layout a kernel cannot read (a transposed view) is gathered into scratch first.
"""
import functools
import math
from dataclasses import dataclass, field

import numpy as np

from ...core import FLOAT_DTYPES, OPS, Row, defop, same_float_dtype
from ...errors import BackendError, ShapeError
from ...kernels import generated
from .. import threads
from .scalar import CType, formula, result_kind
from .kernel_calls import gathering
from .table import Lowered, lowers

HEAVY = {"exp", "expm1", "log1p", "log", "tanh", "sigmoid", "softplus", "sin", "cos", "pow"}


@dataclass(frozen=True)
class FusedGroup:
    """See the module docstring. inputs: per input, (kind, is_bool), kind as in
    exprvm.kernels.generated.KINDS relative to `shape`. sites: per member, how the
    disassembly names it (not part of the group's identity)."""
    shape: tuple
    inputs: tuple
    members: tuple          # ((op, params as sorted (key, value) pairs, operand refs), ...)
    outputs: tuple
    layout: str = "stack"   # how the stored members lie in the value (generated.out_shape)
    sites: tuple = field(default=(), compare=False)

    def __hash__(self):
        # NOTE: worked out once per group: a big compile hashes each of its groups at every
        # kernel lookup, and the members are nested tuples. (Kept in the instance's dict, so
        # never pickle a group across processes: str hashes differ between them.)
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.shape, self.inputs, self.members, self.outputs, self.layout))
            object.__setattr__(self, "_hash", h)
        return h

    @property
    def out_shape(self):
        return generated.out_shape(self.shape, len(self.outputs), self.layout)

    def output_index(self, q):
        """The basic index of stored member q in the value (a view)."""
        if len(self.outputs) == 1:
            return (Ellipsis,)
        if self.layout == "concat":
            c = self.shape[-1]
            return (slice(None),) * (len(self.shape) - 1) + (slice(q * c, (q + 1) * c),)
        return (q,)

    def evaluate(self, arrays, dtype=None):
        """The per-op numpy path: each member's numpy impl, in order."""
        dtype = dtype or same_float_dtype(*[np.asarray(a) for a, (_, b) in zip(arrays, self.inputs) if not b])
        vals = []
        for op, params, refs in self.members:
            args = [arrays[r[1]] if r[0] == "in" else vals[r[1]] if r[0] == "v"
                    else np.asarray(r[1], bool if isinstance(r[1], bool) else dtype) for r in refs]
            vals.append(np.asarray(OPS[op].impl(*args, **dict(params))))
        outs = [np.broadcast_to(vals[j], self.shape) for j in self.outputs]
        if len(outs) == 1:
            return np.array(outs[0], dtype)
        axis = -1 if self.layout == "concat" else 0
        return (np.concatenate if axis == -1 else np.stack)(outs, axis).astype(dtype, copy=False)

    def kernel(self, dtype):
        """The generated.Kernel of this group in `dtype` (one object per group and dtype, so
        that its source is written and hashed once however often it is compiled)."""
        return _kernel_of(self, np.dtype(dtype))

    def _make_kernel(self, dtype):
        t = CType(dtype)
        stmts = []
        for op, params, refs in self.members:
            args = [f"a{r[1]}" if r[0] == "in" else f"v{r[1]}" if r[0] == "v" else
                    ("1" if r[1] else "0") if isinstance(r[1], bool) else t.lit(r[1]) for r in refs]
            stmts.append((result_kind(op), formula(op, args, t, dict(params))))
        return generated.Kernel(t.dtype, self.inputs, tuple(stmts), self.outputs)

    def work(self):
        """Elements times a rough per-element cost (the thread policy's input)."""
        per = 0
        for op, params, _ in self.members:
            # NOTE: params (a kernel op's name, "op") only looked at where there are any
            per += 4 if op in HEAVY or (params and dict(params).get("op") in HEAVY) else 1
        return math.prod(self.shape) * per

    def describe(self):
        """Member ops and the lines that built them, for the disassembly."""
        ops = " ".join(op if op != "unary_grad" else dict(p)["op"] + "_grad" for op, p, _ in self.members)
        where = sorted(set(self.sites), key=self.sites.index) if self.sites else []
        shown = ", ".join(where[:6]) + (f", ... ({len(where)} lines)" if len(where) > 6 else "")
        return f"fused {len(self.members)}: {ops}" + (f"  [{shown}]" if shown else "")


@functools.lru_cache(maxsize=4096)
def _kernel_of(group, dtype):
    return group._make_kernel(dtype)


def _rule(*xs, group):
    if len(xs) != len(group.inputs):
        raise ShapeError(f"fused: {len(group.inputs)} inputs expected, got {len(xs)}")
    floats = [x for x, (_, b) in zip(xs, group.inputs) if not b]
    dt = same_float_dtype(*floats) if floats else np.dtype(np.float64)
    return group.out_shape, dt


def _impl(*xs, group):
    return group.evaluate([np.asarray(x) for x in xs])


# The test row's group: tanh(a + b) * c and a + b, over a (3, 4), a row b and a scalar c.
EXAMPLE = FusedGroup(shape=(3, 4), inputs=(("full", False), ("row", False), ("scalar", False)),
                     members=(("add", (), (("in", 0), ("in", 1))), ("tanh", (), (("v", 0),)),
                              ("mul", (), (("v", 1), ("in", 2))), ("mul", (), (("v", 2), ("lit", 2.0)))),
                     outputs=(3, 0))

fused = defop("fused", _impl, _rule, variadic=True, doc="elementwise ops fused into one kernel",
              row=Row((("f", (3, 4), -2.0, 2.0), ("f", (4,), -1.0, 1.0), ("f", (), 0.5, 1.5)),
                      {"group": EXAMPLE}, grad=False,
                      ref=lambda a, b, c, group: np.stack([np.tanh(a + b) * c * 2, a + b])))


def _rows_in_place(f, kind, shape):
    """Can the kernel read an operand laid out as fake array f in place? (The two common
    layouts, contiguous and a matrix's column block, answered without asking numpy.)"""
    if f.flags.c_contiguous:
        return True
    if kind == "full" and f.ndim == 2 and f.strides[1] == f.itemsize and f.strides[0] >= 0 \
            and f.strides[0] % f.itemsize == 0 and f.strides[0] >= f.shape[1] * f.itemsize:
        return True
    return generated.rows_layout(f, kind, shape)


@lowers("fused")
def _fused_numpy(req):
    group = req.params["group"]
    dtype = req.dtype

    def build(ins, out, tmps, members=None):
        moved = [(a, group.output_index(q)) for q, a in (members or {}).items()]

        def run(*xs):
            np.copyto(out, group.evaluate(xs, dtype), casting="unsafe")
            for a, index in moved:
                np.copyto(a, out[index])
        return run, tuple(ins)
    return Lowered(build, allocates=True, name="fused", members=_members(group))


def _members(group):
    n = len(group.outputs)
    return tuple(group.output_index(q) for q in range(n)) if n > 1 else ()


@lowers("fused", "c")
def _fused_c(req):
    group = req.params["group"]
    if req.dtype not in FLOAT_DTYPES or req.device != "cpu" or not generated.available()[0]:
        return None
    try:
        kernel = group.kernel(req.dtype)
        generated.prepare([kernel])
    except BackendError:
        return None
    # NOTE: an operand numpy cannot hand over as evenly spaced rows (a transposed view) is
    # copied into scratch before each call; the kernel reads everything else in place.
    gather = tuple(i for i, (f, (kind, _)) in enumerate(zip(req.layouts, group.inputs))
                   if f is not None and not _rows_in_place(f, kind, group.shape))
    tmps = tuple((req.in_shapes[i], req.in_dtypes[i]) for i in gather)
    nthreads = threads.current().fused_threads(group.work())
    inplace = tuple(i for i, (kind, b) in enumerate(group.inputs)
                    if len(group.outputs) == 1 and kind == "full" and not b)

    build = gathering(gather, lambda ins, out, members=None: generated.bind_call(
        kernel, ins, out, group.shape, group.layout, nthreads, members))
    return Lowered(build, tmps=tmps, inplace=inplace, kernel="c", name="fused", members=_members(group))
