"""Each rank reads its shard of a DataLoader (shard=ctx) and of a TextStreams for two
epochs and writes what it read.

    mpirun -n N python tests/mpi/loader.py OUT
"""
import sys

from common import write

import numpy as np
import exprvm as ev

N = 23


def main(out):
    ctx = ev.distributed.init()
    ds = ev.data.ArrayDataset(np.arange(N, dtype=np.float32)[:, None], np.arange(N))
    loader = ev.data.DataLoader(ds, batch_size=3, shuffle=True, seed=11, shard=ctx)
    epochs = [[y.tolist() for _, y in loader] for _ in range(2)]
    streams = ev.data.TextStreams(np.arange(1001, dtype=np.int32), batch=2, seq=4, shard=ctx)
    firsts = [int(x[0, 0]) for x, _ in ev.data.DataLoader(streams, batch_size=None)]
    steps = ctx.max(len(loader)) == len(loader) and ctx.max(-len(loader)) == -len(loader)
    write(out, ctx.rank, {"rank": ctx.rank, "size": ctx.size, "epochs": epochs, "batches": len(loader),
                          "same_steps": steps, "stream_firsts": firsts})


if __name__ == "__main__":
    main(sys.argv[1])
