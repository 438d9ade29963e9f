"""Fused elementwise kernels generated at compile time: C source, one cffi build, a disk cache.

In: a Kernel (plain data the compiler makes for one fused group: element type, inputs
and how each broadcasts, one C expression per member, which members are stored).
Out: a bare C call over fixed arrays.

    k = Kernel(np.float32, inputs=(("full", False), ("row", False)),
               stmts=(("T", "(a0 + a1)"), ("T", "evm_tanh_f32(v0)")), outputs=(1,))
    prepare([k])                         # compiles what is missing, all in one module
    call = bind(k, [x, b], out, threads=1)
    call()                               # out = tanh(x + b), b a row broadcast over x's rows

The group's shape S is viewed as R rows of C = S[-1] elements. An input is "full" (S
itself; any row stride, the last axis contiguous: a gate sliced out of a wider matrix
is read in place), "row" (a bias of C elements broadcast over the rows), "col" (one
value per row, S[:-1] + (1,)) or "scalar" (one element). A kernel with k stored members
writes an output of shape S (k == 1, which may be exactly a "full" input: in place) or
(k,) + S. With threads > 1 the rows (or, for one row, chunks of it) are split over
OpenMP threads.

A kernel is named by a hash of its source, ev_math.h, the flags, the compiler and the
Python ABI; the library is cached on disk under cache_dir()/fused (build_cuda's cache
dir: $EXPRVM_CACHE_DIR or ~/.cache/exprvm), one file per build plus one index file per
kernel naming the library that holds it, so a second process, or a second run of the
same program, compiles nothing. Every file is written to a temporary name and renamed
into place: concurrent builds are safe, and a library a process has mapped is never
rewritten. Without a C compiler (or Python's headers) available() says why, and the
compiler runs every op on numpy as before. EXPRVM_FUSE=0 turns generation off.

lookup(kernels) loads what the caches hold and names what is missing, compiling
nothing; prepare(kernels) also compiles the missing ones. A build runs outside the
module's lock (lookups never wait for the C compiler), kernels already being built by
another thread are waited for rather than built twice, and cancel_builds() stops the
compiler processes in flight (a process exiting with a background build).
"""
import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
import threading
from dataclasses import dataclass

import numpy as np
from cffi import FFI

from exprvm.errors import BackendError, DTypeError, KernelError, ShapeError
from exprvm.kernels.build_c import FLAG_SETS, csrc_dir
from exprvm.kernels.build_cuda import cache_dir
from exprvm.kernels.generated_source import PRELUDE, decl, source

KINDS = ("full", "row", "col", "scalar")
# NOTE: the build_c flags, -ffp-contract=fast included: ev_math.h's functions then
# round as the C kernels' do, to the last bit (a program swapping its unfused C kernels
# for fused ones gives the same values). A member's product is written EVM_MUL_F32(a, b),
# a fused multiply-add of -0 where the target has one: exactly a * b, and nothing the
# compiler can contract with a following add, so a * b + c rounds twice, as numpy's
# separate ops do.
FLAGS = list(FLAG_SETS)
STATS = {"compiled": 0, "loaded": 0, "kernels_compiled": 0}

_lock = threading.RLock()
_funcs = {}                 # kernel name -> cffi function
_modules = {}               # module name -> loaded module
# status and env: worked out once; ffi: the one bind_call uses (_binding_ffi), once there is one
_state = {"status": None, "env": None, "ffi": None}
_building = {}              # kernel name -> threading.Event set when its build ends
_procs = set()              # compiler processes running (cancel_builds stops them)
_cancelled = threading.Event()


