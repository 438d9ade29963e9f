"""Parameters resident on a CUDA device, and the solvers' updates there.

    m = ev.TapeMachine(g, [loss], device="cuda")
    m.run(feeds)            # the parameters are uploaded once, when the machine binds;
                            # W.grad is an ev.cuda.DeviceArray, the loss a host array
    opt.step([W, b])        # SGD, Momentum (nesterov=), Adam, AdamW on the device copies
    ev.save(path, [W, b])   # saves the device values (copied to the host)
    m.params_to_host()      # W.value (the host array) gets the current values
    m.close()               # ... and so does close(), which frees the device

DeviceParams (exprvm/device/params.py) is what a device machine keeps. Each parameter's host array (`W.value`,
the array an ev.nn block owns) is uploaded once and becomes RESIDENT: from then on the
device copy is the parameter, `resident(host)` finds it, the solvers update it (also
through ev.nn Params from `model.collect_grads(g)`: host `.value`, device `.grad`),
and the host array is a snapshot refreshed by `to_host()` / `close()`. NOTE: writing
into the host array in place is not seen while it is resident; assigning `.value` a
new array is (it is uploaded into the same device buffer at the next run).

`step(solver, params)` is Solver.step for such parameters, with the same checks (a
parameter listed twice, none with a gradient, shapes) and the host's order of
operations (the hooks clip=, clip_norm=, l1=, l2= stand for, in the kernel; see hooks.fused), each parameter in one fused
kernel (csrc/ev_cuda_train.cu). What differs, because reading a value back would stall
the device every step: a NaN or Inf gradient is reported by the next copy to the host
(the next run's loss: NumericError, the parameters it reached hold NaN / Inf), unless
the solver has nonfinite="skip", which reads the gradients' squared norm back (one
8-byte copy a step) to skip the step before anything moves.
"""
import math

import numpy as np

from ..errors import BackendError, DTypeError, ShapeError
from ..device import loader
from ..kernels.checks import SUFFIX
from ..device.launch import checked, device_pointer, lib_fn
from ..device.arrays import DeviceArray
from ..device.params import DeviceParams, device_value, fresh, resident, to_host  # noqa: F401
from . import hooks
from .solver_checks import split_by_grad

# -- solver steps on the device ------------------------------------------------------------

KINDS = ("SGD", "Momentum", "Adam", "AdamW")


class DeviceSlot:
    """A parameter's solver state on the device (the host _Slot's counterpart)."""

    __slots__ = ("param", "name", "t", "bufs")

    def __init__(self, param, name, w, buffer_names, host_bufs=None):
        self.param, self.name, self.t = param, name, 0
        self.bufs = {}
        for b in buffer_names:
            d = self.bufs[b] = DeviceArray(w.shape, w.dtype, scoped=False)
            d.set(host_bufs[b] if host_bufs is not None else np.zeros(w.shape, w.dtype))


def holds(params):
    """Are these (some of them) device parameters? Then step() is the way to update them."""
    pairs = params.values() if isinstance(params, dict) else params
    return any(type(getattr(p, "grad", None)) is DeviceArray or device_value(p) is not None
               for p in pairs)


def _kind(solver):
    for cls in type(solver).__mro__:
        if cls.__name__ in KINDS:
            return cls.__name__
    raise BackendError(f"{type(solver).__name__} has no device update; on the device use "
                       f"{', '.join(KINDS)}, or keep the parameters on the host")


def step(solver, params):
    """Solver.step for device parameters (see the module docstring). True if it updated."""
    kind = _kind(solver)
    fused = hooks.fused(solver.hooks, solver._kind())   # (clip, clip_norm, l1, l2): in the kernel
    active = []
    having, missing = split_by_grad(params, solver._kind())
    for name, p in having:
        w = device_value(p)
        if w is None:
            raise DTypeError(f"parameter {name!r}: its value is on the host and its gradient on the "
                             "device; step host and device parameters in separate calls")
        g = p.grad
        if type(g) is not DeviceArray:
            raise DTypeError(f"parameter {name!r}: a device parameter needs its gradient on the "
                             f"device, got {type(g).__name__}")
        if g.shape != w.shape or g.dtype != w.dtype:
            raise ShapeError(f"parameter {name!r}: gradient {g.shape} {g.dtype} does not match "
                             f"value {w.shape} {w.dtype}")
        active.append((_slot(solver, name, p, w), w, g))
    if missing:
        solver._report_missing(missing, bool(active))
    scale = _norm_scale(solver, active, fused)
    if scale is False:
        solver.skipped += 1
        return False
    if solver.schedule is not None:
        solver.lr = solver.schedule(solver.steps)
    for slot, w, g in active:
        slot.t += 1
        _update(kind, solver, slot, w, g, scale, fused)
    solver.steps += 1
    return True


