"""ev.cuda: device arrays, their lifetime, and what the GPU is.

    import exprvm as ev
    if ev.cuda.is_available():
        x = ev.cuda.to_device(np.ones(1000, np.float32))
        with ev.cuda.tidy() as scope:       # frees what it creates ...
            ...
    else:
        print(ev.cuda.unavailable_reason())

The arrays live in exprvm.device.arrays (tidy's semantics: exprvm.device.scopes).
"""
from .device.arrays import (  # noqa: F401
    DeviceArray, device_count, device_info, empty, empty_like, is_available, keep, mem_info,
    synchronize, tidy, to_device, unavailable_reason)

__all__ = ["DeviceArray", "device_count", "device_info", "empty", "empty_like", "is_available", "keep",
           "mem_info", "synchronize", "tidy", "to_device", "unavailable_reason"]


def __dir__():
    # NOTE: dir() and tab completion list the API only, not what the module imports
    return list(__all__)
