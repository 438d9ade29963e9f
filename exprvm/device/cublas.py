"""Matrix products on a CUDA device through cuBLAS, loaded with cffi's ABI mode.

    from exprvm.device import cublas
    cublas.status()                    # (True, "libcublas ... at PATH") or (False, why)
    c = cublas.matmul(a, b)            # DeviceArrays: (m, k) @ (k, n), or batched (B, m, k) @ ...
    fn, args = cublas.bind_matmul(a, b, out)   # for a compiled program: fn(*args) is one GEMM

Which library: $EXPRVM_CUBLAS (a path), else the `nvidia-cublas` wheel's
(`nvidia/**/lib/libcublas.so*`), else the CUDA toolkit's ($CUDA_HOME, $CUDA_PATH,
/usr/local/cuda, beside nvcc), else the system loader's libcublas.so.13 / .12 / .so.
None found, or cublasCreate failing (no driver, no device), is a BackendError
naming every place searched or the cuBLAS status.

Row-major without copies. cuBLAS is column-major, and a row-major matrix's memory
is its transpose in column-major order, so C = A @ B (row-major) is computed as
C^T = B^T A^T (column-major): the operands are passed swapped, each with
CUBLAS_OP_N when its rows are contiguous (row-major, any row pitch: a column
slice of a wider matrix included) or CUBLAS_OP_T when it is a transposed view
(its columns contiguous). No operand is ever copied or transposed in memory.
Batched products run as one strided-batched GEMM (a batch stride of 0
broadcasts a 2-D operand); a batched `a` with a 2-D `b` runs as one plain GEMM
over the stacked rows when its rows are evenly spaced.
"""
import contextlib
import glob
import math
import os
import shutil
import threading

from cffi import FFI

from exprvm.errors import BackendError, DTypeError, KernelError, ShapeError
from exprvm.device.arrays import DeviceArray
from exprvm.device.launch import device_pointer
from exprvm.kernels.checks import F32, F64

_CDEF = """
typedef void* cublasHandle_t;
int cublasCreate_v2(cublasHandle_t* handle);
int cublasDestroy_v2(cublasHandle_t handle);
int cublasGetVersion_v2(cublasHandle_t handle, int* version);
int cublasSetStream_v2(cublasHandle_t handle, void* stream);
int cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t size);
const char* cublasGetStatusString(int status);
int cublasSgemm_v2(cublasHandle_t h, int transa, int transb, int m, int n, int k,
                   const float* alpha, const float* A, int lda, const float* B, int ldb,
                   const float* beta, float* C, int ldc);
int cublasDgemm_v2(cublasHandle_t h, int transa, int transb, int m, int n, int k,
                   const double* alpha, const double* A, int lda, const double* B, int ldb,
                   const double* beta, double* C, int ldc);
int cublasSgemmStridedBatched(cublasHandle_t h, int transa, int transb, int m, int n, int k,
                   const float* alpha, const float* A, int lda, long long strideA,
                   const float* B, int ldb, long long strideB, const float* beta,
                   float* C, int ldc, long long strideC, int batchCount);
int cublasDgemmStridedBatched(cublasHandle_t h, int transa, int transb, int m, int n, int k,
                   const double* alpha, const double* A, int lda, long long strideA,
                   const double* B, int ldb, long long strideB, const double* beta,
                   double* C, int ldc, long long strideC, int batchCount);
"""
NEEDED = ("cublasCreate_v2", "cublasDestroy_v2", "cublasSetStream_v2", "cublasSetWorkspace_v2",
          "cublasSgemm_v2", "cublasDgemm_v2", "cublasSgemmStridedBatched", "cublasDgemmStridedBatched")
