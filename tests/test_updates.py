"""State updates: {state parameter: new value node} written in place at the end of every
run, on both machines (walked and replayed), against a numpy reference of the running
average batch norm keeps."""
import numpy as np
import pytest

import exprvm as ev
from exprvm.machines import replay

MOMENTUM = 0.1


def running_mean_graph(state, W0):
    g = ev.Graph()
    x = g.matrix("x", (8, 3))
    running = g.vector("running", 3, value=state)
    W = g.vector("W", 3, value=W0)
    batch_mean = ev.mean(x, axis=0)
    new = running * (1 - MOMENTUM) + batch_mean * MOMENTUM
    cost = ev.sum(((x - batch_mean) * W) ** 2)
    return g, x, running, W, new, cost


def reference(batches):
    r = np.zeros(3)
    for b in batches:
        r = (1 - MOMENTUM) * r + MOMENTUM * b.mean(axis=0)
    return r


@pytest.mark.parametrize("machine", ["tape", "lisp", "lisp-replayed"])
def test_running_average_matches_numpy_over_several_steps(machine, monkeypatch, rng):
    batches = [rng.normal(size=(8, 3)) + k for k in range(5)]
    state = np.zeros(3)
    if machine == "tape":
        g, x, running, W, new, cost = running_mean_graph(state, np.ones(3))
        ev.grad(cost, [W])
        m = ev.TapeMachine(g, updates={running: new})
        for b in batches:
            m.run({x: b})
            assert W.grad is not None
    else:
        monkeypatch.setattr(replay, "WALKS_BEFORE_COMPILE", 1)
        for b in batches:      # a fresh graph per batch over the same state array
            g, x, running, W, new, cost = running_mean_graph(state, np.ones(3))
            ev.LispMachine(g, cost=cost, updates={running: new},
                           replay=machine == "lisp-replayed").run({x: b})
        if machine == "lisp-replayed":
            assert replay.stats()["compiled"] == 1
    np.testing.assert_allclose(state, reference(batches), rtol=1e-12)


def test_updates_show_in_the_disassembly_and_come_last():
    g, x, running, W, new, cost = running_mean_graph(np.zeros(3), np.ones(3))
    m = ev.TapeMachine(g, outputs=[cost], updates={running: new})
    lines = [ln for ln in str(m.program).splitlines() if ln.startswith("r")]
    assert "= update" in lines[-1] and "running" in lines[-1]
    assert m.program.verify()


def test_bad_updates_are_refused():
    g, x, running, W, new, cost = running_mean_graph(np.zeros(3), np.ones(3))
    with pytest.raises(ev.CompileError, match="not a parameter"):
        ev.TapeMachine(g, outputs=[cost], updates={x: new})
    with pytest.raises(ev.CompileError, match="shape or dtype"):
        ev.TapeMachine(g, outputs=[cost], updates={running: cost})
    with pytest.raises(ev.CompileError, match="not a node of graph"):
        ev.LispMachine(g, cost=cost, updates={running: ev.Graph().vector("z", 3)})
