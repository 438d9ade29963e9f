"""Kernels for exprvm's hot elementwise ops: numpy reference, C on the CPU
(cffi API mode), CUDA C on a GPU (nvcc-built library via cffi).

    from exprvm import kernels
    kernels.KERNEL_OPS                      # unary ops with forward and grad kernels
    kernels.backends()                      # {"numpy": (True, why), "c": ..., "cuda": ...}
    kernels.backend_status("c")             # (True, why) for one, asking no other
    kernels.set_backend("c"); kernels.get_backend()
    f = kernels.unary("tanh", np.float32)   # f(x, out=None) -> out, fully checked
    dg = kernels.unary_grad("tanh", np.float32)   # dg(x, ans, g, out=None) -> out
    kernels.binary("add", np.float32, "cuda")     # add/sub/mul/div

For a compiled program: bind_unary / bind_unary_grad (fixed buffers, checked
once, then a bare C call); bind_xent: softmax cross-entropy and its gradient (C
only). Fused elementwise kernels are generated per program: generated.py.
See dispatch.py for the contracts.
"""
from exprvm.kernels.reference import BINARY_OPS, KERNEL_OPS
from exprvm.kernels.dispatch import (
    BACKENDS,
    available,
    backend_status,
    backends,
    binary,
    bind_unary,
    bind_unary_grad,
    bind_scatter_rows,
    bind_xent,
    get_backend,
    set_backend,
    unary,
    unary_grad,
)

__all__ = [
    "BACKENDS", "BINARY_OPS", "KERNEL_OPS", "available", "backend_status", "backends", "binary",
    "bind_scatter_rows", "bind_unary", "bind_unary_grad", "bind_xent", "get_backend",
    "set_backend", "unary", "unary_grad",
]
