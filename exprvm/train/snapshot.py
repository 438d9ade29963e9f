"""Snapshots of a Trainer: the whole training state in one checkpoint file, written
atomically (ev.save) and read without pickle (ev.load), and the resume from one.

File layout (an ev.save checkpoint):

    params                the model's parameters (running statistics too)
    "optimizer"           opt.state_dict(): moments, step counts, schedule, hooks' state
    "loader"              loader.state_dict(): epoch, batches read of it, seed
    "trainer"             step, epoch, position, seconds trained, ranks, format
    "ext:<name>"          each extension's state_dict() (a LogReport's log, a plot's points)
    "step", "track:<name>"  the step function's and tracked objects' state, per rank
                          (under ev.distributed: "rank<r>/<key>")
    extra sections        what Snapshot(..., sections=) or trainer.save(path, **sections) add
"""
import json

import numpy as np

from ..errors import CheckpointError, UsageError
from .checkpoint import load, save as save_file
from .extensions import LAST, Extension
from .hooks import rng_state

FORMAT = 1
_RESERVED = ("params", "optimizer", "loader", "trainer", "step")


class Snapshot(Extension):
    """Writes the trainer's whole state to one file, atomically; ``Trainer(resume=path)``
    continues from it.

    Parameters
    ----------
    path : str
        The checkpoint file (replaced at every snapshot; a crash while writing leaves
        the previous one).
    trigger : optional
        Default: after every epoch. ``[(500, "steps"), "end"]``: every 500 steps and
        when training ends.
    sections : dict, optional
        Extra ``{name: {key: array}}`` saved beside the state (a vocabulary, a
        configuration to check on resume: ``ev.load(path).section(name)``).

    Notes
    -----
    Under ``ev.distributed`` every rank takes part (each rank's step state is gathered)
    and rank 0 writes.
    """

    trigger = (1, "epoch")
    priority = LAST

    def __init__(self, path, trigger=None, sections=None):
        self.path = str(path)
        if trigger is not None:
            self.trigger = trigger
        self.sections = dict(sections or {})
        for name in self.sections:
            _check_section(name)

    def __call__(self, trainer):
        save(trainer, self.path, self.sections)

    def __repr__(self):
        return f"Snapshot({self.path!r})"


def save(trainer, path, sections):
    for name in sections:
        _check_section(name)
    out = dict(sections)
    opt, loader, ctx = trainer.optimizer, trainer.loader, trainer.ctx
    if opt is not None:
        out["optimizer"] = opt.state_dict()
    if not callable(getattr(loader, "state_dict", None)):
        raise UsageError(f"Snapshot: the loader ({type(loader).__name__}) cannot say where it is "
                         "(no state_dict()); use an ev.data.DataLoader")
    where = dict(loader.state_dict())
    if "position" in where:             # NOTE: the batches trained on, not those read ahead
        where["position"] = np.array(trainer.position, np.int64)
    out["loader"] = where
    out["trainer"] = {"format": FORMAT, "step": trainer.step, "epoch": trainer.epoch,
                      "position": trainer.position, "elapsed": trainer.elapsed_total,
                      "ranks": 1 if ctx is None else ctx.size}
    for e in trainer._entries:
        state = getattr(e.ext, "state_dict", None)
        if callable(state):
            out[f"ext:{e.name}"] = state()
    mine = _per_rank_state(trainer)
    if ctx is None:
        out.update(mine)
        params = {} if trainer.model is None else trainer.model
        save_file(path, params, **out)
        return
    every = ctx.comm.gather(mine, root=0)
    if ctx.rank == 0:
        for r, sections_r in enumerate(every):
            for name, d in sections_r.items():
                out.setdefault(name, {}).update({f"rank{r}/{k}": v for k, v in d.items()})
    ctx.save(path, {} if trainer.model is None else trainer.model, **out)


def restore(trainer, path):
    """Load everything save() wrote into the trainer's objects (see the module docstring);
    per-rank state only where the snapshot had as many ranks."""
    ctx = trainer.ctx
    ck = load(path) if ctx is None else ctx.load(path)
    tr = ck.section("trainer")
    try:
        fmt, ranks = int(tr["format"]), int(tr["ranks"])
        step, epoch, position, elapsed = int(tr["step"]), int(tr["epoch"]), int(tr["position"]), float(tr["elapsed"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path!r}: not a trainer snapshot ({e!r})") from None
    if fmt != FORMAT:
        raise CheckpointError(f"{path!r}: snapshot format {fmt}, this exprvm reads {FORMAT}")
    same = ranks == (1 if ctx is None else ctx.size)
    if trainer.model is not None:
        load(path, trainer.model)
    if trainer.optimizer is not None:
        trainer.optimizer.load_state_dict(ck.section("optimizer"))
    if callable(getattr(trainer.loader, "load_state_dict", None)):
        where = dict(ck.section("loader"))
        if not same:        # NOTE: other shards: that epoch starts again on the new ranks
            where["position"], position = np.array(0, np.int64), 0
        trainer.loader.load_state_dict(where)
    for e in trainer._entries:
        state = getattr(e.ext, "load_state_dict", None)
        if callable(state) and f"ext:{e.name}" in ck.sections:
            state(ck.section(f"ext:{e.name}"))
    if same:
        prefix = "" if ctx is None else f"rank{ctx.rank}/"
        for name, obj in _per_rank_objects(trainer).items():
            if name not in ck.sections:
                raise CheckpointError(f"{path!r} has no state for {name!r} (saved without it)")
            d = {k[len(prefix):]: v for k, v in ck.section(name).items() if k.startswith(prefix)}
            _load_object(obj, d, name)
    trainer.step, trainer.epoch, trainer.position = step, epoch, position
    trainer.elapsed_before = elapsed
    trainer.same_ranks, trainer.resumed_ranks = same, ranks
    return ck


def _per_rank_objects(trainer):
    objs = {f"track:{k}": v for k, v in trainer.tracked.items()}
    if callable(getattr(trainer.step_fn, "state_dict", None)):
        objs["step"] = trainer.step_fn
    return objs


def _per_rank_state(trainer):
    return {name: _object_state(obj) for name, obj in _per_rank_objects(trainer).items()}


def _object_state(obj):
    if isinstance(obj, np.random.Generator):
        return {"rng": np.array(json.dumps(obj.bit_generator.state, sort_keys=True))}
    return dict(obj.state_dict())


def _load_object(obj, d, name):
    if isinstance(obj, np.random.Generator):
        obj.bit_generator.state = rng_state(d, obj, name)
    else:
        obj.load_state_dict(d)


def check_trackable(name, obj, tracked):
    if not isinstance(name, str) or not name or "/" in name:
        raise UsageError(f"Trainer.track: the name must be a non-empty string without '/', got {name!r}")
    if name in tracked:
        raise UsageError(f"Trainer.track: {name!r} is tracked already")
    if not (isinstance(obj, np.random.Generator)
            or (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None)))):
        raise UsageError(f"Trainer.track: {type(obj).__name__} has no state_dict() and load_state_dict(); "
                         "track those, or numpy Generators")


def _check_section(name):
    if not isinstance(name, str) or not name or name in _RESERVED or ":" in name:
        raise UsageError(f"Snapshot: {name!r} cannot name an extra section (a non-empty string without "
                         f"':', not one of {_RESERVED})")
