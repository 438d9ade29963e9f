"""Tiered compilation: a program never waits for the C compiler.

In: the fusion pass's generated kernels, and the compile's fuse mode
(CompileOptions.fuse). Out: the Program's tier, and for a program whose kernels are
not built yet, an Upgrade: the same graph compiled again with its fused kernels, in the
background, which whoever runs the program swaps in between two runs.

    fuse=True / "tiered"   (the default) when every fused kernel is in the disk cache (or
                           loaded), the program is fused at once ("fused"). Otherwise it is
                           compiled with its elementwise ops unfused ("unfused": the numpy
                           and C kernels of the ops themselves; identical values), and the
                           missing kernels are built by a worker thread, one build per
                           program; the worker then compiles the program again, fused, and
                           offers it as prog.upgraded(). A program never fused with this
                           cache (known.py: its IR's fingerprint) skips the fusion
                           analysis altogether, the most of a small program's compile: the
                           worker does it, building the kernels it finds
    fuse="sync"            blocking: missing kernels are compiled before
                           the compile returns (benchmarks, and fusion tests)
    fuse=False             no generated kernels ("single": one instruction per op)

A loop body's Program is compiled inside its loop's compile: it joins that compile's
scope (its missing kernels are the loop program's), and the loop program's Upgrade
compiles the bodies again with the rest (a body compiled on its own, outside its loop's
compile, is compiled as "sync" would). Programs with a device placement or an MPI
communicator compile as "sync" would (nothing fuses on a device; every rank must run
the same tape).

Builds run on at most MAX_BUILDS worker threads, first come first served, each starting
BUILD_DELAY after its compile; the C compiler runs at a lower priority (nice 10), so that
the program's own runs keep the cores. A build whose program has been dropped is skipped,
or stops after its kernels (the queue holds programs weakly): a workload of many programs
each run a few times builds almost nothing. A process that exits with builds in flight
stops them (the compiler process is killed, its temporary files removed) and exits
without waiting.

Which tier ran shows in the disassembly (`; tier: ...`), in a profile's header, and as
Program.tier ("fused", "unfused" or "single").
"""
import atexit
import collections
import contextlib
import contextvars
import threading
import time
import weakref

from ..errors import CompileError
from ..kernels import generated
from . import known
from . import threads as _threads

