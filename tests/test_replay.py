"""LispMachine replay: a graph whose structure was met before runs a compiled program.

Each test compares replayed runs with walked ones (replay=False), the reference; every
test starts with an empty cache (conftest.py), and here a structure is compiled the
second time it comes (one walk first) unless a test says otherwise.
"""
import numpy as np
import pytest

import exprvm as ev
from exprvm.machines import replay


@pytest.fixture(autouse=True)
def compile_on_second_sight(monkeypatch):
    monkeypatch.setattr(replay, "WALKS_BEFORE_COMPILE", 1)


def rnn_graph(W, U, ids, targets, scale=1.0):
    """A small tanh RNN with per-step loss; the data are the graph's constants."""
    g = ev.Graph()
    Wn = g.matrix("W", W.shape, value=W)
    Un = g.matrix("U", U.shape, value=U)
    h = g.constant(np.zeros((ids.shape[1], U.shape[0])))
    loss = None
    for t in range(len(ids)):
        h = ev.tanh(ev.take(Wn, ids[t]) + h @ Un)
        step = ev.sum(ev.cross_entropy(h @ Wn.T * scale, targets[t]))
        loss = step if loss is None else loss + step
    return g, loss, [Wn, Un]


def run(g, cost, **kw):
    m = ev.LispMachine(g, cost=cost, **kw)
    m.run()
    return m


def test_same_structure_new_values_matches_the_walk(rng):
    W, U = rng.normal(size=(6, 4)) * 0.5, rng.normal(size=(4, 4)) * 0.5
    for k in range(4):
        data = rng.integers(0, 6, (2, 5, 3))      # new constants every graph
        W2, U2 = W + 0.1 * k, U - 0.05 * k        # and new parameter arrays
        g, cost, params = rnn_graph(W2, U2, *data, scale=1.0 + k)
        run(g, cost)
        gw, cw, pw = rnn_graph(W2, U2, *data, scale=1.0 + k)
        run(gw, cw, replay=False)
        assert g.signature() == gw.signature()
        np.testing.assert_allclose(cost.value, cw.value, rtol=1e-10)
        for p, q in zip(params, pw):
            np.testing.assert_allclose(p.grad, q.grad, rtol=1e-9, atol=1e-12)
    assert sum(isinstance(v, replay.CompiledStructure) for v in replay.DEFAULT._entries.values()) == 1


def test_replayed_runs_leave_intermediates_without_values(rng):
    W, U = rng.normal(size=(6, 4)), rng.normal(size=(4, 4))
    data = rng.integers(0, 6, (2, 3, 2))
    g1, c1, _ = rnn_graph(W, U, *data)
    run(g1, c1)
    assert all(n.value is not None for n in g1.nodes)          # walked
    g2, c2, _ = rnn_graph(W, U, *data)
    run(g2, c2)
    assert c2.value is not None
    assert all(n.value is None for n in g2.nodes if not n.is_leaf and n is not c2)
    # the walked graph run again is replayed too, and loses its stale intermediates
    run(g1, c1)
    assert all(n.value is None for n in g1.nodes if not n.is_leaf and n is not c1)
    np.testing.assert_allclose(c1.value, c2.value)


def test_replay_off_and_watches_always_walk(rng):
    W, U = rng.normal(size=(6, 4)), rng.normal(size=(4, 4))
    data = rng.integers(0, 6, (2, 3, 2))
    for kw in ({"replay": False}, {"nan_watch": True}, {"inf_watch": True}):
        for _ in range(3):
            g, cost, _ = rnn_graph(W, U, *data)
            run(g, cost, **kw)
            assert all(n.value is not None for n in g.nodes)
    assert not any(isinstance(v, replay.CompiledStructure) for v in replay.DEFAULT._entries.values())


def test_weak_scalars_with_other_values_are_fed_not_baked_in():
    def graph(c):
        g = ev.Graph()
        x = g.vector("x", 3, value=np.arange(3.0))
        return g, x, ev.sum(ev.exp(x * c) + c)

    for c in (0.5, 2.0, -1.0, 3.0):
        g, x, cost = graph(c)
        run(g, cost)
        v = np.arange(3.0)
        np.testing.assert_allclose(cost.value, np.sum(np.exp(v * c) + c))
        np.testing.assert_allclose(x.grad, c * np.exp(v * c))


def test_each_graph_keeps_its_own_results(rng):
    W, U = rng.normal(size=(6, 4)), rng.normal(size=(4, 4))
    graphs = [rnn_graph(W, U, *rng.integers(0, 6, (2, 3, 2))) for _ in range(3)]
    for g, cost, _ in graphs:
        run(g, cost)
    _, c2, ps2 = graphs[1]                          # replayed
    kept = float(c2.value), ps2[0].grad.copy()
    for g, cost, _ in (graphs[2], graphs[0]):       # later replays use the same buffers
        run(g, cost)
    assert float(c2.value) == kept[0]
    np.testing.assert_array_equal(ps2[0].grad, kept[1])
    assert len({float(c.value) for _, c, _ in graphs}) == 3


