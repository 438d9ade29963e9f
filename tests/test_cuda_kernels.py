"""The training step's CUDA kernels and cuBLAS products against numpy formulas.

Every test runs on the host twin (the same kernel sources as plain C++, see
tests/cuda_twin.py) and, marked `cuda`, on a real GPU when there is one.
"""
import numpy as np
import pytest

import exprvm.cuda as cuda
from exprvm.errors import DTypeError, IndexRangeError, KernelError, ShapeError
from exprvm.device import cublas, launch as dk, nn as dn
from exprvm.kernels import reference

from cuda_twin import device, twin  # noqa: F401  (fixtures)

FLOATS = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def rand(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def near(got, want, dtype, scale=None):
    want = np.asarray(want, np.float64)
    scale = np.abs(want).max(initial=1.0) if scale is None else scale
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=TOL[dtype] * scale)


def poisoned(shape, dtype):
    """A device buffer full of NaN, so an element a kernel forgets to write shows."""
    return cuda.to_device(np.full(shape, np.nan, dtype))


# -- elementwise ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", ["tanh", "sigmoid", "relu", "softplus"])
def test_unary_kernels_and_grads(device, op, dtype):
    x = np.concatenate([rand(300, dtype) * 4, np.array([0, -0.0, 50, -50, np.inf, -np.inf], dtype)])
    g = rand(x.shape, dtype, 1)
    with cuda.tidy():
        dx = cuda.to_device(x)
        y = dk.unary(op, dtype)(dx)
        want = reference.FORWARD[op](x, None)
        near(y.numpy()[np.isfinite(want)], want[np.isfinite(want)], dtype)
        assert np.array_equal(np.isinf(y.numpy()), np.isinf(want))
        dg = dk.unary_grad(op, dtype)(dx, y, cuda.to_device(g))
        near(dg.numpy(), reference.GRAD[op](x, want, g, None), dtype)


def test_neg(device):
    x = np.array([1.5, -0.0, 0.0, np.inf, np.nan, -3.0], np.float32)
    with cuda.tidy():
        got = dk.unary("neg", np.float32)(cuda.to_device(x)).numpy()
    np.testing.assert_array_equal(got, -x)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(-x)), "-(+0) is -0, as numpy has it"


BCAST_CASES = [((5, 7), (7,)), ((4, 1, 3), (1, 5, 3)), ((), (3, 2)), ((6, 1), (6, 6)), ((2, 3), (2, 3))]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", dk.BCAST_OPS)
def test_broadcasting_binary_ops(device, op, dtype):
    formula = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
               "div": lambda a, b: a / b, "maximum": lambda a, b: np.where((a > b) | np.isnan(a), a, b),
               "minimum": lambda a, b: np.where((a < b) | np.isnan(a), a, b)}[op]
    with cuda.tidy():
        for k, (sa, sb) in enumerate(BCAST_CASES):
            a, b = rand(sa, dtype, k), rand(sb, dtype, k + 10) + (3 if op == "div" else 0)
            out = poisoned(np.broadcast_shapes(sa, sb), dtype)
            dk.bcast(op, cuda.to_device(a), cuda.to_device(b), out)
            near(out.numpy(), formula(a.astype(np.float64), b.astype(np.float64)), dtype)
        nan = np.array([np.nan, 1.0], dtype)
        got = dk.bcast(op, cuda.to_device(nan), cuda.to_device(nan[::-1].copy())).numpy()
        assert np.isnan(got).all(), "NaN propagates in either operand"


