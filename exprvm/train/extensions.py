"""What a Trainer runs besides the step: extensions, the triggers that fire them, and
LRSchedule (the reports are in reports.py, Evaluator in evaluation.py, Snapshot in
snapshot.py).

An extension is an object with ``__call__(trainer)`` (or a plain function of the
trainer) that the trainer calls when its trigger fires, after a step or at the end of an
epoch. It may also have, all optional:

    trigger           when it fires when extend() names none (default (1, "epoch"))
    priority          higher first, among those firing at the same point (WRITER for what
                      adds observations, READER for what reads them, LAST for snapshots)
    rank0_only        under ev.distributed, run on rank 0 only (reports, plots, bars)
    initialize(t)     once, before the first step (after a resume)
    before_step(t)    before every step (an lr of the step to come)
    observe(t)        after every step, before any trigger fires (to sum observations)
    finalize(t)       once, when the run ends, normally or not (close files, draw)
    state_dict() / load_state_dict(d)   what a snapshot keeps of it ({str: array})

Triggers: ``(n, "steps")`` fires after every n-th step, ``(n, "epochs")`` after every
n-th epoch, ``"end"`` once when training ends normally (not after an error), a callable
``trigger(trainer) -> bool`` is asked after every step, and a list fires when any of
its triggers does. An extension fires at most once per step.
"""
import math

from ..errors import UsageError
from .schedules import Schedule

WRITER, EDITOR, READER, LAST = 300, 200, 100, -100
_UNITS = {"step": "step", "steps": "step", "iteration": "step", "iterations": "step",
          "epoch": "epoch", "epochs": "epoch"}


class Extension:
    """Base class of the trainer's extensions (see the module docstring); subclasses
    override ``__call__`` and the hooks they need."""

    trigger = (1, "epoch")
    priority = READER
    rank0_only = False

    def initialize(self, trainer):
        """Called once before the first step of a run (after a resume)."""

    def finalize(self, trainer):
        """Called once when the run ends, normally or by an error."""

    def __call__(self, trainer):
        """Called when the extension's trigger fires."""


class Interval:
    """Fires after every n-th step or every n-th epoch."""

    at_end = False

    def __init__(self, n, unit):
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise UsageError(f"trigger: the interval must be an int > 0, got {n!r}")
        if unit not in _UNITS:
            raise UsageError(f"trigger: the unit must be 'steps' or 'epochs', got {unit!r}")
        self.n, self.unit = n, _UNITS[unit]

    def fires(self, trainer, step_done, epoch_done):
        if self.unit == "step":
            return step_done and trainer.step % self.n == 0
        return epoch_done and trainer.epoch % self.n == 0

    def __repr__(self):
        return f"({self.n}, {self.unit + 's'!r})"


class End:
    """Fires once when training ends normally."""

    at_end = True

    def fires(self, trainer, step_done, epoch_done):
        return False

    def __repr__(self):
        return "'end'"


class Asked:
    """Fires after a step when ``fn(trainer)`` is true."""

    at_end = False

    def __init__(self, fn):
        self.fn = fn

    def fires(self, trainer, step_done, epoch_done):
        return step_done and bool(self.fn(trainer))

    def __repr__(self):
        return repr(self.fn)


class Any:
    """Fires when any of its triggers does."""

    def __init__(self, triggers):
        self.triggers = triggers
        self.at_end = any(t.at_end for t in triggers)

    def fires(self, trainer, step_done, epoch_done):
        return any(t.fires(trainer, step_done, epoch_done) for t in self.triggers)

    def __repr__(self):
        return repr(self.triggers)


def trigger(spec):
    """A trigger from its spec (see the module docstring); None for None (never fires)."""
    if spec is None:
        return None
    if isinstance(spec, (Interval, End, Asked, Any)):
        return spec
    if spec == "end":
        return End()
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], str):
        return Interval(*spec)
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise UsageError("trigger: an empty list never fires; give None for that")
        return Any([trigger(s) for s in spec])
    if callable(spec):
        return Asked(spec)
    raise UsageError(f"trigger: expected (n, 'steps'), (n, 'epochs'), 'end', a function of the trainer "
                     f"or a list of those, got {spec!r}")


class LRSchedule(Extension):
    """Sets the optimizer's learning rate before every step.

    Parameters
    ----------
    schedule : ev.schedules schedule or callable
        An ``ev.schedules`` schedule is called with the step count (``unit="steps"``,
        the number of steps done before this one) or the epoch count (``unit="epochs"``),
        so a resumed run takes the same rates; any other callable is called with the
        trainer and returns the rate (``lambda t: 1e-3 * (1 - t.progress)``: by the
        fraction of the run's budget done, the clock's for ``minutes=``).
    unit : {"steps", "epochs"}, default "steps"
        What an ``ev.schedules`` schedule counts.
    optimizer : solver, optional
        Default: the trainer's.

    Raises
    ------
    UsageError
        If the optimizer follows a schedule of its own (``lr=`` a schedule), or there
        is no optimizer.
    """

    trigger = None
    priority = WRITER

    def __init__(self, schedule, unit="steps", optimizer=None):
        if not callable(schedule):
            raise UsageError(f"LRSchedule: expected an ev.schedules schedule or a function of the "
                             f"trainer, got {schedule!r}")
        if unit not in ("steps", "epochs"):
            raise UsageError(f"LRSchedule: unit must be 'steps' or 'epochs', got {unit!r}")
        self.schedule, self.unit, self.optimizer = schedule, unit, optimizer
        self.lr = None              # the rate the last step took

    def initialize(self, trainer):
        opt = self.optimizer if self.optimizer is not None else trainer.optimizer
        if opt is None:
            raise UsageError("LRSchedule: which optimizer? Give the trainer optimizer= or LRSchedule "
                             "optimizer=")
        if getattr(opt, "schedule", None) is not None:
            raise UsageError(f"LRSchedule: {type(opt).__name__} follows its own schedule "
                             f"({opt.schedule!r}); give it a number lr= or drop the LRSchedule")
        self.optimizer = opt

    def before_step(self, trainer):
        """Set the optimizer's lr for the step to come."""
        if isinstance(self.schedule, Schedule):
            lr = self.schedule(trainer.step if self.unit == "steps" else trainer.epoch)
        else:
            lr = float(self.schedule(trainer))
        if not (lr >= 0 and math.isfinite(lr)):
            raise UsageError(f"LRSchedule: {self.schedule!r} gave the learning rate {lr} for step "
                             f"{trainer.step + 1}; a rate is a finite number >= 0")
        self.optimizer.lr = self.lr = lr

    def __repr__(self):
        return f"LRSchedule({self.schedule!r})"