@dataclass(frozen=True)
class Kernel:
    """One fused kernel, as plain data.

    dtype    float32 or float64: every stored value and every non-bool input
    inputs   per input (kind, is_bool); kind in KINDS; C names a0, a1, ...
    stmts    per member (result "T" or "bool", C expression over a<i> and earlier v<j>)
    outputs  indices of the members stored, in output order
    """
    dtype: np.dtype
    inputs: tuple
    stmts: tuple
    outputs: tuple

    def __post_init__(self):
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise DTypeError(f"fused kernels take float32 or float64, not {self.dtype}")
        if any(k not in KINDS for k, _ in self.inputs):
            raise KernelError(f"fused kernel: input kinds must be among {KINDS}")
        if not self.outputs or any(self.stmts[j][0] != "T" for j in self.outputs):
            raise KernelError("fused kernel: it must store at least one member, floats only")

    @property
    def ctype(self):
        return "float" if self.dtype == np.float32 else "double"

    def body(self, name):
        """The kernel's C source, its function called `name`."""
        return source(self, name)

    @property
    def name(self):
        n = self.__dict__.get("_name")
        if n is None:
            h = hashlib.sha256(self.body("EVF").encode())
            h.update(_environment().encode())
            n = "evf_" + h.hexdigest()[:24]
            object.__setattr__(self, "_name", n)
        return n


# -- the compiler and the build environment ----------------------------------------------

def find_cc():
    """The C compiler: $CC, Python's own CC, cc, gcc or clang on PATH; None if none."""
    cands = [os.environ.get("CC", ""), (sysconfig.get_config_var("CC") or "").split(" ")[0], "cc", "gcc", "clang"]
    for c in cands:
        if c:
            path = shutil.which(c.split(" ")[0])
            if path:
                return path
    return None


def available():
    """(True, how) when kernels can be generated here, else (False, why)."""
    with _lock:
        if _state["status"] is None:
            _state["status"] = _probe()
        return _state["status"]


def _probe():
    if os.environ.get("EXPRVM_FUSE", "1").strip().lower() in ("0", "no", "off", "false"):
        return False, "turned off by EXPRVM_FUSE=0"
    if os.environ.get("EXPRVM_NO_C"):
        return False, "turned off by EXPRVM_NO_C"
    cc = find_cc()
    if cc is None:
        return False, "no C compiler found ($CC, cc, gcc, clang)"
    include = sysconfig.get_paths().get("include")
    if not include or not os.path.isfile(os.path.join(include, "Python.h")):
        return False, f"Python's headers are missing (no Python.h in {include})"
    try:
        csrc_dir()
    except FileNotFoundError as e:
        return False, str(e)
    return True, f"{cc}, cache {cache_root()}"


_ROOTS = {}      # cache_dir() -> its fused/ folder (asked once per kernel looked up)


def cache_root():
    """The folder of the fused kernels' libraries and index files."""
    base = cache_dir()
    root = _ROOTS.get(base)
    if root is None:
        root = _ROOTS[base] = base / "fused"
    return root


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _environment():
    """What a kernel's binary depends on besides its source, as one string."""
    if _state["env"] is None:
        cc = find_cc() or "none"
        try:
            st = os.stat(os.path.realpath(cc))
            ident = f"{os.path.realpath(cc)}:{st.st_size}:{int(st.st_mtime)}"
        except OSError:
            ident = cc
        math_h = (csrc_dir() / "ev_math.h").read_bytes()
        import cffi
        native = any(f.startswith("-march") for f in FLAGS[0][1])
        _state["env"] = "|".join([
            hashlib.sha256(math_h).hexdigest(), ident, " ".join(FLAGS[0][1]), PRELUDE,
            sysconfig.get_config_var("EXT_SUFFIX") or "", cffi.__version__, platform.machine(),
            _cpu_flags() if native else ""])
    return _state["env"]


# -- building and loading ----------------------------------------------------------------

def _index(name):
    return cache_root() / f"{name}.lib"