# NOTE: a workspace of our own, allocated with the handle: a product captured in a CUDA
# graph then allocates nothing (without one, cuBLAS allocates per stream, inside the
# capture). 32 MiB, what cuBLAS's own default pool is on recent GPUs.
WORKSPACE_BYTES = 32 << 20
OP_N, OP_T = 0, 1
_STATUS = {0: "CUBLAS_STATUS_SUCCESS", 1: "CUBLAS_STATUS_NOT_INITIALIZED",
           3: "CUBLAS_STATUS_ALLOC_FAILED", 7: "CUBLAS_STATUS_INVALID_VALUE",
           8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR",
           13: "CUBLAS_STATUS_EXECUTION_FAILED", 14: "CUBLAS_STATUS_INTERNAL_ERROR",
           15: "CUBLAS_STATUS_NOT_SUPPORTED", 16: "CUBLAS_STATUS_LICENSE_ERROR"}
_INT_MAX = 2 ** 31 - 1
_SYSTEM_NAMES = ("libcublas.so.13", "libcublas.so.12", "libcublas.so")

_lock = threading.RLock()
_state = {}


def candidates():
    """Library paths to try, in order (see the module docstring)."""
    found = []
    env = os.environ.get("EXPRVM_CUBLAS")
    if env:
        found.append(env)
    try:
        import importlib.util
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        found += sorted(glob.glob(os.path.join(root, "**", "lib", "libcublas.so*"), recursive=True))
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for root in filter(None, roots):
        for sub in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib")):
            found += sorted(glob.glob(os.path.join(root, sub, "libcublas.so*")))
    found += list(_SYSTEM_NAMES)
    return list(dict.fromkeys(found))


def _open():
    ffi = FFI()
    ffi.cdef(_CDEF)
    tried = []
    for path in candidates():
        if os.path.isabs(path) and not os.path.isfile(path):
            tried.append(f"{path} (missing)")
            continue
        try:
            lib = ffi.dlopen(path)
        except OSError as e:
            tried.append(f"{path} ({str(e).splitlines()[0][:80]})")
            continue
        missing = [name for name in NEEDED if not hasattr(lib, name)]
        if missing:
            tried.append(f"{path} (lacks {', '.join(missing)})")
            continue
        return ffi, lib, path
    raise BackendError("cuBLAS not found; install the nvidia-cublas wheel, set CUDA_HOME, or "
                       "point EXPRVM_CUBLAS at libcublas.so. Tried: " + "; ".join(tried))


def load():
    """(ffi, lib, handle), or BackendError: the library opened and a handle created, once."""
    with _lock:
        if "lib" not in _state and "error" not in _state:
            try:
                ffi, lib, path = _open()
                _state.update(_new_handle(ffi, lib, f"libcublas at {path}"))
            except BackendError as e:
                _state["error"] = str(e)
        if "error" in _state:
            raise BackendError(_state["error"])
        return _state["ffi"], _state["lib"], _state["handle"]


def _new_handle(ffi, lib, reason):
    h = ffi.new("cublasHandle_t*")
    rc = lib.cublasCreate_v2(h)
    if rc:
        raise BackendError(f"cuBLAS: cublasCreate failed: {status_string(rc)} ({reason})")
    state = {"ffi": ffi, "lib": lib, "handle": h[0], "reason": reason}
    try:
        state["workspace"] = DeviceArray((WORKSPACE_BYTES,), "uint8", scoped=False)
        _set_workspace(state)
    except Exception:
        lib.cublasDestroy_v2(h[0])
        raise
    return state


def _set_workspace(state):
    ws = state["workspace"]
    rc = state["lib"].cublasSetWorkspace_v2(state["handle"], state["ffi"].cast("void*", ws._device()),
                                           WORKSPACE_BYTES)
    if rc:
        raise BackendError(f"cuBLAS: cublasSetWorkspace failed: {status_string(rc)}")


def use(ffi, lib, reason):
    """Take (ffi, lib) as cuBLAS: another build of it, or the host twin's reference GEMM."""
    with _lock:
        reset()
        _state.update(_new_handle(ffi, lib, reason))


