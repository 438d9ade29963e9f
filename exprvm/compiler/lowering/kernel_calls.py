"""Rows shared by the ops that run a kernel of exprvm.kernels on the C backend: one
bare C call per instruction over the instruction's fixed buffers."""
import numpy as np

from ... import kernels
from ...core import FLOAT_DTYPES
from .table import ALL, Lowered


def contiguous(layout):
    return layout is not None and layout.flags.c_contiguous and layout.flags.aligned


def same_shaped(req):
    """Do all operands have the output's shape and float dtype (what the kernels take)?"""
    return (req.dtype in FLOAT_DTYPES and req.nbytes > 0 and req.device == "cpu"
            and all(s == req.shape for s in req.in_shapes) and all(d == req.dtype for d in req.in_dtypes))


def c_elementwise(req, bind, name):
    """A row for a same-shaped elementwise kernel: bind(*ins, out, backend) -> thunk.

    Strided operands (a gate sliced out of a matrix) are gathered into scratch first:
    one strided copy and one C call beat numpy's several strided passes.
    """
    if not same_shaped(req):
        return None
    gather = tuple(i for i, f in enumerate(req.layouts) if f is not None and not contiguous(f))
    tmps = tuple((req.shape, req.dtype) for _ in gather)
    backend = req.backend
    build = gathering(gather, lambda ins, o: (bind(*ins, o, backend), ()))
    return Lowered(build, tmps=tmps, inplace=ALL, kernel=backend, name=name)


def gathering(gather, bind):
    """build(ins, out, tmps, *more) of a kernel bound by bind(ins, out, *more) -> (fn, args),
    whose operands at the positions `gather` (strided ones the kernel cannot read) are
    copied into the instruction's scratch buffers before each call."""
    def build(ins, out, tmps, *more):
        ins = list(ins)
        pairs = []
        for i, buf in zip(gather, tmps):
            pairs.append((buf, ins[i]))
            ins[i] = buf
        fn, args = bind(ins, out, *more)
        if not pairs:
            return fn, args

        def run():
            for buf, src in pairs:
                np.copyto(buf, src)
            fn(*args)
        return run, ()
    return build


def c_unary(op):
    """The C row of kernel op `op` itself."""
    return lambda req: c_elementwise(req, lambda x, o, b: kernels.bind_unary(op, x, o, b), op)


def c_unary_grad(req):
    op = req.params["op"]
    return c_elementwise(req, lambda x, a, g, o, b: kernels.bind_unary_grad(op, x, a, g, o, b), op + "_grad")


def c_xent(req):
    """cross_entropy / xent_grad on the C kernels: int64 targets, contiguous logits."""
    if (req.dtype not in FLOAT_DTYPES or req.in_dtypes[0] != req.dtype or req.in_dtypes[1] != np.int64
            or req.nbytes == 0 or not all(contiguous(f) for f in req.layouts)):
        return None
    op = req.op

    def build(ins, o, tmps):
        return kernels.bind_xent(op, ins[0], ins[1], o, "c"), ()
    return Lowered(build, kernel="c")