def write_atomic(path, data):
    """Write bytes to a pathlib path through a temporary file renamed into place (a
    reader never sees half a file; concurrent writers are safe)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_module(modname):
    mod = _modules.get(modname)
    if mod is None:
        path = cache_root() / (modname + sysconfig.get_config_var("EXT_SUFFIX"))
        if not path.is_file():
            return None
        loader = importlib.machinery.ExtensionFileLoader(modname, str(path))
        spec = importlib.util.spec_from_file_location(modname, str(path), loader=loader)
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
        _modules[modname] = mod
        if _state["ffi"] is None:
            _state["ffi"] = mod.ffi
        STATS["loaded"] += 1
    return mod


def _from_disk(name, root=None):
    # NOTE: os.path and open, not pathlib: a lookup per kernel of every program compiled
    try:
        with open(os.path.join(root or str(cache_root()), name + ".lib")) as f:
            modname = f.read().strip()
    except OSError:
        return None
    if not modname.isidentifier():
        return None
    try:
        mod = _load_module(modname)
    except ImportError:     # a stale or foreign file: rebuild
        return None
    return getattr(mod.lib, name, None) if mod is not None else None


def _compile(kernels, background=False):
    """Build one module holding `kernels` (none of them built yet); return it."""
    names = sorted({k.name for k in kernels})
    modname = "_evf_" + hashlib.sha256(" ".join(names).encode()).hexdigest()[:20]
    by_name = {k.name: k for k in kernels}
    ffi = FFI()
    ffi.cdef("\n".join(decl(n) for n in names))
    src = PRELUDE + "\n".join(by_name[n].body(n) for n in names)
    ffi.set_source(modname, src, compiler_verbose=False)   # NOTE: else cffi prints "generating ..."
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / (modname + sysconfig.get_config_var("EXT_SUFFIX"))
    cc = find_cc()
    paths = sysconfig.get_paths()
    includes = sorted({paths["include"], paths.get("platinclude", paths["include"]), str(csrc_dir())})
    errors = []
    with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as work:
        c_file = os.path.join(work, modname + ".c")
        ffi.emit_c_code(c_file)
        for label, cflags, ldflags in FLAGS:
            fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".so")
            os.close(fd)
            cmd = [cc, "-shared", "-fPIC", *cflags, *[f"-I{d}" for d in includes], c_file, "-o", tmp, *ldflags]
            try:
                returncode, stderr = _run_compiler(cmd, background)
                if returncode == 0:
                    os.chmod(tmp, 0o755)
                    os.replace(tmp, target)
                    break
                errors.append(f"[{label}] {stderr.strip()[-2000:]}")
            except (OSError, subprocess.SubprocessError) as e:
                errors.append(f"[{label}] {e}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            if _cancelled.is_set():
                raise BackendError("fused kernel build cancelled (the process is exiting)")
        else:
            raise BackendError("could not compile a fused kernel:\n" + "\n".join(errors))
    STATS["compiled"] += 1
    STATS["kernels_compiled"] += len(names)
    mod = _load_module(modname)
    for n in names:
        write_atomic(_index(n), modname.encode())
    return mod


def _run_compiler(cmd, background=False):
    """(return code, stderr) of one compiler run, registered so that cancel_builds can stop
    it; a background one at a lower priority (nice 10: the process's own work comes first)."""
    if _cancelled.is_set():
        raise BackendError("fused kernel build cancelled (the process is exiting)")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if background:
        try:
            os.setpriority(os.PRIO_PROCESS, proc.pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10))
        except (AttributeError, OSError):   # no priorities here, or it has ended already
            pass
    with _lock:
        _procs.add(proc)
    try:
        _, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    finally:
        with _lock:
            _procs.discard(proc)
    return proc.returncode, stderr


def compilers_running():
    """How many C compiler processes this process is running now (builds in flight)."""
    with _lock:
        return len(_procs)


def cancel_builds():
    """Stop every compiler process in flight and refuse new builds (their prepare() raises
    BackendError): for a process that exits while kernels build in the background."""
    _cancelled.set()
    with _lock:
        procs = list(_procs)
    for proc in procs:
        try:
            proc.kill()
        except OSError:
            pass


