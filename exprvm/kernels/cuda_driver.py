"""Asks the CUDA driver (libcuda) whether there is a device, without the runtime or nvcc."""
import ctypes

from cffi import FFI

_DRIVER_NAMES = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")
_DRIVER_CDEF = """
int cuInit(unsigned int flags);
int cuDeviceGetCount(int* count);
int cuDeviceGet(int* device, int ordinal);
int cuDeviceGetAttribute(int* value, int attrib, int device);
"""
_CC_MAJOR, _CC_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_*


def probe_driver():
    """(ok, reason, (major, minor) of device 0 or None), asking the driver only."""
    ffi = FFI()
    ffi.cdef(_DRIVER_CDEF)
    drv = None
    for name in _DRIVER_NAMES:
        # NOTE: the system loader's own search first: ffi.dlopen, for a name it cannot
        # load, falls back to ctypes.util.find_library, which runs ldconfig, gcc and ld
        # (0.1 s a name here) to look where the loader has already looked
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        drv = ffi.dlopen(name)
        break
    if drv is None:
        return False, f"no CUDA driver: none of {', '.join(_DRIVER_NAMES)} could be loaded", None
    rc = drv.cuInit(0)
    if rc != 0:
        return False, f"CUDA driver failed to initialise (cuInit returned CUresult {rc})", None
    count = ffi.new("int*")
    rc = drv.cuDeviceGetCount(count)
    if rc != 0 or count[0] == 0:
        return False, f"no CUDA device (cuDeviceGetCount returned {rc}, count {count[0]})", None
    dev, major, minor = ffi.new("int*"), ffi.new("int*"), ffi.new("int*")
    cap = None
    if (drv.cuDeviceGet(dev, 0) == 0
            and drv.cuDeviceGetAttribute(major, _CC_MAJOR, dev[0]) == 0
            and drv.cuDeviceGetAttribute(minor, _CC_MINOR, dev[0]) == 0):
        cap = (major[0], minor[0])
    return True, f"{count[0]} device(s)", cap
