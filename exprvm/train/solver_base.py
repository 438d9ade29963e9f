"""The Solver base class every solver builds on: the step's checks, its hooks (clipping,
regularization: hooks.py), schedules, per-parameter state and state_dict (see solvers.py
for the rules a step follows)."""
import warnings

import numpy as np

from ..errors import CheckpointError, ExprError, GradError, NumericError, ShapeError
from .solver_checks import (check_grad, check_value, count_bad, entry, finite, named, nonneg, positive,
                            split_by_grad)
from . import device, hooks as hook_lib, schedules

NONFINITE = ("raise", "skip")


class MissingGradWarning(UserWarning):
    """Some parameters passed to a solver step had no gradient and were not updated."""


class _Slot:
    """Per-parameter state: the solver's buffers plus scratch space for the gradient. A hook
    sees it as a parameter with .name, .value, .grad (the prepared gradient) and .scratch."""

    __slots__ = ("param", "name", "t", "bufs", "g", "tmp")

    def __init__(self, param, name, value, buffer_names):
        self.param = param          # held so that id(param) stays unique while the slot lives
        self.name = name
        self.t = 0
        self.bufs = {b: np.zeros_like(value) for b in buffer_names}
        self.g = np.empty_like(value)
        self.tmp = np.empty_like(value)

    @property
    def value(self):
        return self.param.value

    @property
    def grad(self):
        return self.g

    @grad.setter
    def grad(self, new):        # `p.grad *= 2` in a hook assigns the same array back
        if new is not self.g:
            np.copyto(self.g, new, casting="same_kind")

    @property
    def scratch(self):
        return self.tmp

    @scratch.setter
    def scratch(self, new):
        if new is not self.tmp:
            np.copyto(self.tmp, new, casting="same_kind")