def lookup(kernels):
    """Make callable every kernel found in memory or in the disk cache, compiling nothing.
    Returns the kernels still missing (each name once)."""
    ok, why = available()
    if not ok:
        raise BackendError(f"fused kernels are not available: {why}")
    missing = {}
    root = None
    with _lock:
        for k in kernels:
            n = k.name
            if n in _funcs or n in missing:
                continue
            if root is None:    # NOTE: only once a kernel is not in memory: a path per call costs
                root = str(cache_root())
            fn = _from_disk(n, root)
            if fn is not None:
                _funcs[n] = fn
            else:
                missing[n] = k
    return list(missing.values())


def prepare(kernels, background=False):
    """Make every kernel callable: from memory, from the disk cache, else compiled now,
    all missing ones in one build (outside the lock; kernels another thread is building
    are waited for; background: the compiler at a lower priority). BackendError if the
    compiler fails."""
    missing = lookup(kernels)
    if not missing:
        return
    mine, theirs = {}, []
    done = threading.Event()
    with _lock:
        for k in missing:
            if k.name in _funcs:
                continue
            other = _building.get(k.name)
            if other is not None:
                theirs.append(other)
            else:
                mine[k.name] = k
                _building[k.name] = done
    try:
        if mine:
            mod = _compile(list(mine.values()), background)
            with _lock:
                for n in mine:
                    _funcs[n] = getattr(mod.lib, n)
    finally:
        with _lock:
            for n in mine:
                _building.pop(n, None)
        done.set()
    for other in theirs:
        other.wait()
    with _lock:
        left = [k for k in missing if k.name not in _funcs]
    if left:        # another thread's build failed: try them here (it raises if it fails again)
        mod = _compile(left, background)
        with _lock:
            for k in left:
                _funcs[k.name] = getattr(mod.lib, k.name)


def function(k):
    """The cffi function of kernel k (prepared if needed)."""
    fn = _funcs.get(k.name)
    if fn is None:
        prepare([k])
        fn = _funcs[k.name]
    return fn


def _reset_for_tests():
    """Forget what this process loaded and probed (the disk cache stays)."""
    with _lock:
        _funcs.clear()
        _state["status"] = None
        _state["env"] = None


# -- binding to arrays -----------------------------------------------------------------

def _binding_ffi():
    """An ffi for bind_call's buffers and casts: the first kernel module loaded gave its
    own (_load_module), else one FFI() is made now. NOTE: a module's own reads those few
    C types itself (API mode); FFI() imports cffi's C parser, 40 ms that every `import
    exprvm` used to pay."""
    if _state["ffi"] is None:
        _state["ffi"] = FFI()
    return _state["ffi"]


