"""Optimizer hooks (``ev.solvers.hooks``): changes to the gradients a solver makes before
its update, in the order they were added (Chainer's ``Optimizer.add_hook``).

    opt = ev.solvers.SGD(lr=0.1)
    opt.add_hook(ev.solvers.hooks.GradientClipping(5.0))    # global L2 norm <= 5
    opt.add_hook(ev.solvers.hooks.WeightDecay(1e-4))         # g += 1e-4 * w

A solver's ``clip=``, ``clip_norm=``, ``l1=`` and ``l2=`` arguments are these hooks,
added when it is made (in that order, before any added later):
``GradientHardClipping(-clip, clip)``, ``GradientClipping(clip_norm)``, ``Lasso(l1)``,
``WeightDecay(l2)``.

A hook is any callable ``hook(solver, params)``. ``params`` lists the parameters of the
step that have a gradient, each with ``.name``, ``.value`` (the parameter's array:
read it, never write it), ``.grad`` (the gradient the update will use, a scratch copy
in the parameter's dtype: change it in place) and ``.scratch`` (an array of the same
shape and dtype that the hook may overwrite). ``solver.steps`` counts the steps taken
before this one. The hooks run after the step's checks (so they never see a NaN
gradient) and before the update. A hook with state of its own (GradientNoise's random
stream) has ``state_dict()`` / ``load_state_dict(d)``, and the solver's state carries it.

On device parameters (``ev.TapeMachine(..., device="cuda")``) the hooks run inside the
update's fused kernel, which does in this order: an elementwise clip to a symmetric
``[-c, c]``, a global-norm clip, and ``l1 * sign(w) + l2 * w``; a list of hooks that
does not fit that order, or any other hook, is refused there (``BackendError``).
"""
import json
import math

import numpy as np

from ..errors import BackendError, CheckpointError, ExprError
from .solver_checks import nonneg, positive


class WeightDecay:
    """Adds ``rate * w`` to each gradient: the gradient of ``rate / 2 * ||w||^2`` (L2).

    Parameters
    ----------
    rate : float
        The coefficient, >= 0.
    """

    def __init__(self, rate):
        self.rate = nonneg("WeightDecay rate", rate)

    def __call__(self, solver, params):
        for p in params:
            g, tmp = p.grad, p.scratch
            np.multiply(p.value, self.rate, out=tmp)
            g += tmp

    def __repr__(self):
        return f"WeightDecay({self.rate})"


class Lasso:
    """Adds ``rate * sign(w)`` to each gradient: the gradient of ``rate * ||w||_1`` (L1).

    Parameters
    ----------
    rate : float
        The coefficient, >= 0.
    """

    def __init__(self, rate):
        self.rate = nonneg("Lasso rate", rate)

    def __call__(self, solver, params):
        for p in params:
            g, tmp = p.grad, p.scratch
            np.sign(p.value, out=tmp)
            tmp *= self.rate
            g += tmp

    def __repr__(self):
        return f"Lasso({self.rate})"


class GradientClipping:
    """Rescales the step's gradients together so that their global L2 norm (over every
    parameter of the step) is at most ``threshold``; smaller norms are left alone.

    Parameters
    ----------
    threshold : float
        The largest norm, > 0.
    """

    def __init__(self, threshold):
        self.threshold = positive("GradientClipping threshold", threshold)

    def __call__(self, solver, params):
        total = 0.0
        for p in params:
            flat = p.grad.reshape(-1)
            total += float(np.dot(flat, flat))
        norm = math.sqrt(total)
        if norm > self.threshold:
            scale = self.threshold / norm
            for p in params:
                g = p.grad
                g *= scale

    def __repr__(self):
        return f"GradientClipping({self.threshold})"


class GradientHardClipping:
    """Clips every gradient element to ``[lower, upper]``.

    Parameters
    ----------
    lower, upper : float
        The bounds, ``lower <= upper``.
    """

    def __init__(self, lower, upper):
        lower, upper = _number("GradientHardClipping lower", lower), _number("GradientHardClipping upper", upper)
        if lower > upper:
            raise ExprError(f"GradientHardClipping: lower {lower} is above upper {upper}")
        self.lower, self.upper = lower, upper

    def __call__(self, solver, params):
        for p in params:
            np.clip(p.grad, self.lower, self.upper, out=p.grad)

    def __repr__(self):
        return f"GradientHardClipping({self.lower}, {self.upper})"