def _slot(solver, name, p, w):
    slot = solver._slots.get(id(p))
    if slot is None or not isinstance(slot, DeviceSlot):
        host_bufs = None if slot is None else slot.bufs       # state loaded or made on the host
        t = 0 if slot is None else slot.t
        slot = solver._slots[id(p)] = DeviceSlot(p, name, w, solver.buffers, host_bufs)
        slot.t = t
    slot.name = name
    return slot


def _norm_scale(solver, active, fused):
    """The device scalar of the global-norm clip (or None), or False: skip the step."""
    clip, clip_norm = fused[0], fused[1]
    need_norm = clip_norm is not None or solver.nonfinite == "skip"
    if not need_norm or not active:
        return None
    ffi, lib = loader.load()
    acc = getattr(solver, "_device_norm", None)
    if acc is None or acc.freed:
        acc = solver._device_norm = DeviceArray((1,), np.float64, scoped=False)
    lib.ev_cuda_memset(acc._device(), 0, 8)
    for _, w, g in active:
        sfx = SUFFIX[w.dtype]
        parts = max(1, min(g.size, 4096))
        checked(lib_fn(f"ev_cuda_sumsq_{sfx}"), "sumsq")(
            device_pointer(g, w.dtype, "sumsq", "g", contiguous=True), clip,
            acc._device(), g.size, parts)
    if solver.nonfinite == "skip":
        total = float(acc.numpy()[0])
        if not math.isfinite(total):
            return False
    if clip_norm is None:
        return None
    checked(lib_fn("ev_cuda_clip_scale"), "clip_scale")(acc._device(), clip_norm)
    return acc


def _update(kind, solver, slot, w, g, scale, fused):
    ffi, _ = loader.load()
    dt, sfx = w.dtype, SUFFIX[w.dtype]
    pw = device_pointer(w, dt, kind, "value", contiguous=True)
    pg = device_pointer(g, dt, kind, "grad", contiguous=True)
    ps = ffi.NULL if scale is None else scale._device()
    clip, _, l1, l2 = fused
    n = w.size
    if kind == "SGD":
        checked(lib_fn(f"ev_cuda_sgd_{sfx}"), "SGD")(pw, pg, n, solver.lr, clip, l1, l2, ps)
    elif kind == "Momentum":
        pv = device_pointer(slot.bufs["velocity"], dt, kind, "velocity", contiguous=True)
        checked(lib_fn(f"ev_cuda_momentum_{sfx}"), "Momentum")(
            pw, pv, pg, n, solver.lr, solver.momentum, int(solver.nesterov), clip, l1, l2, ps)
    else:
        pm = device_pointer(slot.bufs["m"], dt, kind, "m", contiguous=True)
        pv = device_pointer(slot.bufs["v"], dt, kind, "v", contiguous=True)
        b1, b2 = solver.beta1, solver.beta2
        bias1, bias2 = 1.0 - b1 ** slot.t, 1.0 - b2 ** slot.t
        decay = 1.0 - solver.lr * solver.weight_decay if kind == "AdamW" and solver.weight_decay else 1.0
        checked(lib_fn(f"ev_cuda_adam_{sfx}"), kind)(
            pw, pm, pv, pg, n, solver.lr / bias1, b1, 1.0 - b1, b2, 1.0 - b2, 1.0 / math.sqrt(bias2),
            solver.eps, decay, clip, l1, l2, ps)


def free_state(solver):
    """Free a solver's device state (it is rebuilt from zeros at the next step)."""
    for key, slot in list(solver._slots.items()):
        if isinstance(slot, DeviceSlot):
            for d in slot.bufs.values():
                d.free()
            del solver._slots[key]
    acc = getattr(solver, "_device_norm", None)
    if acc is not None:
        acc.free()
