"""Builds csrc/ev_cuda.cu into a shared library with nvcc, cached by content.

The library file is named by a hash of the CUDA sources, the nvcc flags and
nvcc's version, so an edited kernel or another GPU architecture gets a fresh
build and a stale library is never loaded.  Builds go to a temporary file and
are renamed into place, so concurrent processes cannot see a half-written
library.

    python -m exprvm.kernels.build_cuda            # build (if needed), print the path
    python -m exprvm.kernels.build_cuda --arch sm_90 --force

Environment:
  EXPRVM_NVCC        nvcc to use (else PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)
  EXPRVM_CUDA_ARCH   e.g. "sm_90"; default: the GPU found, else sm_75 + PTX
  EXPRVM_CACHE_DIR   where libraries go (default: $XDG_CACHE_HOME/exprvm or ~/.cache/exprvm)
"""
import argparse
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

SOURCES = ("ev_cuda.cu", "ev_cuda.h", "ev_math.h")
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


def cache_dir():
    env = os.environ.get("EXPRVM_CACHE_DIR")
    if env:
        return pathlib.Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "exprvm"


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


def library_path(nvcc, arch):
    """Where the library for these sources, flags and nvcc lives."""
    src = csrc_dir()
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode())
        h.update((src / name).read_bytes())
    h.update(" ".join(nvcc_flags(arch)).encode())
    h.update(_nvcc_version(nvcc).encode())
    return cache_dir() / f"libev_cuda-{arch}-{h.hexdigest()[:16]}.so"


def build(capability=None, arch=None, force=False):
    """Path of an up-to-date library, building it if needed (BackendError on failure)."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise BackendError("nvcc not found (set EXPRVM_NVCC or put CUDA's bin/ on PATH)")
    arch = arch or arch_for(capability)
    if not (arch.startswith("sm_") and arch[3:].isdigit()):
        raise BackendError(f"bad CUDA architecture {arch!r}; expected e.g. sm_90")
    target = library_path(nvcc, arch)
    if target.is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    src = csrc_dir()
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [nvcc, *nvcc_flags(arch), f"-I{src}", "-o", tmp, str(src / "ev_cuda.cu")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise BackendError(f"nvcc failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}")
        os.replace(tmp, target)
    except (OSError, subprocess.SubprocessError) as e:
        raise BackendError(f"nvcc could not run: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build exprvm's CUDA kernels with nvcc.")
    parser.add_argument("--arch", help="e.g. sm_90 (default: the GPU found, else sm_75 + PTX)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    capability = None
    if not args.arch:
        capability = probe_driver()[2]
    try:
        path = build(capability=capability, arch=args.arch, force=args.force)
    except BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
