"""cffi API-mode builder of the C kernels: the extension ``exprvm.kernels._ev_c``.

setup.py names ``ffibuilder`` in ``cffi_modules``, so ``pip install .`` and
``pip install -e .`` compile csrc/ev_kernels.c with the compiler setuptools
finds.  setup.py retries with the next entry of FLAG_SETS when a set fails
(no OpenMP, no -march=native) and installs without the extension when every
set fails; exprvm then runs on numpy.

Run ``python -m exprvm.kernels.build_c`` to build the extension in place,
next to this file, without pip.

Environment:
  EXPRVM_PORTABLE=1   leave out -march=native (for a wheel that will run on
                      other CPUs; loses AVX2 unless the compiler defaults to it)
"""
import os
import pathlib
import sys

from cffi import FFI

MODULE = "exprvm.kernels._ev_c"


def csrc_dir():
    """csrc/ of a source tree, or the copy setup.py puts inside the package."""
    here = pathlib.Path(__file__).resolve().parent
    for cand in (here.parents[1] / "csrc", here / "_csrc"):
        if (cand / "ev_kernels.h").is_file():
            return cand
    raise FileNotFoundError("csrc/ev_kernels.h not found next to the exprvm package")


def _relative(path):
    # setuptools places objects under build_temp + the source path: keep it
    # relative when building from the project root.
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


# Tried in order by setup.py.  -fno-math-errno and -fno-trapping-math keep
# IEEE results (unlike -ffast-math) but let gcc if-convert the selects in
# ev_math.h; without them a third of the loops stay scalar.
# NOTE: -std=c99 alone turns fused multiply-add contraction off (ISO mode);
# the polynomials are written for it, so ask for it explicitly.
_COMMON = ["-O3", "-std=c99", "-ffp-contract=fast", "-fno-math-errno", "-fno-trapping-math"]
_NATIVE = [] if os.environ.get("EXPRVM_PORTABLE") else ["-march=native"]
FLAG_SETS = [
    ("native+openmp", _COMMON + _NATIVE + ["-fopenmp"], ["-fopenmp"]),
    ("native", _COMMON + _NATIVE + ["-fopenmp-simd"], []),
    ("plain", _COMMON, []),
]
MSVC_FLAGS = ("msvc", ["/O2", "/openmp"], [])


def make_builder(relative=True):
    """The FFI builder; relative=False for cffi's own compile(), which changes
    directory while it builds."""
    src = csrc_dir()
    path = _relative if relative else str
    builder = FFI()
    builder.cdef((src / "ev_kernels.h").read_text())
    builder.cdef((src / "ev_conv.h").read_text())
    builder.cdef((src / "ev_gemm.h").read_text())
    builder.cdef((src / "ev_dlpack.h").read_text())
    builder.set_source(
        MODULE,
        '#include <stdint.h>\n#include "ev_kernels.h"\n#include "ev_conv.h"\n#include "ev_gemm.h"\n'
        '#include "ev_dlpack.h"\n',
        sources=[path(src / "ev_kernels.c"), path(src / "ev_conv.c"), path(src / "ev_conv_gemm.c"),
                 path(src / "ev_gemm.c"), path(src / "ev_dlpack.c")],
        include_dirs=[path(src)],
        depends=[path(src / name) for name in ("ev_math.h", "ev_kernels.h", "ev_conv.h", "ev_gemm.h",
                                               "ev_dlpack.h")],
        extra_compile_args=FLAG_SETS[0][1],
        extra_link_args=FLAG_SETS[0][2],
    )
    return builder


def ffibuilder():
    """The builder setup.py's cffi_modules names (cffi calls it). NOTE: a function, not a
    module-level builder: every `import exprvm` imports this module (for its flags and
    csrc_dir), and parsing the four headers took 50 ms of that import."""
    return make_builder()


def build_inplace():
    """Compile the extension into exprvm/kernels/ (no pip); return its path.

    Uses the first flag set; a compiler without OpenMP needs pip install.
    """
    root = pathlib.Path(__file__).resolve().parents[2]
    built = pathlib.Path(make_builder(relative=False).compile(tmpdir=str(root / "build" / "cffi")))
    dest = pathlib.Path(__file__).resolve().parent / built.name
    # NOTE: a new file renamed over the old one, never rewritten in place: a
    # process that has the old library mapped would crash.
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(built.read_bytes())
    os.replace(tmp, dest)
    # A pip build names it _ev_c.abi3.so, this one _ev_c.cpython-3XX-...so;
    # whichever Python finds first would win, so keep only the new one.
    for other in dest.parent.glob("_ev_c.*so"):
        if other != dest:
            other.unlink()
    return dest


if __name__ == "__main__":
    print(f"built {build_inplace()}")
    sys.exit(0)
