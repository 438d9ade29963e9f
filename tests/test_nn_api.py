"""ev.nn and the solvers as PyTorch users write them: names, train()/eval(), state_dict,
solvers given their parameters once, step() after a run of either machine, zero_grad,
gradient accumulation."""
import numpy as np
import pytest

import exprvm as ev

F32 = np.float32


class Net(ev.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = ev.nn.Linear(4, 8, seed=0)
        self.bn = ev.nn.BatchNorm2d(2)
        self.head = ev.nn.Sequential(ev.nn.Linear(8, 3, seed=1), ev.tanh)


def test_unnamed_blocks_are_named_by_the_container_that_adopts_them():
    assert list(Net()) == ["fc1.W", "fc1.b", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                           "head.0.W", "head.0.b"]
    stack = ev.nn.Sequential(ev.nn.StackedRNN("lstm", 3, 4, layers=2), ev.nn.Linear(4, 2, name="out"))
    assert list(stack)[:3] == ["0.0.W_x", "0.0.W_h", "0.0.b"] and list(stack)[-2:] == ["out.W", "out.b"]
    named = ev.nn.Sequential(ev.nn.Linear(2, 2), name="enc")
    assert list(named) == ["enc.0.W", "enc.0.b"]
    alone = ev.nn.Linear(2, 2)
    assert list(alone) == ["linear.W", "linear.b"]            # the default name, as before
    outer = ev.nn.Sequential(ev.nn.Sequential(ev.nn.Linear(2, 2)), ev.nn.Sequential(ev.nn.Linear(2, 2)))
    assert list(outer) == ["0.0.W", "0.0.b", "1.0.W", "1.0.b"]


def test_the_names_follow_into_the_graph_and_stay_unique():
    model = ev.nn.Sequential(ev.nn.Linear(3, 3), ev.relu, ev.nn.Linear(3, 3))
    g = ev.Graph()
    model(g.matrix("x", (2, 3), F32))
    assert sorted(n.name for n in model.nodes(g)) == ["0.W", "0.b", "2.W", "2.b"]
    assert len(model.params()) == 4


def test_train_and_eval_switch_every_block():
    net = Net()
    assert net.eval() is net and not net.bn.training and not net.head.training
    assert net.train() is net and net.bn.training
    ev.nn.set_training(net, False)                            # the function form stays
    assert not net.bn.training


def test_state_dict_round_trip_and_checks():
    a, b = Net(), Net()
    for arr in a.parameters().values():
        arr += 1.5
    state = a.state_dict()
    assert set(state) == set(a) and all(state[k] is not a[k] for k in a)
    held = b["fc1.W"]
    b.load_state_dict(state)
    assert b["fc1.W"] is held                                 # loaded in place
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(ev.CheckpointError, match="missing: fc1.W"):
        b.load_state_dict({k: v for k, v in state.items() if k != "fc1.W"})
    with pytest.raises(ev.CheckpointError, match="unexpected: extra"):
        b.load_state_dict({**state, "extra": np.ones(1)})
    bad = dict(state, **{"fc1.b": np.ones(3)})
    before = b["fc1.W"].copy()
    with pytest.raises(ev.CheckpointError, match="fc1.b"):
        b.load_state_dict({k: v * 0 for k, v in bad.items()})
    np.testing.assert_array_equal(b["fc1.W"], before)        # nothing changed
    b.load_state_dict({"fc1.W": state["fc1.W"] * 0}, strict=False)
    assert not b["fc1.W"].any()


def regression(model):
    g = ev.Graph()
    x = g.matrix("x", (6, 3), F32)
    y = g.matrix("y", (6, 2), F32)
    loss = ev.mean((model(x) - y) ** 2)
    return g, x, y, loss


DATA = {"x": np.random.default_rng(0).standard_normal((6, 3)).astype(F32),
        "y": np.random.default_rng(1).standard_normal((6, 2)).astype(F32)}


def grads_by_hand(model):
    W, b = model["linear.W"], model["linear.b"]
    r = DATA["x"] @ W + b - DATA["y"]
    return 2 * DATA["x"].T @ r / r.size, 2 * r.sum(0) / r.size


@pytest.mark.parametrize("machine", ["tape", "lisp-walk", "lisp-replay", "fresh-graphs"])
def test_step_after_a_run_of_either_machine_needs_no_collect_grads(machine):
    model = ev.nn.Linear(3, 2, seed=0)
    opt = ev.solvers.SGD(model, lr=0.1)
    g, x, y, loss = regression(model)
    if machine == "tape":
        ev.grad(loss, model)
        m = ev.TapeMachine(g, outputs=loss)
    else:
        cache = ev.replay.ReplayCache(walks_before_compile=0 if machine == "lisp-replay" else 10**6)
        m = ev.LispMachine(g, cost=loss, replay_cache=cache)
    for _ in range(3):
        if machine == "fresh-graphs":               # a new graph per batch, as LispMachine users do
            g, x, y, loss = regression(model)
            m = ev.LispMachine(g, cost=loss, replay_cache=cache)
        W0 = model["linear.W"].copy()
        gW, gb = grads_by_hand(model)
        m.run({x: DATA["x"], y: DATA["y"]})
        assert opt.step() is True
        np.testing.assert_allclose(model["linear.W"], W0 - 0.1 * gW, rtol=1e-5, atol=1e-7)
    opt.zero_grad()
    assert all(p.grad is None for p in model.params())
    with pytest.raises(ev.GradError, match="no parameter has a gradient"):
        opt.step()


def test_accumulation_over_runs_is_opt_in():
    model = ev.nn.Linear(3, 2, seed=0)
    g, x, y, loss = regression(model)
    ev.grad(loss, model)
    m = ev.TapeMachine(g, outputs=loss)
    feeds = {x: DATA["x"], y: DATA["y"]}
    opt = ev.solvers.SGD(model, lr=0.1, accumulate=True)
    gW, _ = grads_by_hand(model)
    for _ in range(3):
        m.run(feeds)
    np.testing.assert_allclose(model.params()[0].grad, 3 * gW, rtol=1e-5)
    W0 = model["linear.W"].copy()
    opt.step()
    np.testing.assert_allclose(model["linear.W"], W0 - 0.3 * gW, rtol=1e-5, atol=1e-7)
    opt.zero_grad()
    m.run(feeds)
    np.testing.assert_allclose(model.params()[0].grad, grads_by_hand(model)[0], rtol=1e-5)
    with pytest.raises(ev.UsageError, match="accumulate=True needs ev.nn parameters"):
        ev.solvers.SGD([g.leaves("param")[0]], lr=0.1, accumulate=True)


def test_the_old_call_forms_keep_working():
    model = ev.nn.Linear(3, 2, seed=0)
    g, x, y, loss = regression(model)
    ev.grad(loss, model.nodes(g))
    m = ev.TapeMachine(g, outputs=[loss])
    opt = ev.solvers.Adam(lr=1e-2)
    m.run({x: DATA["x"], y: DATA["y"]})
    assert opt.step(model.collect_grads(g))
    assert opt.step(model.nodes(g))
    assert ev.solvers.SGD(0.5).lr == 0.5                      # a number first is the lr
    with pytest.raises(ev.UsageError, match="lr given twice"):
        ev.solvers.SGD(0.5, lr=0.1)
    with pytest.raises(ev.UsageError, match="which parameters"):
        ev.solvers.SGD(lr=0.1).step()


def test_solver_state_loads_into_the_parameters_it_was_given():
    model = ev.nn.Linear(3, 2, seed=0)
    g, x, y, loss = regression(model)
    ev.grad(loss, model)
    m = ev.TapeMachine(g, outputs=loss)
    opt = ev.solvers.Adam(model, lr=1e-2)
    m.run({x: DATA["x"], y: DATA["y"]})
    opt.step()
    again = ev.solvers.Adam(model, lr=1e-2)
    again.load_state_dict(opt.state_dict())
    assert again.steps == 1 and "Adam(lr=0.01" in repr(again) and "1 steps" in repr(again)
