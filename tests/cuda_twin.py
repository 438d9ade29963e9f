"""Where the CUDA code runs in the tests: the host twin everywhere, a real GPU where one is.

The host twin (exprvm.device.twin, built by build_cuda.build_twin) is the same csrc/ev_cuda*.cu
sources compiled as plain C++: every kernel body runs serially on the CPU over
host memory behind the library's own ABI, and cuBLAS's GEMM entry points are a
column-major reference written from the BLAS definition. So the kernels' indexing
and math, the wrappers' checks and the row-major cuBLAS calls are tested against
numpy on any machine; `device` parametrizes a test over ["twin", "gpu"], the GPU
case marked `cuda` and skipped cleanly without a device.
"""
import contextlib

import pytest

import exprvm.cuda as cuda
from exprvm.kernels import build_cuda
from exprvm.device import twin as twin_lib

GPU_OK = cuda.is_available()
GPU_WHY = None if GPU_OK else cuda.unavailable_reason()


@contextlib.contextmanager
def on_twin():
    """Run the CUDA library (and cuBLAS) as the host twin inside the block."""
    if build_cuda.find_cxx() is None:
        pytest.skip("no C++ compiler for the CUDA host twin")
    with twin_lib.use() as lib:
        yield lib


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
