"""C kernels (and the numpy backend) against the numpy reference.

Accuracy achieved by csrc/ev_math.h, measured against numpy on a million
random inputs across each op's range: at most 4 ulp in float32 (softplus;
exp, tanh and sigmoid 3) and 3 ulp in float64.  Tested here as rtol 1e-6
(float32) and 2e-15 (float64), plus one subnormal step of absolute slack
where results underflow.  Special values (NaN, +-inf, +-0, huge) must match
exactly, including the sign of zero.

Policy under test (exprvm/kernels/checks.py): inputs that are not
C-contiguous/aligned, or that partially overlap out, are copied
transparently; out must be C-contiguous, aligned, writable and of the
result's shape and dtype, else a typed error.
"""
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from exprvm import kernels
from exprvm.errors import BackendError, DTypeError, ExprError, IndexRangeError, KernelError, ShapeError
from exprvm.kernels import reference, dispatch
from budget import examples

C_OK, C_WHY = kernels.backends()["c"]
needs_c = pytest.mark.skipif(not C_OK, reason=f"C backend unavailable: {C_WHY}")
DTYPES = (np.float32, np.float64)
RTOL = {np.float32: 1e-6, np.float64: 2e-15}

SPECIALS = [0.0, -0.0, 1e-30, -1e-30, 1e-40, -1e-40, 0.5, -0.5, 1.0, -1.0, 20.0, -20.0,
            88.0, 89.0, -87.0, -104.0, 100.0, -100.0, 709.0, 710.0, -745.0, 1000.0, -1000.0,
            1e30, -1e30, np.inf, -np.inf, np.nan]
# Extra points per op where its formula changes regime.  Every op in
# KERNEL_OPS needs an entry: a new op without one fails test_every_op_has_inputs.
EDGES = {
    "tanh": [1e-8, -1e-8, 9.0, -9.0, 19.0, -19.0],
    "sigmoid": [-88.5, -103.0, 16.0, 36.0, -36.0],
    "exp": [88.7228317, 88.7228394, -87.3, -103.9, 709.78, -708.4, -744.0],
    "expm1": [1e-10, -1e-10, 0.3, -0.3, 17.0, 17.5, 37.5, -30.0, -40.0],
    "log1p": [-1.0, -0.9999999, -1.5, -2.0, 1e-10, -1e-10, 0.4142, 3.4e38, 1.7e308],
    "cube": [1e13, -1e13, 1e103, -1e103],
    "square": [1e19, -1e19, 1e154],
    "relu": [1e-45, -1e-45],
    "softplus": [16.0, 17.0, -16.0, 36.0, 40.0, -800.0],
}


