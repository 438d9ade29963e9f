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

from ..core import FLOAT_DTYPES
from ..errors import BackendError
from ..kernels.reference import KERNEL_OPS
from .lowering import has_row
from .lowering.cuda import BINARY



def cuda_op(v):
    """The op of Val v if it can run on the device (a CUDA row in the lowering table, and
    the equal shapes those kernels take), else None."""
    if v.kind != "op" or v.dtype not in FLOAT_DTYPES or not v.shape or 0 in v.shape:
        return None
    if any(x.shape != v.shape or x.dtype != v.dtype for x in v.ins):
        return None         # NOTE: the CUDA kernels take equal shapes only (no broadcasting)
    return v.op if has_row(v.op, "cuda") else None


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


def require_cuda():
    from .. import cuda
    if not cuda.is_available():
        raise BackendError(f"device 'cuda' is not available: {cuda.unavailable_reason()}; "
                           "compile without running with TapeMachine.compile(..., device='cuda')")
    return cuda
