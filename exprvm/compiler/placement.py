"""Device placement: which instructions run on the GPU, and which leaves live there.

place(live, device, use_cuda_for) decides from ops, dtypes and shapes alone -- no GPU
is needed to plan, so the placement is testable anywhere:

    device="cuda"            every op the CUDA lowering rows accept (lowering/cuda.py is
                             the one list of what the device runs: matmul on cuBLAS,
                             broadcasting elementwise ops, reductions, softmax and
                             cross-entropy, take and its scatter, concat, copies ...);
                             parameters and constants read on the device live there
                             (uploaded once, kept between runs), and inputs read on the
                             device are moved there first thing
    use_cuda_for=("tanh",)   only those elementwise kernel ops; leaves stay on the host

The result is a Placement: a dict {id(Val): "cuda"} of the op Vals to run on the device
(what the emitter reads to choose each instruction's device), with three more fields:

    leaves   {id(Val): "cuda"} of the param and const Vals to keep on the device
    feeds    the input Vals the device reads, in order: their to_device opens the program
    grads    where the gradients of device parameters stay ("cuda", for the device
             solvers of exprvm.train.device; None: on the host)

so that a training step moves only its feeds in and its loss out. The compiler then
inserts `to_device` / `to_host` transfers exactly where a value still crosses between
host and device (each value crosses at most once per direction).
"""
from ..core import FLOAT_DTYPES
from ..errors import BackendError
from ..kernels.reference import KERNEL_OPS
from .lowering import ROWS, Request
from .lowering.cuda import EQUAL_SHAPE, VIEWS

# what use_cuda_for may name: the elementwise kernels (their gradients follow them)
OFFLOADABLE = set(KERNEL_OPS) | set(EQUAL_SHAPE) | {"unary_grad"}


class Placement(dict):
    """{id(Val): "cuda"} for the op Vals on the device, plus leaves, feeds and grads
    (see the module docstring)."""

    def __init__(self, ops=(), leaves=None, feeds=(), grads=None):
        super().__init__(ops)
        self.leaves = dict(leaves or {})
        self.feeds = list(feeds)
        self.grads = grads

    def device_of(self, v):
        """Where Val v's value is made or kept: "cuda" or "cpu"."""
        return self.get(id(v)) or self.leaves.get(id(v)) or "cpu"


def device_request(v):
    """The lowering Request of op Val v on the device, with no layouts (shapes only)."""
    return Request(v.op, v.params, [x.shape for x in v.ins], [x.dtype for x in v.ins],
                   v.shape, v.dtype, None, device="cuda", backend="cuda")


def cuda_op(v):
    """The op of Val v if its CUDA row takes it (floats, or a view of integer ids; no empty
    arrays), else None."""
    if v.kind != "op" or 0 in v.shape:
        return None
    if v.dtype not in FLOAT_DTYPES and not (v.op in VIEWS and v.dtype.itemsize in (4, 8)):
        return None
    if any(0 in x.shape for x in v.ins):
        return None
    row = ROWS.get((v.op, "cuda"))
    if row is None or row(device_request(v)) is None:
        return None
    return v.op


def place(live, device=None, use_cuda_for=()):
    """The Placement of the Vals `live` (topological order)."""
    if device not in (None, "cpu", "cuda"):
        raise BackendError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
    wanted = set(use_cuda_for or ())
    unknown = wanted - OFFLOADABLE
    if unknown:
        raise BackendError(f"use_cuda_for: no CUDA kernels for {sorted(unknown)}; it names the "
                           f"elementwise kernels {sorted(OFFLOADABLE - {'unary_grad'})} "
                           "(device='cuda' runs every op the device has a kernel for)")
    if device != "cuda" and not wanted:
        return Placement()
    ops = {}
    for v in live:
        op = cuda_op(v)
        if op is None:
            continue
        name = v.params["op"] if op == "unary_grad" else op
        if device == "cuda" or name in wanted or op in wanted:
            ops[id(v)] = "cuda"
    if device != "cuda":
        return Placement(ops)
    on_device = set()               # leaves some device instruction reads
    for v in live:
        if id(v) in ops:
            on_device.update(id(x) for x in v.ins if x.kind != "op")
    leaves, feeds = {}, []
    for v in live:
        if v.kind == "op" or id(v) not in on_device:
            continue
        if v.kind in ("param", "const"):
            leaves[id(v)] = "cuda"
        elif v.kind == "input":
            feeds.append(v)
    return Placement(ops, leaves, feeds, grads="cuda")


def require_cuda():
    from .. import cuda
    if not cuda.is_available():
        raise BackendError(f"device 'cuda' is not available: {cuda.unavailable_reason()}; "
                           "compile without running with TapeMachine.compile(..., device='cuda')")
    return cuda
