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

tidy()'s semantics (scopes, keep) are described in scopes.py.
"""
import math

import numpy as np

from exprvm.errors import BackendError, DTypeError, KernelError, ShapeError
from exprvm.device import dlpack, loader
from exprvm.device.scopes import Scoped, _scopes, keep, tidy  # noqa: F401  (ev.cuda's tidy, keep)

# Everything numpy can hand over as raw bytes; object and string dtypes hold
# host pointers and make no sense on a device.
_DTYPE_KINDS = "biufc"


def is_available():
    """True when a CUDA device and exprvm's CUDA library are usable."""
    return loader.status()[0]


def unavailable_reason():
    """Why is_available() is False (driver, device, nvcc, build...), else None."""
    ok, reason = loader.status()
    return None if ok else reason


def device_count():
    """Number of CUDA devices (0 when CUDA is unavailable)."""
    try:
        ffi, lib = loader.load()
    except BackendError:
        return 0
    count = ffi.new("int*")
    loader.check(lib.ev_cuda_device_count(count), "cudaGetDeviceCount")
    return count[0]


def device_info(device=0):
    """{"name", "total_bytes", "capability"} of one device."""
    ffi, lib = loader.load()
    name = ffi.new("char[256]")
    total, major, minor = ffi.new("size_t*"), ffi.new("int*"), ffi.new("int*")
    loader.check(lib.ev_cuda_device_info(int(device), name, 256, total, major, minor),
                   f"cudaGetDeviceProperties({device})")
    return {"name": ffi.string(name).decode(errors="replace"), "total_bytes": total[0],
            "capability": (major[0], minor[0])}


def mem_info():
    """(free_bytes, total_bytes) of the current device."""
    ffi, lib = loader.load()
    free, total = ffi.new("size_t*"), ffi.new("size_t*")
    loader.check(lib.ev_cuda_mem_info(free, total), "cudaMemGetInfo")
    return free[0], total[0]


def synchronize():
    """Wait for every kernel launched so far; raises if one of them failed."""
    ffi, lib = loader.load()
    loader.check(lib.ev_cuda_synchronize(), "cudaDeviceSynchronize", KernelError)


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


def _c_strides(shape, itemsize):
    out, acc = [], itemsize
    for n in reversed(shape):
        out.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(out))


