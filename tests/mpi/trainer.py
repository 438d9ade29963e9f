"""ev.train.Trainer under ev.distributed: a model trained on sharded batches, an Evaluator
on a sharded evaluation set, a LogReport and a Snapshot (rank 0 writes), and a run
stopped mid-epoch then resumed.

    mpirun -n N python tests/mpi/trainer.py OUT

Each rank writes OUT/rank<r>.json: its final parameters, the reference (one process
training on the union of the ranks' batches, computed here), the resumed run's
parameters, what it logged and printed.
"""
import contextlib
import io
import os
import sys

from common import rel_diff, write

import numpy as np
import exprvm as ev

N, BATCH, EPOCHS = 48, 12, 3


class Part:
    """What rank `rank` of `size` is, for a loader cut in shards (a one-process reference)."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size


def data():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((N, 4))
    return X, np.tanh(X @ rng.standard_normal((4, 3)))


def model():
    return ev.nn.Sequential(ev.nn.Linear(4, 8, seed=1, dtype=np.float64), ev.tanh,
                            ev.nn.Linear(8, 3, seed=2, dtype=np.float64), name="net")


def loader(X, Y, shard, size):
    return ev.data.DataLoader(ev.data.ArrayDataset(X, Y), batch_size=BATCH // size, shuffle=True, seed=5,
                              shard=shard)


def train(ctx, out, budget, resume=None, snapshot=None):
    X, Y = data()
    net = model()
    opt = ev.solvers.Adam(net, lr=0.05)
    opt.add_hook(ev.solvers.hooks.GradientNoise(1e-4, seed=9))
    t = ev.train.Trainer(loader(X, Y, ctx, ctx.size), model=net, loss=ev.nn.mse, optimizer=opt, ctx=ctx,
                         resume=resume, **budget)
    val = ev.data.DataLoader(ev.data.ArrayDataset(X[:20], Y[:20]), batch_size=4, shard=ctx)
    t.extend(ev.train.Evaluator(val))
    log = t.extend(ev.train.LogReport(os.path.join(out, "log.jsonl"), trigger=(2, "steps"),
                                      print="step {step} loss {loss:.6f}"))
    if snapshot:
        t.extend(ev.train.Snapshot(snapshot, trigger="end"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        t.run()
    return net, t, log, printed.getvalue()


def reference(size):
    """One process: at each step the union of every rank's batch (equal parts: the mean of
    the ranks' mean losses is the mean over the union)."""
    X, Y = data()
    net = model()
    opt = ev.solvers.Adam(net, lr=0.05)
    opt.add_hook(ev.solvers.hooks.GradientNoise(1e-4, seed=9))
    parts = [loader(X, Y, Part(r, size), size) for r in range(size)]

    class Union:
        def __len__(self):
            return len(parts[0])

        def __iter__(self):
            for batches in zip(*parts):
                yield tuple(np.concatenate(f) for f in zip(*batches))
    ev.train.Trainer(Union(), model=net, loss=ev.nn.mse, optimizer=opt, epochs=EPOCHS).run()
    return net


def main(out):
    ctx = ev.distributed.init()
    net, t, log, printed = train(ctx, os.path.join(out, "whole"), {"epochs": EPOCHS})
    result = {"rank": ctx.rank, "steps": t.step, "printed": printed, "log": log.log,
              "val": t.observation.get("val/loss"),
              "params": {k: net[k].tolist() for k in net}}
    ref = reference(ctx.size)
    result["rel"] = rel_diff([net[k] for k in net], [ref[k] for k in ref])
    ck = os.path.join(out, "ck.npz")
    train(ctx, os.path.join(out, "first"), {"steps": t.step // 2 + 1}, snapshot=ck)
    again, t2, _, _ = train(ctx, os.path.join(out, "resumed"), {"epochs": EPOCHS}, resume=ck)
    result["resumed_equal"] = all(np.array_equal(net[k], again[k]) for k in net)
    result["resumed_from"] = t2.start_step
    X, Y = data()
    forward = ev.function(lambda x: net(x))
    result["val_want"] = float(np.mean((forward(X[:20]) - Y[:20]) ** 2))
    write(out, ctx.rank, result)


if __name__ == "__main__":
    main(sys.argv[1])
