"""The C float32 matrix product (csrc/ev_gemm.c) and the per-sample convolutions built
on it (csrc/ev_conv_gemm.c).

The product is fuzzed against numpy in float64 over odd sizes around its blocking
(tiles of 8 x 48, K blocks of 256, column blocks of 480), strided and transposed
operands with NaN and Inf elements, a weight broadcast over the batch, the batch summed
into one C and added to C, every output inside guards (nothing written outside it) and
every operand inside NaN guards; the convolutions over random geometries and groups, with every output inside
a guarded buffer (nothing written outside it) and NaN guards around every input
(nothing read outside it). The binding's checks must raise typed errors before C
is called.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import exprvm as ev
from exprvm.errors import KernelError, ShapeError
from exprvm.kernels import conv as kc
from exprvm.kernels import conv_bind as kb
from exprvm.kernels import gemm
from budget import examples

pytestmark = pytest.mark.skipif(not gemm.available(), reason="C extension with the product not built")

F32 = np.float32
GUARD = 64


def reference(a, b):
    return np.matmul(a.astype(np.float64), b.astype(np.float64))


def close(got, want, k):
    # float32 sums of k products of unit normals: error grows like sqrt(k) * eps
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6 * max(k, 1) ** 0.5 * 8)


def close_special(got, want, k):
    """close(), where NaN and infinities (from NaN / Inf operands) sit where numpy's are."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = np.isfinite(want)
    np.testing.assert_array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)])
    close(got[fin], want[fin], k)


def operand(rng, shape, special):
    """A float32 operand inside a NaN-guarded buffer (a read outside it shows); special: a
    few NaN and +-Inf elements."""
    x, buf = guarded(shape, np.nan)
    x[...] = rng.standard_normal(shape)
    if special and x.size:
        flat = x.reshape(-1)
        pick = rng.choice(flat.size, size=min(3, flat.size), replace=False)
        flat[pick] = rng.choice([np.nan, np.inf, -np.inf], size=pick.size)
    return x, buf


@settings(max_examples=examples(40), deadline=None)
@given(batch=st.integers(0, 3), m=st.sampled_from([0, 1, 7, 8, 9, 17, 200]),
       n=st.sampled_from([0, 1, 47, 48, 49, 97, 481, 530]), k=st.sampled_from([0, 1, 5, 255, 256, 257, 600]),
       a_t=st.booleans(), b_t=st.booleans(), special=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_product_against_numpy_over_sizes_and_layouts(batch, m, n, k, a_t, b_t, special, seed):
    rng = np.random.default_rng(seed)
    a, ab = operand(rng, (batch, k, m) if a_t else (batch, m, k), special)
    b, bb = operand(rng, (batch, n, k) if b_t else (batch, k, n), special)
    a, b = (a.swapaxes(1, 2) if a_t else a), (b.swapaxes(1, 2) if b_t else b)
    with np.errstate(invalid="ignore", over="ignore"):
        want = reference(a, b)
        summed_want = want.sum(0)
    out, ob = guarded((batch, m, n), -7.0)          # every output inside guards
    gemm.matmul(a, b, out)
    close_special(out, want, k)
    summed, sb = guarded((m, n), np.nan)            # overwritten, never read
    gemm.matmul(a, b, summed)
    close_special(summed, summed_want, k * max(batch, 1))
    start = rng.standard_normal((m, n)).astype(F32)
    added, db = guarded((m, n), -7.0)
    added[...] = start
    gemm.matmul(a, b, added, accumulate=True)
    with np.errstate(invalid="ignore", over="ignore"):
        close_special(added, start + summed_want, k * max(batch, 1))
    assert guards_hold(ob, -7.0) and guards_hold(db, -7.0) and guards_hold(sb, np.nan), "written outside out"
    assert guards_hold(ab, np.nan) and guards_hold(bb, np.nan)


def test_a_weight_broadcast_over_the_batch_and_strided_views():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 144)).astype(F32)
    cols = rng.standard_normal((4, 144, 300)).astype(F32)
    close(gemm.matmul(np.broadcast_to(w, (4, 32, 144)), cols), reference(w, cols), 144)
    big = rng.standard_normal((4, 40, 200)).astype(F32)
    a, b = big[:, 3:20:2, 10:150:3], rng.standard_normal((4, 200, 70)).astype(F32)[:, 5:52, ::2]
    close(gemm.matmul(a, b), reference(a, b), a.shape[2])
    out_buf = np.full((4, 9, 60), 7.0, F32)
    out = out_buf[:, :, 10:45]                      # rows of C with a stride of their own
    gemm.matmul(a, b, out)
    close(out, reference(a, b), a.shape[2])
    assert (out_buf[:, :, :10] == 7).all() and (out_buf[:, :, 45:] == 7).all()


