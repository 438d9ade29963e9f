"""The Solver base class every solver builds on: the step's checks, its hooks (clipping,
regularization: hooks.py), schedules, per-parameter state and state_dict (see solvers.py
for the rules a step follows)."""
import warnings

import numpy as np

from ..errors import CheckpointError, ExprError, GradError, NumericError, ShapeError, UsageError
from .solver_checks import (check_grad, check_value, count_bad, entry, finite, named, nonneg, positive,
                            resolve, split_by_grad)
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
    """Shared machinery: gradient preparation, per-parameter state, state_dict.

    The parameters may be given once, first: ``Adam(model, lr=1e-3)`` (an ev.nn model,
    ``model.parameters()``, or a list / dict of parameter nodes); then ``opt.step()``
    steps them with the gradients of the latest run of either machine, and
    ``opt.zero_grad()`` forgets those. ``accumulate=True`` (ev.nn parameters) adds up
    the gradients of every run until zero_grad(): several runs, one step. A number
    first is the lr (``SGD(0.1)``), as before.
    """

    buffers = ()                    # names of the per-parameter state arrays
    default_lr = 0.001

    def __init__(self, params=None, lr=None, *, l1=0.0, l2=0.0, clip=None, clip_norm=None, strict=False,
                 nonfinite="raise", accumulate=False):
        if isinstance(params, (int, float, np.number, schedules.Schedule)) and not isinstance(params, bool):
            if lr is not None:
                raise UsageError(f"{self._kind()}: lr given twice ({params!r} first and lr={lr!r}); "
                                 f"the first argument is the parameters: {self._kind()}(model, lr=...)")
            params, lr = None, params
        self.params = None if params is None else resolve(params, self._kind())
        self.accumulate = bool(accumulate)
        if self.accumulate:
            self._accumulate_on()
        lr = self.default_lr if lr is None else lr
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

    def _accumulate_on(self):
        if self.params is None:
            raise UsageError(f"{self._kind()}: accumulate=True needs the parameters given first: "
                             f"{self._kind()}(model, lr=..., accumulate=True)")
        values = self.params.values() if isinstance(self.params, dict) else self.params
        plain = [p for p in values if not hasattr(p, "take_grad")]
        if plain:
            raise UsageError(f"{self._kind()}: accumulate=True needs ev.nn parameters (a model, its "
                             f"Params or model.parameters()); {plain[0]!r} gets each run's gradient only")
        for p in values:
            p.accumulate = True
            p.zero_grad()           # a sum starts from nothing

    def zero_grad(self):
        """Forget the parameters' gradients (and accumulated sums): a step() before the next
        run raises GradError instead of stepping again with old gradients."""
        if self.params is None:
            raise UsageError(f"{self._kind()}.zero_grad: no parameters were given to the solver; "
                             f"{self._kind()}(model, lr=...) gives them")
        for p in (self.params.values() if isinstance(self.params, dict) else self.params):
            if hasattr(p, "zero_grad"):
                p.zero_grad()
            else:
                p.grad = None

    def step(self, params=None):
        """Update every parameter that has a gradient, in place; True if it did.

        ``params`` is a list of parameters (state is named by ``.name``) or a
        dict name -> parameter (state is named by the key), an ev.nn model or
        model.parameters(); None: the parameters the solver was given. Nothing is updated
        if any parameter or gradient is malformed, if no parameter has a
        gradient (GradError), or if a gradient holds a NaN or Inf (NumericError;
        with nonfinite="skip" the step is skipped, counted, and False returned).
        """
        if params is None:
            if self.params is None:
                raise UsageError(f"{self._kind()}.step: which parameters? Give them once, "
                                 f"{self._kind()}(model, lr=...), or pass them: step(params)")
            params = self.params
        else:
            params = resolve(params, f"{self._kind()}.step")
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
        for key, value in self._hook_states().items():
            if key in d:
                raise CheckpointError(f"{self._kind()}.state_dict: a parameter's state is named {key!r}, "
                                      "as a hook's state is")
            d[key] = value
        return d

    def _hook_states(self):
        """{"hook<i>:<class>/<key>": array} of the hooks that keep state (their position in
        the list and their class name the key, so a state meets the same hook again)."""
        out = {}
        for i, h in enumerate(self.hooks):
            if callable(getattr(h, "state_dict", None)):
                for k, v in h.state_dict().items():
                    out[f"hook{i}:{type(h).__name__}/{k}"] = np.asarray(v)
        return out

    def _hook_loads(self, d):
        """[(hook, its saved dict)] for every hook with state, checked before anything loads."""
        todo = []
        for i, h in enumerate(self.hooks):
            if not callable(getattr(h, "load_state_dict", None)):
                continue
            prefix = f"hook{i}:{type(h).__name__}/"
            mine = {k[len(prefix):]: v for k, v in d.items() if k.startswith(prefix)}
            if not mine:
                raise CheckpointError(f"{self._kind()}.load_state_dict: the state has nothing for hook {i}, "
                                      f"{h!r} (saved without it, or with other hooks before it)")
            todo.append((h, mine))
        return todo

    def load_state_dict(self, d, params=None):
        """Restore state saved by state_dict() for these parameters (and the hooks' state,
        such as GradientNoise's random stream).

        Every parameter must have its state in ``d`` with its own shape and
        dtype; entries for parameters not listed are ignored; every hook with
        state must find its own. Nothing changes unless the whole state fits.
        """
        kind = entry(d, "kind", "solver kind")
        if str(kind) != self._kind():
            raise CheckpointError(f"state was saved by {kind}, cannot load it into {self._kind()}")
        schedules.check_state(self.schedule, d, self._kind())
        steps = entry(d, "step", "step count")
        if params is None and self.params is None:
            raise UsageError(f"{self._kind()}.load_state_dict: which parameters? Give them to the "
                             "solver first, or pass them")
        params = self.params if params is None else resolve(params, f"{self._kind()}.load_state_dict")
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
        hook_states = self._hook_loads(d)
        for h, saved in hook_states:    # NOTE: a hook checks its state as it loads it
            h.load_state_dict(saved)
        self._slots = slots
        self.steps = int(steps)

    def _kind(self):
        return type(self).__name__

    def __repr__(self):
        lr = repr(self.schedule) if self.schedule is not None else f"{self.lr:g}"
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in self._shown() if getattr(self, k, None))
        n = "no parameters given" if self.params is None else f"{len(self.params)} parameters"
        return f"{self._kind()}(lr={lr}{extra}; {n}, {self.steps} steps)"

    def _shown(self):
        """Options __repr__ names when they are set."""
        return ("momentum", "nesterov", "beta1", "beta2", "rho", "weight_decay", "variant", "l1", "l2",
                "clip", "clip_norm", "strict", "accumulate")


# -- the running averages the adaptive solvers keep (solvers.py, adaptive.py) -------------

def moving_average(avg, x, decay, tmp):
    """avg = decay * avg + (1 - decay) * x, in place; tmp is scratch of avg's shape."""
    avg *= decay
    np.multiply(x, 1.0 - decay, out=tmp)
    avg += tmp


def moving_average_of_square(avg, x, decay, tmp):
    """avg = decay * avg + (1 - decay) * x * x, in place; tmp is scratch of avg's shape
    (never x itself)."""
    avg *= decay
    np.multiply(x, x, out=tmp)
    tmp *= 1.0 - decay
    avg += tmp
