"""Gradient-descent solvers: SGD, Momentum, AdaGrad, RMSProp, Adam, AdamW (and
BarzilaiBorwein, in bb.py).

A solver only needs parameter objects with ``.name``, ``.value`` (a float32 or
float64 ndarray) and ``.grad`` (an array of the same shape, or None to skip the
parameter this step). ``opt.step(params)`` updates every ``.value`` in place:
a compiled machine that holds the array sees the new numbers, and no array is
allocated on the steady path — each parameter gets its state buffers and two
scratch buffers once, on its first step.

Each step prepares the gradient in a scratch buffer, never touching ``.grad``:

1. elementwise clip to [-clip, clip]            (``clip``)
2. rescale so the global L2 norm over all
   parameters of the step is <= clip_norm      (``clip_norm``)
3. add regularization: l1 * sign(w) + l2 * w    (``l1``, ``l2``; the l2 term is
   the gradient of l2/2 * ||w||^2)

Clipping comes before regularization so that it bounds the loss gradient, the
part that explodes; the regularization term is bounded by the weights.

``lr=`` takes a number or a schedule from ``ev.schedules`` (step t runs with
lr = schedule(t)); ``state_dict()`` records the lr and the schedule too.

``state_dict()`` is a flat ``{str: ndarray}`` (saveable with np.savez or
``ev.save(..., solver=opt.state_dict())``): ``"kind"`` (the solver's class
name), ``"step"`` (calls to step), and per parameter ``"<name>/t"`` (steps that
parameter took) and ``"<name>/<buffer>"`` for each state buffer. Buffer names
contain no "/", so keys cannot collide even when parameter names contain "/".

Nothing is skipped silently:

* a step where no parameter has a gradient raises ``GradError`` naming them (the
  "loss stays flat, nothing learns" trap: a machine that never computed them);
* parameters without a gradient among others that have one are named in one
  ``MissingGradWarning`` (once per solver and parameter) and left as they are;
  ``strict=True`` makes that a ``GradError`` too;
* a NaN or Inf in any gradient (after the cast to the parameter's dtype) raises
  ``NumericError`` naming the parameters and updates nothing; with
  ``nonfinite="skip"`` the whole step is skipped instead (no parameter moves,
  ``step`` returns False) and counted in ``opt.skipped``.

NOTE: state is keyed by the parameter *object*. With a fresh graph per batch
(LispMachine, variable-length sequences) pass the same objects every step:
``model.collect_grads(g)`` of an ``ev.nn`` model returns its stable parameters
with that graph's gradients; passing the new graph's leaf nodes would start
the solver's state afresh each step.
"""

import math
import warnings

import numpy as np

from ..errors import CheckpointError, ExprError, GradError, NumericError, ShapeError
from .solver_checks import (check_grad, check_value, count_bad, entry, finite, named, nonneg,
                            positive, unit)
from . import device, schedules

NONFINITE = ("raise", "skip")


class MissingGradWarning(UserWarning):
    """Some parameters passed to a solver step had no gradient and were not updated."""


