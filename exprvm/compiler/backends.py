"""The compiler's side of kernel dispatch: which instructions run compiled kernels.

resolve(name) -> a KernelBackend, or None for plain numpy. The compiler asks
backend.lower(...) for every instruction; it answers with a Lowered record when
exprvm.kernels has a kernel for the op, dtype and memory layout, else None and
the instruction runs numpy (lowering.py).
"""
import numpy as np

from ..errors import BackendError
from .lowering import ALL, Lowered

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _contiguous(fake):
    return fake is not None and fake.flags.c_contiguous and fake.flags.aligned


class KernelBackend:
    """Host kernels of exprvm.kernels ("c"), bound to fixed buffers: one C call per instruction."""

    def __init__(self, name):
        from .. import kernels
        self.name = name
        self.kernels = kernels
        self.ops = set(kernels.KERNEL_OPS)

    def __repr__(self):
        return f"<KernelBackend {self.name}>"

    def lower(self, op, in_regs, fakes, out, params):
        if out.dtype not in FLOATS or out.nbytes == 0 or out.device != "cpu":
            return None
        if op in ("cross_entropy", "xent_grad"):
            return self._lower_xent(op, in_regs, fakes, out)
        if not all(r.shape == out.shape and r.dtype == out.dtype for r in in_regs):
            return None
        kernels = self.kernels
        if op in self.ops and len(in_regs) == 1:
            kop, bind, name = op, kernels.bind_unary, op
        elif op == "unary_grad" and params["op"] in self.ops:
            kop, bind, name = params["op"], kernels.bind_unary_grad, params["op"] + "_grad"
        elif op in ("unary_add", "unary_grad_add") and params["op"] in self.ops:
            grad = op == "unary_grad_add"
            kop, name = params["op"], params["op"] + ("_grad_add" if grad else "_add")

            def bind(kop, *arrays):    # bind_unary's call shape: (op, *ins, out, backend)
                *ins, o, backend = arrays
                return kernels.bind_fused(kop, ins, o, grad, backend)
        else:
            return None
        # Strided operands (a gate sliced out of a matrix) are gathered into scratch first:
        # one strided copy and one C call beat numpy's several strided passes.
        gather = tuple(i for i, f in enumerate(fakes) if f is not None and not _contiguous(f))
        tmps = tuple((out.shape, out.dtype) for _ in gather)
        backend = self.name

        def build(ins, o, t):
            ins = list(ins)
            pairs = []
            for i, buf in zip(gather, t):
                pairs.append((buf, ins[i]))
                ins[i] = buf
            call = bind(kop, *ins, o, backend)
            if not pairs:
                return call, ()

            def run():
                for buf, src in pairs:
                    np.copyto(buf, src)
                call()
            return run, ()
        return Lowered(build, tmps=tmps, inplace=ALL, kernel=backend, name=name)


    def _lower_xent(self, op, in_regs, fakes, out):
        z, t = in_regs
        if z.dtype != out.dtype or t.dtype != np.int64 or not all(_contiguous(f) for f in fakes):
            return None
        kernels = self.kernels

        def build(ins, o, tmps):
            return kernels.bind_xent(op, ins[0], ins[1], o, "c"), ()
        return Lowered(build, kernel="c")


def default_name():
    from .. import kernels
    return kernels.get_backend()


def resolve(name):
    """None (numpy only) or the backend object for `name` (None: exprvm.kernels' default)."""
    if name is None:
        name = default_name()
        if name == "cuda":      # host instructions still need a host backend
            name = "c" if available("c") else "numpy"
    if name == "numpy":
        return None
    if name == "cuda":
        raise BackendError("backend='cuda' is chosen per instruction: use TapeMachine(device='cuda') "
                           "or use_cuda_for=(...)")
    if name != "c":
        raise BackendError(f"unknown backend {name!r}; choose 'numpy' or 'c'")
    if not available("c"):
        from .. import kernels
        raise BackendError(f"backend 'c' is not available: {kernels.backends()['c'][1]}")
    return KernelBackend("c")


def available(name):
    from .. import kernels
    return bool(kernels.backends()[name][0])
