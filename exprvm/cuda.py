"""ev.cuda: device arrays, their lifetime, and what the GPU is.

    import exprvm as ev
    if ev.cuda.is_available():
        x = ev.cuda.to_device(np.ones(1000, np.float32))
        with ev.cuda.tidy() as scope:       # frees what it creates ...
            ...
    else:
        print(ev.cuda.unavailable_reason())

The arrays live in exprvm.device.arrays (tidy's semantics: exprvm.device.scopes). They
speak DLPack both ways: DeviceArray.__dlpack__ for torch.from_dlpack & co., and
ev.from_dlpack(a torch CUDA tensor) gives a DeviceArray over its memory.
"""
from .core import DEVICE_IMPORTERS as _DEVICE_IMPORTERS
from .device.arrays import (  # noqa: F401
    DeviceArray, device_count, device_info, empty, empty_like, is_available, keep, mem_info,
    synchronize, tidy, to_device, unavailable_reason)

_DEVICE_IMPORTERS[2] = DeviceArray.from_dlpack     # DLPack's kDLCUDA

__all__ = ["DeviceArray", "device_count", "device_info", "empty", "empty_like", "is_available", "keep",
           "mem_info", "synchronize", "tidy", "to_device", "unavailable_reason"]


def __dir__():
    # NOTE: dir() and tab completion list the API only, not what the module imports
    return list(__all__)
