"""An exception on one rank ends the whole job (no hang).

    mpirun -n N python tests/mpi/fault.py

Every rank trains with a TapeMachine whose tape all-reduces the gradients; rank 1
raises at step 3, while the others are blocked waiting for its gradients. The
job must end with a non-zero exit and the error printed, within seconds.
"""
from common import train_until_a_rank_leaves

import exprvm as ev


def main():
    ctx = ev.distributed.init()

    def before_step(step):
        if step == 3 and ctx.rank == 1:
            raise RuntimeError(f"rank {ctx.rank} fails at step {step}")
    train_until_a_rank_leaves(ctx, before_step)


if __name__ == "__main__":
    main()
