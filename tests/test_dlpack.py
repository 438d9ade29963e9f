"""Zero-copy exchange: ev.from_dlpack wraps DLPack producers' host memory in place, and
feeds and parameter values read __dlpack__ / __array__ objects without a copy when dtype
and layout fit (checked by memory address). Torch and JAX parts skip without them."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import exprvm as ev

F32 = np.float32


class ArrayLike:
    """An object with only numpy's array protocol, over an array it owns."""

    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a


def address(a):
    return np.asarray(a).__array_interface__["data"][0]


def test_from_dlpack_of_numpy_shares_memory_and_strides():
    a = np.arange(12, dtype=F32).reshape(3, 4)[:, 1:]
    v = ev.from_dlpack(a)
    assert address(v) == address(a) and v.strides == a.strides
    v[0, 0] = 42
    assert a[0, 0] == 42
    with pytest.raises(ev.ExprError, match="has no __dlpack__"):
        ev.from_dlpack([1.0, 2.0])


def test_array_protocol_objects_feed_and_bind_without_a_copy():
    g = ev.Graph()
    x = g.tensor("x", (3, 4), F32)
    src = np.ones((3, 4), F32)
    ev.let(x, ArrayLike(src))
    assert x.value is src
    y = ev.sum(x * 2.0)
    yv, xv = ev.LispMachine(g, outputs=[y, x]).run({x: ArrayLike(src)}, borrow=True)
    assert float(yv) == 24.0 and address(xv) == address(src)


def test_a_feed_of_the_wrong_dtype_is_refused_not_cast():
    torch = pytest.importorskip("torch")
    g = ev.Graph()
    x = g.tensor("x", (3,), F32)
    with pytest.raises(ev.FeedError, match="fed dtype float64"):
        ev.let(x, torch.zeros(3, dtype=torch.float64))


def test_torch_tensors_are_wrapped_fed_and_bound_in_place():
    torch = pytest.importorskip("torch")
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    v = ev.from_dlpack(t)
    assert address(v) == t.data_ptr()
    v[1, 2] = -1.0
    assert float(t[1, 2]) == -1.0
    tt = t.t()                                   # a transposed view: strides kept
    assert ev.from_dlpack(tt).strides == (4, 12) and address(ev.from_dlpack(tt)) == tt.data_ptr()
    with pytest.raises(ev.ExprError, match="detach"):
        ev.from_dlpack(torch.ones(2, requires_grad=True))

    g = ev.Graph()
    x = g.tensor("x", (64, 128), F32)             # big enough for the tape to read it in place
    w0 = torch.zeros(128, 8)
    W = g.tensor("W", (128, 8), F32, value=w0)
    y = ev.sum(ev.tanh(x @ W))
    gW = ev.grad(y, W)
    xs = torch.randn(64, 128)
    # borrow=True: the machines' own arrays, so x's is the array the run read
    _, xv = ev.LispMachine(g, outputs=[y, x]).run({x: xs}, borrow=True)
    assert address(xv) == xs.data_ptr()                       # the walk reads the tensor
    assert address(W.value) == w0.data_ptr() and isinstance(W.value, np.ndarray)
    yv, _, xv = ev.TapeMachine(g, outputs=[y, gW, x]).run({x: xs}, borrow=True)
    assert address(xv) == xs.data_ptr()                       # the tape reads it in place too
    np.testing.assert_allclose(yv, torch.tanh(xs @ torch.zeros(128, 8)).sum().item(), atol=1e-6)


def test_a_parameter_bound_to_a_torch_tensor_is_updated_in_place_by_a_solver():
    torch = pytest.importorskip("torch")
    w = torch.ones(4)
    g = ev.Graph()
    W = g.tensor("W", (4,), F32, value=w)
    assert address(W.value) == w.data_ptr()
    cost = ev.sum(W * W)
    ev.grad(cost, W)
    ev.TapeMachine(g, outputs=[cost]).run()
    ev.solvers.SGD(lr=0.25).step([W])
    np.testing.assert_allclose(w.numpy(), 0.5)                 # the tensor itself moved


def test_a_torch_tensor_that_requires_grad_is_a_feed_error_naming_the_input():
    torch = pytest.importorskip("torch")
    g = ev.Graph()
    x = g.tensor("x", (2,), F32)
    with pytest.raises(ev.FeedError, match="input x .*requires grad"):
        ev.LispMachine(g, outputs=[x * 2.0]).run({x: torch.ones(2, requires_grad=True)})


JAX_CHECK = """
import numpy as np, jax.numpy as jnp, exprvm as ev
addr = lambda a: np.asarray(a).__array_interface__["data"][0]
a = jnp.arange(8.0, dtype=jnp.float32).reshape(2, 4)
v = ev.from_dlpack(a)
assert addr(v) == a.unsafe_buffer_pointer() and not v.flags.writeable
g = ev.Graph()
x = g.tensor("x", (2, 4), np.float32)
y = ev.sum(x)
yv, xv = ev.LispMachine(g, outputs=[y, x]).run({x: a}, borrow=True)
assert addr(xv) == a.unsafe_buffer_pointer() and float(yv) == 28.0
W = g.tensor("W", (2, 4), np.float32, value=a)   # read-only memory: a solver could not update it
assert W.value.flags.writeable and addr(W.value) != a.unsafe_buffer_pointer()
np.testing.assert_array_equal(W.value, np.asarray(a))
"""


def test_jax_arrays_are_read_in_place_and_copied_only_into_parameters():
    # NOTE: in a process of its own: JAX starts threads, and other tests fork
    pytest.importorskip("jax")
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", JAX_CHECK], cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(root), JAX_PLATFORMS="cpu"), timeout=120)
    assert proc.returncode == 0, proc.stderr
