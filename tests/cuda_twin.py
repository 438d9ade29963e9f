"""Where the CUDA code runs in the tests: the host twin everywhere, a real GPU where one is.

The host twin (exprvm.kernels.build_cuda.build_twin) is the same csrc/ev_cuda*.cu
sources compiled as plain C++: every kernel body runs serially on the CPU over
host memory behind the library's own ABI, and cuBLAS's GEMM entry points are a
column-major reference written from the BLAS definition. So the kernels' indexing
and math, the wrappers' checks and the row-major cuBLAS calls are tested against
numpy on any machine; `device` parametrizes a test over ["twin", "gpu"], the GPU
case marked `cuda` and skipped cleanly without a device.
"""
import contextlib

import pytest
from cffi import FFI

import exprvm.cuda as cuda
from exprvm.kernels import build_cuda, cublas, cuda_loader, dispatch

GPU_OK = cuda.is_available()
GPU_WHY = None if GPU_OK else cuda.unavailable_reason()


def _forget_cuda_kernels():
    for key in [k for k in dispatch._cache if k[3] == "cuda"]:
        del dispatch._cache[key]


@contextlib.contextmanager
def on_twin():
    """Run the CUDA library (and cuBLAS) as the host twin inside the block."""
    if build_cuda.find_cxx() is None:
        pytest.skip("no C++ compiler for the CUDA host twin")
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


DEVICES = ["twin", pytest.param("gpu", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not GPU_OK, reason=f"no CUDA device: {GPU_WHY}")])]


@pytest.fixture(params=DEVICES)
def device(request):
    """"twin" or "gpu": the CUDA library the test body runs on."""
    if request.param == "twin":
        with on_twin():
            yield "twin"
    else:
        yield "gpu"


@pytest.fixture
def twin():
    with on_twin() as lib:
        yield lib
