"""The thread policy: how many threads each matrix product and each fused kernel runs with,
decided by the compiler from the shapes it knows.

In: a compiled Program (its BLAS instructions and their operand shapes) and a Policy.
Out: the same Program with the BLAS instructions' kernels wrapped so that each runs with
its thread count (threadpoolctl finds the BLAS numpy uses and its thread control); a
fused kernel's thread count is chosen when it is lowered (Policy.fused_threads).

The policy (defaults; each a field of Policy):
  * a matrix product of F flops runs with min(cap, F // BLAS_FLOPS_PER_THREAD) threads, at
    least 1: the small products of a recurrent step stay on one thread (a BLAS thread team
    costs more to wake than such a product takes), the big weight-gradient products use
    every core;
  * a fused kernel splits its rows over min(cap, work // FUSED_WORK_PER_THREAD) OpenMP
    threads (work: elements times a per-member cost, 4 for exp/tanh-like members);
  * the cap is the number of cores this process may use, never more than the BLAS's own
    thread setting when the run starts (so OPENBLAS_NUM_THREADS=1, or a
    threadpoolctl.threadpool_limits around the run, pins exprvm too), and EXPRVM_THREADS
    when set.

The thread count changes only where it differs from the previous product's, and the BLAS
setting found when a run starts is restored after the last product: code outside a run
sees its own setting. Override: Policy(max_threads=1) (or EXPRVM_THREADS=1) runs
everything on one thread; set_policy(...) changes the default; `using(policy)` scopes one
compile.
"""
import contextlib
import contextvars
import os
from dataclasses import dataclass
from typing import Optional

BLAS_FLOPS_PER_THREAD = 4_000_000
FUSED_WORK_PER_THREAD = 1 << 17


def cores():
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _env_cap():
    raw = os.environ.get("EXPRVM_THREADS", "").strip()
    if not raw:
        return None
    try:
        return max(1, int(raw))
    except ValueError:
        return None


