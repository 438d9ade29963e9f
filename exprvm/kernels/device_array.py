"""Device arrays and their lifetime (public as ev.cuda).

    import exprvm.cuda as cuda
    if cuda.is_available():
        x = cuda.to_device(np.ones(1000, np.float32))
        with cuda.tidy() as scope:            # frees what it creates ...
            y = kernels.unary("tanh", np.float32, "cuda")(x)
            z = scope.keep(kernels.unary("exp", np.float32, "cuda")(y))   # ... except kept arrays
        z.numpy(); z.free(); x.free()
    else:
        print(cuda.unavailable_reason())

Freeing is deterministic: DeviceArray.free(), ``with DeviceArray``, or a
tidy() scope.  __del__ frees a forgotten array only as a safety net.

tidy semantics (as deeplearn.js's): every DeviceArray created while a scope
is open belongs to the innermost scope and is freed when it closes, unless it
was kept (``scope.keep(a)``, ``cuda.keep(a)`` or ``tidy.keep(a)``).  A kept
array passes to the enclosing scope, if any, which frees it in turn unless it
is kept there too.  ``tidy(fn, *args)`` runs fn in a scope and keeps what it
returns (a DeviceArray, or DeviceArrays in a tuple, list or dict).
"""
import threading

import numpy as np

from exprvm.errors import BackendError, DTypeError, KernelError, ShapeError
from exprvm.kernels import cuda_loader

# Everything numpy can hand over as raw bytes; object and string dtypes hold
# host pointers and make no sense on a device.
_DTYPE_KINDS = "biufc"


def is_available():
    """True when a CUDA device and exprvm's CUDA library are usable."""
    return cuda_loader.status()[0]


def unavailable_reason():
    """Why is_available() is False (driver, device, nvcc, build...), else None."""
    ok, reason = cuda_loader.status()
    return None if ok else reason


def device_count():
    """Number of CUDA devices (0 when CUDA is unavailable)."""
    try:
        ffi, lib = cuda_loader.load()
    except BackendError:
        return 0
    count = ffi.new("int*")
    cuda_loader.check(lib.ev_cuda_device_count(count), "cudaGetDeviceCount")
    return count[0]


def device_info(device=0):
    """{"name", "total_bytes", "capability"} of one device."""
    ffi, lib = cuda_loader.load()
    name = ffi.new("char[256]")
    total, major, minor = ffi.new("size_t*"), ffi.new("int*"), ffi.new("int*")
    cuda_loader.check(lib.ev_cuda_device_info(int(device), name, 256, total, major, minor),
                   f"cudaGetDeviceProperties({device})")
    return {"name": ffi.string(name).decode(errors="replace"), "total_bytes": total[0],
            "capability": (major[0], minor[0])}


def mem_info():
    """(free_bytes, total_bytes) of the current device."""
    ffi, lib = cuda_loader.load()
    free, total = ffi.new("size_t*"), ffi.new("size_t*")
    cuda_loader.check(lib.ev_cuda_mem_info(free, total), "cudaMemGetInfo")
    return free[0], total[0]


def synchronize():
    """Wait for every kernel launched so far; raises if one of them failed."""
    ffi, lib = cuda_loader.load()
    cuda_loader.check(lib.ev_cuda_synchronize(), "cudaDeviceSynchronize", KernelError)


# ---- tidy scopes ---------------------------------------------------------

_local = threading.local()


def _scopes():
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


class _Scope:
    def __init__(self):
        self._arrays = []
        self._kept = set()

    def __enter__(self):
        _scopes().append(self)
        return self

    def track(self, arr):
        self._arrays.append(arr)

    def keep(self, *arrays):
        """Exempt arrays from this scope's freeing; returns its argument."""
        for a in arrays:
            self._kept.add(id(a))
        return arrays[0] if len(arrays) == 1 else arrays

    def __exit__(self, *exc):
        stack = _scopes()
        stack.remove(self)
        parent = stack[-1] if stack else None
        for a in self._arrays:
            if id(a) in self._kept:
                if parent is not None:
                    parent.track(a)
            else:
                a.free()
        self._arrays.clear()
        return False


def keep(*arrays):
    """Keep arrays out of the innermost tidy scope's freeing (no-op outside one)."""
    stack = _scopes()
    if stack:
        return stack[-1].keep(*arrays)
    return arrays[0] if len(arrays) == 1 else arrays


def _device_arrays(value):
    if isinstance(value, DeviceArray):
        return [value]
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _device_arrays(v)]
    if isinstance(value, dict):
        return [a for v in value.values() for a in _device_arrays(v)]
    return []


def tidy(fn=None, *args, **kwargs):
    """A scope that frees the DeviceArrays created in it (see the module doc).

    ``with tidy() as scope:`` or ``tidy(fn, *args)``, which keeps fn's result.
    """
    if fn is None:
        return _Scope()
    with _Scope() as scope:
        result = fn(*args, **kwargs)
        found = _device_arrays(result)
        if found:
            scope.keep(*found)
        return result


tidy.keep = keep


# ---- DeviceArray ---------------------------------------------------------

