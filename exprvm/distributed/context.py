"""Context: one process's view of a data-parallel job (made by ev.distributed.init).

    ctx.rank, ctx.size                 this process and how many there are
    ctx.broadcast(model, root=0)       every rank gets root's parameter values
    ctx.allreduce_grads(params)        every .grad becomes the mean over the ranks
    ctx.shard(n, seed=...)             this rank's part of range(n)
    ctx.check_same_params(params)      names, shapes, dtypes equal on every rank?
    ctx.mean(x), ctx.any(flag)         small collectives for losses and stop decisions
    ctx.save(path, params, ...)        rank 0 writes the checkpoint; every rank learns if it failed
    ctx.load(path, params)             every rank reads it
    ctx.abort(message)                 end the whole job now

Every method is a collective: every rank must call it, in the same order. A rank that
waits in one for a rank that has left ends the job (faults.py).
"""
import hashlib

import numpy as np

from ..compiler.allreduce import BUCKET_BYTES, plan_buckets
from ..errors import CheckpointError, ExprError
from . import faults
from .errors import ParamMismatchError
from .params import mismatch, named, value_of


class Context:
    """See the module docstring. comm is an mpi4py communicator; MPI the mpi4py.MPI module."""

    def __init__(self, comm, MPI, bucket_bytes=BUCKET_BYTES, nonblocking=True):
        if int(bucket_bytes) <= 0:
            raise ExprError(f"ev.distributed: bucket_bytes must be positive, got {bucket_bytes!r}")
        self.comm, self.MPI = comm, MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.bucket_bytes = int(bucket_bytes)
        self.nonblocking = bool(nonblocking)
        self._plans = {}            # gradient layout -> _HostBuckets

    @property
    def is_root(self):
        return self.rank == 0

    def __repr__(self):
        return f"<ev.distributed.Context rank {self.rank} of {self.size}>"

    # -- agreeing ------------------------------------------------------------------
    def check_layout(self, entries, what="parameter"):
        """Raise ParamMismatchError on every rank unless every rank passed equal entries
        [(name, shape, dtype str, ...)]."""
        entries = [(str(e[0]), tuple(int(s) for s in e[1]), np.dtype(e[2]).str, *map(str, e[3:]))
                   for e in entries]
        with faults.waiting(f"the {what} check (allgather)"):
            everyone = self.comm.allgather(entries)
        lines = mismatch(everyone, what)
        if lines:
            raise ParamMismatchError(
                f"the ranks' {what}s differ (seen on rank {self.rank} of {self.size}); every rank "
                f"must build the same model:\n  " + "\n  ".join(lines))

    def check_same_params(self, params, what="parameter"):
        """Names, shapes and dtypes of params (a Module, dict or list) equal on every rank?
        Raises ParamMismatchError on every rank if not; returns [(name, object)]."""
        pairs = named(params, "check_same_params")
        self.check_layout([(n, value_of(n, p, "check_same_params").shape,
                            value_of(n, p, "check_same_params").dtype.str) for n, p in pairs], what)
        return pairs

    def _agree(self, layout, what):
        """One small collective per call: every rank's layout hash equal? If not, the full
        comparison (and its error) on every rank."""
        h = int.from_bytes(hashlib.blake2b(repr(layout).encode(), digest_size=7).digest(), "little")
        mine = np.array([h, -h], np.int64)
        top = np.empty_like(mine)
        with faults.waiting(f"the {what} check (all-reduce)"):
            self.comm.Allreduce(mine, top, op=self.MPI.MAX)
        if top[0] != h or top[1] != -h:
            self.check_layout(layout, what)

    # -- parameters and gradients -------------------------------------------------
    def broadcast(self, params, root=0):
        """Copy root's parameter values into every rank's, in place (bucketed Bcast).
        params: an ev.nn Module, a dict, or a list of param nodes / Params. Refuses
        (ParamMismatchError, on every rank) parameters that differ between ranks."""
        pairs = self.check_same_params(params)
        values = [value_of(n, p, "broadcast") for n, p in pairs]
        for idx in plan_buckets([(v.nbytes, v.dtype) for v in values], self.bucket_bytes):
            part = [values[i] for i in idx]
            buf = np.empty(sum(v.size for v in part), part[0].dtype)
            views = _slices(buf, part)
            if self.rank == root:
                for dst, v in zip(views, part):
                    np.copyto(dst, v)
            with faults.waiting("broadcast"):
                self.comm.Bcast(buf, root=root)
            if self.rank != root:
                for v, src in zip(part, views):
                    np.copyto(v, src)
        return [p for _, p in pairs]

    def allreduce_grads(self, params):
        """Average every parameter's .grad over the ranks, in place where .grad is a
        writable array. Returns the parameter objects (for opt.step).

        Gradients go into a few contiguous buckets (ctx.bucket_bytes each, per dtype),
        one Iallreduce per bucket, all started before the first is waited for. A
        parameter whose .grad is None is skipped; it must be None on every rank."""
        pairs = named(params, "allreduce_grads")
        layout = []
        for n, p in pairs:
            g = getattr(p, "grad", None)
            v = value_of(n, p, "allreduce_grads")
            if g is not None and np.shape(g) != v.shape:
                raise ExprError(f"allreduce_grads: parameter {n!r} is {v.shape} but its .grad "
                                f"is {np.shape(g)}")
            entry = (n, v.shape, v.dtype.str)
            layout.append(entry if g is not None else entry + ("no .grad",))
        layout = tuple(layout)
        self._agree(layout, "gradient")
        plan = self._plans.get(layout)
        if plan is None:
            if len(self._plans) > 32:
                self._plans.clear()
            plan = self._plans[layout] = _HostBuckets(layout, self.bucket_bytes)
        plan.run(self, [p for _, p in pairs])
        return [p for _, p in pairs]

    # -- the calls the compiled all-reduce makes (compiler/allreduce.py) -----------
    def start(self, buf):
        """Start summing buf over the ranks in place; returns the request (None if done)."""
        MPI = self.MPI
        if self.nonblocking:
            return self.comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        with faults.waiting("the gradients' all-reduce"):
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return None

    def complete(self, req):
        if req is not None:
            with faults.waiting("the gradients' all-reduce"):
                req.Wait()

    def progress(self, reqs):
        if reqs:
            self.MPI.Request.Testall(reqs)

    # -- data, numbers, checkpoints -----------------------------------------------
    def shard(self, n, seed=None):
        """This rank's part of range(n), as an int64 array: a permutation of range(n)
        (numpy's default_rng(seed); None: no shuffle) cut into `size` contiguous parts
        whose lengths differ by at most one. Disjoint across ranks, their union is
        range(n), and the same (n, seed) gives the same parts on every run.

        NOTE: averaging the ranks' mean losses equals the mean over the whole batch
        only when every part has the same length: use an n divisible by size."""
        n = int(n)
        if n < 0:
            raise ExprError(f"shard: n must be >= 0, got {n}")
        order = np.arange(n, dtype=np.int64) if seed is None else \
            np.random.default_rng(seed).permutation(n).astype(np.int64)
        return order[self.rank * n // self.size:(self.rank + 1) * n // self.size]

    def mean(self, x):
        """The mean over the ranks of a number (a float back) or an array (float64)."""
        a = np.array(x, np.float64)
        out = np.empty_like(a)
        with faults.waiting("mean (all-reduce)"):
            self.comm.Allreduce(a, out, op=self.MPI.SUM)
        out /= self.size
        return float(out) if out.ndim == 0 else out

    def max(self, x):
        """The largest over the ranks of a number: exactly the same float on every rank
        (a max rounds nothing), so decisions made from it agree, e.g. a clock's reading."""
        out = np.empty(1, np.float64)
        with faults.waiting("max (all-reduce)"):
            self.comm.Allreduce(np.array([x], np.float64), out, op=self.MPI.MAX)
        return float(out[0])

    def any(self, flag):
        """True on every rank if `flag` is true on any rank (to stop every rank together)."""
        out = np.empty(1, np.int32)
        with faults.waiting("any (all-reduce)"):
            self.comm.Allreduce(np.array([1 if flag else 0], np.int32), out, op=self.MPI.MAX)
        return bool(out[0])

    def barrier(self):
        with faults.waiting("barrier"):
            self.comm.Barrier()

    def save(self, path, params, /, root=0, **sections):
        """ev.save on rank `root` only (atomic, as ev.save always is); every rank returns
        once the file is complete, or raises CheckpointError if root could not write it."""
        from ..train import save
        err = None
        if self.rank == root:
            try:
                save(path, params, **sections)
            except Exception as e:      # NOTE: told to every rank, raised on every rank
                err = f"{type(e).__name__}: {e}"
        with faults.waiting("save (broadcast)"):
            err = self.comm.bcast(err, root=root)
        if err is not None:
            raise CheckpointError(f"rank {root} could not save {path!r}: {err}")

    def load(self, path, params=None):
        """ev.load on every rank (a file every rank can read); raises CheckpointError on
        every rank if any rank could not read it."""
        from ..train import load
        ck, err = None, None
        try:
            ck = load(path, params)
        except Exception as e:
            err = f"{type(e).__name__}: {e}"
        with faults.waiting("load (allgather)"):
            everyone = self.comm.allgather(err)
        errs = [(r, e) for r, e in enumerate(everyone) if e is not None]
        if errs:
            r, e = errs[0]
            raise CheckpointError(f"rank {r} could not load {path!r}: {e}")
        return ck

    def abort(self, message=None, code=1):
        """Print message and end every process of the job with exit code `code`."""
        faults.abort(self.MPI, self.rank, self.size, message, code)


def _slices(buf, arrays):
    """Views of buf, one per array, each shaped like it, packed in order."""
    out, o = [], 0
    for a in arrays:
        out.append(buf[o:o + a.size].reshape(a.shape))
        o += a.size
    return out


class _HostBuckets:
    """The buckets of one gradient layout: their buffers, made once and reused."""

    def __init__(self, layout, cap):
        active = [i for i, e in enumerate(layout) if len(e) == 3]     # those with a .grad
        items = [(int(np.prod(layout[i][1], dtype=np.int64)) * np.dtype(layout[i][2]).itemsize,
                  layout[i][2]) for i in active]
        self.buckets = []
        for idx in plan_buckets(items, cap):
            members = [active[j] for j in idx]
            shapes = [layout[i][1] for i in members]
            total = sum(int(np.prod(s, dtype=np.int64)) for s in shapes)
            buf = np.empty(total, np.dtype(layout[members[0]][2]))
            views, o = [], 0
            for s in shapes:
                n = int(np.prod(s, dtype=np.int64))
                views.append(buf[o:o + n].reshape(s))
                o += n
            self.buckets.append((buf, list(zip(members, views))))

    def run(self, ctx, objs):
        reqs = []
        for buf, members in self.buckets:
            for i, view in members:
                np.copyto(view, objs[i].grad, casting="same_kind")
            reqs.append(ctx.start(buf))
        scale = 1.0 / ctx.size
        for (buf, members), req in zip(self.buckets, reqs):
            ctx.complete(req)
            for i, view in members:
                p = objs[i]
                g = p.grad
                if type(g) is np.ndarray and g.flags.writeable and g.dtype == view.dtype:
                    np.multiply(view, scale, out=g)
                else:
                    p.grad = view * scale
