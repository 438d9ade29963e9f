"""Builds exprvm's CUDA library with nvcc, and its host twin with a C++ compiler,
both cached by content.

    build()        csrc/ev_cuda*.cu -> libev_cuda-<arch>-<hash>.so (nvcc; the GPU library)
    build_twin()   the same sources + ev_cuda_twin.cc -> libev_cuda_twin-<hash>.so, a plain
                   C++ build (-DEV_HOST_TWIN) whose kernels run serially on the CPU over
                   host memory, with a reference column-major GEMM under cuBLAS's names:
                   the CUDA code's indexing and math, tested where there is no GPU
    build_twin("sanitize")  the twin with AddressSanitizer and UndefinedBehaviorSanitizer
                   (load it in a process started with LD_PRELOAD=sanitizer_runtime())
    build_twin("fma")       the twin with fused multiply-adds (-mfma, contraction on):
                   ev_math.h's FMA branches, the ones a GPU takes

A library file is named by a hash of the sources, the flags and the compiler's
version, so an edited kernel or another GPU architecture gets a fresh build and a
stale library is never loaded.  Builds go to a temporary file and are renamed
into place, so concurrent processes cannot see a half-written library.  The .cu
files compile in parallel (one nvcc each, ~3 s a file), then link.

    python -m exprvm.kernels.build_cuda            # build (if needed), print the path
    python -m exprvm.kernels.build_cuda --arch sm_90 --force
    python -m exprvm.kernels.build_cuda --twin

Environment:
  EXPRVM_NVCC        nvcc to use (else PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)
  EXPRVM_CUDA_ARCH   e.g. "sm_90"; default: the GPU found, else sm_75 + PTX
  EXPRVM_CXX         the twin's C++ compiler (else $CXX, g++, c++, clang++)
  EXPRVM_CACHE_DIR   where libraries go (default: $XDG_CACHE_HOME/exprvm or ~/.cache/exprvm)
"""
import argparse
import concurrent.futures
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from exprvm.errors import BackendError
from exprvm.kernels.build_c import csrc_dir
from exprvm.kernels.cuda_driver import probe_driver

CUDA_SOURCES = ("ev_cuda.cu", "ev_cuda_nn.cu", "ev_cuda_train.cu")
HEADERS = ("ev_cuda.h", "ev_cuda_launch.h", "ev_math.h")
TWIN_SOURCES = CUDA_SOURCES + ("ev_cuda_twin.cc",)
SOURCES = CUDA_SOURCES + HEADERS
# The oldest architecture nvcc 13 still targets; its PTX is JIT-compiled by
# the driver for anything newer.
DEFAULT_ARCH = "sm_75"


def find_nvcc():
    """Path of nvcc, or None."""
    env = os.environ.get("EXPRVM_NVCC")
    if env:
        return env if os.path.isfile(env) else None
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.path.isfile(os.path.join(root, "bin", "nvcc")):
            return os.path.join(root, "bin", "nvcc")
    return None


_CACHE_DIRS = {}    # (EXPRVM_CACHE_DIR, XDG_CACHE_HOME, HOME) -> the path they give


def cache_dir():
    """$EXPRVM_CACHE_DIR, else $XDG_CACHE_HOME/exprvm, else ~/.cache/exprvm."""
    # NOTE: remembered per environment: every compile asks, and pathlib costs tens of us
    key = (os.environ.get("EXPRVM_CACHE_DIR"), os.environ.get("XDG_CACHE_HOME"), os.environ.get("HOME"))
    path = _CACHE_DIRS.get(key)
    if path is None:
        if key[0]:
            path = pathlib.Path(key[0])
        else:
            base = key[1] or os.path.join(os.path.expanduser("~"), ".cache")
            path = pathlib.Path(base) / "exprvm"
        _CACHE_DIRS[key] = path
    return path


def arch_for(capability=None):
    """"sm_XY" for a (major, minor) capability, the env override, or the default."""
    env = os.environ.get("EXPRVM_CUDA_ARCH")
    if env:
        return env if env.startswith("sm_") else f"sm_{env}"
    if capability:
        return f"sm_{capability[0]}{capability[1]}"
    return DEFAULT_ARCH


def nvcc_flags(arch):
    num = arch[len("sm_"):]
    # SASS for the target plus its PTX, so a newer GPU can still JIT it.
    gencode = f"-gencode=arch=compute_{num},code=[sm_{num},compute_{num}]"
    return ["-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", gencode]


def _nvcc_version(nvcc):
    try:
        return subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise BackendError(f"cannot run {nvcc}: {e}") from e


def _digest(names, *extra):
    src = csrc_dir()
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode())
        h.update((src / name).read_bytes())
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()[:16]


