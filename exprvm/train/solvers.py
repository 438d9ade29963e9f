"""Gradient-descent solvers: SGD, Momentum, AdaGrad, RMSProp, Adam, AdamW.

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

``state_dict()`` is a flat ``{str: ndarray}`` (saveable with np.savez or
``ev.save(..., solver=opt.state_dict())``): ``"kind"`` (the solver's class
name), ``"step"`` (calls to step), and per parameter ``"<name>/t"`` (steps that
parameter took) and ``"<name>/<buffer>"`` for each state buffer. Buffer names
contain no "/", so keys cannot collide even when parameter names contain "/".

NOTE: state is keyed by the parameter *object*. With a fresh graph per batch
(LispMachine, variable-length sequences) pass the same objects every step:
``model.collect_grads(g)`` of an ``ev.nn`` model returns its stable parameters
with that graph's gradients; passing the new graph's leaf nodes would start
the solver's state afresh each step.
"""

import math

import numpy as np

from ..errors import CheckpointError, DTypeError, ExprError, ShapeError


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

    def __init__(self, lr, *, l1=0.0, l2=0.0, clip=None, clip_norm=None):
        self.lr = _positive("lr", lr)
        self.l1 = _nonneg("l1", l1)
        self.l2 = _nonneg("l2", l2)
        self.clip = None if clip is None else _positive("clip", clip)
        self.clip_norm = None if clip_norm is None else _positive("clip_norm", clip_norm)
        self.steps = 0
        self._slots = {}            # id(param) -> _Slot

    def step(self, params):
        """Update every parameter that has a gradient, in place.

        ``params`` is a list of parameters (state is named by ``.name``) or a
        dict name -> parameter (state is named by the key). Nothing is updated
        if any parameter or gradient is malformed.
        """
        active = []
        seen = set()
        for name, p in _named(params):
            if id(p) in seen:
                raise ExprError(f"{self._kind()}.step: parameter {name!r} is listed twice")
            seen.add(id(p))
            if p.grad is None:
                continue
            slot = self._slot(name, p)
            grad = _check_grad(name, p.value, p.grad)
            np.copyto(slot.g, grad, casting="same_kind")
            if self.clip is not None:
                np.clip(slot.g, -self.clip, self.clip, out=slot.g)
            active.append(slot)
        if self.clip_norm is not None:
            self._clip_global_norm(active)
        for slot in active:
            self._regularize(slot)
            slot.t += 1
            self._update(slot.param.value, slot.g, slot)
        self.steps += 1

    def _update(self, w, g, slot):
        raise NotImplementedError

    def _slot(self, name, p):
        value = _check_value(name, p.value)
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
                d[f"{slot.name}/{b}"] = arr.copy()
        return d

    def load_state_dict(self, d, params):
        """Restore state saved by state_dict() for these parameters.

        Every parameter must have its state in ``d`` with its own shape and
        dtype; entries for parameters not listed are ignored. Nothing changes
        unless the whole state fits.
        """
        kind = _entry(d, "kind", "solver kind")
        if str(kind) != self._kind():
            raise CheckpointError(f"state was saved by {kind}, cannot load it into {self._kind()}")
        steps = _entry(d, "step", "step count")
        slots = {}
        for name, p in _named(params):
            value = _check_value(name, p.value)
            t = _entry(d, f"{name}/t", f"state of parameter {name!r}")
            if t.shape != () or t.dtype.kind not in "iu":
                raise CheckpointError(f"parameter {name!r}: step count must be an integer scalar")
            saved = {}
            for b in self.buffers:
                arr = _entry(d, f"{name}/{b}", f"{b!r} state of parameter {name!r}")
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
        self.momentum = _unit("momentum", momentum)
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
        self.eps = _positive("eps", eps)

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
        self.rho = _unit("rho", rho)
        self.eps = _positive("eps", eps)

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
        self.beta1 = _unit("beta1", beta1)
        self.beta2 = _unit("beta2", beta2)
        self.eps = _positive("eps", eps)

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
                 l1=0.0, clip=None, clip_norm=None):
        super().__init__(lr, beta1, beta2, eps, l1=l1, clip=clip, clip_norm=clip_norm)
        self.weight_decay = _nonneg("weight_decay", weight_decay)

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


def _named(params):
    """(name, param) pairs from a list of parameters or a dict name -> parameter."""
    if isinstance(params, dict):
        for name in params:
            if not isinstance(name, str) or not name:
                raise ExprError(f"solver: parameter names must be non-empty strings, got {name!r}")
        return list(params.items())
    pairs = []
    for p in params:
        name = getattr(p, "name", None)
        if not isinstance(name, str) or not name:
            raise ExprError(f"solver: parameter {p!r} has no name; pass a dict name -> parameter")
        pairs.append((name, p))
    return pairs


def _check_value(name, value):
    if not isinstance(value, np.ndarray) or value.dtype not in (np.float32, np.float64):
        got = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise DTypeError(f"parameter {name!r}: value must be a float32 or float64 array, got {got}")
    if not value.flags.writeable:
        raise ExprError(f"parameter {name!r}: value is read-only and cannot be updated in place")
    return value


def _check_grad(name, value, grad):
    # NOTE: a scalar parameter's gradient may arrive as a numpy scalar, not a 0-d array.
    grad = np.asarray(grad)
    if grad.dtype.kind != "f":
        raise DTypeError(f"parameter {name!r}: gradient dtype {grad.dtype} is not a float type")
    if grad.shape != value.shape:
        raise ShapeError(
            f"parameter {name!r}: gradient shape {grad.shape} does not match value {value.shape}")
    return grad


def _entry(d, key, what):
    if key not in d:
        raise CheckpointError(f"solver state has no {what} (key {key!r})")
    return np.asarray(d[key])


def _positive(name, x):
    if not (isinstance(x, (int, float, np.floating, np.integer)) and x > 0 and math.isfinite(x)):
        raise ExprError(f"solver: {name} must be a finite number > 0, got {x!r}")
    return float(x)


def _nonneg(name, x):
    if not (isinstance(x, (int, float, np.floating, np.integer)) and x >= 0 and math.isfinite(x)):
        raise ExprError(f"solver: {name} must be a finite number >= 0, got {x!r}")
    return float(x)


def _unit(name, x):
    if not (isinstance(x, (int, float, np.floating, np.integer)) and 0 <= x < 1):
        raise ExprError(f"solver: {name} must be in [0, 1), got {x!r}")
    return float(x)
