"""An exception on one rank ends the whole job (no hang).

    mpirun -n N python tests/mpi/fault.py

Every rank trains with a TapeMachine whose tape all-reduces the gradients; rank 1
raises at step 3, while the others are blocked waiting for its gradients. The
job must end with a non-zero exit and the error printed, within seconds.
"""
from common import MLP

import numpy as np
import exprvm as ev


def main():
    ctx = ev.distributed.init()
    model = MLP(np.float64, seed=0)
    g = ev.Graph()
    x, y, loss = model.loss(g, 4, np.float64)
    ev.grad(loss, model.nodes(g))
    m = ev.TapeMachine(g, outputs=[loss], comm=ctx)
    opt = ev.solvers.Adam(lr=0.01)
    X, Y = np.ones((4, 4)), np.zeros((4, 3))
    for step in range(1, 1000):
        if step == 3 and ctx.rank == 1:
            raise RuntimeError(f"rank {ctx.rank} fails at step {step}")
        m.run({x: X, y: Y})
        opt.step(model.collect_grads(g))
    print("not reached: every rank finished", flush=True)


if __name__ == "__main__":
    main()