def test_unbound_input_of_a_replayed_graph_names_the_input():
    def graph():
        g = ev.Graph()
        x = g.vector("x", 3)
        return g, x, ev.sum(ev.tanh(x))

    for _ in range(2):
        g, x, cost = graph()
        m = ev.LispMachine(g, cost=cost)
        m.run({x: np.ones(3)})
    g, x, cost = graph()
    with pytest.raises(ev.FeedError, match="no value for input x"):
        ev.LispMachine(g, cost=cost).run()
    ev.LispMachine(g, cost=cost).run({x: np.zeros(3)})
    assert float(cost.value) == 0.0 and np.all(x.grad == 1.0)


def test_random_ops_are_never_replayed():
    for _ in range(3):
        g = ev.Graph()
        x = g.vector("x", 100, value=np.ones(100))
        y = ev.dropout(x, 0.5, seed=1)
        ev.LispMachine(g, cost=ev.sum(y)).run()
        assert g.signature() is None and y.value is not None


def test_a_graph_that_cannot_be_compiled_is_walked_with_a_warning(monkeypatch):
    def broken(*args, **kw):
        raise ev.CompileError("no program for this graph")

    monkeypatch.setattr(replay, "CompiledStructure", broken)
    values = []
    for k in range(3):
        g = ev.Graph()
        x = g.vector("x", 2, value=np.array([1.0, 2.0]) * k)
        cost = ev.sum(x * x)
        if k == 1:
            with pytest.warns(RuntimeWarning, match="cannot replay"):
                run(g, cost)
        else:
            run(g, cost)
        values.append(float(cost.value))
        np.testing.assert_allclose(x.grad, 2 * x.value)
    assert values == [0.0, 5.0, 20.0]
    assert replay.stats() == {"walking": 0, "compiled": 0, "failed": 1}


def test_structures_remembered_are_bounded():
    for n in range(replay.MAX_STRUCTURES + 10):
        g = ev.Graph()
        x = g.vector("x", n + 1, value=np.ones(n + 1))
        run(g, ev.sum(x))
    assert len(replay.DEFAULT) == replay.MAX_STRUCTURES


def test_the_structure_replayed_last_stays_the_newest():
    """A replayed structure keeps its place at the end of the cache even when it skips
    the reordering (it was the last one looked up), so it outlives newer strangers."""
    def graph(n):
        g = ev.Graph()
        x = g.vector("x", n, value=np.ones(n))
        return g, ev.sum(ev.tanh(x))
    for _ in range(replay.WALKS_BEFORE_COMPILE + 3):
        run(*graph(2))
    assert replay.stats()["compiled"] == 1
    for n in range(3, 3 + replay.MAX_STRUCTURES - 1):   # fills the cache, A last-but-many
        run(*graph(n))
        run(*graph(2))                                   # A again: moved back to the end
    run(*graph(1000))
    assert replay.stats()["compiled"] == 1, "the structure used all along was evicted"
    g, cost = graph(2)
    run(g, cost)
    assert float(cost.value) == pytest.approx(2 * np.tanh(1.0))


def test_signature_tells_structures_apart():
    def sig(build):
        g = ev.Graph()
        x = g.vector("x", 3)
        build(g, x)
        return g.signature()

    base = sig(lambda g, x: ev.tanh(x))
    assert base == sig(lambda g, x: ev.tanh(x))
    assert base != sig(lambda g, x: ev.sigmoid(x))
    assert sig(lambda g, x: ev.sum(x, axis=0)) != sig(lambda g, x: ev.sum(x, axis=0, keepdims=True))
    assert sig(lambda g, x: x[0:2]) != sig(lambda g, x: x[1:3])
    assert sig(lambda g, x: x * g.constant(np.ones(3))) == sig(lambda g, x: x * g.constant(np.zeros(3)))
    assert sig(lambda g, x: x * g.constant(np.ones(3))) != sig(lambda g, x: x * g.constant(np.ones(2)[0]))


def test_a_bad_value_in_a_replayed_graph_names_the_op_and_its_line():
    def graph(ids):
        g = ev.Graph()
        E = g.matrix("E", (5, 3), value=np.ones((5, 3)))
        rows = ev.take(E, np.array(ids))
        return g, rows, ev.sum(rows * rows)

    for ids in ([0, 1], [4, 2]):
        g, rows, cost = graph(ids)
        run(g, cost)
    g, rows, cost = graph([1, 5])
    with pytest.raises(ev.IndexRangeError) as e:
        run(g, cost)
    assert "take" in str(e.value) and rows.site in str(e.value)


def test_by_default_a_structure_is_walked_a_few_times_before_it_is_compiled(monkeypatch):
    monkeypatch.setattr(replay, "WALKS_BEFORE_COMPILE", 8)
    walked = []
    for k in range(10):
        g = ev.Graph()
        x = g.vector("x", 3, value=np.full(3, float(k)))
        y = ev.tanh(x)
        cost = ev.sum(y * y)
        run(g, cost)
        walked.append(y.value is not None)
        np.testing.assert_allclose(x.grad, 2 * np.tanh(k) * (1 - np.tanh(k) ** 2) * np.ones(3))
    assert walked == [True] * 8 + [False] * 2
    assert replay.stats() == {"walking": 0, "compiled": 1, "failed": 0}