def inputs(op, dtype, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    wide = np.concatenate([rng.standard_normal(n) * 3, rng.uniform(-120, 120, n),
                           np.exp(rng.uniform(-60, 8, n)) * rng.choice([-1, 1], n)])
    if op == "log1p":
        wide = np.concatenate([wide, rng.uniform(-1, 0, n)])
    with np.errstate(over="ignore"):
        return np.concatenate([wide, SPECIALS, EDGES[op]]).astype(dtype)


def ref_forward(op, x):
    with np.errstate(all="ignore"):
        return reference.FORWARD[op](x, None)


def ref_grad(op, x, ans, g):
    with np.errstate(all="ignore"):
        return reference.GRAD[op](x, ans, g, None)


def upstream(x, seed=1):
    g = np.random.default_rng(seed).standard_normal(x.shape).astype(x.dtype)
    g[::97] = np.inf
    g[1::101] = np.nan
    g[2::89] = -0.0
    return g


def assert_matches(got, want, dtype, extra_atol=0.0, zero_sign=True):
    """Elementwise: NaN where numpy has NaN, identical infinities and zeros
    (signs included), finite values within RTOL plus subnormal slack."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype == np.dtype(dtype)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg="NaN positions differ")
    inf = np.isinf(want)
    np.testing.assert_array_equal(got[inf], want[inf], err_msg="infinities differ")
    if zero_sign:
        zero = want == 0
        np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]),
                                      err_msg="sign of zero differs")
    fin = ~(nan | inf)
    tiny = np.finfo(dtype).smallest_subnormal
    atol = 2 * tiny + (extra_atol[fin] if np.ndim(extra_atol) else extra_atol)
    err = np.abs(got[fin].astype(np.float64) - want[fin].astype(np.float64))
    bound = RTOL[dtype] * np.abs(want[fin].astype(np.float64)) + atol
    bad = err > bound
    assert not bad.any(), (f"{bad.sum()} values off, e.g. got {got[fin][bad][:3]} "
                           f"want {want[fin][bad][:3]}")


def test_every_op_has_inputs():
    assert set(EDGES) == set(kernels.KERNEL_OPS)
    assert set(reference.FORWARD) == set(reference.GRAD) == set(kernels.KERNEL_OPS)


def test_c_backend_built_when_a_compiler_exists():
    if not (shutil.which("gcc") or shutil.which("cc")):
        pytest.skip("no C compiler on PATH")
    assert C_OK, f"a C compiler is present but the extension is not built: {C_WHY}"


@needs_c
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", kernels.KERNEL_OPS)
def test_forward_matches_reference(op, dtype):
    x = inputs(op, dtype)
    assert_matches(kernels.unary(op, dtype, "c")(x), ref_forward(op, x), dtype)


@needs_c
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", kernels.KERNEL_OPS)
def test_grad_matches_reference(op, dtype):
    x = inputs(op, dtype)
    ans, g = ref_forward(op, x), upstream(x)
    got = kernels.unary_grad(op, dtype, "c")(x, ans, g)
    # NOTE: tanh's g*(1 - ans*ans) compiles to a fused multiply-add in C,
    # exact where numpy rounds ans*ans first: they differ by up to eps*|g|.
    slack = np.finfo(dtype).eps * np.abs(g.astype(np.float64)) if op == "tanh" else 0.0
    assert_matches(got, ref_grad(op, x, ans, g), dtype, extra_atol=slack, zero_sign=False)


@needs_c
@pytest.mark.parametrize("op", kernels.KERNEL_OPS)
@pytest.mark.parametrize("n", [0, 1, 3, 1023, 100003])
def test_sizes_and_threads(op, n):
    """Sizes around the vector width and across the threading threshold;
    threads must not change a single bit."""
    x = inputs(op, np.float32)[:n] if n < 12000 else np.resize(inputs(op, np.float32), n)
    whole = kernels.unary(op, np.float32, "c")(x)
    assert whole.shape == (n,)
    assert_matches(whole, ref_forward(op, x), np.float32)
    pieces = np.concatenate([kernels.unary(op, np.float32, "c")(c) for c in np.array_split(x, 7)]) if n else whole
    np.testing.assert_array_equal(whole.view(np.uint32), pieces.view(np.uint32))


@needs_c
@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_exact(dtype):
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e30, -1e30], dtype)
    f = {op: kernels.unary(op, dtype, "c") for op in kernels.KERNEL_OPS}
    np.testing.assert_array_equal(f["tanh"](x)[:2], [1, -1])
    np.testing.assert_array_equal(f["sigmoid"](x)[[0, 1, 5, 6]], [1, 0, 1, 0])
    np.testing.assert_array_equal(f["exp"](x)[[0, 1, 5, 6]], [np.inf, 0, np.inf, 0])
    np.testing.assert_array_equal(f["expm1"](x)[[0, 1, 6]], [np.inf, -1, -1])
    np.testing.assert_array_equal(f["softplus"](x)[[0, 1, 5, 6]], [np.inf, 0, dtype(1e30), 0])
    np.testing.assert_array_equal(f["log1p"](np.array([-1, -2, np.inf], dtype)), [-np.inf, np.nan, np.inf])
    for op in kernels.KERNEL_OPS:
        assert np.isnan(f[op](x)[2]), op
    assert np.signbit(f["tanh"](x)[4]) and np.signbit(f["expm1"](x)[4]) and np.signbit(f["log1p"](x)[4])
    assert not np.signbit(f["relu"](x)[4])


@needs_c
def test_tanh_float32_within_4_ulp_everywhere():
    """RTOL allows ~8-16 ulp; tanh float32 is held to 4 ulp of numpy (3
    measured over all 2^32 inputs) on every 997th bit pattern, which crosses
    every binade of both signs, the NaNs and the +-1 saturation."""
    x = np.arange(0, 1 << 32, 997, dtype=np.uint64).astype(np.uint32).view(np.float32)
    got = kernels.unary("tanh", np.float32, "c")(x)
    want = ref_forward("tanh", x)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)

    def ordered(v):  # float32 bits -> integers in the order of the values
        i = v[~nan].view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    ulps = np.abs(ordered(got) - ordered(want))
    assert ulps.max() <= 4, f"{ulps.max()} ulp at x = {x[~nan][ulps.argmax()]!r}"
    assert np.all(np.abs(got[~nan]) <= 1)
    zero = want == 0
    np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]))


GUARD = 64


def guarded(x, fill):
    """A copy of x inside a buffer whose margins hold `fill`, and that buffer."""
    buf = np.full(x.size + 2 * GUARD, fill, x.dtype)
    inner = buf[GUARD:GUARD + x.size]
    inner[...] = x.reshape(-1)
    return inner.reshape(x.shape), buf


def guards_hold(buf, fill):
    ends = np.concatenate([buf[:GUARD], buf[-GUARD:]])
    return bool(np.isnan(ends).all()) if np.isnan(fill) else bool((ends == fill).all())


@needs_c
@settings(max_examples=examples(60), deadline=None)
@given(hnp.arrays(np.float32, st.integers(0, 70), elements=st.floats(width=32, allow_nan=True)),
       st.sampled_from(kernels.KERNEL_OPS))
def test_any_float32_input(x, op):
    """Forward and gradient kernels over any float32 input, every operand inside NaN
    guards and every output inside guards of a sentinel: nothing read or written
    outside the arrays."""
    xg, xb = guarded(x, np.nan)
    out, ob = guarded(np.zeros_like(x), -7.0)
    kernels.unary(op, np.float32, "c")(xg, out)
    want = ref_forward(op, x)
    assert_matches(out, want, np.float32)
    ans, ab = guarded(want, np.nan)
    g, gb = guarded(np.linspace(-2, 2, x.size).astype(np.float32), np.nan)
    gout, gob = guarded(np.zeros_like(x), -7.0)
    kernels.unary_grad(op, np.float32, "c")(xg, ans, g, gout)
    with np.errstate(all="ignore"):
        gwant = ref_grad(op, x, want, np.linspace(-2, 2, x.size).astype(np.float32))
    slack = np.finfo(np.float32).eps * np.abs(g.astype(np.float64)) if op == "tanh" else 0.0
    assert_matches(gout, gwant, np.float32, slack, zero_sign=False)
    assert guards_hold(ob, -7.0) and guards_hold(gob, -7.0), "a kernel wrote outside its output"
    assert all(guards_hold(b, np.nan) for b in (xb, ab, gb))


@pytest.mark.parametrize("backend", ["numpy", pytest.param("c", marks=needs_c)])
def test_in_place_and_overlap(backend):
    x = inputs("tanh", np.float64)[:500]
    want = ref_forward("tanh", x)
    buf = x.copy()
    assert kernels.unary("tanh", np.float64, backend)(buf, buf) is buf
    assert_matches(buf, want, np.float64)
    buf = x.copy()
    kernels.unary("tanh", np.float64, backend)(buf[1:], buf[:-1])  # partial overlap: copied
    assert_matches(buf[:-1], want[1:], np.float64)
    g = upstream(x)
    kernels.unary_grad("tanh", np.float64, backend)(x, want, g, g)
    slack = np.finfo(np.float64).eps * np.abs(upstream(x))
    assert_matches(g, ref_grad("tanh", x, want, upstream(x)), np.float64, slack, zero_sign=False)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("c", marks=needs_c)])
def test_typed_errors(backend):
    f = kernels.unary("sigmoid", np.float32, backend)
    g = kernels.unary_grad("sigmoid", np.float32, backend)
    x = np.linspace(-1, 1, 8, dtype=np.float32)
    for bad in (x.astype(np.int32), x.astype(np.float16), x.astype(np.float64), x.astype(">f4")):
        with pytest.raises(DTypeError):
            f(bad)
    with pytest.raises(KernelError):
        f(list(x))
    with pytest.raises(ShapeError):
        f(x, np.empty(7, np.float32))
    with pytest.raises(ShapeError):
        f(x, np.empty((2, 4), np.float32))
    with pytest.raises(DTypeError):
        f(x, np.empty(8, np.float64))
    ro = np.empty(8, np.float32)
    ro.flags.writeable = False
    with pytest.raises(KernelError):
        f(x, ro)
    with pytest.raises(KernelError):
        f(x, np.empty(16, np.float32)[::2])
    with pytest.raises(ShapeError):
        g(x, x, x[:4])
    with pytest.raises(DTypeError):
        kernels.unary("tanh", np.int64, backend)
    with pytest.raises(KernelError):
        kernels.unary("arctan", np.float32, backend)
    assert issubclass(KernelError, ExprError) and issubclass(DTypeError, ExprError)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("c", marks=needs_c)])
def test_non_contiguous_and_misaligned_inputs_are_copied(backend):
    f = kernels.unary("softplus", np.float64, backend)
    x = np.linspace(-30, 30, 200)
    strided = x[::2]
    assert_matches(f(strided), ref_forward("softplus", strided), np.float64)
    raw = np.zeros(8 * 50 + 1, np.uint8)
    mis = raw[1:].view(np.float64)  # a float64 view at an odd address
    mis[:] = x[:50]
    assert not mis.flags.aligned
    assert_matches(f(mis), ref_forward("softplus", x[:50]), np.float64)
    with pytest.raises(KernelError):
        f(x[:50], mis)


@needs_c
def test_bind():
    x = inputs("sigmoid", np.float32)[:16]
    out = np.empty_like(x)
    thunk = kernels.bind_unary("sigmoid", x, out, "c")
    x[:] = 0
    assert thunk() is out and np.all(out == 0.5)  # reads x's current contents
    with pytest.raises(KernelError):
        kernels.bind_unary("sigmoid", np.ones(32, np.float32)[::2], out, "c")
    ans, g = ref_forward("cube", x), upstream(x)
    bound = kernels.bind_unary_grad("cube", x, ans, g, out, "c")
    assert_matches(bound(), ref_grad("cube", x, ans, g), np.float32, zero_sign=False)


def _xent_reference(z, t):
    """Loss and gradient of softmax cross-entropy, in float64, by numpy's formula."""
    zz = z.astype(np.float64)
    with np.errstate(all="ignore"):
        m = np.max(zz, axis=-1, keepdims=True)
        e = np.exp(zz - m)
        s = e.sum(axis=-1, keepdims=True)
        loss = np.log(s[..., 0]) - (np.take_along_axis(zz, t[..., None], -1)[..., 0] - m[..., 0])
        grad = e / s
    np.put_along_axis(grad, t[..., None], np.take_along_axis(grad, t[..., None], -1) - 1, -1)
    return loss.astype(z.dtype), grad.astype(z.dtype)


@needs_c
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, c", [(37, 65), (5, 1), (0, 4), (3, 1000)])
def test_cross_entropy_kernels_match_numpy(dtype, n, c):
    rng = np.random.default_rng(n + c)
    z = (rng.standard_normal((n, c)) * 10).astype(dtype)
    t = rng.integers(0, c, n)
    if n >= 5:
        z[1, 0], z[2, :], z[3, -1], z[4, :] = np.inf, -np.inf, np.nan, 1e30
    loss, grad = np.empty(n, dtype), np.empty((n, c), dtype)
    kernels.bind_xent("cross_entropy", z, t, loss, "c")()
    kernels.bind_xent("xent_grad", z, t, grad, "c")()
    want_loss, want_grad = _xent_reference(z, t)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for got, want in ((loss, want_loss), (grad, want_grad)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=rtol, atol=rtol)


@needs_c
def test_cross_entropy_kernels_check_ids_and_arrays():
    z = np.zeros((3, 4), np.float32)
    loss = np.full(3, 7.0, np.float32)
    for bad in ([0, 4, 1], [0, -1, 1]):
        run = kernels.bind_xent("cross_entropy", z, np.array(bad), loss, "c")
        with pytest.raises(IndexRangeError, match=r"index out of range \[0, 4\)"):
            run()
        assert np.all(loss == 7.0)          # nothing written
    with pytest.raises(KernelError, match="int64"):
        kernels.bind_xent("cross_entropy", z, np.zeros(3, np.int32), loss, "c")
    with pytest.raises(KernelError, match="leading shape"):
        kernels.bind_xent("cross_entropy", z, np.zeros(4, np.int64), loss, "c")
    with pytest.raises(KernelError, match="contiguous"):
        kernels.bind_xent("xent_grad", np.zeros((4, 3), np.float32).T, np.zeros(3, np.int64), z, "c")
    with pytest.raises(BackendError, match="C kernels"):
        kernels.bind_xent("cross_entropy", z, np.zeros(3, np.int64), loss, "numpy")


def test_backend_selection(monkeypatch):
    info = kernels.backends()
    assert set(info) == {"numpy", "c", "cuda"} and info["numpy"][0]
    assert all(isinstance(why, str) and why for _, why in info.values())
    previous = kernels.get_backend()
    try:
        kernels.set_backend("numpy")
        assert kernels.get_backend() == "numpy"
        with pytest.raises(BackendError):
            kernels.set_backend("tpu")
        if not info["cuda"][0]:
            with pytest.raises(BackendError):
                kernels.set_backend("cuda")
            assert not kernels.available("tanh", np.float32, "cuda")
        assert kernels.available("tanh", np.float32, "numpy")
        assert not kernels.available("tanh", np.int32, "numpy")
        assert not kernels.available("nope", np.float32, "numpy")
        monkeypatch.setenv("EXPRVM_BACKEND", "numpy")
        dispatch._reset_for_tests()
        assert kernels.get_backend() == "numpy"
        monkeypatch.setenv("EXPRVM_BACKEND", "tpu")
        dispatch._reset_for_tests()
        with pytest.warns(RuntimeWarning, match="EXPRVM_BACKEND"):
            assert kernels.get_backend() == ("c" if C_OK else "numpy")
    finally:
        dispatch._reset_for_tests()
        monkeypatch.delenv("EXPRVM_BACKEND", raising=False)
        kernels.set_backend(previous)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("c", marks=needs_c)])
@pytest.mark.parametrize("op", kernels.BINARY_OPS)
def test_binary_host(op, backend):
    a, b = np.linspace(1, 2, 8, dtype=np.float32), np.linspace(-3, 3, 8, dtype=np.float32)
    # Python's double arithmetic rounded to float32: exactly the float32 operation (a double
    # holds the exact sum, difference and product of two floats, and rounds a quotient once
    # more than twice as finely), so this is the right answer, not numpy's ufunc again
    scalar = {"add": lambda u, v: u + v, "sub": lambda u, v: u - v, "mul": lambda u, v: u * v,
              "div": lambda u, v: u / v}[op]
    want = np.array([scalar(float(u), float(v)) for u, v in zip(a, b)], np.float32)
    np.testing.assert_array_equal(kernels.binary(op, np.float32, backend)(a, b), want)
    with pytest.raises(ShapeError):
        kernels.binary(op, np.float32, backend)(a, b[:3])
