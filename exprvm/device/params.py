"""Parameters resident on a CUDA device: the store a device machine keeps.

DeviceParams.bind(node) uploads a parameter's host array once; from then on the device
copy is the parameter: `resident(host)` finds it (the device solvers of
exprvm.train.device update it there), and the host array is a snapshot refreshed by
`to_host()` and `close()` (which also frees the copies). Constants a device program
reads are uploaded once too (`constant`). `fresh(value)` is what ev.save writes: the
device value of a resident host array, or the value itself.
"""
import numpy as np

from exprvm.errors import ExprError, ShapeError
from exprvm.device.arrays import DeviceArray

_RESIDENT = {}          # id(host array) -> (host array, DeviceArray) while a machine holds it


def resident(host):
    """The DeviceArray a device machine keeps for this host array, or None."""
    hit = _RESIDENT.get(id(host))
    return hit[1] if hit is not None and hit[0] is host else None


def device_value(p):
    """p.value as a DeviceArray (itself, or the resident copy of its host array), or None."""
    v = p.value
    if type(v) is DeviceArray:
        return v
    return resident(v) if isinstance(v, np.ndarray) else None


class DeviceParams:
    """A device machine's parameters and constants on the device (see the module docstring)."""

    def __init__(self):
        self._owned = {}        # id(node) -> [node, host array, DeviceArray]
        self._consts = {}       # key -> DeviceArray

    def bind(self, node):
        """node's parameter on the device: its value itself when that is a DeviceArray, else
        its host array's resident copy, uploaded once (and again, into the same buffer, when
        .value is assigned another host array)."""
        value = node.value
        if type(value) is DeviceArray:
            if value.shape != node.shape or value.dtype != node.dtype or not value.contiguous:
                raise ShapeError(f"parameter {node.label}: device value {value.shape} {value.dtype} "
                                 f"does not fit the node {node.shape} {node.dtype.name}")
            return value
        if value is None:
            raise ExprError(f"parameter {node.label} has no value")
        host = value if isinstance(value, np.ndarray) else np.asarray(value)
        if host.shape != node.shape or host.dtype != node.dtype:
            raise ShapeError(f"parameter {node.label}: value {host.shape} {host.dtype} does not fit "
                             f"the node {node.shape} {node.dtype.name}")
        entry = self._owned.get(id(node))
        if entry is not None and entry[1] is host:
            return entry[2]
        d = resident(host)
        if d is None:               # NOTE: one device copy per host array, whichever machine
            d = DeviceArray(node.shape, node.dtype, scoped=False)
            d.set(host)
            _RESIDENT[id(host)] = (host, d)
        if entry is not None:
            self._release(entry)
        self._owned[id(node)] = [node, host, d]
        return d

    def seen(self, node):
        """The host value this parameter was last bound from (the machine's identity check)."""
        entry = self._owned.get(id(node))
        return entry[1] if entry is not None else node.value

    def constant(self, key, array):
        """Constant `key` on the device: uploaded once, freed with the machine."""
        d = self._consts.get(key)
        if d is None:
            host = np.asarray(array)
            d = self._consts[key] = DeviceArray(host.shape, host.dtype, scoped=False).set(host)
        return d

    def to_host(self):
        """Copy every parameter's device value into its host array (a sync point)."""
        for node, host, d in self._owned.values():
            _copy_back(host, d)

    def _release(self, entry):
        node, host, d = entry
        _copy_back(host, d)
        if resident(host) is d and not any(e[2] is d for e in self._owned.values() if e is not entry):
            _RESIDENT.pop(id(host), None)
            d.free()

    def close(self):
        """to_host(), then free the device copies and constants."""
        for entry in list(self._owned.values()):
            self._release(entry)
        for d in self._consts.values():
            d.free()
        self._owned, self._consts = {}, {}


def _copy_back(host, d):
    if d.freed:
        return
    if type(host) is np.ndarray and host.flags.c_contiguous and host.flags.writeable:
        d.numpy(host)
    elif isinstance(host, np.ndarray) and host.flags.writeable:
        host[...] = d.numpy()


def to_host():
    """Copy every resident parameter's device value into its host array, whichever machine
    holds it (a sync point; TapeMachine.params_to_host does this for one machine)."""
    for host, d in list(_RESIDENT.values()):
        _copy_back(host, d)


def fresh(value):
    """value, or a host copy of its device copy while a device machine holds it (ev.save)."""
    d = resident(value) if isinstance(value, np.ndarray) else None
    return d.numpy() if d is not None else value
