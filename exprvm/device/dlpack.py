"""DLPack for device arrays: DeviceArray.__dlpack__ hands its memory to PyTorch, JAX or
CuPy without a copy, and ev.from_dlpack wraps theirs as a DeviceArray.

The ABI is dlpack.h's, the unversioned "dltensor" capsule every consumer accepts:

    DLManagedTensor { DLTensor dl_tensor; void *manager_ctx; void (*deleter)(DLManagedTensor *) }
    DLTensor { void *data; DLDevice device; int ndim; DLDataType dtype; int64_t *shape;
               int64_t *strides (in elements); uint64_t byte_offset }

Exporting: the capsule points at a DLManagedTensor this module keeps alive, with the
array it describes, in LIVE until the consumer calls its deleter (or the capsule dies
unconsumed). Importing: the capsule is renamed "used_dltensor" (the consumer's mark), and
the DeviceArray made over its memory calls the producer's deleter when it is freed.
Memory is CUDA device memory (kDLCUDA); exprvm's kernels run on the legacy default
stream, so a consumer on another stream is synchronized with before the handover.
"""
import ctypes
from ctypes import CFUNCTYPE, POINTER, Structure, c_char_p, c_int, c_int64, c_uint8, c_uint16, c_uint64, c_void_p

import numpy as np

from ..errors import ExprError
from ..kernels import host

KDL_CUDA = 2
LEGACY_STREAM = 1
_CODES = {"i": 0, "u": 1, "f": 2, "c": 5, "b": 6}
_KINDS = {code: kind for kind, code in _CODES.items()}


class DLDevice(Structure):
    _fields_ = [("device_type", c_int), ("device_id", c_int)]


class DLDataType(Structure):
    _fields_ = [("code", c_uint8), ("bits", c_uint8), ("lanes", c_uint16)]


class DLTensor(Structure):
    _fields_ = [("data", c_void_p), ("device", DLDevice), ("ndim", c_int), ("dtype", DLDataType),
                ("shape", POINTER(c_int64)), ("strides", POINTER(c_int64)), ("byte_offset", c_uint64)]


class DLManagedTensor(Structure):
    pass


DELETER = CFUNCTYPE(None, POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [("dl_tensor", DLTensor), ("manager_ctx", c_void_p), ("deleter", DELETER)]

_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.restype, _new_capsule.argtypes = ctypes.py_object, [c_void_p, c_char_p, c_void_p]
_set_name = ctypes.PYFUNCTYPE(c_int, ctypes.py_object, c_char_p)(("PyCapsule_SetName", ctypes.pythonapi))
_valid = ctypes.PYFUNCTYPE(c_int, ctypes.py_object, c_char_p)(("PyCapsule_IsValid", ctypes.pythonapi))
_pointer = ctypes.PYFUNCTYPE(c_void_p, ctypes.py_object, c_char_p)(("PyCapsule_GetPointer", ctypes.pythonapi))

LIVE = {}     # address of an exported DLManagedTensor -> (it, its shape and strides, the array)


@DELETER
def _release(managed):
    """The consumer is done with an exported tensor: let the array go."""
    LIVE.pop(ctypes.addressof(managed.contents), None)


def _capsule_destructor():
    """The C extension's capsule destructor (csrc/ev_dlpack.c), or None without it.

    NOTE: a destructor must be C: it may run while a consumer's exception is pending, and
    a ctypes callback would swallow that exception. Without the extension, a capsule that
    dies unconsumed keeps its array alive until the process ends."""
    return host.dlpack_capsule_destructor()


def export(array, max_version=None, dl_device=None, copy=None):
    """DeviceArray.__dlpack__: a "dltensor" capsule over the array's memory (a copy's when
    copy=True); the caller has synchronized with the consumer's stream."""
    if dl_device is not None and tuple(dl_device) != (KDL_CUDA, 0):
        raise BufferError(f"a DeviceArray lives on CUDA device 0, not on {tuple(dl_device)}")
    if copy:
        array = array.copy()
    ptr = array.ptr                          # KernelError once freed
    itemsize = array.dtype.itemsize
    code = _CODES.get(array.dtype.kind)
    if code is None or any(s % itemsize for s in array.strides):
        raise BufferError(f"DLPack cannot describe a DeviceArray of {array.dtype} with strides {array.strides}")
    ndim = array.ndim
    shape = (c_int64 * max(ndim, 1))(*array.shape)
    strides = (c_int64 * max(ndim, 1))(*(s // itemsize for s in array.strides))
    managed = DLManagedTensor()
    managed.dl_tensor = DLTensor(ptr, DLDevice(KDL_CUDA, 0), ndim, DLDataType(code, itemsize * 8, 1),
                                 ctypes.cast(shape, POINTER(c_int64)), ctypes.cast(strides, POINTER(c_int64)), 0)
    managed.deleter = _release
    LIVE[ctypes.addressof(managed)] = (managed, shape, strides, array)
    return _new_capsule(ctypes.addressof(managed), b"dltensor", _capsule_destructor())


class Owner:
    """What a DeviceArray made from another library's capsule holds: the producer's
    DLManagedTensor, handed back through its deleter exactly once."""

    __slots__ = ("address",)

    def __init__(self, address):
        self.address = address

    def release(self):
        address, self.address = self.address, None
        if address:
            managed = DLManagedTensor.from_address(address)
            if managed.deleter:
                managed.deleter(ctypes.pointer(managed))


def consume(obj):
    """(data pointer, shape, byte strides, dtype, Owner) of a CUDA DLPack producer's memory;
    the capsule is marked used. The strides are None where the producer gave none (DLPack's
    NULL strides: C-contiguous)."""
    try:
        capsule = obj.__dlpack__(stream=LEGACY_STREAM)
    except TypeError:        # a producer without the stream keyword
        capsule = obj.__dlpack__()
    if not _valid(capsule, b"dltensor"):
        raise ExprError(f"ev.from_dlpack: {type(obj).__name__}.__dlpack__() gave no 'dltensor' capsule")
    address = _pointer(capsule, b"dltensor")
    t = DLManagedTensor.from_address(address).dl_tensor
    owner = Owner(address)
    _set_name(capsule, b"used_dltensor")
    try:
        if t.device.device_type != KDL_CUDA:
            raise ExprError(f"ev.from_dlpack: memory of device type {t.device.device_type} is not CUDA memory")
        kind = _KINDS.get(t.dtype.code)
        if kind is None or t.dtype.lanes != 1 or t.dtype.bits % 8:
            raise ExprError(f"ev.from_dlpack: DLPack dtype (code {t.dtype.code}, {t.dtype.bits} bits, "
                            f"{t.dtype.lanes} lanes) has no numpy dtype")
        dtype = np.dtype(f"{kind}{t.dtype.bits // 8}") if kind != "b" else np.dtype(np.bool_)
        shape = tuple(t.shape[i] for i in range(t.ndim))
        strides = tuple(t.strides[i] * dtype.itemsize for i in range(t.ndim)) if t.strides else None
        return (t.data or 0) + t.byte_offset, shape, strides, dtype, owner
    except BaseException:
        owner.release()
        raise
