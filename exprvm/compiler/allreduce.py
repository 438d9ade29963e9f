"""The compiled gradient all-reduce of data-parallel training (TapeMachine(g, comm=ctx)).

insert(em, grad_regs, comm) rewrites an emitted tape so that every gradient a run
returns is the average of that gradient over the ranks of `comm` (an
ev.distributed Context):

    r40 = allreduce_start[mpi] r12, r17, r23   ; bucket 0: 3 gradients, 2.1 kB
    ...                                         (the rest of the backward pass)
    r41 = allreduce_wait[mpi] r40               ; bucket 0: average over 2 ranks

In:  the emitter after every instruction is emitted, and grad_regs, the list of
     (wrt node, register) whose values land on wrt.grad.
Out: the new grad_regs: each gradient is now a view register (a reshape of a slice)
     of its bucket's averaged buffer.

Buckets: the gradients are taken in the order of the instruction that writes each
one, and packed greedily, per dtype, into buckets of at most `comm.bucket_bytes`
bytes (a gradient bigger than that gets a bucket of its own). Right after the
instruction that writes a bucket's last gradient, `allreduce_start` copies the
bucket's gradients into one contiguous buffer register and starts a non-blocking
in-place MPI Iallreduce (SUM) on it, so the reduction of the gradients made first
(the output layer's) may proceed while the rest of the backward pass runs. At the
end of the tape `allreduce_wait` completes each bucket's request and writes
bucket * (1 / size) (in place when the planner allows it). One collective per
bucket, not one per parameter.

The liveness planner keeps a bucket's buffer alive from its start to its wait
(the wait reads it), so no other value is planned into the bytes MPI writes
meanwhile; Program.verify checks the result like any other program.

Every rank must compile the same buckets: insert() checks the layout (names,
shapes, dtypes and bucket of every gradient) across the ranks and raises
ev.distributed.ParamMismatchError on every rank if they differ.
"""
from dataclasses import dataclass, field

import numpy as np

from ..errors import CompileError
from .lowering import ALL
from .program import Instr

# NOTE: 256 KiB: small enough that a char-RNN's output-layer gradients (written
# first in the backward pass) form a bucket of their own that starts early, big
# enough that a model has a few buckets, not one per parameter.
BUCKET_BYTES = 256 * 1024


def plan_buckets(items, cap):
    """Group items [(nbytes, dtype)] (in order) into buckets: lists of item indices.

    Greedy per dtype: an item joins its dtype's open bucket unless that would take
    the bucket past `cap` bytes; then the open bucket closes and a new one begins.
    Buckets come in the order of their last item."""
    open_, closed = {}, []
    for i, (nbytes, dtype) in enumerate(items):
        key = np.dtype(dtype).str
        cur = open_.get(key)
        if cur is not None and cur[0] + nbytes > cap:
            closed.append(cur[1])
            cur = None
        if cur is None:
            cur = open_[key] = [0, []]
        cur[0] += nbytes
        cur[1].append(i)
    closed.extend(c[1] for c in open_.values())
    return sorted((b for b in closed if b), key=lambda b: b[-1])


def kilobytes(nbytes):
    if nbytes < 1000:
        return f"{nbytes} B"
    return f"{nbytes / 1000:.1f} kB" if nbytes < 10 ** 6 else f"{nbytes / 10 ** 6:.2f} MB"


@dataclass(eq=False)
class Bucket:
    """One bucket: its gradients (wrt node, register, offset, size, shape), in order."""
    index: int
    dtype: np.dtype
    members: list
    total: int                      # elements
    pending: list = field(default_factory=lambda: [None])   # the request from start to wait

    @property
    def nbytes(self):
        return self.total * self.dtype.itemsize


def buckets_of(em, grad_regs, cap):
    """The buckets for grad_regs, and where each one's start goes (after instruction k)."""
    producer = {ins.out: k for k, ins in enumerate(em.instrs)}
    order = sorted(grad_regs, key=lambda wr: producer[wr[1]])
    items = [(em.regs[rid].nbytes, em.regs[rid].dtype) for _, rid in order]
    out = []
    for k, idx in enumerate(plan_buckets(items, cap)):
        members, offset = [], 0
        for i in idx:
            w, rid = order[i]
            r = em.regs[rid]
            size = int(np.prod(r.shape, dtype=np.int64))
            members.append((w, rid, offset, size, r.shape))
            offset += size
        b = Bucket(k, em.regs[order[idx[0]][1]].dtype, members, offset)
        out.append((max(producer[rid] for _, rid, *_ in members), b))
    return out


