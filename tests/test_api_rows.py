"""The everyday API as a PyTorch or JAX user meets it: one test per trap a new user hit
(results overwritten by the next run, inputs silently reused, outputs= given a node,
the last short batch, Sequential's names, solvers given the wrong thing, unreadable
reprs, a namespace full of internals)."""
import numpy as np
import pytest

import exprvm as ev

F32 = np.float32


def square_cost():
    g = ev.Graph()
    x = g.vector("x", 3)
    return g, x, ev.sum(x * x)


# -- results that stay put ---------------------------------------------------------------

@pytest.mark.parametrize("machine", ["tape", "lisp", "lisp-replayed"])
def test_history_of_values_is_right(machine):
    g, x, cost = square_cost()
    m = ev.TapeMachine(g, outputs=[cost]) if machine == "tape" else ev.LispMachine(g, cost=cost)
    if machine == "lisp-replayed":
        cache = ev.replay.ReplayCache(walks_before_compile=0)
        m = ev.LispMachine(g, cost=cost, replay_cache=cache)
    hist, returned = [], []
    for i in range(3):
        returned.append(m.run({x: np.full(3, float(i))})[0])
        hist.append(cost.value)
    assert [float(v) for v in hist] == [0.0, 3.0, 12.0]
    assert [float(v) for v in returned] == [0.0, 3.0, 12.0]
    if machine == "lisp-replayed":
        assert cache.stats()["compiled"] == 1


@pytest.mark.parametrize("machine", ["tape", "lisp", "lisp-replayed"])
def test_history_of_gradients_is_right(machine):
    g = ev.Graph()
    W = g.matrix("W", (2, 3), value=np.ones((2, 3)))
    x = g.vector("x", 3)
    cost = ev.sum(ev.tanh(W @ x))
    if machine == "tape":
        ev.grad(cost, W)
        m = ev.TapeMachine(g, outputs=[cost])
    else:
        walks = 0 if machine == "lisp-replayed" else 10**6
        m = ev.LispMachine(g, cost=cost, replay_cache=ev.replay.ReplayCache(walks_before_compile=walks))
    grads, feeds = [], [np.full(3, k * 0.1) for k in range(3)]
    for xv in feeds:
        m.run({x: xv})
        grads.append(W.grad)
    for xv, gv in zip(feeds, grads):
        want = np.outer(1 - np.tanh(np.ones((2, 3)) @ xv) ** 2, xv)
        np.testing.assert_allclose(gv, want, rtol=1e-12)


def test_gradients_nobody_holds_reuse_one_buffer():
    g = ev.Graph()
    W = g.matrix("W", (2, 3), value=np.ones((2, 3)))
    x = g.vector("x", 3)
    cost = ev.sum(ev.tanh(W @ x))
    ev.grad(cost, W)
    m = ev.TapeMachine(g, outputs=[cost])
    seen = set()
    for k in range(4):
        m.run({x: np.full(3, float(k))})
        seen.add(id(W.grad))
    assert len(seen) == 1                           # a training loop pays no copy
    view = W.grad[0]                                # a view of it is a hold too
    before = view.copy()
    m.run({x: np.full(3, 9.0)})
    np.testing.assert_array_equal(view, before)


def test_a_held_output_fed_back_as_an_input_is_not_overwritten():
    g = ev.Graph()
    h0 = g.matrix("h0", (64, 64), F32)              # large: read in place, not copied
    W = g.matrix("W", (64, 64), F32, value=np.eye(64, dtype=F32) * 0.5)
    h1 = ev.tanh(h0 @ W) + h0
    m = ev.TapeMachine(g, outputs=[h1])
    h = np.full((64, 64), 0.1, F32)
    for _ in range(3):
        m.run({h0: h})
        prev, h = h, h1.value                       # the carry: last run's output fed back
        np.testing.assert_allclose(h, np.tanh(prev @ W.value) + prev, rtol=1e-6)


def test_borrow_returns_the_buffers_read_only():
    g, x, cost = square_cost()
    m = ev.TapeMachine(g, outputs=cost)
    out = m.run({x: np.ones(3)}, borrow=True)
    assert float(out[0]) == 3.0 and not out[0].flags.writeable
    mine = m.run({x: np.ones(3)})
    mine[0][...] = 7                                # a copy: the caller's to write
    assert float(m.run({x: np.ones(3)})[0]) == 3.0
    lm = ev.LispMachine(g, cost=cost, replay=False)
    out = lm.run({x: np.ones(3)}, borrow=True)[0]
    assert np.shares_memory(out, cost.value) and not out.flags.writeable


