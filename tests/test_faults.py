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


# -- solvers never step silently on nothing ---------------------------------------------------

def _param(name, value, grad=None):
    g = ev.Graph()
    p = g.tensor(name, np.shape(value), value=np.array(value, dtype=float))
    p.grad = grad
    return p


def test_solver_step_with_no_gradient_anywhere_raises_naming_the_params():
    W, b = _param("W", np.ones((2, 2))), _param("b", np.zeros(2))
    opt = ev.solvers.Adam(lr=0.1)
    with pytest.raises(GradError, match="no parameter has a gradient.*'W', 'b'"):
        opt.step([W, b])
    np.testing.assert_array_equal(W.value, np.ones((2, 2)))
    assert opt.steps == 0


def test_solver_warns_once_for_params_without_gradient_and_strict_raises():
    W, b = _param("W", np.ones(2), np.ones(2)), _param("b", np.zeros(2))
    opt = ev.solvers.SGD(lr=0.5)
    with pytest.warns(ev.solvers.MissingGradWarning, match="no gradient for 'b'") as seen:
        opt.step([W, b])
    assert len(seen) == 1 and HERE in seen[0].filename   # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # once: a second step is quiet
        opt.step([W, b])
    np.testing.assert_allclose(W.value, [0.0, 0.0])
    np.testing.assert_array_equal(b.value, [0.0, 0.0])
    W.grad = np.ones(2)
    with pytest.raises(GradError, match="'b'.*strict"):
        ev.solvers.SGD(lr=0.5, strict=True).step([W, b])
    np.testing.assert_allclose(W.value, [0.0, 0.0])     # nothing was updated


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_solver_refuses_a_non_finite_gradient(bad):
    W = _param("W", np.ones(3), np.array([0.1, bad, 0.2]))
    b = _param("b", np.zeros(2), np.ones(2))
    opt = ev.solvers.Adam(lr=0.1, clip=1.0)              # clipping must not hide it
    with pytest.raises(NumericError, match="'W' \\(\\d NaN, \\d Inf of 3\\)"):
        opt.step([W, b])
    np.testing.assert_array_equal(W.value, np.ones(3))
    np.testing.assert_array_equal(b.value, np.zeros(2))


def test_solver_nonfinite_skip_skips_the_whole_step_and_counts_it():
    W = _param("W", np.ones(2, np.float32).astype(float), np.array([np.nan, 1.0]))
    b = _param("b", np.zeros(2), np.ones(2))
    opt = ev.solvers.Momentum(lr=0.1, nonfinite="skip")
    assert opt.step([W, b]) is False
    assert opt.skipped == 1 and opt.steps == 0
    np.testing.assert_array_equal(b.value, np.zeros(2))
    W.grad = np.array([1.0, 1.0])
    assert opt.step([W, b]) is True
    np.testing.assert_allclose(b.value, [-0.1, -0.1])
    with pytest.raises(ExprError, match="nonfinite"):
        ev.solvers.SGD(nonfinite="ignore")


def test_solver_refuses_a_gradient_that_overflows_in_the_params_dtype():
    g = ev.Graph()
    W = g.vector("W", 2, np.float32, value=np.ones(2, np.float32))
    W.grad = np.array([1e300, 1.0])                      # float64, Inf once cast to float32
    with pytest.raises(NumericError, match="'W' \\(0 NaN, 1 Inf"):
        ev.solvers.SGD(lr=0.1).step([W])
    np.testing.assert_array_equal(W.value, np.ones(2, np.float32))