def insert(em, grad_regs, comm):
    """Add the all-reduce instructions to em's tape; returns the new grad_regs (see the
    module docstring)."""
    if not all(hasattr(comm, a) for a in ("check_layout", "start", "complete", "size", "bucket_bytes")):
        raise CompileError(f"comm= must be an ev.distributed Context (ctx = ev.distributed.init()), "
                           f"got {type(comm).__name__}")
    if not grad_regs:
        comm.check_layout([], "gradient")
        return grad_regs
    _hoist_copies(em, {rid for _, rid in grad_regs})
    placed = buckets_of(em, grad_regs, comm.bucket_bytes)
    comm.check_layout([(w.label, tuple(shape), np.dtype(em.regs[rid].dtype).str, f"bucket {b.index}")
                       for _, b in placed for w, rid, _, _, shape in b.members], "gradient")
    buckets = [b for _, b in placed]
    posted = []                     # (after instruction k, bucket, its start, its buffer)
    for k, b in placed:
        reg = em.reg((b.total,), b.dtype, "buffer")
        ins = tuple(rid for _, rid, *_ in b.members)
        note = f"bucket {b.index}: {len(ins)} gradient{'s' * (len(ins) != 1)}, {kilobytes(b.nbytes)}"
        posted.append((k, b, Instr("allreduce_start", ins, reg.id, None, "mpi",
                                   _start(b, buckets[:b.index], comm), (), (), False, note), reg))
    after = {}
    for k, _, instr, _ in posted:
        after.setdefault(k, []).append(instr)
    tape = []
    for k, ins in enumerate(em.instrs):
        tape.append(ins)
        tape.extend(after.get(k, ()))
    view_of = {}
    ranks = f"{comm.size} rank{'s' * (comm.size != 1)}"
    for _, b, _, reg in posted:
        avg = em.reg((b.total,), b.dtype, "buffer")
        tape.append(Instr("allreduce_wait", (reg.id,), avg.id, None, "mpi", _wait(b, comm), (),
                          ALL, False, f"bucket {b.index}: average over {ranks}"))
        for w, rid, offset, size, shape in b.members:
            view_of[rid] = _view(em, avg, offset, size, shape)
    em.instrs[:] = tape
    return [(w, view_of[rid]) for w, rid in grad_regs]


def _hoist_copies(em, grads):
    """Move each copy that gives a gradient its own buffer to right after the instruction
    making its source.

    NOTE: the pipeline emits those copies after the whole tape; left there, every bucket
    holding one could only start at the end. Reading a value earlier is always sound
    before planning (a register is written once)."""
    producer = {ins.out: k for k, ins in enumerate(em.instrs)}
    moved = {}
    for k, ins in enumerate(em.instrs):
        if ins.op == "copy" and ins.out in grads and len(ins.ins) == 1 and not ins.tmps:
            src = em.regs[ins.ins[0]]
            while src.kind == "view":
                src = em.regs[src.base]
            moved[k] = producer.get(src.id, -1)
    if not moved:
        return
    after = {}
    for k, to in moved.items():
        after.setdefault(to, []).append(em.instrs[k])
    tape = list(after.get(-1, ()))
    for k, ins in enumerate(em.instrs):
        if k not in moved:
            tape.append(ins)
        tape.extend(after.get(k, ()))
    em.instrs[:] = tape


def _view(em, avg, offset, size, shape):
    """A view register of avg[offset:offset + size], reshaped to shape."""
    part = em.reg((size,), avg.dtype, "view", base=avg.id,
                  view=("getitem", {"index": (slice(offset, offset + size),)}))
    if tuple(shape) == (size,):
        return part.id
    return em.reg(shape, avg.dtype, "view", base=part.id, view=("reshape", {"shape": tuple(shape)})).id


def _start(bucket, earlier, comm):
    """build() of allreduce_start: pack the bucket's gradients, then start the reduction."""
    pending, earlier = bucket.pending, [b.pending for b in earlier]

    def build(ins, out, tmps):
        parts = tuple((out[o:o + n].reshape(shape), src)
                      for (_, _, o, n, shape), src in zip(bucket.members, ins))
        copyto = np.copyto

        def start():
            if pending[0] is not None:     # NOTE: a run that failed before its wait
                comm.complete(pending[0])
                pending[0] = None
            for dst, src in parts:
                copyto(dst, src)
            # NOTE: MPI advances a non-blocking collective only inside MPI calls; testing
            # the buckets already started lets them progress while this one is posted.
            comm.progress([p[0] for p in earlier if p[0] is not None])
            pending[0] = comm.start(out)
        return start, ()
    return build


def _wait(bucket, comm):
    scale = 1.0 / comm.size
    pending = bucket.pending

    def build(ins, out, tmps):
        buf = ins[0]
        multiply = np.multiply

        def wait():
            req, pending[0] = pending[0], None
            comm.complete(req)
            multiply(buf, scale, out)
        return wait, ()
    return build


__all__ = ["insert", "plan_buckets", "BUCKET_BYTES", "Bucket"]