def _check_shape(shape):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError as e:
        raise ShapeError(f"bad shape {shape!r}") from e
    if any(d < 0 for d in shape):
        raise ShapeError(f"negative dimension in shape {shape}")
    return shape


class DeviceArray:
    """A C-contiguous array in CUDA device memory, owned by this object."""

    __slots__ = ("shape", "dtype", "size", "nbytes", "_ptr", "_cptr", "_allocated", "__weakref__")

    def __init__(self, shape, dtype):
        dtype = np.dtype(dtype)
        if dtype.kind not in _DTYPE_KINDS:
            raise DTypeError(f"DeviceArray cannot hold dtype {dtype}")
        self.shape = _check_shape(shape)
        self.dtype = dtype
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.nbytes = self.size * dtype.itemsize
        self._ptr = None
        self._allocated = 0     # bytes the allocation really holds (kernels check sizes against it)
        ffi, lib = cuda_loader.load()
        out = ffi.new("void**")
        if self.nbytes:
            cuda_loader.check(lib.ev_cuda_malloc(out, self.nbytes), f"cudaMalloc({self.nbytes} bytes)")
            self._allocated = self.nbytes
        self._cptr = out[0]
        self._ptr = int(ffi.cast("uintptr_t", out[0]))
        stack = _scopes()
        if stack:
            stack[-1].track(self)

    @property
    def freed(self):
        return self._ptr is None

    @property
    def ptr(self):
        """The device address as an int (KernelError once freed)."""
        if self._ptr is None:
            raise KernelError("DeviceArray was freed")
        return self._ptr

    def free(self):
        """Release the device memory now; later frees do nothing."""
        ptr, self._ptr = self._ptr, None
        if ptr:
            ffi, lib = cuda_loader.load()
            cuda_loader.check(lib.ev_cuda_free(self._cptr), "cudaFree")
        self._cptr = None

    def __del__(self):
        # Safety net only: the library may already be gone at interpreter exit.
        try:
            if getattr(self, "_ptr", None) and cuda_loader.loaded():
                self.free()
        except Exception:  # noqa: BLE001 - nothing can be raised from __del__
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()
        return False

    def numpy(self, out=None):
        """A host copy (into `out` when given)."""
        if out is None:
            out = np.empty(self.shape, self.dtype)
        elif not (type(out) is np.ndarray and out.dtype == self.dtype and out.nbytes == self.nbytes
                  and out.flags.c_contiguous and out.flags.writeable):
            raise KernelError("numpy(out=): out must be a writable C-contiguous array of the same dtype and size")
        self._check_size()
        if self.nbytes:
            ffi, lib = cuda_loader.load()
            cuda_loader.check(lib.ev_cuda_memcpy_dtoh(ffi.from_buffer(out, require_writable=True),
                                                   self._device(), self.nbytes), "cudaMemcpy device->host")
        return out

    def set(self, host):
        """Overwrite the contents from a host array of the same dtype and size."""
        host = np.ascontiguousarray(host)
        if host.dtype != self.dtype or host.nbytes != self.nbytes:
            raise ShapeError(f"set: host array {host.dtype}{host.shape} does not match {self.dtype}{self.shape}")
        self._check_size()
        if self.nbytes:
            ffi, lib = cuda_loader.load()
            cuda_loader.check(lib.ev_cuda_memcpy_htod(self._device(), ffi.from_buffer(host), self.nbytes),
                           "cudaMemcpy host->device")
        return self

    def copy(self):
        """A new DeviceArray with the same contents (device to device)."""
        self._check_size()
        new = DeviceArray(self.shape, self.dtype)
        if self.nbytes:
            ffi, lib = cuda_loader.load()
            cuda_loader.check(lib.ev_cuda_memcpy_dtod(new._device(), self._device(), self.nbytes),
                           "cudaMemcpy device->device")
        return new

    def _check_size(self):
        if self.nbytes > self._allocated:
            raise KernelError(f"DeviceArray claims {self.nbytes} bytes, its allocation holds {self._allocated}")

    def _device(self):
        if self._ptr is None:
            raise KernelError("DeviceArray was freed")
        return self._cptr

    @property
    def __cuda_array_interface__(self):
        # Version 3; stream 1 is the legacy default stream our kernels run on,
        # so a consumer on another stream knows to wait for them.
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False),
                "version": 3, "strides": None, "descr": [("", self.dtype.str)], "stream": 1}

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d DeviceArray")
        return self.shape[0]

    def __repr__(self):
        state = "freed" if self._ptr is None else hex(self._ptr)
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, at {state})"


def empty(shape, dtype):
    """An uninitialised DeviceArray."""
    return DeviceArray(shape, dtype)


def empty_like(arr):
    return DeviceArray(arr.shape, arr.dtype)


def to_device(arr):
    """A DeviceArray holding a copy of a host array."""
    if isinstance(arr, DeviceArray):
        return arr.copy()
    arr = np.asarray(arr)
    if arr.dtype.kind not in _DTYPE_KINDS:
        raise DTypeError(f"to_device cannot copy dtype {arr.dtype}")
    out = DeviceArray(arr.shape, arr.dtype)
    try:
        return out.set(arr)
    except BaseException:
        out.free()
        raise
