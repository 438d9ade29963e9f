"""LispMachine: node-by-node evaluation, run-time autodiff, growing graphs, watches."""
import logging

import numpy as np
import pytest

import exprvm as ev


def mlp(g, rng, dtype=np.float64):
    W = g.matrix("W", (3, 4), dtype=dtype, value=rng.normal(size=(3, 4)).astype(dtype))
    b = g.vector("b", 3, dtype=dtype, value=rng.normal(size=3).astype(dtype))
    x = g.vector("x", 4, dtype=dtype)
    cost = ev.sum(ev.tanh(W @ x + b) ** 2)
    return W, b, x, cost


def test_autodiff_matches_handwritten_numpy(rng):
    g = ev.Graph()
    W, b, x, cost = mlp(g, rng)
    xv = rng.normal(size=4)
    ev.LispMachine(g, cost=cost).run({x: xv})
    h = np.tanh(W.value @ xv + b.value)
    dpre = 2 * h * (1 - h * h)
    np.testing.assert_allclose(cost.value, np.sum(h * h))
    np.testing.assert_allclose(W.grad, np.outer(dpre, xv))
    np.testing.assert_allclose(b.grad, dpre)
    np.testing.assert_allclose(x.grad, W.value.T @ dpre)  # inputs get gradients too


def test_graph_grows_between_runs_without_compiling(rng):
    g = ev.Graph()
    Wh = g.matrix("Wh", (3, 3), value=rng.normal(size=(3, 3)) * 0.5)
    h = g.vector("h0", 3, value=np.ones(3))
    m = None
    for steps in (2, 5):
        while sum(1 for n in g.nodes if n.op == "tanh") < steps:
            h = ev.tanh(Wh @ h)
        cost = ev.sum(h)
        m = ev.LispMachine(g, cost=cost)
        m.run()
        ref = np.ones(3)
        for _ in range(steps):
            ref = np.tanh(Wh.value @ ref)
        np.testing.assert_allclose(cost.value, ref.sum())
        assert ev.check_grad(lambda W: _unroll(W, steps), [Wh.value])
    # one machine, graph grown under it: it re-plans on its own
    m = ev.LispMachine(g, cost=ev.sum(h))
    m.run()
    h2 = ev.tanh(Wh @ h)
    m.cost = ev.sum(h2)
    m.run()
    np.testing.assert_allclose(m.cost.value, np.tanh(Wh.value @ h.value).sum())


def _unroll(W, steps):
    h = W.graph.constant(np.ones(3))
    for _ in range(steps):
        h = ev.tanh(W @ h)
    return ev.sum(h)


@pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")  # NaN/Inf are made on purpose
def test_nan_watch_names_node_and_line():
    g = ev.Graph()
    x = g.vector("x", 2)
    y = ev.log(x); line = f"test_lisp.py:{y.site.split(':')[1]}"  # noqa: E702
    m = ev.LispMachine(g, cost=ev.sum(y), nan_watch=True)
    with pytest.raises(ev.NumericError) as e:
        m.run({x: np.array([1.0, -1.0])})
    assert "NaN" in str(e.value) and "log" in str(e.value) and line in str(e.value)
    m.run({x: np.array([1.0, 2.0])})  # still usable
    with pytest.raises(ev.NumericError, match="Inf"):
        ev.LispMachine(g, cost=ev.sum(y), inf_watch=True).run({x: np.array([0.0, 1.0])})


@pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")
def test_nan_watch_covers_gradients():
    g = ev.Graph()
    x = g.vector("x", 2, value=np.array([0.0, 1.0]))
    y = ev.sum(ev.sqrt(x))  # finite forward, infinite derivative at 0
    with pytest.raises(ev.NumericError, match="gradient of x"):
        ev.LispMachine(g, cost=y, inf_watch=True).run()