def reset():
    """Destroy the handle and forget the library (tests; a driver installed meanwhile)."""
    with _lock:
        if "handle" in _state:
            _state["lib"].cublasDestroy_v2(_state["handle"])
        ws = _state.get("workspace")
        _state.clear()
    if ws is not None:
        ws.free()


def follow(stream):
    """Send the products made from now on to `stream` (an address, 0: the default stream):
    a CUDA graph's capture records them there (device/graphs.py). Nothing to do while
    cuBLAS is not loaded: no product was bound."""
    with _lock:
        if "handle" not in _state:
            return
        ffi, lib = _state["ffi"], _state["lib"]
        rc = lib.cublasSetStream_v2(_state["handle"], ffi.cast("void*", stream))
        if rc:
            raise KernelError(f"cuBLAS: cublasSetStream failed: {status_string(rc)}")
        _set_workspace(_state)      # NOTE: setting a stream puts cuBLAS back on its own pool


@contextlib.contextmanager
def exclusive():
    """No product of another thread runs meanwhile (a CUDA graph's capture: the handle's
    stream is every thread's, and a product another thread sent to a capturing stream
    would be recorded into the graph instead of running)."""
    with _lock:
        yield


def status():
    try:
        load()
    except BackendError as e:
        return False, str(e)
    return True, _state["reason"]


def status_string(rc):
    return _STATUS.get(rc, f"cuBLAS status {rc}")


# -- operand layouts ------------------------------------------------------------------

def _layout(rows, cols, s_rows, s_cols):
    """(op, ld) that hands the column-major GEMM the TRANSPOSE of the row-major matrix
    (rows, cols) with element strides (s_rows, s_cols); None if no ld expresses it."""
    if cols == 1 or s_cols == 1:            # rows contiguous: memory is X^T column-major
        ld = s_rows if rows > 1 else max(cols, 1)
        if ld >= max(cols, 1):
            return OP_N, ld
    if rows == 1 or s_rows == 1:            # columns contiguous: memory is X column-major
        ld = s_cols if cols > 1 else max(rows, 1)
        if ld >= max(rows, 1):
            return OP_T, ld
    return None


