"""ev.train.Trainer: a training step driven over a loader for a budget, with extensions
fired on triggers (Chainer's Trainer, its updater folded in).

    trainer = ev.train.Trainer(loader, model=net, loss=ev.nn.mean_cross_entropy,
                               optimizer=ev.solvers.Adam(net, lr=1e-3), epochs=10)
    trainer.extend(ev.train.Evaluator(test_loader))
    trainer.extend(ev.train.LogReport("log.jsonl", print="epoch {epoch} loss {loss:.4f}"))
    trainer.extend(ev.train.Snapshot("ckpt.npz", trigger=[(500, "steps"), "end"]))
    trainer.run()

One step: the next batch of the loader goes to the step (``step(*batch)`` for a tuple
batch); the step's result becomes the step's observations (a number is the loss, a dict
names its numbers); a non-finite loss stops the run (NonFiniteLossError, naming the
step) before the optimizer moves; then the trainer steps the optimizer (the step's run
left the gradients on the parameters) and fires the extensions whose triggers say so.
"""
import math
import time

import numpy as np

from ..errors import ExprError, NonFiniteLossError, UsageError
from . import extensions as ext_lib
from . import snapshot as snap
from .evaluation import ModelStep

_DONE = object()


class Trainer:
    """A step function (or a model, a loss and an optimizer) driven over a loader.

    Parameters
    ----------
    loader : iterable
        One ``for`` loop over it is one epoch (an ``ev.data.DataLoader``; with
        ``len()`` an epoch's end is known as its last batch is read). A snapshot needs
        its ``state_dict()`` / ``load_state_dict()``.
    step : callable, optional
        ``step(*batch)`` for a tuple batch (``step(**batch)`` for a dict, ``step(batch)``
        otherwise) runs the forward and backward pass (an ``ev.function`` with
        ``ev.grad(loss, model)`` inside, or a machine's ``run``) and returns the loss (a
        number or 0-d array), a dict of numbers (its "loss" checked), or None. It must not
        step the optimizer: the trainer does. Its ``state_dict()`` / ``load_state_dict()``,
        when it has them, go into snapshots (per rank).
    model : ev.nn.Module, optional
        With ``loss``, the step is ``loss(model(*inputs), target)`` for a batch
        ``(*inputs, target)`` (see :class:`ModelStep`). With a step function, the model
        a snapshot saves and an Evaluator puts in evaluation mode.
    loss : callable, optional
        ``loss(output node, target node) -> scalar node`` (``ev.nn.mean_cross_entropy``).
    optimizer : solver, optional
        Given its parameters (``ev.solvers.Adam(model, lr=...)``); stepped after every
        step, saved by snapshots. Needed with ``model`` and ``loss``.
    machine : {"tape", "lisp"}, default "tape"
        With ``model`` and ``loss``: one program traced and compiled per batch shape
        (``ev.function``), or a fresh graph per batch on the LispMachine.
    device : str, optional
        With ``model`` and ``loss`` on the tape: ``"cuda"`` runs the step on a GPU.
    epochs, steps : int, optional
        Stop when this many epochs / steps are done in all (a resumed run counts those
        it resumed from).
    minutes : float, optional
        Stop when this run has taken this long (a job's time limit: every ``run()``, a
        resumed one too, has its own). At least one budget is needed; the first reached
        ends the run.
    ctx : ev.distributed.Context, optional
        Data-parallel training: the model is broadcast from rank 0 at the start (unless
        resuming), the machines average the gradients, the observations are averaged
        over the ranks, every rank stops at the same step (one clock), and reports run
        on rank 0 only. Give the loader ``shard=ctx``.
    resume : str, optional
        A snapshot (``ev.train.Snapshot``) to continue from: model, optimizer (its hooks'
        state too), loader position, step and epoch counts, the extensions' and the
        step's state. Continuing a run stopped mid-epoch gives the parameters an
        uninterrupted run would have had.
    interrupt : {"stop", "raise"}, default "stop"
        On Ctrl-C (KeyboardInterrupt) in a run: "stop" ends the run there as if its
        budget were spent (the "end" extensions run: a last snapshot, the plots) and sets
        ``trainer.interrupted``; "raise" re-raises at once. Under ``ctx`` it is always
        raised (the other ranks wait for this one).

    Attributes
    ----------
    step, epoch : int
        Steps and epochs done (in all, across resumes).
    position : int
        Batches read of the epoch running.
    observation : dict
        The latest step's numbers (and what extensions added, such as "val/loss").
    elapsed : float
        Seconds since this run started (the same float on every rank under ``ctx``
        when a ``minutes`` budget is set).
    """

    def __init__(self, loader, step=None, *, model=None, loss=None, optimizer=None, machine="tape",
                 device=None, epochs=None, steps=None, minutes=None, ctx=None, resume=None,
                 interrupt="stop"):
        if not hasattr(loader, "__iter__"):
            raise UsageError(f"Trainer: the loader must be iterable (an ev.data.DataLoader), got "
                             f"{type(loader).__name__}")
        if step is not None and not callable(step):
            raise UsageError(f"Trainer: step must be a function of a batch, got {type(step).__name__}")
        if step is not None and loss is not None:
            raise UsageError("Trainer: give a step function, or a model with a loss; not both")
        if step is None:
            if model is None or loss is None:
                raise UsageError("Trainer: what to train? Give a step function, Trainer(loader, step, "
                                 "optimizer=opt), or a model and a loss, Trainer(loader, model=net, "
                                 "loss=ev.nn.mean_cross_entropy, optimizer=opt)")
            if optimizer is None:
                raise UsageError("Trainer: a model and a loss need an optimizer= to step them")
            step = ModelStep(model, loss, machine=machine, ctx=ctx, device=device)
        elif machine != "tape" or device is not None:
            raise UsageError("Trainer: machine= and device= belong to the model-and-loss form; a step "
                             "function picks its own machine")
        if optimizer is not None and getattr(optimizer, "params", None) is None:
            raise UsageError(f"Trainer: give the optimizer its parameters first, "
                             f"{type(optimizer).__name__}(model, lr=...)")
        if interrupt not in ("stop", "raise"):
            raise UsageError(f"Trainer: interrupt must be 'stop' or 'raise', got {interrupt!r}")
        self.epochs, self.steps = _count("epochs", epochs), _count("steps", steps)
        self.minutes = _minutes(minutes)
        if self.epochs is None and self.steps is None and self.minutes is None:
            raise UsageError("Trainer: give a budget, epochs=, steps= or minutes= (the first reached "
                             "ends the run)")
        self.loader, self.step_fn, self.model, self.optimizer = loader, step, model, optimizer
        self.ctx, self.resume_from, self.interrupt = ctx, resume, interrupt
        self.root = ctx is None or ctx.rank == 0
        self.step = self.epoch = self.position = 0
        self.start_step, self.start_epoch = 0, 0.0
        self.elapsed, self.elapsed_before = 0.0, 0.0
        self.observation = {}
        self.interrupted = self.completed = False
        self.same_ranks = True      # a resume from a snapshot of as many ranks
        self.tracked = {}           # name -> object whose state snapshots keep (per rank)
        self._entries = []          # registered extensions, highest priority first
        self._it = None
        self._t0 = None
        self._bar = None            # the ProgressBar that writes lines, if one runs
        self._event = (False, False)    # (a step done, an epoch done) at the point fired now
        self._ran = self._resumed = self._stop = False

    # -- building -------------------------------------------------------------------------
    def extend(self, extension, trigger=None, *, name=None, priority=None):
        """Run ``extension`` when ``trigger`` fires (default: the extension's own).

        Parameters
        ----------
        extension : Extension or callable
            Called with the trainer.
        trigger : tuple, str, callable or list, optional
            ``(n, "steps")``, ``(n, "epochs")``, ``"end"``, ``fn(trainer) -> bool``, or
            a list of these (see ``exprvm.train.extensions``).
        name : str, optional
            Its name in snapshots (default: its class's, numbered when repeated).
        priority : int, optional
            Higher first among those firing together (default: the extension's own).

        Returns
        -------
        extension
        """
        if not callable(extension):
            raise UsageError(f"Trainer.extend: an extension is called with the trainer; got "
                             f"{type(extension).__name__}")
        if self._ran:
            raise UsageError("Trainer.extend: the run has started; extend before run()")
        spec = trigger if trigger is not None else getattr(extension, "trigger", (1, "epoch"))
        base = (name or getattr(extension, "name", None) or getattr(extension, "__name__", None)
                or type(extension).__name__)
        taken = {e.name for e in self._entries}
        final, k = base, 1
        while final in taken:
            final, k = f"{base}_{k}", k + 1
        entry = _Entry(extension, final, ext_lib.trigger(spec),
                       getattr(extension, "priority", ext_lib.READER) if priority is None else priority)
        self._entries.append(entry)
        self._entries.sort(key=lambda e: -e.priority)       # stable: ties keep their order
        return extension

    def track(self, name, obj):
        """Keep ``obj``'s state in snapshots (per rank) and restore it on resume: an object
        with ``state_dict()`` / ``load_state_dict(d)``, or a numpy Generator (a random
        stream given to ``ev.random`` nodes as ``seed=``). Returns ``obj``."""
        snap.check_trackable(name, obj, self.tracked)
        self.tracked[name] = obj
        return obj

    def resume(self, path):
        """Load the snapshot at ``path`` now (after the extensions are registered, so that
        their state comes back too); run() then continues from it. ``resume=`` does this
        when the run starts. Returns the checkpoint read (its extra sections too)."""
        if self._ran or self._resumed:
            raise UsageError("Trainer.resume: resume once, before run()")
        self._resumed = True
        return snap.restore(self, path)

    def stop(self):
        """End the run after the step being taken (a budget of one's own: early stopping).
        Under ``ctx`` call it on every rank (a decision every rank makes alike)."""
        self._stop = True

    @property
    def extensions(self):
        """{name: extension} in the order they run."""
        return {e.name: e.ext for e in self._entries}

    # -- running --------------------------------------------------------------------------
    def run(self):
        """Train until a budget is spent; returns the trainer."""
        if self._ran:
            raise UsageError("Trainer.run: a trainer runs once; make a new one (resume= continues "
                             "from a snapshot)")
        self._ran = True
        started = False
        try:
            self._begin()
            started = True
            self._loop()
        except KeyboardInterrupt:
            if self.interrupt == "raise" or self.ctx is not None or not started:
                self._close(failed=True)
                raise
            self.interrupted = True
            self.write(f"interrupted at step {self.step}")
        except BaseException:
            self._close(failed=True)
            raise
        self._close(failed=False)
        return self

    def _begin(self):
        if self.resume_from is not None and not self._resumed:
            self._resumed = True
            snap.restore(self, self.resume_from)
        elif self.ctx is not None and self.model is not None and not self._resumed:
            self.ctx.broadcast(self.model)      # every rank starts from rank 0's weights
        self.start_step, self.start_epoch = self.step, self._epoch_detail()
        self._t0 = time.perf_counter()
        mine = self._mine()
        # NOTE: looked up once: the loop calls these every step
        self._before = [e.ext.before_step for e in mine if hasattr(e.ext, "before_step")]
        self._firing = [(e, getattr(e.ext, "observe", None)) for e in mine]
        for e in mine:
            if hasattr(e.ext, "initialize"):
                e.ext.initialize(self)

    def _loop(self):
        while not self._spent():
            batch = self._next_batch()
            if batch is _DONE:          # a loader without len(): its epoch ended here
                self.epoch += 1
                self._fire(False, True)
                continue
            for before in self._before:
                before(self)
            self.observation = self._one_step(batch)
            self.step += 1
            self.position += 1
            epoch_done = self._epoch_over()
            if epoch_done:
                self.epoch += 1
            self._fire(True, epoch_done)

    def _next_batch(self):
        if self._it is None:
            self._it = iter(self.loader)
        try:
            return next(self._it)
        except StopIteration:
            self._it = None
            if self.position == 0:
                raise UsageError(f"Trainer: the loader gave no batch in epoch {self.epoch + 1}") from None
            self.position = 0
            return _DONE

    def _epoch_over(self):
        """Was that the epoch's last batch? (Known from len(); the iterator is finished.)"""
        try:
            n = len(self.loader)
        except TypeError:
            return False
        if self.position < n:
            return False
        extra = next(self._it, _DONE)
        self._it, self.position = None, 0
        if extra is not _DONE:
            raise ExprError(f"Trainer: the loader gave more than its len() of {n} batches in epoch "
                            f"{self.epoch + 1}")
        return True

    def _one_step(self, batch):
        opt = self.optimizer
        before = None if opt is None else opt.steps
        if isinstance(batch, (tuple, list)):
            out = self.step_fn(*batch)
        elif isinstance(batch, dict):
            out = self.step_fn(**batch)
        else:
            out = self.step_fn(batch)
        if opt is not None and opt.steps != before:
            raise UsageError(f"Trainer: the step function stepped {type(opt).__name__} itself; the "
                             "trainer steps the optimizer it was given (leave it out of the step, or "
                             "do not give it to the trainer)")
        obs = _observations(out, self.ctx)
        loss = obs.get("loss")
        if loss is not None and not math.isfinite(loss):
            where = f"batch {self.position + 1} of epoch {self.epoch + 1}"
            raise NonFiniteLossError(
                f"step {self.step + 1} ({where}): the loss is {loss}; the optimizer did not step. "
                "Lower the learning rate, clip the gradients (clip_norm=), or look at that batch",
                step=self.step + 1, epoch=self.epoch + 1, loss=loss)
        if opt is not None:
            opt.step()
        return obs

    def fired(self, trigger):
        """Does ``trigger`` (an ``ev.train.extensions.trigger``) fire at the point the run is
        at now (for an extension with triggers of its own)?"""
        step_done, epoch_done = self._event
        if step_done is None:
            return trigger.at_end
        return trigger.fires(self, step_done, epoch_done)

    def _fire(self, step_done, epoch_done):
        self._event = (step_done, epoch_done)
        for e, observe in self._firing:
            if step_done and observe is not None:
                observe(self)
            if e.trigger is not None and e.last != self.step and e.trigger.fires(self, step_done, epoch_done):
                e.last = self.step
                e.ext(self)

    def _close(self, failed):
        """End the run: the "end" triggers (after a normal end), then every finalize."""
        self._shut_loader()
        self.completed = not failed
        self._event = (None, None)
        errors = []
        if not failed:
            for e in self._mine():
                if e.trigger is not None and e.trigger.at_end and e.last != self.step:
                    e.last = self.step
                    e.ext(self)
        for e in self._mine():
            if hasattr(e.ext, "finalize"):
                try:
                    e.ext.finalize(self)
                except Exception as err:        # NOTE: one failing finalize leaves the others run
                    errors.append(err)
        if errors and not failed:
            raise errors[0]

    def _shut_loader(self):
        it, self._it = self._it, None
        close = getattr(it, "close", None)
        if close is not None:
            close()

    def _mine(self):
        """The extensions this rank runs."""
        return [e for e in self._entries if self.root or not getattr(e.ext, "rank0_only", False)]

    # -- budgets and clocks ---------------------------------------------------------------
    def _spent(self):
        self.elapsed = time.perf_counter() - self._t0
        if self.ctx is not None and self.minutes is not None:
            # NOTE: one clock for all ranks, so that every rank stops at the same step
            self.elapsed = self.ctx.max(self.elapsed)
        return (self._stop or (self.steps is not None and self.step >= self.steps)
                or (self.epochs is not None and self.epoch >= self.epochs)
                or (self.minutes is not None and self.elapsed >= 60.0 * self.minutes))

    def _epoch_detail(self):
        try:
            return self.epoch + self.position / max(1, len(self.loader))
        except TypeError:
            return float(self.epoch)

    @property
    def progress(self):
        """The fraction of this run's budget done: the largest of its budgets' fractions."""
        parts = []
        if self.steps is not None:
            todo = self.steps - self.start_step
            parts.append((self.step - self.start_step) / todo if todo > 0 else 1.0)
        if self.epochs is not None:
            todo = self.epochs - self.start_epoch
            parts.append((self._epoch_detail() - self.start_epoch) / todo if todo > 0 else 1.0)
        if self.minutes is not None:
            parts.append(self.elapsed / (60.0 * self.minutes))
        return min(1.0, max(parts))

    @property
    def elapsed_total(self):
        """Seconds of training in all, across resumes."""
        return self.elapsed_before + self.elapsed

    # -- output ---------------------------------------------------------------------------
    def write(self, line):
        """Print a line (on rank 0), above a running progress bar."""
        if not self.root:
            return
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)

    def save(self, path, **sections):
        """Write a snapshot of the whole training state to ``path`` now (atomically; rank 0
        writes under ``ctx``, every rank must call it); extra ``sections`` are dicts of
        arrays saved beside it (``ev.load(path).section(name)``)."""
        snap.save(self, path, sections)

    def __repr__(self):
        budget = ", ".join(f"{k}={v}" for k, v in (("epochs", self.epochs), ("steps", self.steps),
                                                   ("minutes", self.minutes)) if v is not None)
        return (f"<ev.train.Trainer: step {self.step}, epoch {self.epoch}; {budget}; "
                f"{len(self._entries)} extensions>")


