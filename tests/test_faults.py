"""The fault catalog of issue 15 (the items outside the compiler and the machines): each
test here failed before its fix. Bad input must raise a typed ExprError naming the op,
the node or the entry, and the user's line; never a crash, never a silent wrong result.
"""
import os
import subprocess
import sys
import textwrap
import warnings
import zipfile

import numpy as np
import pytest

import exprvm as ev
from exprvm.errors import (CheckpointError, DTypeError, ExprError, GradError, IndexRangeError,
                           KernelError, NumericError, ShapeError)

HERE = os.path.basename(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def names_line(err, op):
    """The message names the op and a line of this file."""
    msg = str(err)
    assert op in msg, msg
    assert f"{HERE}:" in msg, msg


# -- kernels: every path to C checks the exact type and the real buffer size ---------------

_LIARS = textwrap.dedent("""
    import numpy as np
    from exprvm import kernels
    from exprvm.errors import KernelError

    N = 4194304
    F32 = np.dtype(np.float32)

    class Flags:
        aligned = c_contiguous = writeable = True

    class Liar(bytearray):
        # 16 real bytes that claim to be 4,194,304 float32 elements
        dtype, size, shape, flags, ndim = F32, N, (N,), Flags(), 1

    class Sub(np.ndarray):
        size = N

    def sub():
        return np.zeros(4, F32).view(Sub)

    big = np.zeros(N, F32)
    small = np.zeros(4, F32)
    cases = {
        "prebind out": lambda: kernels.prebind_unary("tanh", F32, N, "c")(big, Liar(16)),
        "prebind x": lambda: kernels.prebind_unary("tanh", F32, N, "c")(Liar(16), big),
        "prebind grad": lambda: kernels.prebind_unary_grad("tanh", F32, N, "c")(big, big, Liar(16), big),
        "checked subclass": lambda: kernels.unary("tanh", F32, "c")(sub()),
        "checked grad subclass": lambda: kernels.unary_grad("tanh", F32, "c")(sub(), sub(), sub()),
        "prebind subclass": lambda: kernels.prebind_unary("exp", F32, N, "c")(sub(), big),
        "bind subclass": lambda: kernels.bind_unary("tanh", sub(), small, "c")(),
        "bind fused subclass": lambda: kernels.bind_fused("tanh", (sub(), small), small, False, "c")(),
        "bind xent subclass": lambda: kernels.bind_xent(
            "cross_entropy", np.zeros((2, 3), F32), np.zeros(2, np.int64).view(Sub),
            np.zeros(2, F32), "c")(),
    }
    for name, call in cases.items():
        try:
            call()
        except KernelError as e:
            print("refused", name, "|", e)
        else:
            print("ACCEPTED", name)
""")


def test_kernel_calls_refuse_lookalikes_and_subclasses_without_crashing():
    if not ev.kernels.available("tanh", np.float32, "c"):
        pytest.skip("C kernels not built")
    # NOTE: in a subprocess: before the fix the first case was a segmentation fault.
    proc = subprocess.run([sys.executable, "-c", _LIARS], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, f"rc {proc.returncode}: {proc.stdout}{proc.stderr}"
    lines = proc.stdout.splitlines()
    assert len(lines) == 9 and all(ln.startswith("refused") for ln in lines), proc.stdout