@pytest.mark.parametrize("dtype", FLOATS)
def test_views_feed_strided_kernels(device, dtype):
    x = rand((6, 8), dtype)
    with cuda.tidy():
        d = cuda.to_device(x)
        views = {"slice": (d[:, 2:6], x[:, 2:6]), "transpose": (d.T, x.T), "step": (d[::2, ::-3], x[::2, ::-3]),
                 "int index": (d[3], x[3]), "broadcast": (d[1:2].broadcast_to((4, 6, 8)), np.broadcast_to(x[1:2], (4, 6, 8))),
                 "reshape": (d.reshape(4, 12), x.reshape(4, 12)), "new axis": (d[None, :, 1], x[None, :, 1])}
        for name, (dv, xv) in views.items():
            assert dv.shape == xv.shape, name
            np.testing.assert_array_equal(dv.numpy(), xv, err_msg=name)
            np.testing.assert_array_equal(np.asarray(dv), xv, err_msg=name)
            near(dk.bcast("mul", dv, cuda.to_device(np.asarray(2.0, dtype))).numpy(), 2 * xv, dtype)
        out = cuda.to_device(np.zeros((8, 6), dtype))
        dk.eager(dk.bind_copy, d.T[:, ::-1], out)
        np.testing.assert_array_equal(out.numpy(), x.T[:, ::-1])
        region = out[2:5, 1:]
        dk.eager(dk.bind_copy, d[1:4, :5], region)
        want = x.T[:, ::-1].copy()
        want[2:5, 1:] = x[1:4, :5]
        np.testing.assert_array_equal(out.numpy(), want)
        assert d.T.__cuda_array_interface__["strides"] == x.T.strides
        with pytest.raises(KernelError):
            d.T.reshape(48)           # numpy would copy: no view
        with pytest.raises(KernelError):
            d[np.array([0, 1])]       # advanced index: use take


def test_where(device):
    c = np.random.default_rng(0).random((4, 5)) > 0.5
    x, y = rand((4, 5), np.float32), rand((5,), np.float32, 1)
    with cuda.tidy():
        got = dk.where(cuda.to_device(c), cuda.to_device(x), cuda.to_device(y)).numpy()
    np.testing.assert_array_equal(got, np.where(c, x, y))


# -- reductions, softmax, cross-entropy -------------------------------------------------------

REDUCTIONS = [((3000, 5), (0,)), ((7, 9, 4), (1,)), ((7, 9, 4), (0, 1)), ((50, 40), (0, 1)),
              ((5, 2000), (1,)), ((3, 1, 4), (1,)), ((6, 4), ())]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("kind", ["sum", "mean", "max"])
def test_reductions(device, kind, dtype):
    with cuda.tidy():
        for k, (shape, axes) in enumerate(REDUCTIONS):
            x = rand(shape, dtype, k)
            x64 = x.astype(np.float64)
            want = {"sum": x64.sum(axes), "mean": x64.mean(axes) if axes else x64,
                    "max": x64.max(axes) if axes else x64}[kind]
            got = dn.reduce(kind, cuda.to_device(x), axes, keepdims=True).numpy()
            assert got.shape == np.asarray(x64.sum(axes, keepdims=True)).shape
            near(got.reshape(np.shape(want)), want, dtype, scale=np.abs(x64).sum(axes).max())
        assert dn.reduce_parts(1, 3000, 5) > 1, "the first case exercises the two-pass path"
        x = np.array([[1.0, np.nan, 3.0], [0.0, 1.0, 2.0]], dtype)
        np.testing.assert_array_equal(dn.reduce("max", cuda.to_device(x), (1,)).numpy(), [np.nan, 2.0])