@dataclass(frozen=True)
class Policy:
    """Threads per matrix product and per fused kernel; see the module docstring.
    max_threads None: the cores (and EXPRVM_THREADS if set)."""
    max_threads: Optional[int] = None
    blas_flops_per_thread: int = BLAS_FLOPS_PER_THREAD
    fused_work_per_thread: int = FUSED_WORK_PER_THREAD

    @property
    def cap(self):
        if self.max_threads is not None:
            return max(1, int(self.max_threads))
        env = _env_cap()
        return min(cores(), env) if env else cores()

    def caps(self):
        """(cap, OMP_NUM_THREADS or None): what the counts read from the environment and
        the OS."""
        return self.cap, _omp_cap()

    def blas_threads(self, flops, caps=None):
        cap = caps[0] if caps else self.cap
        return max(1, min(cap, int(flops // self.blas_flops_per_thread)))

    def fused_threads(self, work, caps=None):
        cap, omp = caps or self.caps()
        return max(1, min(cap, omp or cap, int(work // self.fused_work_per_thread)))


class Pinned:
    """A Policy with its caps read once: one compile's (the environment and the CPUs
    stay as they are within it, and asking costs more than the rest of lowering a small
    fused kernel, once for each)."""
    __slots__ = ("policy", "caps")

    def __init__(self, policy):
        self.policy = policy
        self.caps = policy.caps()

    def blas_threads(self, flops):
        return self.policy.blas_threads(flops, self.caps)

    def fused_threads(self, work):
        return self.policy.fused_threads(work, self.caps)


def _omp_cap():
    raw = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        return max(1, int(raw)) if raw else None
    except ValueError:
        return None


_default = [Policy()]
_current = contextvars.ContextVar("exprvm_thread_policy", default=None)


def resolve(spec):
    """A Policy for `spec`: a Policy, an int (the cap), or None (the default)."""
    if isinstance(spec, Policy):
        return spec
    if spec is None:
        return _default[0]
    return Policy(max_threads=int(spec))


def set_policy(spec):
    """Make `spec` (see resolve) the policy of every later compile."""
    _default[0] = resolve(spec)


def current():
    """The policy of the compile in progress (see using: a Pinned one), else the default."""
    return _current.get() or _default[0]


@contextlib.contextmanager
def using(spec):
    """Compile under `spec` (see resolve), its caps read once (Pinned)."""
    token = _current.set(Pinned(resolve(spec)))
    try:
        yield current()
    finally:
        _current.reset(token)


# -- the BLAS numpy uses, through threadpoolctl --------------------------------------------

class BlasControl:
    """get() / set(n) of the BLAS numpy calls; found once per process."""

    def __init__(self, get, set_, name):
        self.get, self.set, self.name = get, set_, name

    def __repr__(self):
        return f"<BlasControl {self.name}>"


_control = {}


def blas_control():
    """The BlasControl of numpy's BLAS, or None (no threadpoolctl, or no BLAS it knows)."""
    if "blas" not in _control:
        _control["blas"] = _find_control()
    return _control["blas"]


def _find_control():
    try:
        import numpy as np
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    try:
        libs = ThreadpoolController().select(user_api="blas").lib_controllers
    except Exception:       # noqa: BLE001 - a library threadpoolctl cannot inspect: no control
        return None
    if not libs:
        return None
    npdir = os.path.dirname(os.path.dirname(np.__file__))
    libs = sorted(libs, key=lambda lc: not (str(lc.filepath).startswith(npdir) or "numpy" in str(lc.filepath)))
    lc = libs[0]
    raw = _raw_openblas(lc)
    if raw is not None:
        return BlasControl(*raw, name=f"{lc.internal_api} {lc.filepath}")
    return BlasControl(lc.get_num_threads, lc.set_num_threads, name=f"{lc.internal_api} {lc.filepath}")


def _raw_openblas(lc):
    """OpenBLAS's own get/set functions (ctypes, no Python layers per call), for its
    pthreads build; None otherwise. The symbols' affixes are found as threadpoolctl does."""
    if getattr(lc, "internal_api", "") != "openblas" or getattr(lc, "threading_layer", "") != "pthreads":
        return None
    dynlib = getattr(lc, "dynlib", None)
    if dynlib is None:
        return None
    for prefix in ("", "scipy_"):
        for suffix in ("", "64_", "_64"):
            get = getattr(dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
            set_ = getattr(dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                return get, set_
    return None


# -- per-program wrapping of the BLAS instructions ------------------------------------------

def _matmul_flops(shapes):
    a, b = shapes[0], shapes[1]
    if len(a) < 1 or len(b) < 1:
        return 0
    m = a[-2] if len(a) >= 2 else 1
    k = a[-1]
    n = b[-1] if len(b) >= 2 else 1
    batch = 1
    for s in (a[:-2] if len(a) > len(b) else b[:-2]):
        batch *= s
    return 2 * batch * m * n * k


def _take_grad_flops(shapes, out):
    # The one-hot scatter is one_hot(idx).T @ g: (V, n) @ (n, D).
    n = 1
    for s in shapes[1]:
        n *= s
    d = 1
    for s in out[1:]:
        d *= s
    return 2 * out[0] * n * d if out else 0


def flops(instr, regs):
    """Flops of a BLAS instruction, or None if it is not one."""
    shapes = [regs[i].shape for i in instr.ins]
    if instr.op == "matmul" and len(shapes) == 2:
        return _matmul_flops(shapes)
    if instr.op == "take_grad" and len(shapes) == 2 and instr.tmps:
        return _take_grad_flops(shapes, regs[instr.out].shape)
    return None


class _RunThreads:
    """One program's BLAS thread state while it runs (shared by its wrapped kernels)."""

    __slots__ = ("ctl", "ambient", "cur", "dirty")

    def __init__(self, ctl):
        self.ctl, self.ambient, self.cur, self.dirty = ctl, None, None, False

    def begin(self):
        if not self.dirty:          # NOTE: a run that raised left our setting in place
            self.ambient = self.ctl.get()
        self.cur = self.ambient

    def to(self, n):
        n = min(n, self.ambient)
        if n != self.cur:
            self.ctl.set(n)
            self.cur = n
            self.dirty = n != self.ambient

    def end(self):
        if self.cur != self.ambient:
            self.ctl.set(self.ambient)
            self.cur = self.ambient
        self.dirty = False


def _wrap(build, state, n, first, last):
    def wrapped_build(ins, out, tmps):
        return _threaded(state, n, first, last)(*build(ins, out, tmps))
    return wrapped_build


def _threaded(state, n, first, last):
    """(fn, args) -> (fn running with n BLAS threads, args)."""
    def wrap(fn, args):
        def run(*a):
            if first:
                state.begin()
            state.to(n)
            fn(*a)
            if last:
                state.end()
        run.__dict__.update(getattr(fn, "__dict__", {}))   # what a loop's runner shows the profiler
        return run, args
    return wrap


def apply(prog, policy=None, wrap=True):
    """Give each BLAS instruction of prog its thread count (see the module docstring).
    Returns [(instruction index, threads)] for the BLAS instructions. A loop runs with
    the most threads its bodies' products want, set once around the loop; a body's own
    products (wrap=False) run with the thread count their loop set."""
    policy = resolve(policy) if not isinstance(policy, Policy) else policy
    regs = prog.registers
    plan = []
    for k, ins in enumerate(prog.instrs):
        if ins.bodies:
            inner = [n for body in ins.bodies for _, n in getattr(body, "blas_threads", ())]
            if inner:
                plan.append((k, max(inner)))
            continue
        if ins.kernel != "numpy":       # a device product (cuBLAS) or a C kernel
            continue
        f = flops(ins, regs)
        if f is not None:
            plan.append((k, policy.blas_threads(f)))
    prog.blas_threads = plan        # shown by tests and benchmarks
    if not plan or not wrap:        # NOTE: first: finding the BLAS costs a process 10 ms
        return plan
    ctl = blas_control()
    if ctl is None:
        return plan
    state = _RunThreads(ctl)
    prev = None
    for pos, (k, n) in enumerate(plan):
        first, last = pos == 0, pos == len(plan) - 1
        if first or last or n != prev:
            ins = prog.instrs[k]
            if ins.bodies:      # a loop: bound by the machine, wrapped after (Instr.after_bind)
                ins.after_bind = _threaded(state, n, first, last)
            else:
                ins.build = _wrap(ins.build, state, n, first, last)
        prev = n
    return plan
