"""Gradient-descent solvers: SGD, Momentum, AdaGrad, RMSProp, Adam, AdamW (and
BarzilaiBorwein, in bb.py; AdaDelta, RMSpropGraves and NAdam in adaptive.py; the base
class Solver is in solver_base.py; the hooks that change gradients, ev.solvers.hooks,
in hooks.py).

A solver only needs parameter objects with ``.name``, ``.value`` (a float32 or
float64 ndarray) and ``.grad`` (an array of the same shape, or None to skip the
parameter this step). ``opt.step(params)`` updates every ``.value`` in place:
a compiled machine that holds the array sees the new numbers, and no array is
allocated on the steady path — each parameter gets its state buffers and two
scratch buffers once, on its first step.

The parameters may be given once, first: ``Adam(model, lr=1e-3)`` (an ev.nn model,
``model.parameters()``, or a list or dict of parameter nodes); then ``opt.step()``
steps them with the gradients of the latest run of either machine (a graph node
standing for an ev.nn parameter hands its gradient to the parameter after every run),
``opt.zero_grad()`` forgets those, and ``accumulate=True`` adds up every run's
gradient until ``zero_grad()``. Anything else given (an array that is no model's
parameter, a string, an op node) is an ``ev.UsageError`` saying what to pass.

Each step prepares the gradient in a scratch buffer, never touching ``.grad``, by
running the solver's hooks in order (``opt.add_hook(hook)``; see ev.solvers.hooks).
The ``clip=, clip_norm=, l1=, l2=`` arguments are the first hooks:

1. elementwise clip to [-clip, clip]            (``clip``: GradientHardClipping)
2. rescale so the global L2 norm over all
   parameters of the step is <= clip_norm      (``clip_norm``: GradientClipping)
3. add regularization: l1 * sign(w) + l2 * w    (``l1``: Lasso, ``l2``: WeightDecay;
   the l2 term is the gradient of l2/2 * ||w||^2)

Clipping comes before regularization so that it bounds the loss gradient, the
part that explodes; the regularization term is bounded by the weights.

``lr=`` takes a number or a schedule from ``ev.schedules`` (step t runs with
lr = schedule(t)); ``state_dict()`` records the lr and the schedule too.

``state_dict()`` is a flat ``{str: ndarray}`` (saveable with np.savez or
``ev.save(..., solver=opt.state_dict())``): ``"kind"`` (the solver's class
name), ``"step"`` (calls to step), and per parameter ``"<name>/t"`` (steps that
parameter took) and ``"<name>/<buffer>"`` for each state buffer. Buffer names
contain no "/", so keys cannot collide even when parameter names contain "/". A hook
with state of its own adds ``"hook<i>:<class>/<key>"`` (GradientNoise: its random
stream), which loading requires of the same hook at the same place in the list.

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
(LispMachine, variable-length sequences) step the same objects every time: a solver
given the model once does, and so does ``opt.step(model.collect_grads(g))``; passing
the new graph's leaf nodes would start the solver's state afresh each step.
"""

import math

import numpy as np

from . import hooks  # noqa: F401  (ev.solvers.hooks: WeightDecay, Lasso, GradientClipping, ...)
from .adaptive import AdaDelta, NAdam, RMSpropGraves  # noqa: F401
from .bb import BarzilaiBorwein  # noqa: F401  (ev.solvers.BarzilaiBorwein)
from .solver_base import MissingGradWarning, Solver, moving_average, moving_average_of_square  # noqa: F401
from .solver_checks import nonneg, positive, unit


class SGD(Solver):
    """w -= lr * g"""

    default_lr = 0.01

    def __init__(self, params=None, lr=None, **common):
        super().__init__(params, lr, **common)

    def _update(self, w, g, slot):
        g *= self.lr
        w -= g


class Momentum(Solver):
    """v = momentum * v - lr * g;  w += v   (nesterov: w += momentum * v - lr * g)"""

    buffers = ("velocity",)
    default_lr = 0.01

    def __init__(self, params=None, lr=None, momentum=0.9, nesterov=False, **common):
        super().__init__(params, lr, **common)
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
    default_lr = 0.01

    def __init__(self, params=None, lr=None, eps=1e-8, **common):
        super().__init__(params, lr, **common)
        self.eps = positive("eps", eps)

    def _update(self, w, g, slot):
        s, tmp = slot.bufs["sum_sq"], slot.tmp
        np.multiply(g, g, out=tmp)
        s += tmp
        _scaled_step(w, g, s, tmp, self.lr, 1.0, self.eps)


class RMSProp(Solver):
    """s = rho * s + (1 - rho) * g^2;  w -= lr * g / (sqrt(s) + eps)"""

    buffers = ("mean_sq",)

    def __init__(self, params=None, lr=None, rho=0.9, eps=1e-8, **common):
        super().__init__(params, lr, **common)
        self.rho = unit("rho", rho)
        self.eps = positive("eps", eps)

    def _update(self, w, g, slot):
        s, tmp = slot.bufs["mean_sq"], slot.tmp
        moving_average_of_square(s, g, self.rho, tmp)
        _scaled_step(w, g, s, tmp, self.lr, 1.0, self.eps)


class Adam(Solver):
    """Adam with bias correction from each parameter's own step count.

    m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g^2
    w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    buffers = ("m", "v")

    def __init__(self, params=None, lr=None, beta1=0.9, beta2=0.999, eps=1e-8, **common):
        super().__init__(params, lr, **common)
        self.beta1 = unit("beta1", beta1)
        self.beta2 = unit("beta2", beta2)
        self.eps = positive("eps", eps)

    def _update(self, w, g, slot):
        m, v, tmp = slot.bufs["m"], slot.bufs["v"], slot.tmp
        moving_average(m, g, self.beta1, tmp)
        moving_average_of_square(v, g, self.beta2, tmp)
        # NOTE: per-parameter t, so a parameter that skipped steps (grad None)
        # is still bias-corrected for the updates it actually received.
        bias1 = 1.0 - self.beta1 ** slot.t
        bias2 = 1.0 - self.beta2 ** slot.t
        _scaled_step(w, m, v, tmp, self.lr / bias1, 1.0 / math.sqrt(bias2), self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay: w -= lr * weight_decay * w
    before the Adam step. The decay stays out of m and v, unlike an l2 term, so there is no l2."""

    def __init__(self, params=None, lr=None, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, *,
                 l1=0.0, clip=None, clip_norm=None, strict=False, nonfinite="raise", accumulate=False):
        super().__init__(params, lr, beta1, beta2, eps, l1=l1, clip=clip, clip_norm=clip_norm,
                         strict=strict, nonfinite=nonfinite, accumulate=accumulate)
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

# every solver class here (a new one is public by being defined or imported here), the
# warning and ev.solvers.hooks; not the helpers this module imports
__all__ = sorted(n for n, v in list(globals().items())
                 if isinstance(v, type) and issubclass(v, (Solver, MissingGradWarning))) + ["hooks"]


def __dir__():
    # NOTE: dir() and tab completion list the API only, not what the module imports
    return list(__all__)