def test_reduce_plan():
    assert dn.reduce_plan((6, 4, 5), (1,)) == (6, 4, 5)
    assert dn.reduce_plan((6, 1, 4), (0, 2)) == (1, 24, 1)     # size-1 axes do not split the run
    assert dn.reduce_plan((6, 4, 5), (0, 2)) is None
    assert dn.reduce_plan((), ()) == (1, 1, 1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_and_log_softmax(device, dtype):
    x = rand((3, 5, 4), dtype) * 3
    x[0, 0, 0] = 80.0                       # would overflow without the max shift in float32
    with cuda.tidy():
        for axis in (0, 1, -1):
            e = np.exp(x.astype(np.float64) - x.max(axis, keepdims=True))
            p = e / e.sum(axis, keepdims=True)
            near(dn.softmax(cuda.to_device(x), axis).numpy(), p, dtype)
            near(dn.softmax(cuda.to_device(x), axis, log=True).numpy(), np.log(p), dtype, scale=20)


@pytest.mark.parametrize("dtype", FLOATS)
def test_cross_entropy_and_fused_gradient(device, dtype):
    z, t = rand((2, 6, 5), dtype) * 2, np.random.default_rng(3).integers(0, 5, (2, 6))
    z64 = z.astype(np.float64)
    lse = np.log(np.exp(z64).sum(-1))
    picked = np.take_along_axis(z64, t[..., None], -1)[..., 0]
    p = np.exp(z64 - lse[..., None])
    with cuda.tidy():
        dz, dt = cuda.to_device(z), cuda.to_device(t)
        near(dn.cross_entropy(dz, dt).numpy(), lse - picked, dtype)
        near(dn.xent_grad(dz, dt).numpy(), p - np.eye(5)[t], dtype)
        bad = cuda.to_device(np.where(t == t[0, 0], 7, t))
        loss = dn.cross_entropy(dz, bad).numpy()
        assert np.isnan(loss[t == t[0, 0]]).all() and np.isfinite(loss[t != t[0, 0]]).all()
        with pytest.raises(IndexRangeError, match="out of range"):
            dk.check_status("step 1")
        dk.check_status()                   # cleared by the check that reported it
        near(dn.cross_entropy(dz, cuda.to_device(t.astype(np.int32))).numpy(), lse - picked, dtype)
        near(dn.xent_grad(dz, cuda.to_device(t.astype(np.int32))).numpy(), p - np.eye(5)[t], dtype)
        with pytest.raises(DTypeError):
            dn.cross_entropy(dz, cuda.to_device(t.astype(np.int16)))


# -- data movement ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
def test_take_one_hot_and_scatter_add(device, dtype):
    table = rand((10, 3, 4), dtype)
    ids = np.array([[1, 9, 1], [0, 1, 4]])
    with cuda.tidy():
        dt_, di = cuda.to_device(table), cuda.to_device(ids)
        for axis in (0, 1, 2):
            idx = ids % table.shape[axis]
            got = dn.take(dt_, cuda.to_device(idx), axis).numpy()
            np.testing.assert_array_equal(got, np.take(table, idx, axis))
        g = rand((2, 3, 3, 4), dtype, 5)
        want = np.zeros(table.shape)
        for (j, k), row in np.ndenumerate(ids):     # a plain loop: repeats accumulate
            want[row] += g[j, k]
        near(dn.take_grad(cuda.to_device(g), di, table.shape).numpy(), want, dtype)
        i32 = cuda.to_device(ids.astype(np.int32))
        np.testing.assert_array_equal(dn.take(dt_, i32).numpy(), table[ids])
        near(dn.take_grad(cuda.to_device(g), i32, table.shape).numpy(), want, dtype)
        for idt in (np.int64, np.int32):
            oh = dn.one_hot(cuda.to_device(ids.astype(idt)), 10, dtype).numpy()
            np.testing.assert_array_equal(oh, (ids[..., None] == np.arange(10)).astype(dtype))
        oh = dn.one_hot(cuda.to_device(np.array([3, 12])), 10, dtype).numpy()
        assert np.isnan(oh[1]).all() and oh[0, 3] == 1 and oh[0].sum() == 1
        with pytest.raises(IndexRangeError):
            dk.check_status()
        got = dn.take(dt_, cuda.to_device(np.array([2, -1, 10])), 0).numpy()
        assert np.isnan(got[1:]).all() and np.array_equal(got[0], table[2])
        with pytest.raises(IndexRangeError):
            dk.check_status()


@pytest.mark.parametrize("dtype", FLOATS)
def test_concat_many_and_strided_pieces(device, dtype):
    pieces = [rand((2, k % 3 + 1, 3), dtype, k) for k in range(40)]     # more than one launch
    with cuda.tidy():
        dps = [cuda.to_device(p) for p in pieces]
        np.testing.assert_array_equal(dn.concat(dps, 1).numpy(), np.concatenate(pieces, 1))
        mixed = [dps[0], dps[1].transpose(0, 1, 2)[:, ::-1], dps[2]]
        want = np.concatenate([pieces[0], pieces[1][:, ::-1], pieces[2]], 1)
        np.testing.assert_array_equal(dn.concat(mixed, 1).numpy(), want)
        same = (0, 3, 6, 9)                                              # stack: concat of (1, ...) views
        stacked = dn.concat([dps[k].reshape((1,) + dps[k].shape) for k in same], 0).numpy()
        np.testing.assert_array_equal(stacked, np.stack([pieces[k] for k in same]))
        with pytest.raises(ShapeError):
            dn.concat([dps[0], cuda.to_device(rand((3, 1, 3), dtype))], 1)


# -- cuBLAS --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
def test_matmul_row_major_by_operand_swapping(device, dtype):
    A, B = rand((4, 6), dtype), rand((6, 3), dtype, 1)
    with cuda.tidy():
        dA, dB = cuda.to_device(A), cuda.to_device(B)
        dAt, dBt = cuda.to_device(A.T.copy()).T, cuda.to_device(B.T.copy()).T   # transposed views
        wide = cuda.to_device(rand((4, 10), dtype, 2))
        cases = {"NN": (dA, dB, A, B), "TN": (dAt, dB, A, B), "NT": (dA, dBt, A, B),
                 "TT": (dAt, dBt, A, B), "column slice": (wide[:, 2:8], dB, wide.numpy()[:, 2:8], B),
                 "row of W": (dA[1:2], dB, A[1:2], B)}
        for name, (da, db, a, b) in cases.items():
            out = poisoned((a.shape[0], b.shape[1]), dtype)
            cublas.matmul(da, db, out)
            near(out.numpy(), a.astype(np.float64) @ b, dtype, scale=10)
        A3, B3 = rand((5, 4, 6), dtype, 3), rand((5, 6, 3), dtype, 4)
        dA3, dB3 = cuda.to_device(A3), cuda.to_device(B3)
        near(cublas.matmul(dA3, dB3).numpy(), A3.astype(np.float64) @ B3, dtype, scale=10)   # batched
        near(cublas.matmul(dA3, dB).numpy(), A3.astype(np.float64) @ B, dtype, scale=10)     # one GEMM
        near(cublas.matmul(dA, dB3).numpy(), A.astype(np.float64) @ B3, dtype, scale=10)     # stride 0
        near(cublas.matmul(dA3.transpose(0, 2, 1).transpose(0, 2, 1), dB3).numpy(), A3 @ B3.astype(np.float64), dtype, scale=10)
        assert cublas.plan_gemm(dA3, dB, cuda.empty((5, 4, 3), dtype))[-1] == 1, "folded into one GEMM"
        with pytest.raises(KernelError):
            cublas.matmul(dA[:, ::2], dB[:3])          # no unit stride: no leading dimension
        with pytest.raises(ShapeError):
            cublas.matmul(dA, dA)
        with pytest.raises(DTypeError):
            cublas.matmul(dA, cuda.to_device(B.astype(np.float64 if dtype == np.float32 else np.float32)))


# -- argument checks --------------------------------------------------------------------------

def test_wrappers_check_before_launching(twin):
    x = rand((4, 5), np.float32)
    d = cuda.to_device(x)
    with pytest.raises(KernelError):
        dk.bcast("add", x, d)                                      # a host array
    with pytest.raises(DTypeError):
        dk.bcast("add", d, cuda.to_device(x.astype(np.float64)))
    with pytest.raises(ShapeError):
        dk.bcast("add", d, cuda.to_device(rand((3,), np.float32)))
    with pytest.raises(ShapeError):
        dk.bcast("add", d, d, cuda.empty((5, 4), np.float32))
    with pytest.raises(KernelError):
        dk.unary("tanh", np.float32)(d.T)                        # needs contiguous
    with pytest.raises(KernelError):
        dn.softmax(d.T)
    with pytest.raises(DTypeError):
        dk.copy_strided(cuda.to_device(np.ones((3, 3), bool)).T)  # 1-byte elements: no strided copy
    with pytest.raises(ShapeError):
        dn.reduce("sum", cuda.to_device(rand((3, 4, 5), np.float32)), (0, 2))
    view = d[1:3]
    d.free()
    assert view.freed
    with pytest.raises(KernelError):
        dk.bcast("add", view, view)
    with pytest.raises(KernelError):
        view.numpy()
    with pytest.raises(KernelError):
        cuda.empty(4, np.float32).apply_view(lambda a: np.lib.stride_tricks.as_strided(a, (8,), (4,)))