class _Slot:
    """Per-parameter state: the solver's buffers plus scratch space for the gradient."""

    __slots__ = ("param", "name", "t", "bufs", "g", "tmp")

    def __init__(self, param, name, value, buffer_names):
        self.param = param          # held so that id(param) stays unique while the slot lives
        self.name = name
        self.t = 0
        self.bufs = {b: np.zeros_like(value) for b in buffer_names}
        self.g = np.empty_like(value)
        self.tmp = np.empty_like(value)


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
        if nonfinite not in NONFINITE:
            raise ExprError(f"solver: nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
        self.strict = bool(strict)
        self.nonfinite = nonfinite
        self.steps = 0
        self.skipped = 0            # steps skipped for a NaN/Inf gradient (nonfinite="skip")
        self._slots = {}            # id(param) -> _Slot
        self._warned = set()        # names already reported without a gradient

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
        active, missing = [], []
        seen = set()
        for name, p in named(params):
            if id(p) in seen:
                raise ExprError(f"{self._kind()}.step: parameter {name!r} is listed twice")
            seen.add(id(p))
            if p.grad is None:
                missing.append(name)
                continue
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
        for slot in active:
            if self.clip is not None:
                np.clip(slot.g, -self.clip, self.clip, out=slot.g)
        if self.clip_norm is not None:
            self._clip_global_norm(active)
        if self.schedule is not None:
            self.lr = self.schedule(self.steps)
        for slot in active:
            self._regularize(slot)
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

    def _clip_global_norm(self, slots):
        total = 0.0
        for slot in slots:
            flat = slot.g.reshape(-1)
            total += float(np.dot(flat, flat))
        norm = math.sqrt(total)
        if norm > self.clip_norm:
            scale = self.clip_norm / norm
            for slot in slots:
                slot.g *= scale

    def _regularize(self, slot):
        w, g, tmp = slot.param.value, slot.g, slot.tmp
        if self.l1:
            np.sign(w, out=tmp)
            tmp *= self.l1
            g += tmp
        if self.l2:
            np.multiply(w, self.l2, out=tmp)
            g += tmp

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


class SGD(Solver):
    """w -= lr * g"""

    def __init__(self, lr=0.01, **common):
        super().__init__(lr, **common)

    def _update(self, w, g, slot):
        g *= self.lr
        w -= g


class Momentum(Solver):
    """v = momentum * v - lr * g;  w += v   (nesterov: w += momentum * v - lr * g)"""

    buffers = ("velocity",)

    def __init__(self, lr=0.01, momentum=0.9, nesterov=False, **common):
        super().__init__(lr, **common)
        self.momentum = unit("momentum", momentum)
        self.nesterov = bool(nesterov)

    def _update(self, w, g, slot):
        v, tmp = slot.bufs["velocity"], slot.tmp
        g *= self.lr
        v *= self.momentum
        v -= g
        if self.nesterov:
            # NOTE: the look-ahead form: the step uses the velocity one update ahead.
            np.multiply(v, self.momentum, out=tmp)
            tmp -= g
            w += tmp
        else:
            w += v


class AdaGrad(Solver):
    """s += g^2;  w -= lr * g / (sqrt(s) + eps)"""

    buffers = ("sum_sq",)

    def __init__(self, lr=0.01, eps=1e-8, **common):
        super().__init__(lr, **common)
        self.eps = positive("eps", eps)

    def _update(self, w, g, slot):
        s, tmp = slot.bufs["sum_sq"], slot.tmp
        np.multiply(g, g, out=tmp)
        s += tmp
        _scaled_step(w, g, s, tmp, self.lr, 1.0, self.eps)


class RMSProp(Solver):
    """s = rho * s + (1 - rho) * g^2;  w -= lr * g / (sqrt(s) + eps)"""

    buffers = ("mean_sq",)

    def __init__(self, lr=0.001, rho=0.9, eps=1e-8, **common):
        super().__init__(lr, **common)
        self.rho = unit("rho", rho)
        self.eps = positive("eps", eps)

    def _update(self, w, g, slot):
        s, tmp = slot.bufs["mean_sq"], slot.tmp
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - self.rho
        s *= self.rho
        s += tmp
        _scaled_step(w, g, s, tmp, self.lr, 1.0, self.eps)


class Adam(Solver):
    """Adam with bias correction from each parameter's own step count.

    m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g^2
    w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    buffers = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, **common):
        super().__init__(lr, **common)
        self.beta1 = unit("beta1", beta1)
        self.beta2 = unit("beta2", beta2)
        self.eps = positive("eps", eps)

    def _update(self, w, g, slot):
        m, v, tmp = slot.bufs["m"], slot.bufs["v"], slot.tmp
        m *= self.beta1
        np.multiply(g, 1.0 - self.beta1, out=tmp)
        m += tmp
        v *= self.beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - self.beta2
        v += tmp
        # NOTE: per-parameter t, so a parameter that skipped steps (grad None)
        # is still bias-corrected for the updates it actually received.
        bias1 = 1.0 - self.beta1 ** slot.t
        bias2 = 1.0 - self.beta2 ** slot.t
        _scaled_step(w, m, v, tmp, self.lr / bias1, 1.0 / math.sqrt(bias2), self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay: w -= lr * weight_decay * w
    before the Adam step. The decay stays out of m and v, unlike an l2 term, so there is no l2."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, *,
                 l1=0.0, clip=None, clip_norm=None, strict=False, nonfinite="raise"):
        super().__init__(lr, beta1, beta2, eps, l1=l1, clip=clip, clip_norm=clip_norm,
                         strict=strict, nonfinite=nonfinite)
        self.weight_decay = nonneg("weight_decay", weight_decay)

    def _update(self, w, g, slot):
        if self.weight_decay:
            w *= 1.0 - self.lr * self.weight_decay
        super()._update(w, g, slot)


def _scaled_step(w, num, sq, tmp, lr, sq_scale, eps):
    """w -= lr * num / (sqrt(sq) * sq_scale + eps), using tmp as the only scratch."""
    np.sqrt(sq, out=tmp)
    if sq_scale != 1.0:
        tmp *= sq_scale
    tmp += eps
    np.divide(num, tmp, out=tmp)
    tmp *= lr
    w -= tmp


def __getattr__(name):
    # NOTE: BarzilaiBorwein (bb.py) builds on Solver, so this module cannot import it at
    # import time; ev.solvers.BarzilaiBorwein is looked up here on first use (PEP 562).
    if name == "BarzilaiBorwein":
        from .bb import BarzilaiBorwein
        return BarzilaiBorwein
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
