"""AdaDelta and RMSpropGraves (Chainer's update rules) and NAdam (PyTorch's rule and
defaults), in ``ev.solvers`` beside the others; the base class and the order of a step
are in solver_base.py, hooks (clip=, l1=, ...) in hooks.py."""
import numpy as np

from ..errors import ExprError
from .solver_base import Solver, moving_average, moving_average_of_square
from .solver_checks import nonneg, positive, unit


class _Scratch:
    """A second scratch array per parameter, made on its first step (no state to save)."""

    def __init__(self):
        self._arrays = {}

    def get(self, slot):
        a = self._arrays.get(id(slot))
        if a is None or a.shape != slot.tmp.shape or a.dtype != slot.tmp.dtype:
            a = self._arrays[id(slot)] = np.empty_like(slot.tmp)
        return a


class AdaDelta(Solver):
    """AdaDelta (Zeiler, 2012) as Chainer's: no learning rate.

    ::

        msg  = rho * msg + (1 - rho) * g^2
        dx   = sqrt((msdx + eps) / (msg + eps)) * g
        msdx = rho * msdx + (1 - rho) * dx^2
        w   -= dx

    Parameters
    ----------
    params : ev.nn model, model.parameters(), or parameters, optional
        The parameters ``step()`` updates (see ``Solver``).
    rho : float, default 0.95
        Decay of the running averages, in [0, 1).
    eps : float, default 1e-6
        Added inside both square roots, > 0.
    **common
        ``l1=, l2=, clip=, clip_norm=, strict=, nonfinite=`` as for every solver.
    """

    buffers = ("msg", "msdx")

    def __init__(self, params=None, rho=0.95, eps=1e-6, **common):
        if "lr" in common:
            raise ExprError("AdaDelta has no learning rate (lr=): its steps are scaled by the "
                            "running average of past steps")
        if isinstance(params, (int, float, np.number)) and not isinstance(params, bool):
            params, rho = None, params          # AdaDelta(0.9): rho first, as before
        super().__init__(params, 1.0, **common)
        self.rho = unit("rho", rho)
        self.eps = positive("eps", eps)
        self._scratch = _Scratch()

    def _update(self, w, g, slot):
        msg, msdx, tmp, s2 = slot.bufs["msg"], slot.bufs["msdx"], slot.tmp, self._scratch.get(slot)
        moving_average_of_square(msg, g, self.rho, tmp)
        np.add(msdx, self.eps, out=tmp)
        np.add(msg, self.eps, out=s2)
        tmp /= s2
        np.sqrt(tmp, out=tmp)
        tmp *= g                                    # dx
        moving_average_of_square(msdx, tmp, self.rho, s2)
        w -= tmp


class RMSpropGraves(Solver):
    """Graves's RMSprop (Graves, 2013, eq. 38-41) as Chainer's: centred, with momentum.

    ::

        ms    = alpha * ms + (1 - alpha) * g^2
        mg    = alpha * mg + (1 - alpha) * g
        delta = momentum * delta - lr * g / sqrt(ms - mg^2 + eps)
        w    += delta

    Parameters
    ----------
    params : ev.nn model, model.parameters(), or parameters, optional
        The parameters ``step()`` updates (see ``Solver``).
    lr : float or schedule, default 1e-4
    alpha : float, default 0.95
        Decay of the running averages, in [0, 1).
    momentum : float, default 0.9
        In [0, 1).
    eps : float, default 1e-4
        Added under the square root, > 0.
    **common
        ``l1=, l2=, clip=, clip_norm=, strict=, nonfinite=`` as for every solver.
    """

    buffers = ("ms", "mg", "delta")

    default_lr = 1e-4

    def __init__(self, params=None, lr=None, alpha=0.95, momentum=0.9, eps=1e-4, **common):
        super().__init__(params, lr, **common)
        self.alpha = unit("alpha", alpha)
        self.momentum = unit("momentum", momentum)
        self.eps = positive("eps", eps)

    def _update(self, w, g, slot):
        ms, mg, delta, tmp = slot.bufs["ms"], slot.bufs["mg"], slot.bufs["delta"], slot.tmp
        moving_average_of_square(ms, g, self.alpha, tmp)
        moving_average(mg, g, self.alpha, tmp)
        np.multiply(mg, mg, out=tmp)
        np.subtract(ms, tmp, out=tmp)
        tmp += self.eps
        np.sqrt(tmp, out=tmp)
        np.divide(g, tmp, out=tmp)
        tmp *= self.lr
        delta *= self.momentum
        delta -= tmp
        w += delta