# -- feeds must be fed -------------------------------------------------------------------

@pytest.mark.parametrize("machine", ["tape", "lisp", "lisp-replayed"])
def test_an_input_not_fed_is_an_error_naming_it(machine):
    g, x, cost = square_cost()
    if machine == "tape":
        m = ev.TapeMachine(g, outputs=[cost])
    else:
        walks = 0 if machine == "lisp-replayed" else 10**6
        m = ev.LispMachine(g, cost=cost, replay_cache=ev.replay.ReplayCache(walks_before_compile=walks))
    m.run({x: np.ones(3)})
    m.run({x: np.ones(3)})
    with pytest.raises(ev.FeedError, match=r"no value for input x \(3,\).*ev\.let"):
        m.run({})
    with pytest.raises(ev.FeedError, match="no value for input x"):
        m.run()
    ev.let(x, np.full(3, 2.0))                      # bound to persist
    assert float(m.run()[0]) == 12.0
    assert float(m.run()[0]) == 12.0
    assert float(m.run({x: np.ones(3)})[0]) == 3.0  # a feed wins for its run
    assert float(m.run()[0]) == 12.0


def test_another_machines_feed_is_not_reused():
    g, x, cost = square_cost()
    ev.LispMachine(g, cost=cost).run({x: np.ones(3)})
    with pytest.raises(ev.FeedError, match="no value for input x"):
        ev.TapeMachine(g, outputs=[cost]).run()


# -- outputs= ----------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda x: ev.sum(x * x), lambda x: ev.tanh(x)])
def test_outputs_takes_a_node_or_any_iterable(make):
    g = ev.Graph()
    x = g.vector("x", 3)
    y = make(x)
    n, sig = len(g), g.signature()
    for given in (lambda: y, lambda: [y], lambda: (y,), lambda: iter([y]), lambda: {y: 1}.keys()):
        m = ev.TapeMachine(g, outputs=given())
        np.testing.assert_allclose(m.run({x: np.arange(3.0)})[0], np.asarray(make(np.arange(3.0))))
        lm = ev.LispMachine(g, outputs=given())
        np.testing.assert_allclose(lm.run({x: np.arange(3.0)})[0], np.asarray(make(np.arange(3.0))))
    assert len(g) == n and g.signature() == sig


def test_a_failed_machine_call_leaves_the_graph_as_it_was():
    g = ev.Graph()
    x = g.vector("x", 3)
    y = ev.tanh(x)
    other = ev.Graph().scalar("z")
    n, sig = len(g), g.signature()
    bad = [lambda: ev.TapeMachine(g, outputs=3), lambda: ev.TapeMachine(g, outputs="y"),
           lambda: ev.TapeMachine(g, outputs=[y, 2]), lambda: ev.TapeMachine(g, outputs=[other]),
           lambda: ev.LispMachine(g, outputs=5), lambda: ev.TapeMachine(g, watch=y, outputs=[y, None])]
    for call in bad:
        with pytest.raises(ev.ExprError):
            call()
        assert len(g) == n and g.signature() == sig


@pytest.mark.parametrize("cls,hint", [(ev.TapeMachine, "outputs="), (ev.LispMachine, "cost=")])
def test_a_machine_given_a_node_says_the_fix(cls, hint):
    g = ev.Graph()
    y = ev.sum(g.vector("y_in", 2) * 2)
    with pytest.raises(ev.UsageError, match=rf"takes a Graph, got node .*{hint}"):
        cls(y)
    with pytest.raises(ev.UsageError, match="takes a Graph"):
        cls(np.ones(3))


# -- the last, shorter batch -------------------------------------------------------------

def test_a_none_dimension_names_ev_function():
    g = ev.Graph()
    with pytest.raises(ev.ShapeError, match="None dimension.*ev.function"):
        g.matrix("x", (None, 20))
    with pytest.raises(ev.ShapeError, match="not an int"):
        g.tensor("x", ("a", 2))


def test_the_last_short_batch_traces_once_more():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((20, 3))

    @ev.function
    def predict(x):
        return ev.tanh(x @ W)

    X = rng.standard_normal((80, 20))
    outs = [predict(X[i:i + 32]) for i in range(0, 80, 32)]
    assert [o.shape for o in outs] == [(32, 3), (32, 3), (16, 3)]
    np.testing.assert_allclose(np.concatenate(outs), np.tanh(X @ W), rtol=1e-12)
    assert predict.trace_count == 2 and len(predict.programs) == 2
    assert sorted(predict.programs) == ["(float64[16, 20])", "(float64[32, 20])"]


