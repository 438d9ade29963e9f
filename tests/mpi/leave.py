"""A rank leaves by SystemExit (or the end of its script) while the others may still
expect collectives.

    mpirun -n N python tests/mpi/leave.py MODE

MODE:
  code      rank 1 calls sys.exit(3) at step 3; the others wait in the all-reduce
  message   rank 1 calls sys.exit("rank 1 gives up at step 3") there
  clean     rank 1 calls sys.exit(0) there: still a departure the others wait for
  together  every rank calls sys.exit(0) after step 3: the job exits 0
"""
import sys

from common import MLP

import numpy as np
import exprvm as ev


def main(mode):
    ctx = ev.distributed.init()
    model = MLP(np.float64, seed=0)
    g = ev.Graph()
    x, y, loss = model.loss(g, 4, np.float64)
    ev.grad(loss, model.nodes(g))
    m = ev.TapeMachine(g, outputs=[loss], comm=ctx)
    opt = ev.solvers.Adam(lr=0.01)
    X, Y = np.ones((4, 4)), np.zeros((4, 3))
    for step in range(1, 1000):
        if step == 3 and mode == "together":
            print(f"rank {ctx.rank} leaves at step {step}", flush=True)
            sys.exit(0)
        if step == 3 and ctx.rank == 1:
            sys.exit({"code": 3, "message": "rank 1 gives up at step 3", "clean": 0}[mode])
        m.run({x: X, y: Y})
        opt.step(model.collect_grads(g))
    print("not reached: every rank finished", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
