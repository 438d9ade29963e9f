"""Silent wrong results and crashes of the compiler and the machines, each fixed and
pinned here: 0-d integer indexes, an operand passed twice to an in-place kernel, a
NaN made by constant folding, a wrong-shaped parameter in a walk, a feed for another
graph's node, and one bad run that must not poison the replay cache."""
import warnings

import numpy as np
import pytest

import exprvm as ev
from exprvm.machines import replay


def test_integer_index_compiles_and_its_gradient_runs():
    g = ev.Graph()
    v = g.vector("v", 3)
    cost = v[1] * 2.0
    gv = ev.grad(cost, v)
    m = ev.TapeMachine(g)
    m.run({v: np.array([1.0, 2.0, 3.0])})
    assert float(cost.value) == 4.0
    np.testing.assert_array_equal(v.grad, [0.0, 2.0, 0.0])
    np.testing.assert_array_equal(gv.value, [0.0, 2.0, 0.0])


def test_stack_of_scalars_differentiates_through_integer_indexes():
    g = ev.Graph()
    a, b = g.scalar("a"), g.scalar("b")
    w = g.vector("w", 2)
    ga, gb = ev.grad(ev.sum(ev.stack([a, b]) * w), [a, b])
    m = ev.TapeMachine(g)
    m.run({a: 1.0, b: 2.0, w: np.array([3.0, 5.0])})
    assert (float(ga.value), float(gb.value)) == (3.0, 5.0)


def test_gradient_of_an_integer_index_alone_runs():
    g = ev.Graph()
    v = g.vector("v", 3)
    w = g.scalar("w")
    gv = ev.grad(v[1] * w, v)
    m = ev.TapeMachine(g, outputs=[gv])
    m.run({v: np.array([1.0, 2.0, 3.0]), w: 5.0})
    np.testing.assert_array_equal(gv.value, [0.0, 5.0, 0.0])


def test_integer_indexes_replay_on_the_lisp_machine(monkeypatch):
    monkeypatch.setattr(replay, "WALKS_BEFORE_COMPILE", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # "cannot replay this graph" would be a warning
        for k in range(3):
            g = ev.Graph()
            v = g.vector("v", 3, value=np.array([1.0, 2.0, 3.0]))
            cost = v[1] * (2.0 + k)
            ev.LispMachine(g, cost=cost).run()
            assert float(cost.value) == 2.0 * (2.0 + k)
            np.testing.assert_array_equal(v.grad, [0.0, 2.0 + k, 0.0])
    assert replay.stats()["compiled"] == 1


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_where_with_the_same_operand_twice_compiles_and_is_right(backend):
    if backend == "c" and not ev.kernels.available("tanh", np.float64, "c"):
        pytest.skip("no C backend")
    g = ev.Graph()
    x = g.vector("x", 4)
    u = ev.tanh(x)
    y = ev.where(x > 0, u, u)
    y2 = ev.where(x > 0, ev.tanh(x * 2.0), ev.tanh(x * 2.0))
    m = ev.TapeMachine(g, outputs=[y, y2], backend=backend)
    xs = np.array([-1.0, 0.5, 2.0, -0.1])
    m.run({x: xs})
    np.testing.assert_allclose(y.value, np.tanh(xs))
    np.testing.assert_allclose(y2.value, np.tanh(2 * xs))


def test_nan_watch_names_the_node_a_constant_fold_made():
    g = ev.Graph()
    x = g.vector("x", 2)
    bad = ev.log(g.constant(-1.0))          # all-constant: folded when compiled
    y = x * bad
    m = ev.TapeMachine(g, outputs=[y], nan_watch=True)
    with pytest.raises(ev.NumericError, match=r"log#\d+ = log\(\.\.\.\) made at test_faults_compiled.py:\d+"):
        m.run({x: np.ones(2)})


def test_walked_lisp_machine_refuses_a_wrong_shaped_parameter_and_keeps_replaying(monkeypatch):
    monkeypatch.setattr(replay, "WALKS_BEFORE_COMPILE", 1)

    def graph(W0):
        g = ev.Graph()
        W = g.matrix("W", (3, 4), value=W0)
        x = g.vector("x", 4, value=np.ones(4))
        return g, W, ev.sum(W @ x)

    for replayed in (False, True):
        g, W, cost = graph(np.ones((3, 4)))
        W.value = np.ones((1, 4))           # broadcasts in numpy: a wrong cost, silently
        with pytest.raises(ev.FeedError, match="W"):
            ev.LispMachine(g, cost=cost, replay=replayed).run()
    for _ in range(3):                       # the structure still compiles and replays
        g, W, cost = graph(np.ones((3, 4)))
        ev.LispMachine(g, cost=cost).run()
        assert float(cost.value) == 12.0
    assert replay.stats() == {"walking": 0, "compiled": 1, "failed": 0}


@pytest.mark.parametrize("machine", ["tape", "lisp"])
def test_a_feed_for_a_node_of_another_graph_is_refused(machine):
    g, other = ev.Graph("mine"), ev.Graph("other")
    x = g.vector("x", 2)
    stranger = other.vector("x", 2)
    cost = ev.sum(x * 3.0)
    m = ev.TapeMachine(g, outputs=[cost]) if machine == "tape" else ev.LispMachine(g, cost=cost)
    m.run({x: np.ones(2)})
    with pytest.raises(ev.FeedError, match="graph 'other'"):
        m.run({stranger: np.full(2, 5.0)})