class DeviceArray(Scoped):
    """An array in CUDA device memory: C-contiguous and owning its allocation, or a view
    of one (reshape, transpose, basic indexing, broadcast_to: strided, owning nothing).

    A view is valid while its owner lives; freeing the owner makes every view report
    `freed` and refuse kernels. `strides` are in bytes, as numpy's."""

    __slots__ = ("shape", "dtype", "size", "nbytes", "strides", "_ptr", "_cptr", "_allocated",
                 "_base", "_offset", "_owner", "__weakref__")

    def __init__(self, shape, dtype, scoped=True):
        """scoped=False: never owned by a tidy scope (a machine's or a solver's own buffers,
        freed by their owner)."""
        dtype = np.dtype(dtype)
        if dtype.kind not in _DTYPE_KINDS:
            raise DTypeError(f"DeviceArray cannot hold dtype {dtype}")
        self.shape = _check_shape(shape)
        self.dtype = dtype
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.nbytes = self.size * dtype.itemsize
        self.strides = _c_strides(self.shape, dtype.itemsize)
        self._base, self._offset = None, 0
        self._owner = None      # another library's memory (from_dlpack): its dlpack.Owner
        self._ptr = None
        self._allocated = 0     # bytes the allocation really holds (kernels check sizes against it)
        ffi, lib = loader.load()
        out = ffi.new("void**")
        if self.nbytes:
            loader.check(lib.ev_cuda_malloc(out, self.nbytes), f"cudaMalloc({self.nbytes} bytes)")
            self._allocated = self.nbytes
        self._cptr = out[0]
        self._ptr = int(ffi.cast("uintptr_t", out[0]))
        stack = _scopes() if scoped else None
        if stack:
            stack[-1].track(self)

    @property
    def freed(self):
        """True once the device memory is freed (by ``free()``, ``ev.tidy`` or the owner's close), or the array it views is."""
        return self._ptr is None or (self._base is not None and self._base._ptr is None)

    @property
    def ptr(self):
        """The device address as an int (KernelError once freed)."""
        self._device()
        return self._ptr

    @property
    def ndim(self):
        """Number of axes."""
        return len(self.shape)

    @property
    def base(self):
        """The DeviceArray owning this view's memory, or None for an owner."""
        return self._base

    @property
    def contiguous(self):
        """C-contiguous (size-1 dimensions' strides ignored, as numpy does)?"""
        c = _c_strides(self.shape, self.dtype.itemsize)
        return all(n == 1 or s == t for n, s, t in zip(self.shape, self.strides, c))

    def free(self):
        """Release the device memory now (a view only lets go of its owner); later frees
        do nothing."""
        ptr, self._ptr = self._ptr, None
        if self._base is not None:
            self._cptr = None
            return
        if self._owner is not None:     # another library's memory: hand it back, never cudaFree it
            owner, self._owner = self._owner, None
            self._cptr = None
            owner.release()
            return
        if ptr:
            ffi, lib = loader.load()
            loader.check(lib.ev_cuda_free(self._cptr), "cudaFree")
        self._cptr = None

    def __del__(self):
        # Safety net only: the library may already be gone at interpreter exit.
        try:
            if getattr(self, "_ptr", None) and (loader.loaded() or getattr(self, "_owner", None)):
                self.free()
        except Exception:  # noqa: BLE001 - nothing can be raised from __del__
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()
        return False

    def numpy(self, out=None):
        """A host copy (into `out` when given); a strided view is gathered on the device first."""
        if not self.contiguous:
            with self.compact() as packed:
                return packed.numpy(out)
        if out is None:
            out = np.empty(self.shape, self.dtype)
        elif not (type(out) is np.ndarray and out.dtype == self.dtype and out.nbytes == self.nbytes
                  and out.flags.c_contiguous and out.flags.writeable):
            raise KernelError("numpy(out=): out must be a writable C-contiguous array of the same dtype and size")
        self._check_size()
        if self.nbytes:
            ffi, lib = loader.load()
            loader.check(lib.ev_cuda_memcpy_dtoh(ffi.from_buffer(out, require_writable=True),
                                                   self._device(), self.nbytes), "cudaMemcpy device->host")
        return out

    def set(self, host):
        """Overwrite the contents from a host array of the same dtype and size."""
        if not self.contiguous:
            raise KernelError(f"set: a strided view {self.shape} {self.strides} cannot be written from the host")
        host = np.ascontiguousarray(host)
        if host.dtype != self.dtype or host.nbytes != self.nbytes:
            raise ShapeError(f"set: host array {host.dtype}{host.shape} does not match {self.dtype}{self.shape}")
        self._check_size()
        if self.nbytes:
            ffi, lib = loader.load()
            loader.check(lib.ev_cuda_memcpy_htod(self._device(), ffi.from_buffer(host), self.nbytes),
                           "cudaMemcpy host->device")
        return self

    def copy(self):
        """A new DeviceArray with the same contents (device to device), C-contiguous."""
        if not self.contiguous:
            return self.compact()
        self._check_size()
        new = DeviceArray(self.shape, self.dtype)
        if self.nbytes:
            ffi, lib = loader.load()
            try:
                loader.check(lib.ev_cuda_memcpy_dtod(new._device(), self._device(), self.nbytes),
                                  "cudaMemcpy device->device")
            except BaseException:
                new.free()      # NOTE: a failed copy must not leave its new array allocated
                raise
        return new

    def _check_size(self):
        if self.nbytes > self._allocated:
            raise KernelError(f"DeviceArray claims {self.nbytes} bytes, its allocation holds {self._allocated}")

    def _device(self):
        if self._ptr is None or (self._base is not None and self._base._ptr is None):
            raise KernelError("DeviceArray was freed")
        return self._cptr

    # -- views ---------------------------------------------------------------------------
    def compact(self):
        """A new C-contiguous DeviceArray with this (possibly strided) view's contents (one
        strided-copy kernel; elements of 4 or 8 bytes, floats and ints alike)."""
        sfx = {4: "f32", 8: "f64"}.get(self.dtype.itemsize)
        if sfx is None:
            raise DTypeError(f"a strided copy moves 4- or 8-byte elements, not {self.dtype}")
        out = DeviceArray(self.shape, self.dtype)
        try:
            if self.size:
                ffi, lib = loader.load()
                ctype = "float*" if sfx == "f32" else "double*"
                item = self.dtype.itemsize
                dense = [math.prod(self.shape[d + 1:]) for d in range(self.ndim)]
                loader.check_kernel(getattr(lib, f"ev_cuda_copy_strided_{sfx}")(
                    ffi.cast(ctype, self._device()), ffi.cast(ctype, out._device()), self.ndim,
                    ffi.new("int64_t[]", list(self.shape)), ffi.new("int64_t[]", [s // item for s in self.strides]),
                    ffi.new("int64_t[]", dense), self.size), "copy")
        except BaseException:
            out.free()      # NOTE: a failed copy must not leave its new array allocated
            raise
        return out

    def fake(self):
        """A host array with this array's shape and strides and no real memory: numpy's view
        functions applied to it describe the view they would make (never read from it)."""
        return np.lib.stride_tricks.as_strided(np.zeros(1, self.dtype), self.shape, self.strides)

    def apply_view(self, fn):
        """The view fn makes of this array: fn maps a numpy array to a view of it (np.reshape,
        np.transpose, basic indexing...). KernelError when fn would copy."""
        fake = self.fake()
        try:
            view = fn(fake)
        except ValueError as e:     # numpy: "Unable to avoid creating a copy ..."
            raise KernelError(f"a view of a DeviceArray {self.shape}: {e}") from None
        if not (isinstance(view, np.ndarray) and (view.size == 0 or np.shares_memory(view, fake))):
            raise KernelError(f"a view of a DeviceArray {self.shape}: the operation would copy")
        delta = view.__array_interface__["data"][0] - fake.__array_interface__["data"][0]
        return self._view(view.shape, view.strides, delta, view.dtype)

    def _view(self, shape, strides, delta, dtype):
        owner = self._base if self._base is not None else self
        self._device()
        offset = self._offset + int(delta)
        lo = hi = offset
        for n, st in zip(shape, strides):
            if n == 0:
                lo, hi = offset, offset - dtype.itemsize
                break
            lo, hi = lo + min(0, (n - 1) * st), hi + max(0, (n - 1) * st)
        if math.prod(shape) and (lo < 0 or hi + dtype.itemsize > owner._allocated):
            raise KernelError(f"view {shape} {strides} at byte {offset} leaves the allocation "
                              f"of {owner._allocated} bytes")
        v = object.__new__(DeviceArray)
        v._owner = None
        v.shape, v.dtype, v.strides = tuple(int(n) for n in shape), np.dtype(dtype), tuple(strides)
        v.size = math.prod(v.shape)
        v.nbytes = v.size * v.dtype.itemsize
        v._base, v._offset = owner, offset
        v._allocated = owner._allocated - offset
        v._ptr = owner._ptr + offset
        ffi, _ = loader.load()
        v._cptr = ffi.cast("void*", v._ptr)
        return v

    def reshape(self, *shape):
        """A view with a new shape (no copy; a ``KernelError`` if the strides cannot express it)."""
        shape = shape[0] if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)) else shape
        return self.apply_view(lambda a: np.reshape(a, shape, copy=False))

    def transpose(self, *axes):
        """A view with the axes permuted (reversed by default), as ``numpy.transpose``."""
        axes = axes[0] if len(axes) == 1 and not isinstance(axes[0], (int, np.integer)) else axes
        return self.apply_view(lambda a: np.transpose(a, axes or None))

    @property
    def T(self):
        """The view with the axes reversed."""
        return self.transpose()

    def broadcast_to(self, shape):
        """A read-only view repeated to ``shape`` by numpy's broadcasting rules (no copy)."""
        return self.apply_view(lambda a: np.broadcast_to(a, shape))

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        if not all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in index):
            raise KernelError("DeviceArray takes basic indices only (ints, slices, None, ...); "
                              "use exprvm's take kernel to gather")
        tail = () if Ellipsis in index else (Ellipsis,)  # NOTE: keeps a full int index a 0-d view
        return self.apply_view(lambda a: a[index + tail])

    def __array__(self, dtype=None, copy=None):
        # NOTE: always a copy to the host (ev.save, np.asarray); copy=False cannot be honoured.
        if copy is False:
            raise ValueError("a DeviceArray cannot be viewed as a host array without a copy")
        host = self.numpy()
        return host if dtype is None else host.astype(dtype, copy=False)

    @property
    def __cuda_array_interface__(self):
        # Version 3; stream 1 is the legacy default stream our kernels run on,
        # so a consumer on another stream knows to wait for them.
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False),
                "version": 3, "strides": None if self.contiguous else self.strides,
                "descr": [("", self.dtype.str)], "stream": 1}

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        """A DLPack capsule over this array's device memory (no copy unless copy=True): torch's,
        JAX's and CuPy's from_dlpack read it in place. The array lives until the consumer
        lets go of it."""
        if stream is not None and stream not in (-1, dlpack.LEGACY_STREAM):
            synchronize()       # the consumer's stream must see what our kernels wrote
        return dlpack.export(self, max_version, dl_device, copy)

    def __dlpack_device__(self):
        return (dlpack.KDL_CUDA, 0)

    @staticmethod
    def from_dlpack(obj):
        """A DeviceArray over a CUDA DLPack producer's memory (no copy); ev.from_dlpack's
        path for device memory. Freeing it hands the memory back to the producer."""
        ptr, shape, strides, dtype, owner = dlpack.consume(obj)
        try:
            if dtype.kind not in _DTYPE_KINDS:
                raise DTypeError(f"DeviceArray cannot hold dtype {dtype}")
            a = object.__new__(DeviceArray)
            a.shape, a.dtype = _check_shape(shape), dtype
            a.strides = _c_strides(a.shape, dtype.itemsize) if strides is None else tuple(int(s) for s in strides)
            a.size = math.prod(a.shape)
            a.nbytes = a.size * dtype.itemsize
            if any(s < 0 for s in a.strides):
                raise KernelError(f"from_dlpack: negative strides {a.strides} are not supported")
            extent = sum((n - 1) * st for n, st in zip(a.shape, a.strides)) + dtype.itemsize if a.size else 0
            a._base, a._offset, a._owner, a._allocated = None, 0, owner, extent
            a._ptr = int(ptr)
            ffi, _ = loader.load()
            a._cptr = ffi.cast("void*", a._ptr)
            return a
        except BaseException:
            owner.release()
            raise

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d DeviceArray")
        return self.shape[0]

    def __repr__(self):
        state = "freed" if self.freed else hex(self._ptr)
        view = "" if self._base is None else f", view strides={self.strides}"
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}{view}, at {state})"


def empty(shape, dtype):
    """An uninitialised DeviceArray."""
    return DeviceArray(shape, dtype)


def empty_like(arr):
    """An uninitialised DeviceArray of ``arr``'s shape and dtype."""
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
