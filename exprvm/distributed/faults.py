"""No hangs: an uncaught exception on one rank aborts the whole MPI job.

Without this, a rank that dies leaves the others blocked for ever in their next
collective (and its own MPI_Finalize at exit waits for them too). install() chains
a sys.excepthook that prints the traceback as usual, names the rank, and calls
MPI_Abort on COMM_WORLD: mpirun then ends every process of the job and exits
non-zero within a second or two.

NOTE: sys.excepthook does not see SystemExit. A rank that wants to stop the job
with an error should call ctx.abort(message) rather than sys.exit(message).
"""
import sys
import threading

_installed = []


def abort(MPI, rank, size, message=None, code=1):
    """Print message (if any) on stderr, then end the whole job with exit code `code`."""
    if message:
        sys.stderr.write(f"[rank {rank} of {size}] {message}\n")
    sys.stderr.write(f"exprvm.distributed: rank {rank} of {size} aborts the MPI job\n")
    sys.stderr.flush()
    sys.stdout.flush()
    MPI.COMM_WORLD.Abort(code)


def install(MPI, rank, size):
    """Abort the job on any uncaught exception of this process (main or other threads)."""
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
    _installed.append((prev_sys, prev_thread))


def uninstall():
    """Put back the hooks install() replaced."""
    if _installed:
        sys.excepthook, threading.excepthook = _installed.pop()