# -- ev.nn as PyTorch users write it -----------------------------------------------------

def test_sequential_names_children_by_position_trains_saves_and_loads(tmp_path):
    model = ev.nn.Sequential(ev.nn.Linear(4, 8, seed=0), ev.relu, ev.nn.Linear(8, 2, seed=1))
    assert list(model) == ["0.W", "0.b", "2.W", "2.b"]
    opt = ev.solvers.Adam(model, lr=0.05)
    g = ev.Graph()
    x = g.matrix("x", (16, 4))
    y = g.vector("y", 16, np.int64)
    loss = ev.nn.mean_cross_entropy(ev.astype(model(ev.astype(x, F32)), F32), y)
    ev.grad(loss, model)
    m = ev.TapeMachine(g, outputs=loss)
    X = np.random.default_rng(0).standard_normal((16, 4))
    Y = (X[:, 0] > 0).astype(np.int64)
    first = float(m.run({x: X, y: Y})[0])
    for _ in range(30):
        m.run({x: X, y: Y})
        opt.step()
    assert float(m.run({x: X, y: Y})[0]) < first * 0.5
    ev.save(tmp_path / "m.npz", model)
    other = ev.nn.Sequential(ev.nn.Linear(4, 8), ev.relu, ev.nn.Linear(8, 2))
    ev.load(tmp_path / "m.npz", other)
    for k in model:
        np.testing.assert_array_equal(model[k], other[k])


# -- solvers and machines given the wrong thing ------------------------------------------

def test_solvers_take_models_and_model_parameters():
    model = ev.nn.Linear(3, 2, seed=0)
    g = ev.Graph()
    x = g.matrix("x", (4, 3), F32)
    loss = ev.sum(model(x) ** 2)
    ev.grad(loss, model)
    m = ev.TapeMachine(g, outputs=loss)
    X = np.ones((4, 3), F32)
    for give in (lambda o: o.step(model.parameters()), lambda o: o.step(model), lambda o: o.step()):
        opt = ev.solvers.SGD(model, lr=0.01)
        before = model["linear.W"].copy()
        m.run({x: X})
        assert give(opt) is True
        np.testing.assert_allclose(model["linear.W"], before - 0.01 * model.params()[0].grad, rtol=1e-6)


@pytest.mark.parametrize("given,match", [
    (np.ones(3), "numpy array"), ("W", "the string 'W'"), ([np.ones(3)], "numpy array"),
    ({"W": "W"}, "string"), ([3], "int is not a parameter")])
def test_solvers_given_the_wrong_thing_say_what_to_pass(given, match):
    opt = ev.solvers.Adam(lr=1e-3)
    with pytest.raises(ev.UsageError, match=match + ".*(ev.nn model|model.parameters)"):
        opt.step(given)
    with pytest.raises(ev.UsageError, match=match):
        ev.solvers.SGD(given, lr=0.1)


# -- reprs -------------------------------------------------------------------------------

def test_reprs_are_readable():
    g, x, cost = square_cost()
    m = ev.TapeMachine(g, outputs=cost)
    lm = ev.LispMachine(g, cost=cost)
    opt = ev.solvers.Adam(lr=1e-3)
    texts = [repr(m.program), repr(m), repr(lm), repr(opt), repr(ev.schedules.CosineDecay(0.1, 10)),
             repr(ev.nn.Linear(2, 3)), repr(ev.function(lambda a: a)), repr(ev.replay.ReplayCache())]
    for t in texts:
        assert " object at 0x" not in t and "None" not in t, t
    assert "instructions" in repr(m.program) and "sum" in repr(m) and "cost=sum" in repr(lm)
    assert repr(opt).startswith("Adam(lr=0.001")
    assert repr(ev.nn.Sequential(ev.nn.Linear(2, 3), ev.relu)) == (
        "Sequential() (\n  (0): Linear('0', 2 -> 3)\n  (1): relu\n)")


# -- the public namespace ----------------------------------------------------------------

def test_internal_ops_and_imports_are_not_public():
    assert not hasattr(ev, "xent_grad") and not hasattr(ev, "unary_grad")
    assert dir(ev.random) == sorted(ev.random.__all__) and "normal" in dir(ev.random)
    assert not {"np", "math", "core", "compiler", "machines", "kernels"} & set(dir(ev))
    for mod in (ev.random, ev.solvers, ev.replay, ev.init, ev.schedules, ev.nn):
        assert not {"np", "Graph", "apply", "arg_errors", "same_float_dtype", "math"} & set(dir(mod)), mod
