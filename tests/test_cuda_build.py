"""nvcc builds every CUDA source here, the host twin builds with the C++ compiler, and
both libraries export every entry point csrc/ev_cuda.h declares (the cffi cdef).
No GPU needed: without a driver the GPU library answers with an error code."""
import re

import pytest

from exprvm.errors import BackendError
from exprvm.device import loader
from exprvm.kernels import build_cuda
from exprvm.kernels.build_c import csrc_dir

from cuda_twin import GPU_OK, twin  # noqa: F401  (fixture)


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
    ffi, lib = loader.open_library(path)
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
    ffi, lib = loader.open_library(path)
    assert not [n for n in declared() if not hasattr(lib, n)]
    assert lib.ev_cuda_is_twin() == 1
    for name in ("cublasCreate_v2", "cublasSgemm_v2", "cublasDgemmStridedBatched"):
        assert name in path.read_bytes().decode("latin-1")


def test_build_failure_is_a_backend_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPRVM_CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(build_cuda.shutil, "which", lambda name: None)
    with pytest.raises(BackendError, match="C\\+\\+ compiler"):
        build_cuda.build_twin()
    with pytest.raises(BackendError, match="bad CUDA architecture"):
        monkeypatch.setattr(build_cuda, "find_nvcc", lambda: "/bin/true")
        build_cuda.build(arch="sm_x")


def test_cublas_not_found_names_every_place_searched(tmp_path, monkeypatch):
    from exprvm.device import cublas
    fake = tmp_path / "libcublas.so.13"
    fake.write_bytes(b"not a library")
    monkeypatch.setenv("EXPRVM_CUBLAS", str(fake))
    monkeypatch.setattr(cublas, "_SYSTEM_NAMES", ("libcublas-that-does-not-exist.so",))
    monkeypatch.setattr(cublas.shutil, "which", lambda name: None)
    for var in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    saved = dict(cublas._state)
    cublas._state.clear()
    try:
        ok, why = cublas.status()
        assert not ok and "cuBLAS not found" in why and str(fake) in why
        with pytest.raises(BackendError, match="libcublas-that-does-not-exist"):
            cublas.load()
    finally:
        cublas._state.clear()
        cublas._state.update(saved)


def test_twin_gemm_stands_in_for_cublas_and_a_bad_ld_is_refused(twin):
    from exprvm.device import cublas
    ffi, lib, handle = cublas.load()
    a = ffi.new("float[]", 4)
    one = ffi.new("float*", 1.0)
    # lda 1 < 2 rows: cuBLAS's own argument check, CUBLAS_STATUS_INVALID_VALUE (7)
    assert lib.cublasSgemm_v2(handle, 0, 0, 2, 2, 2, one, a, 1, a, 2, one, a, 2) == 7
    assert cublas.status_string(7) == "CUBLAS_STATUS_INVALID_VALUE"