class Solver:
    """Shared machinery: gradient preparation, per-parameter state, state_dict."""

    buffers = ()                    # names of the per-parameter state arrays

    def __init__(self, lr, *, l1=0.0, l2=0.0, clip=None, clip_norm=None, strict=False,
                 nonfinite="raise"):
        self.schedule, lr = schedules.split_lr(lr)   # lr= may be an ev.schedules schedule
        self.lr = positive("lr", lr)
        self.l1 = nonneg("l1", l1)
        self.l2 = nonneg("l2", l2)
        self.clip = None if clip is None else positive("clip", clip)
        self.clip_norm = None if clip_norm is None else positive("clip_norm", clip_norm)
        # NOTE: the four arguments above are hooks underneath, run first at every step.
        self.hooks = hook_lib.from_arguments(self.clip, self.clip_norm, self.l1, self.l2)
        if nonfinite not in NONFINITE:
            raise ExprError(f"solver: nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
        self.strict = bool(strict)
        self.nonfinite = nonfinite
        self.steps = 0
        self.skipped = 0            # steps skipped for a NaN/Inf gradient (nonfinite="skip")
        self._slots = {}            # id(param) -> _Slot
        self._warned = set()        # names already reported without a gradient

    def add_hook(self, hook):
        """Run ``hook(solver, params)`` on the gradients at every step, before the update and
        after the hooks added before it (see ``ev.solvers.hooks``).

        Parameters
        ----------
        hook : callable
            A hook from ``ev.solvers.hooks`` (WeightDecay, Lasso, GradientClipping,
            GradientHardClipping, GradientNoise) or any ``hook(solver, params)``.

        Returns
        -------
        hook
            The hook, so that ``h = opt.add_hook(...)`` can keep it.
        """
        if not callable(hook):
            raise ExprError(f"{self._kind()}.add_hook: a hook is a callable hook(solver, params), "
                            f"got {hook!r}")
        self.hooks.append(hook)
        return hook

    def step(self, params):
        """Update every parameter that has a gradient, in place; True if it did.

        ``params`` is a list of parameters (state is named by ``.name``) or a
        dict name -> parameter (state is named by the key). Nothing is updated
        if any parameter or gradient is malformed, if no parameter has a
        gradient (GradError), or if a gradient holds a NaN or Inf (NumericError;
        with nonfinite="skip" the step is skipped, counted, and False returned).
        """
        if device.holds(params):    # parameters on a CUDA device: their updates run there
            return device.step(self, params)
        active = []
        having, missing = split_by_grad(params, self._kind())
        for name, p in having:
            slot = self._slot(name, p)
            grad = check_grad(name, p.value, p.grad)
            if grad.dtype is slot.g.dtype:
                np.copyto(slot.g, grad)
            else:
                with np.errstate(over="ignore"):    # an overflow to Inf is caught below
                    np.copyto(slot.g, grad, casting="same_kind")
            active.append(slot)
        if missing:
            self._report_missing(missing, bool(active))
        bad = [slot for slot in active if not finite(slot.g)]
        if bad:
            if self.nonfinite == "skip":
                self.skipped += 1
                return False
            raise NumericError(
                f"{self._kind()}.step: non-finite gradient for "
                + "; ".join(count_bad(s.name, s.g) for s in bad)
                + ". Nothing was updated; pass nonfinite='skip' to skip such steps and count them")
        for hook in self.hooks:
            hook(self, active)
        if self.schedule is not None:
            self.lr = self.schedule(self.steps)
        for slot in active:
            slot.t += 1
            self._update(slot.param.value, slot.g, slot)
        self.steps += 1
        return True

    def _report_missing(self, names, some_have):
        listed = ", ".join(repr(n) for n in names)
        if not some_have:
            raise GradError(
                f"{self._kind()}.step: no parameter has a gradient ({listed or 'no parameters given'}); "
                "nothing would be updated. Compute them first: ev.grad(cost, params) before "
                "compiling a TapeMachine, or LispMachine(g, cost=cost); with a fresh graph per "
                "batch pass model.collect_grads(g)")
        if self.strict:
            raise GradError(f"{self._kind()}.step: no gradient for {listed} (strict=True); "
                            "nothing was updated")
        new = [n for n in names if n not in self._warned]
        if new:
            self._warned.update(new)
            warnings.warn(f"{self._kind()}.step: no gradient for {', '.join(repr(n) for n in new)}; "
                          "left as they are (reported once; strict=True makes this an error)",
                          MissingGradWarning, stacklevel=3)

    def _update(self, w, g, slot):
        raise NotImplementedError

    def _slot(self, name, p):
        value = check_value(name, p.value)
        slot = self._slots.get(id(p))
        if slot is None:
            slot = self._slots[id(p)] = _Slot(p, name, value, self.buffers)
        elif slot.g.shape != value.shape or slot.g.dtype != value.dtype:
            raise ShapeError(
                f"{self._kind()}: parameter {name!r} changed from {slot.g.shape} {slot.g.dtype} "
                f"to {value.shape} {value.dtype} since its state was created")
        slot.name = name
        return slot

    # -- state -------------------------------------------------------------

    def state_dict(self):
        """A flat {str: ndarray} copy of the solver's state (see the module docstring)."""
        d = {"kind": np.array(self._kind()), "step": np.array(self.steps, dtype=np.int64)}
        for slot in self._slots.values():
            if f"{slot.name}/t" in d:
                raise CheckpointError(
                    f"{self._kind()}.state_dict: two parameters are named {slot.name!r}")
            d[f"{slot.name}/t"] = np.array(slot.t, dtype=np.int64)
            for b, arr in slot.bufs.items():
                d[f"{slot.name}/{b}"] = np.array(arr)     # NOTE: device state too: a host copy
        d.update(schedules.state(self.schedule, self.lr))
        return d

    def load_state_dict(self, d, params):
        """Restore state saved by state_dict() for these parameters.

        Every parameter must have its state in ``d`` with its own shape and
        dtype; entries for parameters not listed are ignored. Nothing changes
        unless the whole state fits.
        """
        kind = entry(d, "kind", "solver kind")
        if str(kind) != self._kind():
            raise CheckpointError(f"state was saved by {kind}, cannot load it into {self._kind()}")
        schedules.check_state(self.schedule, d, self._kind())
        steps = entry(d, "step", "step count")
        slots = {}
        for name, p in named(params):
            value = check_value(name, p.value)
            t = entry(d, f"{name}/t", f"state of parameter {name!r}")
            if t.shape != () or t.dtype.kind not in "iu":
                raise CheckpointError(f"parameter {name!r}: step count must be an integer scalar")
            saved = {}
            for b in self.buffers:
                arr = entry(d, f"{name}/{b}", f"{b!r} state of parameter {name!r}")
                if arr.shape != value.shape or arr.dtype != value.dtype:
                    raise CheckpointError(
                        f"parameter {name!r}: saved {b!r} state is {arr.shape} {arr.dtype}, "
                        f"the parameter is {value.shape} {value.dtype}")
                saved[b] = arr
            slot = _Slot(p, name, value, self.buffers)
            slot.t = int(t)
            for b, arr in saved.items():
                np.copyto(slot.bufs[b], arr)
            slots[id(p)] = slot
        self._slots = slots
        self.steps = int(steps)

    def _kind(self):
        return type(self).__name__
