"""N ranks with B/N rows each train like one process with B rows.

    mpirun -n N python tests/mpi/equivalence.py OUT

For each machine (TapeMachine with the compiled all-reduce, LispMachine averaging
after each run) and dtype, every rank starts from its own random weights,
ctx.broadcast makes them rank 0's, and STEPS Adam steps follow, each rank on its
ctx.shard of the step's batch. The reference is one process (no communicator)
training the same weights on the whole batch. Also records the compiled program's
all-reduce instructions, ctx.shard's parts, ctx.allreduce_grads on its own,
ctx.mean and ctx.any, for the test to assert on.
"""
import os
import sys
import tempfile

from common import MLP, data, rel_diff, write

import numpy as np
import exprvm as ev

STEPS, BATCH = 12, 12           # BATCH divisible by 1, 2 and 3 ranks
LR = 0.05


def graph(model, rows, dtype):
    g = ev.Graph("mlp")
    x, y, loss = model.loss(g, rows, dtype)
    return g, x, y, loss


def train(kind, dtype, X, Y, ctx=None, bucket_ctx=None):
    """Params after STEPS Adam steps; with ctx, distributed over its ranks."""
    rank, size = (0, 1) if ctx is None else (ctx.rank, ctx.size)
    model = MLP(dtype, seed=rank)          # rank 0's weights everywhere only after broadcast
    if ctx is not None:
        ctx.broadcast(model)
    rows = BATCH // size
    opt = ev.solvers.Adam(lr=LR)
    losses = []
    if kind == "tape":
        g, x, y, loss = graph(model, rows, dtype)
        ev.grad(loss, model.nodes(g))
        m = ev.TapeMachine(g, outputs=[loss], comm=bucket_ctx or ctx)
    for k in range(STEPS):
        idx = np.arange(BATCH) if ctx is None else ctx.shard(BATCH, seed=k)
        if kind == "lisp":          # a fresh graph per batch, as LispMachine users do
            g, x, y, loss = graph(model, rows, dtype)
            m = ev.LispMachine(g, cost=loss, comm=ctx)
        m.run({x: X[k][idx], y: Y[k][idx]})
        losses.append(float(loss.value) if ctx is None else ctx.mean(float(loss.value)))
        opt.step(model.collect_grads(g))
    return [p.value.copy() for p in model.params()], losses


def spread(ctx, params):
    """Largest relative difference between any rank's parameters and rank 0's."""
    flat = np.concatenate([p.ravel().astype(np.float64) for p in params])
    every = ctx.comm.allgather(flat)
    return max(float(np.max(np.abs(f - every[0])) / np.max(np.abs(every[0]))) for f in every)


def program_facts(ctx):
    """The compiled all-reduce of a small MLP with tiny buckets (several of them)."""
    model = MLP(np.float64, seed=0)
    g, x, y, loss = graph(model, BATCH // ctx.size, np.float64)
    grads = ev.grad(loss, model.nodes(g))
    small = ev.distributed.init(ctx.comm, bucket_bytes=64)
    m = ev.TapeMachine(g, outputs=[loss], comm=small)
    prog = m.program
    ops = [i.op for i in prog.instrs]
    starts = [k for k, o in enumerate(ops) if o == "allreduce_start"]
    waits = [k for k, o in enumerate(ops) if o == "allreduce_wait"]
    backward = [k for k, i in enumerate(prog.instrs) if i.node is not None]
    X, Y = data(1, BATCH, np.float64)
    idx = ctx.shard(BATCH)
    m.run({x: X[0][idx], y: Y[0][idx]})
    local = [gn.value.copy() for gn in grads]         # this rank's own gradient nodes
    averaged = [n.grad.copy() for n in model.nodes(g)]
    mean_local = [ctx.mean(v) for v in local]
    follows = []        # each start comes right after the instruction writing one of its gradients
    for k in starts:
        j = k - 1
        while prog.instrs[j].op == "allreduce_start":
            j -= 1
        follows.append(prog.instrs[j].out in prog.instrs[k].ins)
    facts = {"text": str(prog), "starts": starts, "waits": waits, "n_instrs": len(ops),
             "starts_follow_producers": all(follows),
             "last_node_instr": backward[-1], "verified": prog.verify(),
             "grads_are_views": all(prog.registers[rid].kind == "view" for _, rid in prog.grads),
             "grad_vs_mean_of_local": rel_diff(averaged, mean_local),
             "grads_spread": spread(ctx, averaged)}
    if ctx.rank == 0:
        path = os.path.join(tempfile.mkdtemp(), "prog.svg")
        ev.render(prog, path)
        with open(path) as f:
            facts["svg_has_allreduce"] = "allreduce_start[mpi]" in f.read()
    return facts


def direct_facts(ctx):
    """ctx.allreduce_grads on Params, ctx.mean, ctx.max, ctx.any, ctx.shard."""
    a = ev.nn.Param("a", np.zeros((2, 3)))
    b = ev.nn.Param("b", np.zeros(4, np.float32))
    c = ev.nn.Param("c", np.zeros(1))
    a.grad = np.full((2, 3), float(ctx.rank))
    b.grad = np.arange(4, dtype=np.float32) * (ctx.rank + 1)
    c.grad = None                                   # None on every rank: left alone
    ctx.allreduce_grads([a, b, c])
    parts = ctx.comm.allgather(ctx.shard(10, seed=3).tolist())
    again = ctx.comm.allgather(ctx.shard(10, seed=3).tolist())
    return {"a": a.grad.tolist(), "b": b.grad.tolist(), "b_dtype": str(b.grad.dtype),
            "c_is_none": c.grad is None, "mean": ctx.mean(ctx.rank), "any_rank1": ctx.any(ctx.rank == 1),
            "any_none": ctx.any(False), "max": ctx.max(0.1 * ctx.rank + 0.05),
            "shards": parts, "shards_again": again,
            "plain_shards": ctx.comm.allgather(ctx.shard(7).tolist())}


def main(out):
    ctx = ev.distributed.init()
    result = {"rank": ctx.rank, "size": ctx.size, "cases": {}}
    for kind in ("tape", "lisp"):
        for dtype in (np.float64, np.float32):
            X, Y = data(STEPS, BATCH, dtype)
            ref, ref_losses = train(kind, dtype, X, Y)
            got, losses = train(kind, dtype, X, Y, ctx)
            result["cases"][f"{kind}-{np.dtype(dtype).name}"] = {
                "rel": rel_diff(got, ref), "spread": spread(ctx, got),
                "loss_first": losses[0], "loss_last": losses[-1], "ref_loss_last": ref_losses[-1]}
    X, Y = data(STEPS, BATCH, np.float64)
    ref, _ = train("tape", np.float64, X, Y)
    blocking = ev.distributed.init(ctx.comm, nonblocking=False, bucket_bytes=100)
    got, _ = train("tape", np.float64, X, Y, ctx, bucket_ctx=blocking)
    result["cases"]["tape-float64-blocking"] = {"rel": rel_diff(got, ref), "spread": spread(ctx, got)}
    result["program"] = program_facts(ctx)
    result["direct"] = direct_facts(ctx)
    write(out, ctx.rank, result)


if __name__ == "__main__":
    main(sys.argv[1])
