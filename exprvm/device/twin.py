"""The host twin of the CUDA library: the same csrc/ev_cuda*.cu kernels built as plain
C++ and run serially on the CPU over host memory, with a reference column-major GEMM
under cuBLAS's names (build_cuda.build_twin). Nothing is fast; everything is checked:
the device code paths of a program (placement, transfers, every kernel's indexing and
math, cuBLAS's row-major calls) run where there is no GPU.

    from exprvm.device import twin
    with twin.use():                      # exprvm's CUDA device is the twin in here
        m = ev.TapeMachine(g, [loss], device="cuda")
        m.run(feeds)

Every launch runs its indices in a shuffled order (seeded: `use(order=seed)`, 0 for in
order), as a GPU promises no order. `use(flavor=...)` (default $EXPRVM_TWIN_FLAVOR, else
"plain") picks the build: "sanitize" (AddressSanitizer + UBSan; the process must
preload build_cuda.sanitizer_runtime()) or "fma" (fused multiply-adds, as on a GPU).
"""
import contextlib
import os

from cffi import FFI

from exprvm.device import cublas, loader
from exprvm.kernels import build_cuda, dispatch

DEFAULT_ORDER = 0x5EED26
# The twin's own entry points (ev_cuda_twin.cc), beside the library's ABI (ev_cuda.h).
TWIN_CDEF = """
void ev_twin_set_order(uint64_t seed);
const int64_t* ev_twin_order(int64_t n);
int ev_twin_fma(void);
"""


def _forget_cuda_kernels():
    dispatch.forget("cuda")


@contextlib.contextmanager
def use(order=DEFAULT_ORDER, flavor=None):
    """Make the host twin exprvm's CUDA device (and cuBLAS) inside the block; on exit the
    previous state (a real GPU, or none) comes back. BackendError without a C++ compiler.
    order: the seed of the launches' shuffled index orders (0: in order); flavor: the
    build (see the module docstring)."""
    path = build_cuda.build_twin(flavor or os.environ.get("EXPRVM_TWIN_FLAVOR") or "plain")
    saved, saved_blas = dict(loader._state), dict(cublas._state)
    ffi, lib = loader.open_library(path)
    blas_ffi = FFI()
    blas_ffi.cdef(cublas._CDEF)
    own = FFI()
    own.cdef(TWIN_CDEF)
    own.dlopen(str(path)).ev_twin_set_order(int(order))
    try:
        loader.use(ffi, lib, f"host twin {path.name}")
        cublas.use(blas_ffi, blas_ffi.dlopen(str(path)), "host twin reference GEMM")
        _forget_cuda_kernels()
        yield lib
    finally:
        cublas.reset()
        loader.reset()
        loader._state.update(saved)
        cublas._state.update(saved_blas)
        _forget_cuda_kernels()
