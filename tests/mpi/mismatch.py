"""Parameters that differ between ranks are refused on every rank, before a step.

    mpirun -n N python tests/mpi/mismatch.py OUT

Rank 1 builds its model with another name, another shape, or another dtype. For
each, the TapeMachine (compile), ctx.broadcast and a LispMachine run (its gradient
average) must raise ParamMismatchError on every rank; each rank records the
messages. The job must still be usable afterwards (the next case runs).
"""
import sys

from common import write

import numpy as np
import exprvm as ev
from exprvm.distributed import ParamMismatchError

CASES = {
    "name": lambda r: dict(name="other" if r == 1 else "l2"),
    "shape": lambda r: dict(hidden=7 if r == 1 else 6),
    "dtype": lambda r: dict(dtype=np.float32 if r == 1 else np.float64),
}


def build(name="l2", hidden=6, dtype=np.float64):
    model = ev.nn.Sequential(ev.nn.Linear(4, hidden, name="l1", dtype=dtype, seed=1), ev.tanh,
                             ev.nn.Linear(hidden, 3, name=name, dtype=dtype, seed=2), name="net")
    g = ev.Graph()
    x = g.matrix("x", (5, 4), dtype=dtype)
    loss = ev.mean(ev.square(model(x)))
    return model, g, x, loss


def refused(fn):
    try:
        fn()
    except ParamMismatchError as e:
        return str(e)
    return None


def main(out):
    ctx = ev.distributed.init()
    result = {"rank": ctx.rank, "cases": {}}
    for case, kw in CASES.items():
        model, g, x, loss = build(**kw(ctx.rank))
        ev.grad(loss, model.nodes(g))
        X = np.ones((5, 4), model.params()[0].dtype)
        lm = ev.LispMachine(g, cost=loss, comm=ctx)
        result["cases"][case] = {
            "tape": refused(lambda: ev.TapeMachine(g, outputs=[loss], comm=ctx)),
            "broadcast": refused(lambda: ctx.broadcast(model)),
            "lisp": refused(lambda: lm.run({x: X})),
        }
    # Still in step: a collective after the refusals completes.
    result["after"] = ctx.mean(1.0)
    write(out, ctx.rank, result)


if __name__ == "__main__":
    main(sys.argv[1])