def _rows2d(a, R, C, what):
    """a viewed as (R, C) without a copy, and its row stride in elements; KernelError if
    it cannot be (a transposed operand: the compiler gathers those first)."""
    try:
        b = np.reshape(a, (R, C), copy=False)
    except ValueError:
        raise KernelError(f"fused kernel: {what} of shape {a.shape} and strides {a.strides} "
                          "cannot be read as rows without a copy") from None
    item = a.itemsize
    s0, s1 = b.strides
    if (C > 1 and s1 != item) or (R > 1 and (s0 < 0 or s0 % item)):
        raise KernelError(f"fused kernel: {what} has strides {a.strides}; rows must be "
                          "contiguous and evenly spaced")
    return b, (s0 // item if R > 1 else 0)


def rows_layout(a, kind, shape):
    """Can an array laid out like `a` be read in place as a `kind` input of a group of
    `shape`? (The compiler asks with arrays of the operands' real strides.)"""
    try:
        _view(a, kind, shape, "operand")
    except KernelError:
        return False
    return True


def _grid(shape):
    n = int(np.prod(shape, dtype=np.int64))
    C = int(shape[-1]) if shape else 1
    return n, (n // C if C else 0), C


def _view(a, kind, shape, what):
    """(1-d contiguous view spanning what the kernel reads, row stride in elements)."""
    n, R, C = _grid(shape)
    if kind == "scalar":
        if a.size != 1:
            raise ShapeError(f"fused kernel: {what} is a scalar input but has shape {a.shape}")
        return a.reshape(-1)[:1], 0
    if kind == "row":
        if a.size != C or any(d != 1 for d in a.shape[:-1]) or (a.ndim and a.shape[-1] != C):
            raise ShapeError(f"fused kernel: {what} of shape {a.shape} is not a row of {C}")
        b, _ = _rows2d(a, 1, C, what)
        return b.reshape(-1), 0
    if kind == "col":
        want = tuple(shape[:-1]) + (1,)
        if a.shape != want:
            raise ShapeError(f"fused kernel: {what} has shape {a.shape}, a column is {want}")
        b, ld = _rows2d(a, R, 1, what)
    else:
        if a.shape != tuple(shape):
            raise ShapeError(f"fused kernel: {what} has shape {a.shape}, the group {tuple(shape)}")
        b, ld = _rows2d(a, R, C, what)
        if R > 1 and ld < C:
            raise KernelError(f"fused kernel: {what}'s rows overlap (stride {ld} < {C})")
    width = b.shape[1]
    span = (R - 1) * ld + width if R else 0
    return np.lib.stride_tricks.as_strided(b, (span,), (a.itemsize,)), ld


LAYOUTS = ("stack", "concat")


def out_shape(shape, nout, layout="stack"):
    """The output array's shape for `nout` stored members of a group of `shape`: the
    shape itself for one; (nout,) + shape stacked; or side by side along the last axis
    (concat: member q is out[..., q*C:(q+1)*C])."""
    shape = tuple(shape)
    if nout == 1:
        return shape
    if layout == "concat":
        if not shape:
            raise ShapeError("fused kernel: a concat layout needs at least one axis")
        return shape[:-1] + (nout * shape[-1],)
    return (nout,) + shape


def bind(k, ins, out, shape, layout="stack", threads=1, members=None):
    """call() -> None running kernel k over fixed arrays; see bind_call."""
    fn, args = bind_call(k, ins, out, shape, layout, threads, members)
    return lambda: fn(*args)


def bind_call(k, ins, out, shape, layout="stack", threads=1, members=None):
    """(fn, args): fn(*args) runs kernel k over fixed arrays, for a group of `shape` whose
    stored members lie in out as out_shape(shape, len(k.outputs), layout) says. fn is the
    bare cffi function: a compiled program's run loop calls it with no Python in between.
    members ({q: array of `shape`, rows contiguous and evenly spaced}): stored member q
    goes into that array instead (a loop body's output: no copy after the kernel); its
    place in out is left unwritten.

    Everything is checked here, once: exact numpy.ndarray types, dtypes, shapes, that
    each input can be read in place (else KernelError: gather it first), that out is
    C-contiguous, aligned and writable and overlaps no input except exactly one
    same-shaped "full" input (in place). A call then is one bare C call.
    """
    if len(ins) != len(k.inputs):
        raise KernelError(f"fused kernel: {len(k.inputs)} inputs expected, got {len(ins)}")
    if layout not in LAYOUTS:
        raise KernelError(f"fused kernel: layout must be one of {LAYOUTS}, not {layout!r}")
    for a in (*ins, out):
        if type(a) is not np.ndarray:
            raise KernelError(f"fused kernel: operands must be numpy.ndarray, got {type(a).__name__}")
    nout = len(k.outputs)
    shape = tuple(int(d) for d in shape)
    if out.dtype != k.dtype:
        raise DTypeError(f"fused kernel: out has dtype {out.dtype}, the kernel is {k.dtype}")
    if not (out.flags.c_contiguous and out.flags.aligned and out.flags.writeable):
        raise KernelError("fused kernel: out must be C-contiguous, aligned and writable")
    if out.shape != out_shape(shape, nout, layout):
        raise ShapeError(f"fused kernel: out has shape {out.shape}, expected "
                         f"{out_shape(shape, nout, layout)}")
    n, R, C = _grid(shape)
    fn = function(k)
    if n == 0:
        return _nothing, ()
    if nout > 1 and layout == "concat":
        outs = [(q * C, nout * C) for q in range(nout)]
    else:
        outs = [(q * n, C) for q in range(nout)]
    bases = [out] * nout
    for q, a in _members(members, k, shape, nout, ins, out):
        bases[q], ld = _view(a, "full", shape, f"member {q}'s array")
        outs[q] = (0, ld if R > 1 else C)
    views, lds = [], []
    flat = R == 1 or all(ld == C for _, ld in outs)   # one row of n: no strides, no row/col input
    for i, (a, (kind, is_bool)) in enumerate(zip(ins, k.inputs)):
        want = np.dtype(bool) if is_bool else k.dtype
        if a.dtype != want:
            raise DTypeError(f"fused kernel: input {i} has dtype {a.dtype}, expected {want}")
        if not a.flags.aligned:
            raise KernelError(f"fused kernel: input {i} is not aligned")
        v, ld = _view(a, kind, shape, f"input {i}")
        if np.may_share_memory(a, out):
            exact = (nout == 1 and kind == "full" and a.shape == out.shape and a.strides == out.strides
                     and a.__array_interface__["data"][0] == out.__array_interface__["data"][0])
            if not exact:
                raise KernelError(f"fused kernel: out overlaps input {i} (only an exact in-place "
                                  "input may share it)")
        flat = flat and (kind == "scalar" or (kind == "full" and (R == 1 or ld == C)))
        views.append((v, "uint8_t[]" if is_bool else k.ctype + "[]"))
        lds.append(ld)
    if flat:
        R, C, lds = 1, n, [0] * len(lds)
    ffi = _binding_ffi()
    whole = {}              # one cffi buffer per distinct output array
    for b in bases:
        if id(b) not in whole:
            whole[id(b)] = ffi.from_buffer(k.ctype + "[]", b.reshape(-1), require_writable=True)
    bufs = [whole[id(b)] for b in bases]
    bufs += [ffi.from_buffer(ct, v) for v, ct in views]
    ptrs = ffi.new("char *[]", [ffi.cast("char *", b) for b in bufs])
    meta = ffi.new("int64_t[]", [R, C, max(1, int(threads)), *[x for o in outs for x in o], *lds])
    # NOTE: the pointers are only valid while these arrays live: the handle, an argument,
    # holds them for as long as anyone holds the arguments.
    keep = ffi.new_handle((bufs, views, list(ins), out, bases))
    return fn, (meta, ptrs, keep)


def _members(members, k, shape, nout, ins, out):
    """The checked (q, array) pairs of members stored outside out (see bind_call)."""
    if not members:
        return []
    pairs = sorted(members.items())
    for q, a in pairs:
        if not (type(q) is int and 0 <= q < nout):
            raise KernelError(f"fused kernel: no stored member {q!r} (it stores {nout})")
        if type(a) is not np.ndarray:
            raise KernelError(f"fused kernel: member {q}'s array must be numpy.ndarray, "
                              f"got {type(a).__name__}")
        if a.dtype != k.dtype:
            raise DTypeError(f"fused kernel: member {q}'s array has dtype {a.dtype}, the kernel is {k.dtype}")
        if a.shape != shape:
            raise ShapeError(f"fused kernel: member {q}'s array has shape {a.shape}, expected {shape}")
        if not (a.flags.aligned and a.flags.writeable):
            raise KernelError(f"fused kernel: member {q}'s array must be aligned and writable")
        # exactly (not by bounds): members side by side in one array interleave their rows
        others = [*ins, out] + [b for p, b in pairs if p != q]
        if any(np.shares_memory(a, b) for b in others):
            raise KernelError(f"fused kernel: member {q}'s array overlaps an operand or another output")
    return pairs


def _nothing():
    pass
