"""Which host backend a compile uses: "c" (exprvm.kernels' C extension) or "numpy".

resolve_backend(name) names the backend whose lowering rows the compiler tries
first (lowering/table.py); None asks exprvm.kernels for its default.
"""
from .. import kernels
from ..errors import BackendError


def resolve_backend(name):
    """"c" or "numpy" for a requested host backend (None: exprvm.kernels' default)."""
    if name is None:
        name = kernels.get_backend()
        if name == "cuda":      # host instructions still need a host backend
            name = "c" if kernels.backend_status("c")[0] else "numpy"
    if name == "cuda":
        raise BackendError("backend='cuda' is chosen per instruction: use TapeMachine(device='cuda') "
                           "or use_cuda_for=(...)")
    if name not in ("numpy", "c"):
        raise BackendError(f"unknown backend {name!r}; choose 'numpy' or 'c'")
    ok, why = kernels.backend_status(name)
    if not ok:
        raise BackendError(f"backend {name!r} is not available: {why}")
    return name