def library_path(nvcc, arch):
    """Where the library for these sources, flags and nvcc lives."""
    digest = _digest(SOURCES, " ".join(nvcc_flags(arch)), _nvcc_version(nvcc))
    return cache_dir() / f"libev_cuda-{arch}-{digest}.so"


def _run(cmd, what):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
        raise BackendError(f"{what} could not run: {e}") from e
    if proc.returncode != 0:
        raise BackendError(f"{what} failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                           f"{proc.stderr.strip()}")


def _install(target, make):
    """make(tmp_path) writes the library; it is renamed to target only once complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        make(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def build(capability=None, arch=None, force=False):
    """Path of an up-to-date GPU library, building it if needed (BackendError on failure)."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise BackendError("nvcc not found (set EXPRVM_NVCC or put CUDA's bin/ on PATH)")
    arch = arch or arch_for(capability)
    if not (arch.startswith("sm_") and arch[3:].isdigit()):
        raise BackendError(f"bad CUDA architecture {arch!r}; expected e.g. sm_90")
    target = library_path(nvcc, arch)
    if target.is_file() and not force:
        return target
    src = csrc_dir()
    flags = nvcc_flags(arch)

    def make(tmp):
        with tempfile.TemporaryDirectory(dir=target.parent) as work:
            objs = [os.path.join(work, name + ".o") for name in CUDA_SOURCES]
            compile_flags = [f for f in flags if f != "-shared"]
            jobs = [[nvcc, *compile_flags, f"-I{src}", "-c", str(src / name), "-o", obj]
                    for name, obj in zip(CUDA_SOURCES, objs)]
            with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
                for f in [pool.submit(_run, cmd, "nvcc") for cmd in jobs]:
                    f.result()
            _run([nvcc, *flags, *objs, "-o", tmp], "nvcc (link)")
    return _install(target, make)


def find_cxx():
    """A C++ compiler for the host twin, or None."""
    for cand in (os.environ.get("EXPRVM_CXX"), os.environ.get("CXX"), "g++", "c++", "clang++"):
        if cand:
            found = shutil.which(cand)
            if found:
                return found
    return None


TWIN_FLAGS = ("-x", "c++", "-std=c++17", "-O2", "-fPIC", "-shared", "-DEV_HOST_TWIN")
# NOTE: without these, g++ contracts no a * b + c into an FMA (the default for ISO C++ is
# off) and ev_math.h takes its branches for hardware without one; a GPU has FMA.
TWIN_FLAVORS = {
    "plain": (),
    "sanitize": ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"),
    "fma": ("-mfma", "-ffp-contract=fast"),
}


def build_twin(flavor="plain", force=False):
    """Path of the host twin library (see the module docstring), building it if needed."""
    if flavor not in TWIN_FLAVORS:
        raise BackendError(f"unknown host twin flavor {flavor!r}; choose one of {sorted(TWIN_FLAVORS)}")
    cxx = find_cxx()
    if cxx is None:
        raise BackendError("no C++ compiler found for the CUDA host twin (set EXPRVM_CXX)")
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise BackendError(f"cannot run {cxx}: {e}") from e
    flags = TWIN_FLAGS + TWIN_FLAVORS[flavor]
    name = "libev_cuda_twin" + ("" if flavor == "plain" else f"_{flavor}")
    target = cache_dir() / f"{name}-{_digest(TWIN_SOURCES + HEADERS, ' '.join(flags), version)}.so"
    if target.is_file() and not force:
        return target
    src = csrc_dir()
    return _install(target, lambda tmp: _run(
        [cxx, *flags, f"-I{src}", *[str(src / n) for n in TWIN_SOURCES], "-o", tmp], cxx))


def sanitizer_runtime():
    """The sanitizer runtimes a process must preload (LD_PRELOAD) to load the sanitized
    twin: "libasan.so:libubsan.so" of the twin's compiler, or None where it has none."""
    cxx = find_cxx()
    if cxx is None:
        return None
    found = []
    for lib in ("libasan.so", "libubsan.so"):
        try:
            path = subprocess.run([cxx, f"-print-file-name={lib}"], capture_output=True, text=True,
                                  timeout=60).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
        if not os.path.isabs(path) or not os.path.exists(path):
            return None
        found.append(os.path.realpath(path))
    return ":".join(found)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build exprvm's CUDA kernels with nvcc.")
    parser.add_argument("--arch", help="e.g. sm_90 (default: the GPU found, else sm_75 + PTX)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--twin", nargs="?", const="plain", choices=sorted(TWIN_FLAVORS),
                        help="build the host twin instead (a flavor: plain, sanitize, fma)")
    args = parser.parse_args(argv)
    capability = None
    if not args.arch and not args.twin:
        capability = probe_driver()[2]
    try:
        if args.twin:
            path = build_twin(args.twin, force=args.force)
        else:
            path = build(capability=capability, arch=args.arch, force=args.force)
    except BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