class NAdam(Solver):
    """Adam with Nesterov momentum (Dozat, 2016), PyTorch's ``torch.optim.NAdam`` rule and
    defaults (without its decoupled weight decay; ``l2=`` adds ``l2 * w`` to the gradient
    as its ``weight_decay=`` does).

    ::

        mu_t  = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))      (t: this step, from 1)
        P_t   = mu_1 * ... * mu_t
        m     = beta1 * m + (1 - beta1) * g
        v     = beta2 * v + (1 - beta2) * g^2
        d     = sqrt(v / (1 - beta2^t)) + eps
        w    -= lr * (1 - mu_t) / (1 - P_t) * g / d
        w    -= lr * mu_{t+1} / (1 - P_t * mu_{t+1}) * m / d

    Parameters
    ----------
    params : ev.nn model, model.parameters(), or parameters, optional
        The parameters ``step()`` updates (see ``Solver``).
    lr : float or schedule, default 2e-3
    beta1, beta2 : float, default 0.9, 0.999
        Decays of the first and second moments, in [0, 1).
    eps : float, default 1e-8
    momentum_decay : float, default 4e-3
        How fast mu approaches beta1, >= 0.
    **common
        ``l1=, l2=, clip=, clip_norm=, strict=, nonfinite=`` as for every solver.
    """

    buffers = ("m", "v")

    default_lr = 2e-3

    def __init__(self, params=None, lr=None, beta1=0.9, beta2=0.999, eps=1e-8, momentum_decay=4e-3,
                 **common):
        super().__init__(params, lr, **common)
        self.beta1 = unit("beta1", beta1)
        self.beta2 = unit("beta2", beta2)
        self.eps = positive("eps", eps)
        self.momentum_decay = nonneg("momentum_decay", momentum_decay)
        self._scratch = _Scratch()
        self._product = (0, 1.0)        # (t, mu_1 * ... * mu_t), the last one asked for

    def _mu(self, t):
        return self.beta1 * (1.0 - 0.5 * 0.96 ** (t * self.momentum_decay))

    def _mu_product(self, t):
        # NOTE: every parameter usually has the same t: one multiplication a step; a
        # parameter that skipped steps (or a resumed state) recomputes from 1.
        known, p = self._product
        if known == t - 1:
            p *= self._mu(t)
        elif known != t:
            p = 1.0
            for i in range(1, t + 1):
                p *= self._mu(i)
        self._product = (t, p)
        return p

    def _update(self, w, g, slot):
        m, v, tmp, s2 = slot.bufs["m"], slot.bufs["v"], slot.tmp, self._scratch.get(slot)
        t = slot.t
        mu, mu_next = self._mu(t), self._mu(t + 1)
        product = self._mu_product(t)
        moving_average(m, g, self.beta1, tmp)
        moving_average_of_square(v, g, self.beta2, tmp)
        np.divide(v, 1.0 - self.beta2 ** t, out=tmp)
        np.sqrt(tmp, out=tmp)
        tmp += self.eps                             # d
        np.divide(g, tmp, out=s2)
        s2 *= self.lr * (1.0 - mu) / (1.0 - product)
        w -= s2
        np.divide(m, tmp, out=s2)
        s2 *= self.lr * mu_next / (1.0 - product * mu_next)
        w -= s2
