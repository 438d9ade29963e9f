"""The convolution and pooling C kernels (csrc/ev_conv.c) and their wrappers.

Fuzzed geometries (odd sizes, strides, paddings, dilations) against numpy references,
with every buffer inside a larger one: guard bytes after and before each output must
stay untouched (no out-of-bounds write), and guards of NaN around each input would
show up in the results (no out-of-bounds read). Then every validation path of the
checked wrappers and of the bound runners, which must raise typed errors before C
is called.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import exprvm as ev
from exprvm.errors import DTypeError, IndexRangeError, KernelError, ShapeError
from exprvm.kernels import conv as kc
from exprvm.kernels import conv_bind as kb
from exprvm.ops import pool as P
from budget import examples

pytestmark = pytest.mark.skipif(not kc.available(), reason="C extension with the conv kernels not built")

GUARD = 64
SENTINEL = -12345.0


def guarded(shape, dtype, fill):
    """(array of shape inside a bigger buffer, the buffer): the array is a C-contiguous view."""
    n = int(np.prod(shape, dtype=np.int64))
    buf = np.full(n + 2 * GUARD, fill, dtype)
    return buf[GUARD:GUARD + n].reshape(shape), buf


def guarded_input(x):
    a, buf = guarded(x.shape, x.dtype, np.nan)
    a[...] = x
    return a, buf


def guards_intact(buf, fill):
    head, tail = buf[:GUARD], buf[-GUARD:]
    if np.isnan(fill):
        return bool(np.isnan(head).all() and np.isnan(tail).all())
    return bool((head == fill).all() and (tail == fill).all())


@st.composite
def geometries(draw, pool=False):
    n, c = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if pool:    # torch's rules: symmetric padding at most half the kernel, no dilation
        p = tuple(draw(st.integers(0, kk // 2)) for kk in k)
        pads, d = tuple((a, a) for a in p), (1, 1)
    else:
        pads = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(2))
        d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    for size, kk, dd, (lo, hi) in zip((h, w), k, d, pads):
        if size + lo + hi < dd * (kk - 1) + 1:
            pads = None     # the kernel does not fit: draw again
    if pads is None:
        return draw(geometries(pool))
    return (n, c, h, w), k, s, pads, d


def padded_windows(x, geo, fill=0.0):
    xp = np.full(geo.padded_shape, fill, x.dtype)
    geo.interior(xp)[...] = x
    return geo.windows(xp)      # (n, c, kh, kw, oh, ow)


DTYPES = [np.float32, np.float64]


@settings(max_examples=examples(60), deadline=None)
@given(geometries(), st.sampled_from(DTYPES), st.integers(0, 2**31 - 1))
def test_im2col_and_col2im_fuzzed_stay_in_bounds(geom, dtype, seed):
    shape, k, s, pads, d = geom
    rng = np.random.default_rng(seed)
    geo = kc.Geometry(shape, k, s, pads, d)
    x, xbuf = guarded_input(rng.standard_normal(shape).astype(dtype))
    cols, cbuf = guarded(geo.cols_shape, dtype, SENTINEL)
    kc.im2col(x, k, s, pads, d, out=cols)
    assert guards_intact(cbuf, SENTINEL) and guards_intact(xbuf, np.nan)
    want = np.ascontiguousarray(padded_windows(x, geo)).reshape(geo.cols_shape)
    np.testing.assert_array_equal(cols, want)      # a copy: exact

    c, cbuf2 = guarded_input(rng.standard_normal(geo.cols_shape).astype(dtype))
    back, bbuf = guarded(shape, dtype, SENTINEL)
    kc.col2im(c, shape, k, s, pads, d, out=back)
    assert guards_intact(bbuf, SENTINEL) and guards_intact(cbuf2, np.nan)
    assert not np.isnan(back).any()
    # col2im is im2col's adjoint: <im2col(x), c> == <x, col2im(c)>
    lhs = float(np.dot(want.ravel().astype(np.float64), c.ravel()))
    rhs = float(np.dot(x.ravel().astype(np.float64), back.ravel()))
    assert lhs == pytest.approx(rhs, rel=1e-4 if dtype == np.float32 else 1e-10, abs=1e-4)


@settings(max_examples=examples(60), deadline=None)
@given(geometries(pool=True), st.sampled_from(DTYPES), st.integers(0, 2**31 - 1))
def test_pooling_fuzzed_against_the_ops_in_bounds(geom, dtype, seed):
    shape, k, s, pads, _ = geom
    padding = tuple(p for p, _ in pads)
    rng = np.random.default_rng(seed)
    geo = kc.Geometry(shape, k, s, padding)
    xv = rng.standard_normal(shape).astype(dtype)
    x, xbuf = guarded_input(xv)
    out, obuf = guarded(geo.pooled_shape, dtype, SENTINEL)
    am, abuf = guarded(geo.pooled_shape, np.int64, -7)
    kc.max_pool2d(x, k, s, padding, out=out, argmax=am)
    assert guards_intact(obuf, SENTINEL) and guards_intact(abuf, -7) and guards_intact(xbuf, np.nan)
    params = dict(kernel_size=k, stride=s, padding=padding)
    if shape[0]:
        np.testing.assert_array_equal(out, P.naive_max_pool(xv, **params).astype(dtype))
        np.testing.assert_array_equal(am, P.argmax(xv, **params))
    g = rng.standard_normal(geo.pooled_shape).astype(dtype)
    gin, gbuf = guarded_input(g)
    dx, dbuf = guarded(shape, dtype, SENTINEL)
    kc.max_pool2d_grad(gin, am, shape, k, s, padding, out=dx)
    assert guards_intact(dbuf, SENTINEL) and guards_intact(gbuf, np.nan)
    if shape[0]:
        np.testing.assert_allclose(dx, P.naive_max_pool_grad(g, xv, **params), rtol=1e-6, atol=1e-6)

    avg, vbuf = guarded(geo.pooled_shape, dtype, SENTINEL)
    kc.avg_pool2d(x, k, s, padding, out=avg)
    assert guards_intact(vbuf, SENTINEL)
    da, dabuf = guarded(shape, dtype, SENTINEL)
    kc.avg_pool2d_grad(gin, shape, k, s, padding, out=da)
    assert guards_intact(dabuf, SENTINEL)
    if shape[0]:
        np.testing.assert_allclose(avg, P.naive_avg_pool(xv, **params), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(da, P.naive_avg_pool_grad(g, shape[2:], **params), rtol=1e-5, atol=1e-6)


def test_max_pool_ties_and_nans_pick_the_documented_winner():
    x = np.zeros((1, 1, 2, 4))
    x[0, 0, :, 2:] = [[1.0, np.nan], [np.nan, 3.0]]
    out, am = kc.max_pool2d(x, 2, 2)
    assert am.ravel().tolist() == [0, 3]     # all equal: the first; NaNs: the first NaN
    assert out[0, 0, 0, 0] == 0 and np.isnan(out[0, 0, 0, 1])
    assert np.array_equal(am, P.argmax(x, (2, 2), (2, 2), (0, 0)))   # the numpy op agrees
    y = np.full((1, 1, 3, 3), -np.inf)        # real -infs beat the -inf padding
    _, am = kc.max_pool2d(y, 3, 1, 1)
    assert (am >= 0).all() and am[0, 0, 0, 0] == 0
    assert np.array_equal(am, P.argmax(y, (3, 3), (1, 1), (1, 1)))


# -- validation: the checked wrappers ------------------------------------------------

X = np.ones((2, 3, 5, 5), np.float32)


@pytest.mark.parametrize("bad, err", [
    (X.astype(np.float16), DTypeError), (X.astype(np.int32), DTypeError), (X.tolist(), KernelError),
    (np.ma.masked_array(X), KernelError), (X.view(np.recarray), KernelError),
])
def test_inputs_must_be_plain_float_arrays(bad, err):
    with pytest.raises(err):
        kc.im2col(bad, 3)
    with pytest.raises(err):
        kc.max_pool2d(bad, 2)


def test_strided_inputs_are_copied_and_give_the_same_result():
    big = np.random.default_rng(0).standard_normal((2, 3, 10, 10)).astype(np.float32)
    view = big[:, :, ::2, ::2]
    np.testing.assert_array_equal(kc.im2col(view, 3, padding=1), kc.im2col(np.ascontiguousarray(view), 3, padding=1))


@pytest.mark.parametrize("make_out, err", [
    (lambda s: np.empty(s[:-1] + (s[-1] + 1,), np.float32), ShapeError),
    (lambda s: np.empty(s, np.float64), DTypeError),
    (lambda s: np.empty(s[:-1] + (2 * s[-1],), np.float32)[..., ::2], KernelError),
    (lambda s: np.broadcast_to(np.empty(s[-1:], np.float32), s), KernelError),   # read-only
    (lambda s: list(np.empty(s, np.float32)), KernelError),
])
def test_bad_out_is_refused(make_out, err):
    shape = kc.Geometry(X.shape, 3).cols_shape
    with pytest.raises(err):
        kc.im2col(X, 3, out=make_out(shape))


def test_out_overlapping_the_input_is_refused():
    buf = np.zeros(10_000, np.float32)
    x = buf[:X.size].reshape(X.shape)
    out = buf[10:10 + 2 * 27 * 25].reshape(2, 27, 25)
    with pytest.raises(KernelError, match="overlaps"):
        kc.im2col(x, 3, padding=1, out=out)


def test_geometry_errors():
    with pytest.raises(ShapeError, match="larger than the padded input"):
        kc.im2col(X, 7)
    with pytest.raises(ShapeError, match=r"\(n, c, h, w\)"):
        kc.im2col(X[0], 3)
    with pytest.raises(ShapeError):
        kc.im2col(X, 3, stride=0)
    with pytest.raises(ShapeError, match="padding"):
        kc.im2col(X, 3, padding=(1, 2, 3))
    with pytest.raises(ShapeError, match="cols"):
        kc.col2im(np.zeros((2, 27, 8), np.float32), X.shape, 3)


def test_argmax_out_of_range_raises_and_writes_nothing():
    g = np.ones((2, 3, 2, 2), np.float32)
    am = np.zeros((2, 3, 2, 2), np.int64)
    am[1, 2, 1, 1] = 25                      # a 5x5 plane has positions 0..24
    dx = np.full(X.shape, 7.0, np.float32)
    with pytest.raises(IndexRangeError):
        kc.max_pool2d_grad(g, am, X.shape, 2, out=dx)
    assert (dx == 7.0).all()
    with pytest.raises(KernelError, match="int64"):
        kc.max_pool2d_grad(g, am.astype(np.int32), X.shape, 2)
    with pytest.raises(ShapeError):
        kc.max_pool2d_grad(g, am[:1], X.shape, 2)


# -- the bound runners ------------------------------------------------------------------

def _conv_case(backend, groups, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    geo = kc.Geometry((3, 4, 7, 6), (3, 2), (2, 1), ((1, 2), (0, 1)), (1, 2))
    x = rng.standard_normal(geo.x_shape).astype(dtype)
    w = rng.standard_normal((6, 4 // groups) + geo.kernel).astype(dtype)
    tmps = [np.empty(s, d) for s, d in kb.conv_tmps("forward", backend, geo, groups, 6, np.dtype(dtype))]
    return geo, x, w, tmps


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("groups", [1, 2])
def test_bound_conv_runners_match_the_ops(backend, groups):
    geo, x, w, tmps = _conv_case(backend, groups)
    params = dict(stride=geo.stride, padding=geo.padding, dilation=geo.dilation, groups=groups)
    out = np.empty((3, 6) + geo.out_hw, np.float32)
    fn, args = kb.bind_conv(backend, x, w, out, tmps, geo, groups)
    fn(*args)
    np.testing.assert_allclose(out, ev.apply("conv2d", x, w, **params), rtol=1e-5, atol=1e-5)
    gy = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    dx = np.empty_like(x)
    t = [np.empty(s, d) for s, d in kb.conv_tmps("grad_input", backend, geo, groups, 6, x.dtype)]
    fn, args = kb.bind_conv_grad_input(backend, gy, w, dx, t, geo, groups)
    fn(*args)
    np.testing.assert_allclose(dx, ev.apply("conv2d_grad_input", gy, w, in_size=geo.x_shape[2:], **params),
                               rtol=1e-5, atol=1e-5)
    dw = np.empty_like(w)
    t = [np.empty(s, d) for s, d in kb.conv_tmps("grad_weight", backend, geo, groups, 6, x.dtype)]
    fn, args = kb.bind_conv_grad_weight(backend, x, gy, dw, t, geo, groups)
    fn(*args)
    np.testing.assert_allclose(dw, ev.apply("conv2d_grad_weight", x, gy, kernel_size=geo.kernel, **params),
                               rtol=1e-5, atol=1e-4)


def test_bound_runners_refuse_what_they_cannot_bind():
    geo, x, w, tmps = _conv_case("c", 1)
    out = np.empty((3, 6) + geo.out_hw, np.float32)
    with pytest.raises(KernelError, match="contiguous"):
        kb.bind_conv("c", np.asfortranarray(x), w, out, tmps, geo)
    with pytest.raises(ShapeError):
        kb.bind_conv("c", x[:2], w, out, tmps, geo)
    with pytest.raises(KernelError, match="dtype"):
        kb.bind_conv("c", x.astype(np.float64), w, out, tmps, geo)
    with pytest.raises(KernelError, match="scratch"):
        kb.bind_conv("c", x, w, out, [], geo)
    with pytest.raises(ShapeError):
        kb.bind_conv("c", x, w, out, [np.empty((1, 2, 3), np.float32)], geo)
    with pytest.raises(KernelError, match="overlaps"):
        kb.bind_conv("c", x, w, tmps[0].reshape(-1)[:out.size].reshape(out.shape), tmps, geo)
    with pytest.raises(KernelError, match="numpy.ndarray"):
        kb.bind_conv("c", x.view(np.recarray), w, out, tmps, geo)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw", [(2, 2), (5, 7), (8, 8), (9, 4)])
def test_the_2x2_stride_2_fast_path_keeps_the_general_rule(dtype, hw):
    # few distinct values and some NaNs: ties and NaN windows everywhere
    rng = np.random.default_rng(hw[0] * 10 + hw[1])
    x = rng.integers(0, 3, (3, 2) + hw).astype(dtype)
    x[rng.random(x.shape) < 0.1] = np.nan
    out, am = kc.max_pool2d(x, 2, 2)
    assert np.array_equal(am, P.argmax(x, (2, 2), (2, 2), (0, 0)))
    planes = x.reshape(6, -1)
    np.testing.assert_array_equal(out.reshape(6, -1), np.take_along_axis(planes, am.reshape(6, -1), 1))
