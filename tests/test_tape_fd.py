"""The TapeMachine's gradients against finite differences directly, over the op table.

For each differentiable op and both float dtypes: the compiled program of ev.grad's
nodes runs in the op's dtype (float32 included), and its gradients are compared with
central differences of the row's independent numpy reference (Row.ref) taken in
float64 at the same point. Nothing here compares one machine with the other.
"""
import numpy as np
import pytest

import exprvm as ev
from exprvm.core import OPS
from test_ops_table import DIFF, sample

# NOTE: float32 gradients carry float32 rounding (a few ulp of every term summed), the
# float64 differences about 1e-9: the tolerance is the float32 one for float32 runs.
TOL = {np.float32: dict(rtol=2e-3, atol=2e-4), np.float64: dict(rtol=1e-6, atol=1e-8)}
OPS_FD = [n for n in DIFF if not OPS[n].row.random]
ELEMENTWISE_UP_TO = 64      # float elements checked one by one; beyond, random directions
DIRECTIONS = 3


def _weights(name, arrays, params):
    out_shape = np.shape(OPS[name].row.ref(*arrays, **params))
    return np.random.default_rng(1).uniform(0.5, 1.5, out_shape)


def _cost64(name, arrays, params, w):
    """sum(ref(arrays) * w) in float64: the function finite differences are taken of."""
    args = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays]
    return lambda *floats: _weighted(name, _with(args, floats), params, w)


def _with(args, floats):
    out, it = list(args), iter(floats)
    return [next(it) if a.dtype.kind == "f" else a for a in out]


def _weighted(name, args, params, w):
    return float(np.sum(np.asarray(OPS[name].row.ref(*args, **params), dtype=np.float64) * w))


def finite_differences(f, xs, eps=1e-6):
    """Central differences of f(*xs) wrt every element of every array in xs."""
    grads = []
    for i, x in enumerate(xs):
        g = np.zeros_like(x)
        for j in np.ndindex(x.shape):
            h = eps * max(1.0, abs(float(x[j])))
            up, down = [a.copy() for a in xs], [a.copy() for a in xs]
            up[i][j] += h
            down[i][j] -= h
            g[j] = (f(*up) - f(*down)) / (2 * h)
        grads.append(g)
    return grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", OPS_FD)
def test_tape_gradient_matches_finite_differences(name, dtype):
    arrays, params = sample(name, dtype)
    w = _weights(name, arrays, params)
    g = ev.Graph(name)
    leaves = [g.tensor(f"a{i}", a.shape, a.dtype, value=a) for i, a in enumerate(arrays)]
    floats = [n for n, a in zip(leaves, arrays) if a.dtype.kind == "f"]
    out = ev.apply(name, *leaves, **params)
    cost = ev.sum(ev.astype(out, np.float64) * w)
    grads = ev.grad(cost, floats)
    m = ev.TapeMachine(g, outputs=[cost] + grads)   # verifies its program as it compiles
    m.run()
    f = _cost64(name, arrays, params, w)
    at = [a.astype(np.float64) for a in arrays if a.dtype.kind == "f"]
    assert float(cost.value) == pytest.approx(f(*at), rel=1e-4 if dtype == np.float32 else 1e-10)
    gots = [np.broadcast_to(gn.value, n.shape).astype(np.float64) for n, gn in zip(floats, grads)]
    for node, gnode in zip(floats, grads):
        assert gnode.value.dtype == dtype, f"{name}: gradient of {node.label} is {gnode.value.dtype}"
        np.testing.assert_array_equal(node.grad, np.broadcast_to(gnode.value, node.shape))
    if sum(a.size for a in at) <= ELEMENTWISE_UP_TO:
        for node, got, want in zip(floats, gots, finite_differences(f, at)):
            scale = max(1.0, float(np.abs(want).max()))
            assert np.isfinite(want).all(), f"{name}: non-finite finite differences {want}"
            np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale,
                                       equal_nan=False, err_msg=f"{name}: d cost / d {node.label} ({np.dtype(dtype).name})")
        return
    # NOTE: big operands (conv, pool): derivatives along random directions. Any wrong
    # element of a gradient shows in <grad, v> for a random v.
    rng = np.random.default_rng(2)
    for _ in range(DIRECTIONS):
        vs = [rng.standard_normal(a.shape) for a in at]
        got = sum(float(np.vdot(g_, v)) for g_, v in zip(gots, vs))
        h = 1e-6
        want = (f(*[a + h * v for a, v in zip(at, vs)]) - f(*[a - h * v for a, v in zip(at, vs)])) / (2 * h)
        norm = np.sqrt(sum(float(np.vdot(g_, g_)) for g_ in gots) * sum(float(np.vdot(v, v)) for v in vs))
        assert abs(got - want) <= TOL[dtype]["rtol"] * abs(want) + TOL[dtype]["atol"] * max(1.0, norm), \
            f"{name}: directional derivative {got} vs finite differences {want} ({np.dtype(dtype).name})"


def test_finite_differences_catch_a_wrong_gradient():
    # The check can fail: a VJP off by a factor of 2 is caught at float32 tolerance.
    ev.defop("test_fd_wrong", lambda x: x * x, lambda x: (x.shape, x.dtype),
             vjp=lambda g, ans, x: g * x)      # the true VJP is g * 2x
    try:
        x = np.linspace(0.5, 1.5, 5).astype(np.float32)
        g = ev.Graph()
        xn = g.tensor("x", x.shape, x.dtype, value=x)
        (gx,) = ev.grad(ev.sum(ev.astype(ev.apply("test_fd_wrong", xn), np.float64)), [xn])
        ev.TapeMachine(g, outputs=[gx]).run()
        (want,) = finite_differences(lambda v: float(np.sum(v * v)), [x.astype(np.float64)])
        with pytest.raises(AssertionError):
            np.testing.assert_allclose(gx.value, want, **TOL[np.float32])
    finally:
        del OPS["test_fd_wrong"]
