"""Other libraries' arrays read without a copy: DLPack (``__dlpack__``: PyTorch, JAX, CuPy,
numpy) and numpy's array protocol (``__array__``).

as_array(value) is how a feed or a parameter value becomes the numpy array a leaf holds:
host memory is viewed in place (dtype, shape and strides as the producer has them), so
a torch CPU tensor fed to an input is read where it lies. ev.from_dlpack(obj) wraps any
DLPack producer: host memory as a numpy view, device memory as the device package's
array (registered in DEVICE_IMPORTERS by the package that owns device arrays).
"""
import numpy as np

from ..errors import ExprError, FeedError

KDL_CPU = 1
DEVICE_NAMES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal", 10: "rocm",
                13: "cuda_managed", 14: "oneapi"}
DEVICE_IMPORTERS = {}     # DLPack device type -> fn(obj) -> an array in that device's memory


def dlpack_device(obj):
    """(device type, device id) of a DLPack producer; (1, 0) when it does not say."""
    try:
        kind, index = obj.__dlpack_device__()
        return int(kind), int(index)
    except AttributeError:
        return KDL_CPU, 0
    except Exception as e:      # noqa: BLE001 - the producer's own error, reported as ours
        raise ExprError(f"{type(obj).__name__}.__dlpack_device__() failed: {e}") from None


def as_array(value):
    """value as a numpy array without a copy where its memory allows (see the module doc);
    numbers and lists as numpy makes them. FeedError for what cannot be read on the host."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__dlpack__") and not isinstance(value, np.generic):
        kind, index = dlpack_device(value)
        if kind == KDL_CPU:
            try:
                return np.from_dlpack(value)
            except (BufferError, TypeError, ValueError, RuntimeError) as e:
                reason = e      # e.g. a torch tensor that requires grad; try __array__ below
        else:
            reason = f"its memory is on {DEVICE_NAMES.get(kind, f'device type {kind}')}:{index}"
        if not hasattr(value, "__array__"):
            raise FeedError(f"cannot read a {type(value).__name__} on the host: {reason}")
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError, BufferError) as e:
        raise FeedError(f"cannot read a {type(value).__name__} as an array: {e}") from None


def from_dlpack(obj):
    """Wrap a DLPack producer's memory without a copy.

    Parameters
    ----------
    obj : object with ``__dlpack__``
        A PyTorch tensor, a JAX array, a CuPy array, a numpy array, an ev.cuda.DeviceArray.

    Returns
    -------
    numpy.ndarray or ev.cuda.DeviceArray
        A view of host memory (sharing it with obj), or a device array over obj's device
        memory (obj kept alive as long as the view).

    Raises
    ------
    ExprError
        obj is no DLPack producer, its device has no exprvm array, or the producer
        refuses to export (a torch tensor that requires grad: detach it).
    """
    if not hasattr(obj, "__dlpack__"):
        raise ExprError(f"ev.from_dlpack: a {type(obj).__name__} has no __dlpack__")
    kind, index = dlpack_device(obj)
    if kind == KDL_CPU:
        try:
            return np.from_dlpack(obj)
        except (BufferError, TypeError, ValueError, RuntimeError) as e:
            raise ExprError(f"ev.from_dlpack: {type(obj).__name__} refused to export: {e}") from None
    importer = DEVICE_IMPORTERS.get(kind)
    if importer is None:
        raise ExprError(f"ev.from_dlpack: memory on {DEVICE_NAMES.get(kind, f'device type {kind}')}:{index} "
                        "has no exprvm array")
    return importer(obj)
