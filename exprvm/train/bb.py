"""Barzilai-Borwein gradient descent: one step size for all parameters, taken from the
last step's change in weights and gradients (Gorgonia's BarzilaiBorweinSolver).

    w_{t+1} = w_t - eta_t * g_t
    s = w_t - w_{t-1},  y = g_t - g_{t-1}      (over every parameter of the step)
    short (default; Gorgonia's):  eta_t = |s.y| / (y.y)
    long:                         eta_t = (s.s) / |s.y|

The first step (no history yet) uses lr. A step whose quotient is not a finite
positive number (y = 0: the gradient did not change; s.y = 0) keeps the last step
size. With an ev.schedules schedule for lr, eta_t is scaled by lr(t) / lr(0), so a
decaying schedule damps the Barzilai-Borwein steps (the first step is lr(0)).

The gradient is prepared as every solver's is (clip, clip_norm, l1, l2), and y is
the change in that prepared gradient. State: per parameter the last weights and
gradient ("<name>/prev_w", "<name>/prev_g"), and the step size "eta".
"""
import math

import numpy as np

from ..errors import CheckpointError, ExprError
from .solver_base import Solver
from .solver_checks import entry

VARIANTS = ("short", "long")


class BarzilaiBorwein(Solver):
    """w -= eta * g, eta the Barzilai-Borwein step size (see the module docstring)."""

    buffers = ("prev_w", "prev_g")

    default_lr = 0.01

    def __init__(self, params=None, lr=None, variant="short", **common):
        super().__init__(params, lr, **common)
        if variant not in VARIANTS:
            raise ExprError(f"BarzilaiBorwein: variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant
        self.eta = self.lr          # the step size of the last step
        self._pending = None

    def step(self, params=None):
        # NOTE: the step size needs every parameter's s and y before any parameter moves:
        # Solver.step prepares the gradients and calls _update per parameter, which only
        # collects them here; the update itself runs once they are all in.
        self._pending = []
        try:
            done = super().step(params)
            if done:
                self._apply(self._pending)
        finally:
            self._pending = None
        return done

    def _update(self, w, g, slot):
        if self._pending is None:
            raise ExprError("BarzilaiBorwein: _update outside step()")
        self._pending.append(slot)

    def _apply(self, slots):
        with_history = [s for s in slots if s.t > 1]
        if with_history:
            sy = ss = yy = 0.0
            for slot in with_history:
                w, pw, pg = slot.param.value, slot.bufs["prev_w"], slot.bufs["prev_g"]
                np.subtract(w, pw, out=pw)          # s, in place of the old weights
                np.subtract(slot.g, pg, out=pg)     # y, in place of the old gradient
                fs, fy = pw.reshape(-1), pg.reshape(-1)
                sy += float(np.dot(fs, fy))
                ss += float(np.dot(fs, fs))
                yy += float(np.dot(fy, fy))
            num, den = (abs(sy), yy) if self.variant == "short" else (ss, abs(sy))
            eta = num / den if den > 0 else math.inf
            if math.isfinite(eta) and eta > 0:
                self.eta = eta
            scale = self.lr / self.schedule(0) if self.schedule is not None else 1.0
            step = self.eta * scale
        else:
            step = self.eta = self.lr
        for slot in slots:
            w, g = slot.param.value, slot.g
            np.copyto(slot.bufs["prev_w"], w)
            np.copyto(slot.bufs["prev_g"], g)
            np.multiply(g, step, out=slot.tmp)
            w -= slot.tmp

    def state_dict(self):
        d = super().state_dict()
        d["eta"] = np.array(self.eta)
        d["variant"] = np.array(self.variant)
        return d

    def load_state_dict(self, d, params):
        eta = entry(d, "eta", "Barzilai-Borwein step size")
        variant = str(entry(d, "variant", "Barzilai-Borwein variant"))
        if eta.shape != () or eta.dtype.kind != "f" or not (np.isfinite(eta) and eta > 0):
            raise CheckpointError(f"BarzilaiBorwein: saved step size must be a finite float > 0, got {eta}")
        if variant != self.variant:
            raise CheckpointError(f"BarzilaiBorwein: the state was saved by the {variant!r} variant, "
                                  f"this solver is {self.variant!r}")
        super().load_state_dict(d, params)
        self.eta = float(eta)
