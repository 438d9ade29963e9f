"""The host twin's own guarantees: launches run their indices in a shuffled, seeded order
(a kernel body that depends on the order fails here, as on a GPU), and the CUDA code runs
twice more: built with AddressSanitizer and UndefinedBehaviorSanitizer (a read or write
outside a buffer, or undefined behaviour, in any kernel ends the run) and built with fused
multiply-adds (ev_math.h's FMA branches, the ones a GPU takes). Each build runs every
entry point's check (test_cuda_entry_points.py), the kernel tests (test_cuda_kernels.py)
and the CUDA graph replays (test_cuda_graphs.py: a replay over a buffer freed meanwhile
would be a report) in a process of its own."""
import os
import pathlib
import subprocess
import sys

import pytest
from cffi import FFI

from exprvm.device import twin
from exprvm.kernels import build_cuda
from requires import require

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUITES = ["tests/test_cuda_entry_points.py", "tests/test_cuda_kernels.py", "tests/test_cuda_graphs.py"]


def _twin(flavor):
    require(build_cuda.find_cxx() is not None, "no C++ compiler for the CUDA host twin")
    ffi = FFI()
    ffi.cdef(twin.TWIN_CDEF)
    return ffi, ffi.dlopen(str(build_cuda.build_twin(flavor)))


def test_launch_orders_are_seeded_permutations():
    ffi, lib = _twin("plain")
    try:
        lib.ev_twin_set_order(0)
        assert lib.ev_twin_order(50) == ffi.NULL             # seed 0: in order

        def orders(seed, n=50, k=3):
            lib.ev_twin_set_order(seed)
            return [list(ffi.unpack(lib.ev_twin_order(n), n)) for _ in range(k)]
        first, again, other = orders(1), orders(1), orders(2)
        assert first == again and first != other
        assert all(sorted(o) == list(range(50)) for o in first + other)
        assert len({tuple(o) for o in first}) == 3 and first[0] != list(range(50))    # fresh per launch
    finally:
        lib.ev_twin_set_order(twin.DEFAULT_ORDER)


def test_only_the_fma_build_takes_the_fused_multiply_add_branches():
    require(build_cuda.find_cxx() is not None, "no C++ compiler for the CUDA host twin")
    if "fma" not in open("/proc/cpuinfo").read().split():
        pytest.skip("this CPU has no FMA instructions")
    assert _twin("plain")[1].ev_twin_fma() == 0
    assert _twin("fma")[1].ev_twin_fma() == 1


def _run_suites(flavor, extra_env):
    env = dict(os.environ, EXPRVM_TWIN_FLAVOR=flavor, **extra_env)
    env.pop("HYPOTHESIS_PROFILE", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_the_sanitized_twin_runs_every_entry_point_and_the_kernel_tests(tmp_path):
    require(build_cuda.find_cxx() is not None, "no C++ compiler for the CUDA host twin")
    runtime = build_cuda.sanitizer_runtime()
    require(runtime is not None, "the C++ compiler has no AddressSanitizer / UBSan runtime")
    build_cuda.build_twin("sanitize")
    # NOTE: a report ends the process; pytest's captured output dies with it, so the
    # sanitizers write their reports to files of their own
    proc = _run_suites("sanitize", {"LD_PRELOAD": runtime,
                                    "ASAN_OPTIONS": f"detect_leaks=0:log_path={tmp_path / 'asan'}",
                                    "UBSAN_OPTIONS": f"print_stacktrace=1:log_path={tmp_path / 'ubsan'}"})
    reports = "".join(f.read_text() for f in sorted(tmp_path.iterdir()))
    assert not reports, reports[:4000]
    assert proc.returncode == 0 and " passed" in proc.stdout, (proc.stdout + proc.stderr)[-4000:]


def test_the_fma_twin_runs_every_entry_point_and_the_kernel_tests():
    require(build_cuda.find_cxx() is not None, "no C++ compiler for the CUDA host twin")
    if "fma" not in open("/proc/cpuinfo").read().split():
        pytest.skip("this CPU has no FMA instructions")
    proc = _run_suites("fma", {})
    assert proc.returncode == 0 and " passed" in proc.stdout, (proc.stdout + proc.stderr)[-4000:]
