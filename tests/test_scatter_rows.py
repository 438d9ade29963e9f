"""The row scatter-add C kernel (take's gradient along axis 0) against np.add.at, its
checks, and the tape using it."""
import numpy as np
import pytest

import exprvm as ev
from exprvm import kernels
from exprvm.errors import IndexRangeError, KernelError

needs_c = pytest.mark.skipif(not ev.kernels.available("tanh", np.float32, "c"), reason="no C backend")


def reference(g, ids, rows):
    out = np.zeros((rows,) + g.shape[ids.ndim:], g.dtype)
    np.add.at(out, ids, g)
    return out


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ids_shape, width, rows", [((25,), (128,), 65), ((3, 4), (5, 2), 7), ((0,), (3,), 4),
                                                    ((9,), (), 2), ((1,), (1,), 1)])
def test_scatter_rows_matches_add_at(dtype, ids_shape, width, rows):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, rows, ids_shape).astype(np.int64)      # repeats included
    g = rng.normal(size=ids_shape + width).astype(dtype)
    out = np.full((rows,) + width, np.nan, dtype)                 # every element is written
    assert kernels.bind_scatter_rows(g, ids, out, "c")() is out
    np.testing.assert_allclose(out, reference(g, ids, rows), rtol=1e-6 if dtype == np.float32 else 1e-14)


@needs_c
def test_scatter_rows_refuses_bad_ids_and_bad_arrays_before_writing():
    g, out = np.ones((3, 4), np.float32), np.full((5, 4), 7.0, np.float32)
    for bad in ([0, 5, 1], [0, -1, 2]):
        run = kernels.bind_scatter_rows(g, np.array(bad, np.int64), out, "c")
        with pytest.raises(IndexRangeError, match=r"\[0, 5\)"):
            run()
        assert np.all(out == 7.0)
    with pytest.raises(KernelError):
        kernels.bind_scatter_rows(g, np.array([0, 1, 2], np.int32), out, "c")
    with pytest.raises(KernelError):
        kernels.bind_scatter_rows(g[:, ::2], np.array([0, 1, 2]), np.zeros((5, 2), np.float32), "c")
    with pytest.raises(KernelError):
        kernels.bind_scatter_rows(g, np.array([0, 1]), out, "c")          # shapes disagree


@needs_c
def test_the_tape_runs_take_grad_in_c_and_agrees_with_numpy():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 6, (4, 5))
    for backend, tag in (("c", "take_grad[c]"), ("numpy", None)):
        g = ev.Graph()
        table = g.matrix("table", (6, 3), value=rng.normal(size=(6, 3)))
        t = g.constant(ids)
        gt = ev.grad(ev.sum(ev.take(table, t, axis=0) ** 2), table)
        m = ev.TapeMachine(g, outputs=[gt], backend=backend)
        m.run()
        if tag:
            assert tag in str(m.program)
        want = reference(2 * table.value[ids], ids, 6)
        np.testing.assert_allclose(gt.value, want, rtol=1e-12)