def test_the_products_checks_refuse_before_calling_c():
    a, b = np.ones((2, 3, 4), F32), np.ones((2, 4, 5), F32)
    with pytest.raises(KernelError, match="float32"):
        gemm.matmul(a.astype(np.float64), b)
    with pytest.raises(ShapeError, match="cannot multiply"):
        gemm.matmul(a, np.ones((2, 3, 5), F32))
    with pytest.raises(ShapeError, match="out has shape"):
        gemm.matmul(a, b, np.zeros((2, 3, 6), F32))
    with pytest.raises(KernelError, match="overlaps a"):
        gemm.matmul(a, b, a.reshape(-1)[:15].reshape(3, 5))
    with pytest.raises(KernelError, match="rows must be contiguous"):
        gemm.matmul(a, b, np.zeros((2, 5, 3), F32).swapaxes(1, 2))
    with pytest.raises(KernelError, match="overlap|C-contiguous"):    # batches written over each other
        gemm.matmul(a, b, np.lib.stride_tricks.as_strided(np.zeros(20, F32), (2, 3, 5), (0, 20, 4)))
    with pytest.raises(KernelError, match="numpy.ndarray"):
        gemm.matmul(a.view(np.recarray), b)
    with pytest.raises(KernelError, match="read-only"):
        gemm.matmul(a, b, np.broadcast_to(np.zeros((3, 5), F32), (2, 3, 5)))


def guarded(shape, fill):
    n = int(np.prod(shape, dtype=np.int64))
    buf = np.full(n + 2 * GUARD, fill, F32)
    return buf[GUARD:GUARD + n].reshape(shape), buf


def guards_hold(buf, fill):
    ends = np.concatenate([buf[:GUARD], buf[-GUARD:]])
    return bool(np.isnan(ends).all()) if np.isnan(fill) else bool((ends == fill).all())


@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 3))
    n, c, o = draw(st.integers(0, 3)), groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    for size, kk, dd, (lo, hi) in zip((h, w), k, d, pads):
        if size + lo + hi < dd * (kk - 1) + 1:
            return None
    return (n, c, h, w), o, groups, k, s, pads, d


@settings(max_examples=examples(40), deadline=None)
@given(case=conv_cases(), seed=st.integers(0, 2 ** 16))
def test_per_sample_convolutions_fuzzed_in_bounds(case, seed):
    if case is None:
        return
    with gemm.forced(True):
        _per_sample_convolutions(case, seed)


def _per_sample_convolutions(case, seed):
    x_shape, o, groups, k, s, pads, d = case
    geo = kc.Geometry(x_shape, k, s, pads, d)
    rng = np.random.default_rng(seed)
    x, xb = guarded(x_shape, np.nan)
    w, wb = guarded((o, x_shape[1] // groups) + k, np.nan)
    gy, gb = guarded((x_shape[0], o) + geo.out_hw, np.nan)
    for a in (x, w, gy):
        a[...] = rng.standard_normal(a.shape)
    params = dict(stride=s, padding=pads, dilation=d, groups=groups)
    runs = [("forward", kb.bind_conv, (x, w), ev.apply("conv2d", x, w, **params)),
            ("grad_input", kb.bind_conv_grad_input, (gy, w),
             ev.apply("conv2d_grad_input", gy, w, in_size=x_shape[2:], **params)),
            ("grad_weight", kb.bind_conv_grad_weight, (x, gy),
             ev.apply("conv2d_grad_weight", x, gy, kernel_size=k, **params))]
    for which, bind, ins, want in runs:
        assert kb.own_gemm("c", F32)        # forced on, whatever this CPU's gate says
        out, ob = guarded(want.shape, -7.0)
        scratch = [guarded(shape, np.nan) for shape, _ in kb.conv_tmps(which, "c", geo, groups, o, np.dtype(F32))]
        fn, args = bind("c", *ins, out, [t for t, _ in scratch], geo, groups)
        fn(*args)
        assert guards_hold(ob, -7.0) and all(guards_hold(b, np.nan) for _, b in scratch), which
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4, err_msg=which)
    assert guards_hold(xb, np.nan) and guards_hold(wb, np.nan) and guards_hold(gb, np.nan)
