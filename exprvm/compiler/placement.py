"""Device placement: which instructions run on the GPU, and their CUDA kernels.

place(live, device, use_cuda_for) decides per Val, from the op, dtype and shapes
alone -- no GPU is needed to plan, so the placement is testable anywhere:

    device="cuda"            every instruction that has a CUDA kernel
    use_cuda_for=("tanh",)   only those ops (still only where a kernel exists)

The compiler then inserts `to_device` / `to_host` transfers exactly where a
value crosses between host and device (each value crosses at most once per
direction), so consecutive device instructions keep their values on the GPU.
Leaves live on the host; results come back to the host at the end of a run.
"""
import numpy as np

from ..errors import BackendError
from ..kernels.reference import BINARY_OPS, KERNEL_OPS
from .lowering import ALL, Lowered

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# exprvm op names of the element-wise binary kernels
BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div"}
assert set(BINARY.values()) <= set(BINARY_OPS)


def cuda_op(v):
    """The CUDA kernel name for Val v (op, "unary_grad:<op>" ...), or None if it has none."""
    if v.kind != "op" or v.dtype not in FLOATS or not v.shape or 0 in v.shape:
        return None
    if any(x.shape != v.shape or x.dtype != v.dtype for x in v.ins):
        return None         # NOTE: the CUDA kernels take equal shapes only (no broadcasting)
    if v.op in KERNEL_OPS and len(v.ins) == 1:
        return v.op
    if v.op == "unary_grad" and v.params["op"] in KERNEL_OPS:
        return v.op
    if v.op in BINARY and len(v.ins) == 2:
        return v.op
    return None


def place(live, device=None, use_cuda_for=()):
    """{id(Val): "cuda"} for the Vals to run on the GPU."""
    if device not in (None, "cpu", "cuda"):
        raise BackendError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
    wanted = set(use_cuda_for or ())
    unknown = wanted - set(KERNEL_OPS) - set(BINARY) - {"unary_grad"}
    if unknown:
        raise BackendError(f"use_cuda_for: no CUDA kernels for {sorted(unknown)}; "
                           f"they exist for {sorted(set(KERNEL_OPS) | set(BINARY))}")
    if device != "cuda" and not wanted:
        return {}
    out = {}
    for v in live:
        op = cuda_op(v)
        if op is None:
            continue
        name = v.params["op"] if op == "unary_grad" else op
        if device == "cuda" or name in wanted or op in wanted:
            out[id(v)] = "cuda"
    return out


def device_kernel_ops(device=None, use_cuda_for=()):
    """Kernel ops whose gradients will run on the device (so fusing them pays)."""
    if device == "cuda":
        return set(KERNEL_OPS)
    return set(use_cuda_for or ()) & set(KERNEL_OPS)


def lower_cuda(op, params, dtype):
    """How a device instruction runs: exprvm.kernels' checked CUDA kernels on DeviceArrays."""
    from .. import kernels

    if op == "to_device":
        return Lowered(lambda ins, out, tmps: (out.set, (ins[0],)), kernel="cuda")
    if op == "to_host":
        return Lowered(lambda ins, out, tmps: (ins[0].numpy, (out,)), kernel="cuda")
    if op == "unary_grad":
        g = params["op"]
        return Lowered(lambda ins, out, tmps: (kernels.unary_grad(g, dtype, "cuda"), (*ins, out)),
                       inplace=ALL, kernel="cuda", name=g + "_grad")
    if op in BINARY:
        return Lowered(lambda ins, out, tmps: (kernels.binary(BINARY[op], dtype, "cuda"), (*ins, out)),
                       inplace=ALL, kernel="cuda")
    return Lowered(lambda ins, out, tmps: (kernels.unary(op, dtype, "cuda"), (*ins, out)),
                   inplace=ALL, kernel="cuda")


def require_cuda():
    from .. import cuda
    if not cuda.is_available():
        raise BackendError(f"device 'cuda' is not available: {cuda.unavailable_reason()}; "
                           "compile without running with TapeMachine.compile(..., device='cuda')")
    return cuda