def test_watch_records_values_per_run_and_logger_sees_nodes(caplog):
    g = ev.Graph()
    x = g.scalar("x")
    y = ev.tanh(x)
    y.name = "y"
    log = logging.getLogger("exprvm.test")
    m = ev.LispMachine(g, cost=y, watch=[y], logger=log)
    with caplog.at_level(logging.DEBUG, logger="exprvm.test"):
        for v in (0.1, 0.2, 0.3):
            m.run({x: v})
    np.testing.assert_allclose(m.history[y], np.tanh([0.1, 0.2, 0.3]))
    assert any("y = tanh(x)" in r.message for r in caplog.records)


def test_unbound_input_and_bad_feed_raise_and_machine_stays_usable():
    g = ev.Graph()
    x = g.vector("x", 3)
    cost = ev.sum(x * x)
    m = ev.LispMachine(g, cost=cost)
    with pytest.raises(ev.FeedError, match="no value for input x"):
        m.run()
    with pytest.raises(ev.FeedError, match="shape"):
        m.run({x: np.ones(4)})
    m.run({x: np.ones(3)})
    assert float(cost.value) == 3.0


def test_fwd_only_and_bwd_only():
    g = ev.Graph()
    x = g.vector("x", 3, value=np.arange(3.0))
    cost = ev.sum(x * x)
    ev.LispMachine(g, cost=cost, fwd_only=True).run()
    assert x.grad is None and float(cost.value) == 5.0
    ev.LispMachine(g, cost=cost, bwd_only=True).run()
    np.testing.assert_allclose(x.grad, 2 * np.arange(3.0))
    with pytest.raises(ev.ExprError, match="fwd_only and bwd_only exclude each other"):
        ev.LispMachine(g, cost=cost, fwd_only=True, bwd_only=True)
    with pytest.raises(ev.GradError, match="scalar"):
        ev.LispMachine(g, cost=x * x)


def test_cross_entropy_and_take_gradients(rng):
    g = ev.Graph()
    E = g.matrix("E", (5, 3), value=rng.normal(size=(5, 3)))
    ids = np.array([1, 4, 1, 0])
    V = g.matrix("V", (3, 5), value=rng.normal(size=(3, 5)))
    targets = np.array([2, 0, 1, 4])
    cost = ev.mean(ev.cross_entropy(ev.embedding(E, ids) @ V, targets))
    ev.LispMachine(g, cost=cost).run()
    z = E.value[ids] @ V.value
    ref = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(4), targets])
    np.testing.assert_allclose(cost.value, ref)
    assert ev.check_grad(lambda E, V: ev.mean(ev.cross_entropy(ev.take(E, ids) @ V, np.array([2, 0, 1, 4]))),
                         [E.value, rng.normal(size=(3, 5))])
    assert E.grad[2].sum() == 0 and E.grad[3].sum() == 0  # rows never looked up get no gradient


def test_dropout_is_seeded_and_its_gradient_uses_the_runs_mask():
    def run(seed):
        g = ev.Graph()
        x = g.vector("x", 1000, value=np.ones(1000))
        y = ev.dropout(x, 0.25, seed=seed)
        ev.LispMachine(g, cost=ev.sum(y)).run()
        return y.value.copy(), x.grad.copy()

    (a, ga), (b, _), (c, _) = run(3), run(3), run(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) == {0.0, 1 / 0.75}
    np.testing.assert_array_equal(ga, a)  # d/dx sum(x * mask) = mask
    g = ev.Graph()
    x = g.vector("x", 3)
    assert ev.dropout(x, 0.5, train=False) is x


def test_out_of_range_ids_raise_a_typed_error_naming_the_node():
    g = ev.Graph()
    E = g.matrix("E", (5, 3), value=np.ones((5, 3)))
    ids = g.tensor("ids", (2,), dtype=np.int64)
    rows = ev.take(E, ids)
    m = ev.LispMachine(g, outputs=[rows])
    for bad in ([0, 5], [-1, 0]):
        with pytest.raises(ev.IndexRangeError) as e:
            m.run({ids: np.array(bad)})
        assert "take" in str(e.value) and rows.site in str(e.value)
    m.run({ids: np.array([4, 0])})
    with pytest.raises(ev.IndexRangeError, match="cross_entropy"):
        ev.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
