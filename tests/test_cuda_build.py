"""nvcc builds every CUDA source here, the host twin builds with the C++ compiler, and
both libraries export every entry point csrc/ev_cuda.h declares (the cffi cdef).
No GPU needed: without a driver the GPU library answers with an error code."""
import re

import pytest

from exprvm.kernels import build_cuda, cuda_loader
from exprvm.kernels.build_c import csrc_dir

from cuda_twin import GPU_OK


def declared():
    text = (csrc_dir() / "ev_cuda.h").read_text()
    return re.findall(r"^(?:int|const char\*) (ev_cuda_\w+)\(", text, re.M)


def test_header_declares_every_kernel_family():
    names = set(declared())
    for family in ("bcast_add", "where", "copy_strided", "reduce_sum", "reduce_max", "softmax",
                   "log_softmax", "cross_entropy", "xent_grad", "take", "take_grad", "concat", "one_hot",
                   "take_i32", "one_hot_i32", "cross_entropy_i32",
                   "sgd", "momentum", "adam", "sumsq", "tanh_grad"):
        assert {f"ev_cuda_{family}_f32", f"ev_cuda_{family}_f64"} <= names, family
    assert len(names) == len(declared()), "a symbol is declared twice"


def test_every_cu_file_is_built():
    on_disk = {p.name for p in csrc_dir().glob("ev_cuda*.cu")}
    assert on_disk == set(build_cuda.CUDA_SOURCES)
    assert set(build_cuda.TWIN_SOURCES) - set(build_cuda.CUDA_SOURCES) == {"ev_cuda_twin.cc"}


@pytest.mark.skipif(build_cuda.find_nvcc() is None, reason="nvcc not found")
def test_nvcc_builds_the_library_with_every_symbol():
    path = build_cuda.build()
    ffi, lib = cuda_loader.open_library(path)
    missing = [n for n in declared() if not hasattr(lib, n)]
    assert not missing
    count = ffi.new("int*")
    rc = lib.ev_cuda_device_count(count)
    if not GPU_OK:      # no driver here: an error code, not a crash
        assert rc != 0 and count[0] == 0
        assert ffi.string(lib.ev_cuda_error_string(rc))
    assert lib.ev_cuda_is_twin() == 0
    assert ffi.string(lib.ev_cuda_error_string(10001)).startswith(b"exprvm")


def test_twin_builds_with_every_symbol():
    if build_cuda.find_cxx() is None:
        pytest.skip("no C++ compiler")
    path = build_cuda.build_twin()
    assert re.match(r"libev_cuda_twin-[0-9a-f]{16}\.so$", path.name)
    assert build_cuda.build_twin() == path, "cached by content"
    ffi, lib = cuda_loader.open_library(path)
    assert not [n for n in declared() if not hasattr(lib, n)]
    assert lib.ev_cuda_is_twin() == 1
    for name in ("cublasCreate_v2", "cublasSgemm_v2", "cublasDgemmStridedBatched"):
        assert name in path.read_bytes().decode("latin-1")


def test_build_failure_is_a_backend_error(tmp_path, monkeypatch):
    from exprvm.errors import BackendError
    monkeypatch.setenv("EXPRVM_CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(build_cuda.shutil, "which", lambda name: None)
    with pytest.raises(BackendError, match="C\\+\\+ compiler"):
        build_cuda.build_twin()
    with pytest.raises(BackendError, match="bad CUDA architecture"):
        monkeypatch.setattr(build_cuda, "find_nvcc", lambda: "/bin/true")
        build_cuda.build(arch="sm_x")