class GradientNoise:
    """Adds Gaussian noise to each gradient, its variance ``eta / (1 + t) ** 0.55`` at the
    solver's step ``t`` (0 at the first step), as Neelakantan et al. (2015) and Chainer's
    ``GradientNoise`` do.

    Parameters
    ----------
    eta : float
        The variance at the first step, >= 0.
    seed : int, numpy.random.SeedSequence or numpy.random.Generator, optional
        The noise's random stream (a Generator is used as it is, not copied).
    """

    def __init__(self, eta, seed=None):
        self.eta = nonneg("GradientNoise eta", eta)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def __call__(self, solver, params):
        std = math.sqrt(self.eta / (1.0 + solver.steps) ** 0.55)
        for p in params:
            g = p.grad
            noise = self.rng.standard_normal(g.shape)
            noise *= std
            g += noise.astype(g.dtype, copy=False)

    def state_dict(self):
        """The noise stream's position: ``{"rng": its bit generator's state as JSON}`` (a
        solver's ``state_dict()`` carries it, so a resumed run draws the same noise)."""
        return {"rng": np.array(json.dumps(self.rng.bit_generator.state, sort_keys=True))}

    def load_state_dict(self, d):
        """Continue the noise stream saved by :meth:`state_dict`."""
        self.rng.bit_generator.state = rng_state(d, self.rng, "GradientNoise")

    def __repr__(self):
        return f"GradientNoise({self.eta})"


def rng_state(d, rng, who):
    """The bit-generator state saved in ``d["rng"]`` (JSON), checked against ``rng``'s kind;
    CheckpointError if it is missing, damaged or of another kind of generator."""
    try:
        state = json.loads(str(np.asarray(d["rng"])))
        kind = state["bit_generator"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{who}: no random-stream state to load ({e!r})") from None
    mine = type(rng.bit_generator).__name__
    if kind != mine:
        raise CheckpointError(f"{who}: the saved stream is a {kind}, this one a {mine}")
    return state


def from_arguments(clip, clip_norm, l1, l2):
    """The hooks a solver's ``clip=, clip_norm=, l1=, l2=`` arguments stand for, in the
    order they run (the arguments checked as these hooks check them)."""
    hooks = []
    if clip is not None:
        c = positive("clip", clip)
        hooks.append(GradientHardClipping(-c, c))
    if clip_norm is not None:
        hooks.append(GradientClipping(positive("clip_norm", clip_norm)))
    if nonneg("l1", l1):
        hooks.append(Lasso(l1))
    if nonneg("l2", l2):
        hooks.append(WeightDecay(l2))
    return hooks


def fused(hooks, who):
    """(clip, clip_norm, l1, l2) of the device update's fused kernel for these hooks
    (clip 0.0 and clip_norm None when absent), or BackendError naming the hook that
    the kernel cannot run where the list puts it."""
    clip, clip_norm, l1, l2 = 0.0, None, 0.0, 0.0
    stage = 0                   # 0: nothing yet, 1: clipped, 2: norm-clipped, 3: regularizing
    for h in hooks:
        t = type(h)
        if t is GradientHardClipping and h.lower == -h.upper and stage < 1:
            clip, stage = h.upper, 1
        elif t is GradientClipping and stage < 2:
            clip_norm, stage = h.threshold, 2
        elif t is Lasso and not l1:
            l1, stage = h.rate, 3
        elif t is WeightDecay and not l2:
            l2, stage = h.rate, 3
        else:
            raise BackendError(
                f"{who}: the device update cannot run the hook {h!r} here; on the device the hooks "
                "must be, in this order, at most one GradientHardClipping(-c, c), one "
                "GradientClipping, then one Lasso and one WeightDecay; keep the parameters on "
                "the host for other hooks")
    return clip, clip_norm, l1, l2


def _number(name, v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ExprError(f"{name} must be a number, got {v!r}") from None
    if math.isnan(f):
        raise ExprError(f"{name} must be a number, got NaN")
    return f
