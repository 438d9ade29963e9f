"""Gradients of non-scalar outputs with a seed (the gradient flowing into them):
ev.grad(y, wrt, seed=g) and the LispMachine's seed=, against numpy's vector-Jacobian
products and against the scalar cost sum(y * g) they stand for."""
import numpy as np
import pytest

import exprvm as ev

RNG = np.random.default_rng(0)
W0 = RNG.normal(size=(3, 4))
X0 = RNG.normal(size=(4, 5))
G0 = RNG.normal(size=(3, 5))


def model(dtype=np.float64):
    g = ev.Graph()
    W = g.matrix("W", (3, 4), value=W0.astype(dtype), dtype=dtype)
    X = g.matrix("X", (4, 5), value=X0.astype(dtype), dtype=dtype)
    y = ev.tanh(W @ X)
    return g, W, X, y


def numpy_vjp(G):
    y = np.tanh(W0 @ X0)
    d = G * (1 - y * y)
    return d @ X0.T, W0.T @ d


@pytest.mark.parametrize("kind", ["lisp", "tape"])
def test_array_seed_gives_the_vector_jacobian_product(kind):
    g, W, X, y = model()
    gW, gX = ev.grad(y, [W, X], seed=G0)
    if kind == "tape":
        ev.TapeMachine(g, outputs=[gW, gX]).run()
    else:
        ev.LispMachine(g, outputs=[gW, gX]).run()
    want_W, want_X = numpy_vjp(G0)
    np.testing.assert_allclose(gW.value, want_W, rtol=1e-12)
    np.testing.assert_allclose(gX.value, want_X, rtol=1e-12)


def test_a_seed_is_the_gradient_of_sum_y_times_seed():
    g, W, X, y = model()
    seeded = ev.grad(y, W, seed=G0)
    scalar = ev.grad(ev.sum(y * G0), W)
    ev.LispMachine(g, outputs=[seeded, scalar]).run()
    np.testing.assert_allclose(seeded.value, scalar.value, rtol=1e-13)
    assert seeded.role == "grad" and seeded.grad_of is W


def test_a_seed_input_is_fed_per_run_on_the_tape():
    g, W, X, y = model(np.float32)
    G = g.matrix("G", (3, 5), dtype=np.float32)
    gW = ev.grad(y, W, seed=G)
    m = ev.TapeMachine(g, outputs=[gW])
    for k in range(3):
        Gk = RNG.normal(size=(3, 5)).astype(np.float32)
        m.run({G: Gk})
        np.testing.assert_allclose(gW.value, numpy_vjp(Gk)[0], rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(W.grad, gW.value)     # .grad lands on W too


def test_a_scalar_seed_scales_a_scalar_cost():
    g, W, X, y = model()
    cost = ev.sum(y)
    g1, g3 = ev.grad(cost, W), ev.grad(cost, W, seed=3.0)
    ev.LispMachine(g, outputs=[g1, g3]).run()
    np.testing.assert_allclose(g3.value, 3 * g1.value, rtol=1e-14)


def test_grad_of_a_seeded_gradient():
    g = ev.Graph()
    x = g.vector("x", 3, value=np.array([0.5, -1.0, 2.0]))
    gx = ev.grad(x * x * x, x, seed=np.array([1.0, 2.0, 3.0]))     # 3 x^2 * seed
    hx = ev.grad(ev.sum(gx), x)                                      # 6 x * seed
    ev.LispMachine(g, outputs=[gx, hx]).run()
    np.testing.assert_allclose(gx.value, 3 * x.value ** 2 * [1, 2, 3])
    np.testing.assert_allclose(hx.value, 6 * x.value * [1, 2, 3])


def test_seed_errors_name_y_and_the_mismatch():
    g, W, X, y = model()
    with pytest.raises(ev.GradError, match="must be a scalar"):
        ev.grad(y, W)
    with pytest.raises(ev.GradError, match="seed of shape \\(5, 3\\) for tanh#\\d+ of shape \\(3, 5\\)"):
        ev.grad(y, W, seed=G0.T)
    with pytest.raises(ev.GradError, match="seed of dtype float32 for .* float64.*astype"):
        ev.grad(y, W, seed=G0.astype(np.float32))
    other = ev.Graph().matrix("G", (3, 5))
    with pytest.raises(ev.GradError, match="belongs to another graph"):
        ev.grad(y, W, seed=other)
    with pytest.raises(ev.GradError, match="y must be a Node"):
        ev.grad(np.ones(3), W, seed=np.ones(3))
    ids = ev.argmax(W @ X, axis=0)
    with pytest.raises(ev.GradError, match="argmax#\\d+ must be float"):
        ev.grad(ids, W, seed=np.ones(5))


# -- the LispMachine --------------------------------------------------------------------------

def test_lisp_machine_seed_on_the_machine_and_per_run():
    g, W, X, y = model()
    m = ev.LispMachine(g, cost=y, seed=G0)
    m.run()
    want_W, want_X = numpy_vjp(G0)
    np.testing.assert_allclose(W.grad, want_W, rtol=1e-12)
    np.testing.assert_allclose(X.grad, want_X, rtol=1e-12)
    G1 = RNG.normal(size=(3, 5))
    m.run(seed=G1)                                     # this run only
    np.testing.assert_allclose(W.grad, numpy_vjp(G1)[0], rtol=1e-12)
    m.run()
    np.testing.assert_allclose(W.grad, want_W, rtol=1e-12)


def test_lisp_machine_seed_agrees_with_ev_grad_and_takes_an_input_node():
    g, W, X, y = model()
    G = g.matrix("G", (3, 5))
    gW = ev.grad(y, W, seed=G)
    m = ev.LispMachine(g, cost=y, seed=G, outputs=[gW])
    for _ in range(ev.replay.WALKS_BEFORE_COMPILE + 2):    # a seeded run is always walked
        Gk = RNG.normal(size=(3, 5))
        m.run({G: Gk})
        np.testing.assert_allclose(W.grad, numpy_vjp(Gk)[0], rtol=1e-12)
        np.testing.assert_allclose(W.grad, gW.value, rtol=1e-12)


def test_lisp_machine_seed_errors():
    g, W, X, y = model()
    with pytest.raises(ev.GradError, match="must be a scalar"):
        ev.LispMachine(g, cost=y)
    with pytest.raises(ev.GradError, match="seed of shape \\(3,\\)"):
        ev.LispMachine(g, cost=y, seed=np.ones(3))
    m = ev.LispMachine(g, cost=y, seed=G0)
    with pytest.raises(ev.GradError, match="seed of dtype float32"):
        m.run(seed=G0.astype(np.float32))
    with pytest.raises(ev.ExprError, match="seed= needs a cost"):
        ev.LispMachine(g, seed=G0)
    scalar = ev.LispMachine(g, cost=ev.sum(y))
    scalar.run(seed=2.0)                                # a scalar cost takes a number
    ref = W.grad.copy()
    scalar.run()
    np.testing.assert_allclose(ref, 2 * W.grad)


def test_seeded_runs_leave_the_graph_as_it_was():
    g, W, X, y = model(np.float32)
    n = len(g)
    m = ev.LispMachine(g, cost=y, seed=G0.astype(np.float32))
    for _ in range(3):
        m.run()
    m.run(seed=G0.tolist())                  # a list takes the cost's dtype
    assert len(g) == n
    np.testing.assert_allclose(W.grad, numpy_vjp(G0)[0], rtol=2e-5, atol=1e-6)
