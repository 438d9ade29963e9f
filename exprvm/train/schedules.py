"""Learning-rate schedules: the lr of a solver's step as a function of its step count.

    opt = ev.solvers.Adam(lr=ev.schedules.LinearWarmup(ev.schedules.CosineDecay(1e-3, 1000), 100))

Any solver takes a schedule for lr=. Step t (0 for the first call of opt.step) runs
with lr = schedule(t), so a schedule holds no state of its own: the solver's step
count is its position, and ``state_dict()`` / ``load_state_dict()`` resume it. A
scheduled solver's state also records the schedule (``"schedule"``, a JSON
description) and the lr of the last step (``"lr"``); loading a state saved with a
different schedule is a CheckpointError.

StepDecay(lr, step_size, gamma=0.1)      lr * gamma ** (t // step_size)      (torch StepLR)
ExponentialDecay(lr, gamma)              lr * gamma ** t                     (torch ExponentialLR)
CosineDecay(lr, total_steps, min_lr=0)   min_lr + (lr - min_lr) (1 + cos(pi t / total_steps)) / 2,
                                         then min_lr from t = total_steps   (torch CosineAnnealingLR)
LinearWarmup(after, warmup_steps)        after(0) * (t + 1) / warmup_steps for t < warmup_steps,
                                         then after(t - warmup_steps); `after` is a schedule or a number
Constant(lr)                             lr
"""
import json
import math

import numpy as np

from ..errors import CheckpointError, ExprError


class Schedule:
    """lr(t) for t = 0, 1, ...: call it with the step count."""

    def __call__(self, t):
        t = int(t)
        if t < 0:
            raise ExprError(f"{type(self).__name__}: step {t} is negative")
        return float(self.lr_at(t))

    def lr_at(self, t):
        """The learning rate at step ``t`` (0 at the first step); ``schedule(t)`` checks ``t`` and calls this."""
        raise NotImplementedError

    def describe(self):
        """A plain dict naming the schedule and its numbers (saved in a solver's state)."""
        return {"kind": type(self).__name__, **self._fields()}

    def _fields(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._fields().items())
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """The same learning rate at every step (what a plain number ``lr=`` means).

    Parameters
    ----------
    lr : float
        > 0.
    """

    def __init__(self, lr):
        self.lr = _positive("Constant", "lr", lr)

    def lr_at(self, t):
        """The learning rate at step ``t`` (0 at the first step); ``schedule(t)`` checks ``t`` and calls this."""
        return self.lr

    def _fields(self):
        return {"lr": self.lr}


class StepDecay(Schedule):
    """lr * gamma ** (t // step_size): the lr drops by gamma every step_size steps."""

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = _positive("StepDecay", "lr", lr)
        self.step_size = _count("StepDecay", "step_size", step_size)
        self.gamma = _factor("StepDecay", gamma)

    def lr_at(self, t):
        """The learning rate at step ``t`` (0 at the first step); ``schedule(t)`` checks ``t`` and calls this."""
        return self.lr * self.gamma ** (t // self.step_size)

    def _fields(self):
        return {"lr": self.lr, "step_size": self.step_size, "gamma": self.gamma}


class ExponentialDecay(Schedule):
    """lr * gamma ** t."""

    def __init__(self, lr, gamma):
        self.lr = _positive("ExponentialDecay", "lr", lr)
        self.gamma = _factor("ExponentialDecay", gamma)

    def lr_at(self, t):
        """The learning rate at step ``t`` (0 at the first step); ``schedule(t)`` checks ``t`` and calls this."""
        return self.lr * self.gamma ** t

    def _fields(self):
        return {"lr": self.lr, "gamma": self.gamma}


class CosineDecay(Schedule):
    """Half a cosine from lr down to min_lr over total_steps steps, then min_lr."""

    def __init__(self, lr, total_steps, min_lr=0.0):
        self.lr = _positive("CosineDecay", "lr", lr)
        self.total_steps = _count("CosineDecay", "total_steps", total_steps)
        if not (isinstance(min_lr, (int, float, np.floating, np.integer)) and 0 <= min_lr <= self.lr):
            raise ExprError(f"CosineDecay: min_lr must lie in [0, lr={self.lr}], got {min_lr!r}")
        self.min_lr = float(min_lr)

    def lr_at(self, t):
        """The learning rate at step ``t`` (0 at the first step); ``schedule(t)`` checks ``t`` and calls this."""
        if t >= self.total_steps:
            return self.min_lr
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * t / self.total_steps)) / 2

    def _fields(self):
        return {"lr": self.lr, "total_steps": self.total_steps, "min_lr": self.min_lr}


class LinearWarmup(Schedule):
    """A linear ramp to `after`'s first lr over warmup_steps steps (the first step at
    1 / warmup_steps of it, never at 0), then `after` from its own step 0."""

    def __init__(self, after, warmup_steps):
        self.after = after if isinstance(after, Schedule) else Constant(after)
        self.warmup_steps = _count("LinearWarmup", "warmup_steps", warmup_steps)

    def lr_at(self, t):
        """The learning rate at step ``t`` (0 at the first step); ``schedule(t)`` checks ``t`` and calls this."""
        if t < self.warmup_steps:
            return self.after(0) * (t + 1) / self.warmup_steps
        return self.after(t - self.warmup_steps)

    def _fields(self):
        return {"warmup_steps": self.warmup_steps, "after": self.after.describe()}

    def __repr__(self):
        return f"LinearWarmup({self.after!r}, warmup_steps={self.warmup_steps})"


# -- what the solvers call ------------------------------------------------------------------

def split_lr(lr):
    """A solver's lr= as (schedule or None, the first step's lr)."""
    if isinstance(lr, Schedule):
        return lr, lr(0)
    if callable(lr):
        raise ExprError(f"solver: lr= takes a number or an ev.schedules schedule, got {lr!r}")
    return None, lr


def state(schedule, lr):
    """The schedule's entries of a solver's state_dict (none for a plain number lr)."""
    if schedule is None:
        return {}
    return {"lr": np.array(float(lr)), "schedule": np.array(json.dumps(schedule.describe(), sort_keys=True))}


def check_state(schedule, d, kind):
    """Refuse a solver state saved with another schedule than this solver's."""
    if schedule is None or "schedule" not in d:
        return
    saved = str(np.asarray(d["schedule"]))
    mine = json.dumps(schedule.describe(), sort_keys=True)
    if saved != mine:
        raise CheckpointError(f"{kind}: the state was saved with schedule {saved}, this solver "
                              f"follows {mine}")


def _positive(who, name, x):
    if not (isinstance(x, (int, float, np.floating, np.integer)) and x > 0 and math.isfinite(x)):
        raise ExprError(f"{who}: {name} must be a finite number > 0, got {x!r}")
    return float(x)


def _count(who, name, n):
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ExprError(f"{who}: {name} must be an int >= 1, got {n!r}")
    return int(n)


def _factor(who, gamma):
    if not (isinstance(gamma, (int, float, np.floating, np.integer)) and 0 < gamma <= 1):
        raise ExprError(f"{who}: gamma must lie in (0, 1], got {gamma!r}")
    return float(gamma)

__all__ = ['Constant', 'CosineDecay', 'ExponentialDecay', 'LinearWarmup', 'Schedule', 'StepDecay']


def __dir__():
    # NOTE: dir() and tab completion list the API only, not what the module imports
    return list(__all__)