def _estrides(a):
    item = a.dtype.itemsize
    return tuple(s // item for s in a.strides)


def _batch_stride(a, batch):
    """Element stride between a's consecutive matrices over the batch shape `batch`: 0 when
    a is one matrix (2-D, or batch dimensions of size 1), None when its matrices are not
    evenly spaced or a broadcasts over only some batch dimensions."""
    nb = a.ndim - 2
    shape, st = a.shape[:nb], _estrides(a)[:nb]
    if all(n == 1 for n in shape):
        return 0
    if tuple(shape) != tuple(batch):
        return None
    dims = [(n, s) for n, s in zip(shape, st) if n != 1]
    expect = step = dims[-1][1]
    for n, s in reversed(dims):
        if s != expect:
            return None
        expect = s * n
    return step


def plan_gemm(a, b, out):
    """Check DeviceArrays a, b, out (views allowed) for out = a @ b and return the GEMM as
    (name, int args) -- all cuBLAS needs besides the pointers and alpha/beta."""
    if not (a.dtype == b.dtype == out.dtype) or a.dtype not in (F32, F64):
        raise DTypeError(f"matmul: operands must share float32 or float64, got "
                         f"{a.dtype}, {b.dtype} -> {out.dtype}")
    if a.ndim < 2 or b.ndim < 2 or out.ndim != max(a.ndim, b.ndim):
        raise ShapeError(f"matmul on the device takes 2-D or batched operands, got "
                         f"{a.shape} @ {b.shape} -> {out.shape}")
    m, k = a.shape[-2:]
    k2, n = b.shape[-2:]
    batch = tuple(out.shape[:-2])
    if k != k2 or out.shape[-2:] != (m, n):
        raise ShapeError(f"matmul: {a.shape} @ {b.shape} does not give {out.shape}")
    sa, sb, so = _estrides(a), _estrides(b), _estrides(out)
    la = _layout(m, k, sa[-2], sa[-1])
    lb = _layout(k, n, sb[-2], sb[-1])
    lc = _layout(m, n, so[-2], so[-1])
    if la is None or lb is None or lc is None or lc[0] != OP_N:
        raise KernelError(f"matmul: operand strides {a.strides} @ {b.strides} -> {out.strides} "
                          "have no BLAS leading dimension (copy to a contiguous array first)")
    nbatch = math.prod(batch)
    ba, bb, bo = _batch_stride(a, batch), _batch_stride(b, batch), _batch_stride(out, batch)
    if None in (ba, bb, bo) or (nbatch > 1 and bo == 0):
        raise KernelError(f"matmul: batch strides of {a.shape} @ {b.shape} -> {out.shape} are uneven")
    if nbatch > 1 and bb == 0 and la[0] == OP_N and ba == m * la[1] and bo == m * lc[1]:
        # a's batches are evenly stacked rows: one GEMM over nbatch * m rows
        m, nbatch = m * nbatch, 1
    dims = [n, m, k, lb[1], la[1], lc[1], nbatch]
    if max(dims) > _INT_MAX or max(abs(ba), abs(bb), abs(bo)) > 2 ** 62:
        raise ShapeError(f"matmul: {a.shape} @ {b.shape} exceeds cuBLAS's 32-bit sizes")
    # column-major call: C^T (n x m) = op(B^T) (n x k) @ op(A^T) (k x m)
    return (lb[0], la[0], n, m, k, lb[1], la[1], lc[1], bb, ba, bo, nbatch)


def bind_matmul(a, b, out):
    """(fn, args): fn(*args) computes out = a @ b with one cuBLAS call, checked."""
    ffi, lib, handle = load()
    opb, opa, n, m, k, ldb, lda, ldc, bb, ba, bo, nbatch = plan_gemm(a, b, out)
    pa, pb = device_pointer(a, a.dtype, "matmul", "a"), device_pointer(b, b.dtype, "matmul", "b")
    po = device_pointer(out, out.dtype, "matmul", "out")
    ctype = "float" if a.dtype == F32 else "double"
    one, zero = ffi.new(f"{ctype}*", 1.0), ffi.new(f"{ctype}*", 0.0)
    letter = "S" if a.dtype == F32 else "D"
    if m == 0 or n == 0 or nbatch == 0:
        return _nothing, ()
    if nbatch == 1:
        cfn = getattr(lib, f"cublas{letter}gemm_v2")
        args = (handle, opb, opa, n, m, k, one, pb, ldb, pa, lda, zero, po, ldc)
    else:
        cfn = getattr(lib, f"cublas{letter}gemmStridedBatched")
        args = (handle, opb, opa, n, m, k, one, pb, ldb, bb, pa, lda, ba, zero, po, ldc, bo, nbatch)

    def gemm(*xs):
        with _lock:     # NOTE: not while another thread captures (exclusive)
            rc = cfn(*xs)
        if rc:
            raise KernelError(f"cuBLAS gemm ({m}x{k} @ {k}x{n}, batch {nbatch}): {status_string(rc)}")
    return gemm, args


def _nothing():
    return None


def matmul(a, b, out=None):
    """out = a @ b for DeviceArrays (a new DeviceArray when out is None)."""
    if out is None:
        batch = _broadcast_batch(a.shape[:-2], b.shape[:-2])
        out = DeviceArray(batch + (a.shape[-2], b.shape[-1]), a.dtype)
    fn, args = bind_matmul(a, b, out)
    fn(*args)
    return out


def _broadcast_batch(x, y):
    n = max(len(x), len(y))
    x, y = (1,) * (n - len(x)) + tuple(x), (1,) * (n - len(y)) + tuple(y)
    out = []
    for p, q in zip(x, y):
        if p != q and 1 not in (p, q):
            raise ShapeError(f"matmul: batch shapes {x} and {y} do not broadcast")
        out.append(max(p, q))
    return tuple(out)
