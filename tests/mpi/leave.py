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

from common import train_until_a_rank_leaves

import exprvm as ev


def main(mode):
    ctx = ev.distributed.init()

    def before_step(step):
        if step == 3 and mode == "together":
            print(f"rank {ctx.rank} leaves at step {step}", flush=True)
            sys.exit(0)
        if step == 3 and ctx.rank == 1:
            sys.exit({"code": 3, "message": "rank 1 gives up at step 3", "clean": 0}[mode])
    train_until_a_rank_leaves(ctx, before_step)


if __name__ == "__main__":
    main(sys.argv[1])