class _Entry:
    __slots__ = ("ext", "name", "trigger", "priority", "last")

    def __init__(self, ext, name, trigger, priority):
        self.ext, self.name, self.trigger, self.priority = ext, name, trigger, priority
        self.last = None            # the step it last fired at


def _observations(out, ctx):
    """A step's result as {name: float} (averaged over the ranks under ctx)."""
    if out is None:
        obs = {}
    elif isinstance(out, dict):
        obs = {str(k): _number(k, v) for k, v in out.items()}
    else:
        obs = {"loss": _number("loss", out)}
    if ctx is not None and obs:
        keys = sorted(obs)
        means = np.atleast_1d(ctx.mean(np.array([obs[k] for k in keys], np.float64)))
        obs = dict(zip(keys, (float(v) for v in means)))
    return obs


def _number(key, v):
    a = np.asarray(v)
    if a.size != 1 or a.dtype.kind not in "biuf":
        raise UsageError(f"Trainer: the step's {key!r} is {type(v).__name__} {getattr(a, 'shape', '')}; a "
                         "step returns a number (its loss), a dict of numbers, or None")
    return float(a.reshape(()))


def _count(name, v):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise UsageError(f"Trainer: {name}= must be an int > 0, got {v!r}")
    return int(v)


def _minutes(v):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not v > 0 \
            or not math.isfinite(v):
        raise UsageError(f"Trainer: minutes= must be a number > 0, got {v!r}")
    return float(v)
