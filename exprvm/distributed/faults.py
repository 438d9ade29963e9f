"""No hangs: a rank that fails, or leaves while the others still wait for it, ends the job.

Without this, a rank that dies leaves the others blocked for ever in their next
collective (and its own MPI_Finalize at exit waits for them too). install():

* chains a sys.excepthook (and threading.excepthook) that prints the traceback as
  usual, names the rank, and calls MPI_Abort on COMM_WORLD: mpirun then ends every
  process of the job and exits non-zero within a second or two;
* covers what sys.excepthook never sees, a rank leaving by SystemExit (sys.exit(3),
  sys.exit("message"), even sys.exit(0)) or by the end of its script: at exit the rank
  tells every other rank that it left (a point-to-point message on COMM_WORLD, tag
  LEFT_TAG), and a watcher thread on each rank, hearing it, aborts the job (exit code
  1, naming both ranks) if its own rank waits in one of the Context's collectives
  (they are marked with `waiting`) for longer than GRACE_S after that, a wait that
  can never end. Python has printed the leaving rank's message by then.

A job whose ranks all leave at the same point (sys.exit(0) everywhere, or the end of
the script) exits as MPI exits: 0, or the leaving code. What the watcher cannot see
is a collective the user calls on the communicator directly (ctx.comm.Allreduce):
use the Context's methods, or ctx.abort(message) to end the job on purpose.
"""
import atexit
import contextlib
import itertools
import sys
import threading
import time

LEFT_TAG = 32000            # within MPI's guaranteed tag range (at least 32767)
GRACE_S = 3.0               # a wait that outlives a departure this long never ends
POLL_S = 0.02

_installed = []


def abort(MPI, rank, size, message=None, code=1):
    """Print message (if any) on stderr, then end the whole job with exit code `code`."""
    if message:
        sys.stderr.write(f"[rank {rank} of {size}] {message}\n")
    sys.stderr.write(f"exprvm.distributed: rank {rank} of {size} aborts the MPI job\n")
    sys.stderr.flush()
    sys.stdout.flush()
    MPI.COMM_WORLD.Abort(code)


class _Watch:
    """This rank's side of the departure protocol (see the module docstring)."""

    def __init__(self, MPI, rank, size):
        self.MPI, self.rank, self.size = MPI, rank, size
        self.waiting = None         # (sequence number, what) of the collective waited in
        self.left = {}              # rank -> when its departure was heard
        self.stop = threading.Event()
        self.sends = []
        self.count = itertools.count()
        self.thread = None
        if size > 1 and MPI.Query_thread() == MPI.THREAD_MULTIPLE:
            self.thread = threading.Thread(target=self._run, name="exprvm-rank-watch", daemon=True)
            self.thread.start()

    def _run(self):
        comm = self.MPI.COMM_WORLD
        req = comm.irecv(source=self.MPI.ANY_SOURCE, tag=LEFT_TAG)
        stuck = None                # (the wait seen when a departure was heard, since when)
        while not self.stop.wait(POLL_S):
            done, who = req.test()
            if done:
                self.left.setdefault(who, time.monotonic())
                req = comm.irecv(source=self.MPI.ANY_SOURCE, tag=LEFT_TAG)
            wait = self.waiting
            if not self.left or wait is None:
                stuck = None
                continue
            if stuck is None or stuck[0] != wait:
                stuck = (wait, time.monotonic())
            elif time.monotonic() - stuck[1] > GRACE_S:
                gone = sorted(self.left)
                abort(self.MPI, self.rank, self.size,
                      f"rank{'s' * (len(gone) > 1)} {', '.join(map(str, gone))} left the job (sys.exit or the "
                      f"end of its script) while rank {self.rank} waits in {wait[1]}, which cannot end")
        req.Cancel()
        with contextlib.suppress(Exception):
            req.wait()

    @contextlib.contextmanager
    def collective(self, what):
        self.waiting = (next(self.count), what)
        try:
            yield
        finally:
            self.waiting = None

    def leave(self):
        """At exit: tell the other ranks this one left, then stop watching."""
        if self.thread is None:
            return
        comm = self.MPI.COMM_WORLD
        # NOTE: nonblocking sends: a peer already gone must not block this exit
        self.sends = [comm.isend(self.rank, dest=peer, tag=LEFT_TAG) for peer in range(self.size)
                      if peer != self.rank]
        self.stop.set()
        self.thread.join()


_watch = [None]


@contextlib.contextmanager
def waiting(what):
    """Mark the calling rank as waiting in collective `what` (for the departure watcher)."""
    watch = _watch[0]
    if watch is None:
        yield
    else:
        with watch.collective(what):
            yield


def install(MPI, rank, size):
    """Abort the job on any uncaught exception of this process (main or other threads),
    and on a departure the other ranks wait for (see the module docstring)."""
    if _installed:
        return
    prev_sys, prev_thread = sys.excepthook, threading.excepthook

    def hook(kind, value, tb):
        try:
            prev_sys(kind, value, tb)
        finally:
            abort(MPI, rank, size, f"uncaught {kind.__name__}: {value}")

    def thread_hook(args):
        try:
            prev_thread(args)
        finally:
            abort(MPI, rank, size, f"uncaught {args.exc_type.__name__} in thread "
                                   f"{getattr(args.thread, 'name', '?')}: {args.exc_value}")

    sys.excepthook = hook
    threading.excepthook = thread_hook
    watch = _watch[0] = _Watch(MPI, rank, size)
    # NOTE: registered after mpi4py's own exit handler (MPI_Finalize), so it runs first
    atexit.register(watch.leave)
    _installed.append((prev_sys, prev_thread, watch))


def uninstall():
    """Put back the hooks install() replaced and stop watching."""
    if _installed:
        sys.excepthook, threading.excepthook, watch = _installed.pop()
        atexit.unregister(watch.leave)
        if watch.thread is not None:
            watch.stop.set()
            watch.thread.join()
        _watch[0] = None
