"""Finds, builds (lazily) and loads exprvm's CUDA library; maps its errors.

Nothing happens at import.  The first call to load() or status():
  1. opens the CUDA driver (libcuda) and asks it for devices: no driver or no
     device ends here with a reason, without compiling anything;
  2. takes the library from $EXPRVM_CUDA_LIB, or builds csrc/ev_cuda.cu with
     nvcc for the GPU found (build_cuda.py caches it by source hash);
  3. dlopens it with cffi (ABI mode; csrc/ev_cuda.h is the cdef) and checks
     that the runtime sees a device.
The outcome, success or the reason for failure, is cached for the process.
"""
import os
import threading

from cffi import FFI

from exprvm.errors import BackendError, KernelError
from exprvm.kernels.build_c import csrc_dir
from exprvm.kernels import build_cuda
from exprvm.kernels.cuda_driver import probe_driver

_lock = threading.RLock()
_state = {}


def open_library(path):
    """(ffi, lib) for a built library, without any device check."""
    ffi = FFI()
    ffi.cdef((csrc_dir() / "ev_cuda.h").read_text())
    try:
        return ffi, ffi.dlopen(str(path))
    except OSError as e:
        raise BackendError(f"cannot load CUDA library {path}: {e}") from e


def _load():
    ok, reason, cap = probe_driver()
    if not ok:
        raise BackendError(reason)
    path = os.environ.get("EXPRVM_CUDA_LIB")
    if not path:
        try:
            path = build_cuda.build(capability=cap)
        except BackendError:
            if cap is None:
                raise
            # nvcc may not know this GPU yet: portable PTX, JIT-compiled by the driver
            path = build_cuda.build()
    ffi, lib = open_library(path)
    count = ffi.new("int*")
    rc = lib.ev_cuda_device_count(count)
    if rc != 0:
        raise BackendError(f"CUDA runtime: {error_string(lib, ffi, rc)} (error {rc})")
    if count[0] == 0:
        raise BackendError("CUDA runtime sees no device")
    return ffi, lib, f"{count[0]} device(s), library {path}"


def load():
    """(ffi, lib), or BackendError with the reason CUDA is unavailable."""
    with _lock:
        if "lib" not in _state and "error" not in _state:
            try:
                _state["ffi"], _state["lib"], _state["reason"] = _load()
            except BackendError as e:
                _state["error"] = str(e)
        if "error" in _state:
            raise BackendError(_state["error"])
        return _state["ffi"], _state["lib"]


def status():
    """(available, reason) for kernels.backends()."""
    # NOTE: a known outcome without raising: every compile asks (an ExprError costs a
    # stack walk for its source line)
    if "error" in _state:
        return False, _state["error"]
    if "lib" in _state:
        return True, _state["reason"]
    try:
        load()
    except BackendError as e:
        return False, str(e)
    return True, _state["reason"]


def loaded():
    """(ffi, lib) if the library is already loaded, else None (never loads)."""
    return (_state["ffi"], _state["lib"]) if "lib" in _state else None


def use(ffi, lib, reason):
    """Take (ffi, lib) as the loaded library: one opened by the caller, or a stand-in
    with the same ABI (the tests' fake device). reset() forgets it."""
    with _lock:
        _state.clear()
        _state.update(ffi=ffi, lib=lib, reason=reason)


def reset():
    """Forget the cached outcome (tests; a driver installed meanwhile)."""
    with _lock:
        _state.clear()


def error_string(lib, ffi, rc):
    return ffi.string(lib.ev_cuda_error_string(rc)).decode(errors="replace")


def check(rc, what, exc=BackendError):
    """Raise exc naming `what` and the CUDA error when rc is not 0."""
    if rc:
        ffi, lib = _state["ffi"], _state["lib"]
        raise exc(f"{what}: {error_string(lib, ffi, rc)} (CUDA error {rc})")


def check_kernel(rc, op):
    check(rc, f"CUDA kernel {op}", KernelError)