MODES = {True: "tiered", "tiered": "tiered", "sync": "sync", False: False, None: False}
MAX_BUILDS = max(1, min(4, _threads.cores() // 2))
BUILD_DELAY = 0.25          # seconds between a compile and the start of its kernels' build

_scope = contextvars.ContextVar("exprvm_tier_scope", default=None)
_building = contextvars.ContextVar("exprvm_tier_building", default=None)  # the Upgrade a
#                                   background build's compile works for


def mode_of(fuse):
    """The fuse option as "tiered", "sync" or False; CompileError for anything else."""
    try:
        return MODES[fuse]
    except (KeyError, TypeError):
        raise CompileError(f"fuse={fuse!r}: use True (tiered, the default), 'tiered', 'sync' "
                           "or False") from None


class Scope:
    """One compile and the compiles nested in it (loop bodies): the kernels it found missing."""

    def __init__(self, mode):
        self.mode = mode
        self.missing = {}           # kernel name -> generated.Kernel
        self.deferred = False       # a fusion analysis skipped (its program never fused here)


@contextlib.contextmanager
def scope(options):
    """The tier scope of a compile: a new one, or the enclosing compile's for a nested
    compile. Yields (scope, is_outermost)."""
    outer = _scope.get()
    if outer is not None:
        yield outer, False
        return
    mode = mode_of(options.fuse)
    if mode == "tiered" and (options.device not in (None, "cpu") or options.use_cuda_for
                             or options.comm is not None or options.inputs or options.external):
        mode = "sync"       # (a loop body compiled on its own: its loop holds it, not a machine)
    s = Scope(mode)
    token = _scope.set(s)
    try:
        yield s, True
    finally:
        _scope.reset(token)


def deferring(fingerprint):
    """Is this a tiered compile of a program never fused with this kernel cache (by its
    IR's fingerprint, known.py)? The fusion pass then skips its analysis (defer()) and
    leaves every group unfused; the background build analyses it."""
    s = _scope.get()
    return s is not None and s.mode == "tiered" and not known.known(fingerprint)


def defer():
    """The fusion pass skipped its analysis: the program gets an Upgrade."""
    _scope.get().deferred = True


def ready(kernels, fingerprint):
    """Called by the fusion pass with a program's kernels: True when they can run now (a
    "sync" compile, or none outside a scope, builds the missing ones first), False when
    some are missing in a tiered compile (the pass then leaves the groups unfused, and the
    scope remembers the kernels for the background build). A fingerprint whose kernels
    can run is remembered (known.py)."""
    s = _scope.get()
    if s is None or s.mode != "tiered":
        up = _building.get()
        generated.prepare(kernels, background=up is not None)
        if up is not None:
            up.found(kernels)
        known.remember(fingerprint)
        return True
    missing = generated.lookup(kernels)
    for k in missing:
        s.missing[k.name] = k
    if not missing:
        known.remember(fingerprint)
    return not missing


def finish(s, prog, g, options, fusing, compile):
    """Set prog's tier after the outermost compile of scope s (fusing: did the pipeline
    run the fusion pass); start its Upgrade when kernels are missing. compile(g, outputs,
    options) is the pipeline's compile, for the Upgrade (passed in: the pipeline imports
    this module)."""
    if not s.missing and not s.deferred:
        prog.tier = "fused" if fusing else "single"
        return prog
    prog.tier = "unfused"
    # NOTE: the results as this compile chose them (outputs, gradients, watches), so that
    # the fused program has the same interface whatever the graph gains meanwhile.
    outputs = [n for n, _ in prog.values]
    again = options.with_(fuse="sync", grads=False, keep=())
    prog.upgrade = Upgrade(list(s.missing.values()), compile, g, outputs, again, prog)
    _BUILDER.submit(prog.upgrade)
    return prog


class Upgrade:
    """The fused form of an unfused program, being built: its missing kernels, then the
    program compiled again (which builds the kernels of the groups whose analysis the
    tiered compile skipped). state: "queued", "building", "ready", "failed" or "skipped"
    (the program was dropped before its turn, or the process is exiting)."""

    def __init__(self, kernels, compile, g, outputs, options, owner=None):
        self.kernels = kernels      # the kernels known missing; then every kernel it used
        self._compile = compile     # compile(g, outputs, options) -> Program
        self.state = "queued"
        self.program = None         # the fused Program, once ready
        self.error = None           # why it failed
        self.submitted = time.monotonic()
        self._source = (g, outputs, options)
        # NOTE: the unfused program, weakly: a build whose program is dropped stops
        self._owner = weakref.ref(owner) if owner is not None else (lambda: True)
        self._done = threading.Event()

    @property
    def ready(self):
        return self.program is not None

    def wait(self, timeout=None):
        """Block until the build has ended (ready, failed or skipped); True if it has."""
        return self._done.wait(timeout)

    def found(self, kernels):
        """The background compile's fusion pass prepared `kernels` (each named once)."""
        names = {k.name for k in self.kernels}
        for k in kernels:
            if k.name not in names:
                names.add(k.name)
                self.kernels.append(k)

    def describe(self):
        n = len(self.kernels)
        what = f"{n} fused kernel{'s' if n != 1 else ''}" if n else "fused kernels"
        return {"queued": f"{what} queued to build in the background",
                "building": f"{what} building in the background",
                "ready": f"{what} built: the fused program runs from the next run on",
                "failed": f"{what} failed to build ({self.error}); the program stays unfused",
                "skipped": f"{what} not built"}[self.state]

    def _run(self):
        if self._owner() is None:
            self._skip()
            return
        self.state = "building"
        try:
            generated.prepare(self.kernels, background=True)
            if self._owner() is None:       # dropped while its kernels built: no compile
                self._skip()
                return
            token = _building.set(self)
            try:
                fused = self._compile(*self._source)
            finally:
                _building.reset(token)
            fused.tier = "fused"
            self.program = fused
            self.state = "ready"
        except Exception as e:      # noqa: BLE001 - the unfused program keeps running
            first = str(e).splitlines()[0] if str(e) else ""
            self.error = f"{type(e).__name__}: {first}"
            self.state = "failed"
        finally:
            self._source = None
            self._done.set()

    def _skip(self):
        if not self._done.is_set():
            self.state = "skipped"
            self._source = None
            self._done.set()


class _Builder:
    """MAX_BUILDS daemon worker threads (started with the first build) running Upgrades
    first come first served; the queue holds them weakly (a dropped program's build is
    skipped)."""

    def __init__(self, workers):
        self.workers = workers
        self._queue = collections.deque()
        self._running = set()
        self._cond = threading.Condition()
        self._threads = []
        self._closed = False

    def submit(self, up):
        with self._cond:
            if self._closed:
                up._skip()
                return
            # NOTE: a worker is woken only when the queue was empty (it waits for good then);
            # otherwise every idle worker already waits for the head's start, which comes
            # first. A wake-up per compile made the worker thread take the interpreter lock
            # from the compiling thread once per program (a workload of many small programs
            # ran a tenth slower).
            empty = not self._queue
            self._queue.append(weakref.ref(up))
            if not self._threads:
                atexit.register(self.shutdown)
                for _ in range(self.workers):
                    t = threading.Thread(target=self._loop, name="exprvm-fused-build", daemon=True)
                    self._threads.append(t)
                    t.start()
            if empty:
                self._cond.notify()

    def _next(self):
        """The next Upgrade to build, once its start has come (called holding the lock);
        None when the builder is closed. Dropped programs' builds are passed over."""
        while not self._closed:
            while self._queue and self._queue[0]() is None:
                self._queue.popleft()           # its program, and so its Upgrade, was dropped
            if not self._queue:
                self._cond.wait()
                continue
            up = self._queue[0]()
            # NOTE: a build starts BUILD_DELAY after its compile, if its program is still
            # held then: most programs run a few times and are dropped (a test, a property
            # check) need none, and would slow the process building it.
            wait = up.submitted + BUILD_DELAY - time.monotonic()
            if wait > 0:
                del up                          # (the queue holds it weakly while it waits)
                self._cond.wait(wait)
                continue
            self._queue.popleft()
            if up._owner() is None:
                up._skip()
                continue
            return up
        return None

    def _loop(self):
        while True:
            with self._cond:
                up = self._next()
                if up is None:
                    return
                self._running.add(up)
            try:
                up._run()
            finally:
                with self._cond:
                    self._running.discard(up)
                    self._cond.notify_all()
                del up

    def pending(self):
        """The Upgrades queued or building."""
        with self._cond:
            queued = [r() for r in self._queue]
            return [u for u in queued if u is not None] + list(self._running)

    def shutdown(self, timeout=5.0, cancel=True):
        """Skip what is queued, stop the compiler processes in flight (cancel: for good, in
        this whole process), let the workers end (registered with atexit: an exiting
        process does not wait for its builds)."""
        with self._cond:
            self._closed = True
            queued = [r() for r in self._queue]
            self._queue.clear()
            self._cond.notify_all()
        for up in queued:
            if up is not None:
                up._skip()
        if cancel:
            generated.cancel_builds()
        for t in self._threads:
            t.join(timeout)


_BUILDER = _Builder(MAX_BUILDS)


def pending():
    """The background builds queued or in flight (Upgrade objects)."""
    return _BUILDER.pending()


def wait_all(timeout=None):
    """Block until every background build queued so far has ended; True if they all have
    (benchmarks and tests that want the fused programs)."""
    return all(up.wait(timeout) for up in _BUILDER.pending())
