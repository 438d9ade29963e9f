"""ev.grad: symbolic gradient nodes, errors, second derivatives."""
import numpy as np
import pytest

import exprvm as ev


def test_grad_returns_nodes_in_the_graph_marked_as_gradients():
    g = ev.Graph()
    W = g.matrix("W", (2, 3), value=np.arange(6.0).reshape(2, 3) / 6)
    v = g.vector("v", 3, value=np.ones(3))
    cost = ev.sum(ev.tanh(W @ v))
    n = len(g)
    gW, gv = ev.grad(cost, [W, v])
    assert len(g) > n and gW.shape == W.shape and gv.shape == v.shape
    assert gW.role == "grad" and gW.grad_of is W and g.grads[W] is gW and g.costs[W] is cost
    assert all(node.role == "grad" for node in g.nodes[n:])
    assert ev.grad(cost, W) is gW  # single node in, single node out; hash-consed
    ev.LispMachine(g, outputs=[gW]).run()
    h = np.tanh(W.value @ v.value)
    np.testing.assert_allclose(gW.value, np.outer(1 - h * h, v.value))


def test_cost_must_be_a_scalar():
    g = ev.Graph()
    x = g.vector("x", 3)
    with pytest.raises(ev.GradError, match="scalar.*shape \\(3,\\)"):
        ev.grad(x * x, [x])


def test_wrt_not_in_the_cost_is_named():
    g = ev.Graph()
    x, unused = g.vector("x", 3), g.vector("unused", 3)
    with pytest.raises(ev.GradError, match="does not depend on unused"):
        ev.grad(ev.sum(x), [x, unused])


def test_gradient_through_non_differentiable_path_is_zero():
    g = ev.Graph()
    x = g.vector("x", 3, value=np.array([-1.0, 2.0, 3.0]))
    cost = ev.sum(ev.where(x > 0, 1.0, 2.0) * g.constant(np.ones(3)))
    gx = ev.grad(cost, x)
    ev.LispMachine(g, outputs=[gx]).run()
    np.testing.assert_array_equal(gx.value, 0)


@pytest.mark.parametrize("f, d2", [
    (lambda x: ev.tanh(x) * x, lambda x: 2 * (1 - np.tanh(x) ** 2) - 2 * x * np.tanh(x) * (1 - np.tanh(x) ** 2)),
    (lambda x: ev.sigmoid(x), lambda x: (s := 1 / (1 + np.exp(-x))) * (1 - s) * (1 - 2 * s)),
    (lambda x: x ** 3, lambda x: 6 * x),
    (lambda x: ev.exp(ev.sin(x)), lambda x: np.exp(np.sin(x)) * (np.cos(x) ** 2 - np.sin(x))),
    (lambda x: ev.softplus(x), lambda x: (s := 1 / (1 + np.exp(-x))) * (1 - s)),
])
def test_second_derivatives(f, d2):
    xs = np.linspace(-1.5, 1.5, 7)
    g = ev.Graph()
    x = g.vector("x", 7, value=xs)
    d1 = ev.grad(ev.sum(f(x)), x)
    dd = ev.grad(ev.sum(d1), x)  # diagonal Hessian of an elementwise f
    ev.LispMachine(g, outputs=[dd]).run()
    np.testing.assert_allclose(dd.value, d2(xs), rtol=1e-10, atol=1e-12)


def test_hessian_vector_product_of_a_matmul_model_by_finite_differences(rng):
    A = rng.normal(size=(3, 3))

    def grad_dot_v(x, v):
        gx = ev.grad(ev.sum(ev.tanh(A @ x) ** 2), x)
        return ev.sum(gx * v)

    assert ev.check_grad(grad_dot_v, [rng.normal(size=3), rng.normal(size=3)])


def test_symbolic_and_autodiff_agree_on_broadcasting_reductions_and_matmul(rng):
    g = ev.Graph()
    X = g.tensor("X", (2, 3, 4), value=rng.normal(size=(2, 3, 4)))
    W = g.matrix("W", (4, 5), value=rng.normal(size=(4, 5)))
    b = g.vector("b", 5, value=rng.normal(size=5))
    h = ev.relu(X @ W + b)
    cost = ev.mean(ev.logsumexp(h, axis=-1)) + ev.sum(ev.max(h, axis=(0, 1)))
    syms = ev.grad(cost, [X, W, b])
    ev.LispMachine(g, cost=cost, outputs=syms).run()
    for leaf, s in zip((X, W, b), syms):
        np.testing.assert_allclose(s.value, leaf.grad, rtol=1e-12)
