"""The host twin of the CUDA library: the same csrc/ev_cuda*.cu kernels built as plain
C++ and run serially on the CPU over host memory, with a reference column-major GEMM
under cuBLAS's names (build_cuda.build_twin). Nothing is fast; everything is checked:
the device code paths of a program (placement, transfers, every kernel's indexing and
math, cuBLAS's row-major calls) run where there is no GPU.

    from exprvm.kernels import twin
    with twin.use():                      # exprvm's CUDA device is the twin in here
        m = ev.TapeMachine(g, [loss], device="cuda")
        m.run(feeds)
"""
import contextlib

from cffi import FFI

from exprvm.kernels import build_cuda, cublas, cuda_loader, dispatch


def _forget_cuda_kernels():
    for key in [k for k in dispatch._cache if k[3] == "cuda"]:
        del dispatch._cache[key]


@contextlib.contextmanager
def use():
    """Make the host twin exprvm's CUDA device (and cuBLAS) inside the block; on exit the
    previous state (a real GPU, or none) comes back. BackendError without a C++ compiler."""
    path = build_cuda.build_twin()
    saved, saved_blas = dict(cuda_loader._state), dict(cublas._state)
    ffi, lib = cuda_loader.open_library(path)
    blas_ffi = FFI()
    blas_ffi.cdef(cublas._CDEF)
    try:
        cuda_loader.use(ffi, lib, f"host twin {path.name}")
        cublas.use(blas_ffi, blas_ffi.dlopen(str(path)), "host twin reference GEMM")
        _forget_cuda_kernels()
        yield lib
    finally:
        cublas.reset()
        cuda_loader.reset()
        cuda_loader._state.update(saved)
        cublas._state.update(saved_blas)
        _forget_cuda_kernels()
