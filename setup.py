"""Build hooks for exprvm; the metadata lives in pyproject.toml.

The C kernels are an optional cffi extension (exprvm/kernels/build_c.py).
build_ext tries the flag sets of build_c.FLAG_SETS in order (OpenMP +
-march=native, then without OpenMP, then plain -O3) and, if none compiles,
installs exprvm without the extension: the package then runs its kernels on
numpy and says so once per process.  Set EXPRVM_NO_C=1 to skip the build.

build_py also copies csrc/ into the package (exprvm/kernels/_csrc/) so that an
installed, non-editable exprvm can still build its CUDA library with nvcc.
"""
import os
import pathlib
import shutil
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).resolve().parent
C_MODULE = "exprvm.kernels._ev_c"
# every C, CUDA and header source: an installed exprvm builds its CUDA library from them
CSRC_PATTERNS = ("*.h", "*.c", "*.cc", "*.cu")


def _flag_sets():
    # build_c.py is loaded by path: importing exprvm here would need numpy,
    # which is not a build requirement.
    scope = {"__file__": str(ROOT / "exprvm" / "kernels" / "build_c.py"), "__name__": "exprvm_build_c"}
    exec(compile((ROOT / "exprvm" / "kernels" / "build_c.py").read_text(), scope["__file__"], "exec"), scope)
    return scope["FLAG_SETS"], scope["MSVC_FLAGS"]


class OptionalBuildExt(build_ext):
    """build_ext that degrades: other flags, then no C extension at all."""

    def build_extension(self, ext):
        if ext.name != C_MODULE:
            return super().build_extension(ext)
        flag_sets, msvc = _flag_sets()
        if self.compiler.compiler_type == "msvc":
            flag_sets = [msvc]
        errors = []
        for name, cflags, ldflags in flag_sets:
            ext.extra_compile_args, ext.extra_link_args = list(cflags), list(ldflags)
            try:
                super().build_extension(ext)
                print(f"exprvm: C kernels built ({name})")
                self._drop_inplace_copies(keep_abi3=True)
                return None
            except Exception as e:  # noqa: BLE001 - any compiler failure means "try the next set"
                errors.append(f"{name}: {e}")
        self._skip(ext, "; ".join(errors))
        return None

    def run(self):
        if os.environ.get("EXPRVM_NO_C"):
            self.extensions = [e for e in self.extensions if e.name != C_MODULE]
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - e.g. no compiler at all, or cffi's C generation failed
            self._skip(None, str(e))

    def _skip(self, ext, why):
        msg = f"exprvm: C kernels NOT built, exprvm will use numpy ({why})"
        print(msg, file=sys.stderr)
        if ext is not None:
            if ext in self.extensions:
                self.extensions.remove(ext)
            # A library left by an earlier successful build must not be
            # packaged as if this build had produced it.
            if os.path.exists(self.get_ext_fullpath(ext.name)):
                os.remove(self.get_ext_fullpath(ext.name))
            self._drop_inplace_copies(keep_abi3=False)

    def _drop_inplace_copies(self, keep_abi3):
        """In a source tree (editable install), remove extension files that
        would shadow or outlive this build: `python -m exprvm.kernels.build_c`
        leaves a _ev_c.cpython-3XX-*.so, which Python prefers to .abi3.so."""
        if not (self.inplace or getattr(self, "editable_mode", False)):
            return
        for path in (ROOT / "exprvm" / "kernels").glob("_ev_c.*so"):
            if not (keep_abi3 and path.name.endswith(".abi3.so")):
                path.unlink()

    def get_outputs(self):
        # Only what was actually built, so a skipped extension is not expected
        # in the wheel (or in the editable install's mapping).
        return [p for p in super().get_outputs() if os.path.exists(p)]


class BuildPyWithCsrc(build_py):
    def run(self):
        super().run()
        dest = pathlib.Path(self.build_lib) / "exprvm" / "kernels" / "_csrc"
        dest.mkdir(parents=True, exist_ok=True)
        for pattern in CSRC_PATTERNS:
            for path in sorted((ROOT / "csrc").glob(pattern)):
                shutil.copy2(path, dest / path.name)


setup(
    cffi_modules=["exprvm/kernels/build_c.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithCsrc},
)
