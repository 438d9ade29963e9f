"""Rank 0 writes the checkpoint, every rank loads it, on any number of ranks.

    mpirun -n N python tests/mpi/checkpoint.py save   OUT CKPT   # steps [0, FIRST)
    mpirun -n M python tests/mpi/checkpoint.py resume OUT CKPT   # steps [FIRST, FIRST + MORE)

The resumed run, on M ranks, must end where one process training all the steps on
the whole batch ends (it computes that reference itself).
"""
import sys

from common import MLP, data, rel_diff, write

import numpy as np
import exprvm as ev

FIRST, MORE, BATCH = 4, 5, 12


def steps(ctx, model, opt, X, Y, ks):
    size = 1 if ctx is None else ctx.size
    g = ev.Graph()
    x, y, loss = model.loss(g, BATCH // size, np.float64)
    ev.grad(loss, model.nodes(g))
    m = ev.TapeMachine(g, outputs=[loss], comm=ctx)
    for k in ks:
        idx = np.arange(BATCH) if ctx is None else ctx.shard(BATCH, seed=k)
        m.run({x: X[k][idx], y: Y[k][idx]})
        opt.step(model.collect_grads(g))


def main(mode, out, path):
    ctx = ev.distributed.init()
    X, Y = data(FIRST + MORE, BATCH, np.float64)
    model = MLP(np.float64, seed=0)
    opt = ev.solvers.Adam(lr=0.05)
    result = {"rank": ctx.rank, "size": ctx.size}
    if mode == "save":
        steps(ctx, model, opt, X, Y, range(FIRST))
        ctx.save(path, model, solver=opt.state_dict(), meta={"step": FIRST, "ranks": ctx.size})
    else:
        ck = ctx.load(path, model)
        opt.load_state_dict(ck.section("solver"), model.params())
        start = int(ck.section("meta")["step"])
        result["saved_by_ranks"] = int(ck.section("meta")["ranks"])
        steps(ctx, model, opt, X, Y, range(start, FIRST + MORE))
        ref_model, ref_opt = MLP(np.float64, seed=0), ev.solvers.Adam(lr=0.05)
        steps(None, ref_model, ref_opt, X, Y, range(FIRST + MORE))
        result["rel"] = rel_diff([p.value for p in model.params()], [p.value for p in ref_model.params()])
        try:
            ctx.load(path + ".missing", model)
        except ev.CheckpointError as e:
            result["missing"] = str(e)
    write(out, ctx.rank, result)


if __name__ == "__main__":
    main(*sys.argv[1:4])
