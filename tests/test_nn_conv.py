"""The convolutional blocks of ev.nn: what they compute, their parameters and state,
the state updates machines write back (several steps, both machines, against the
running-average rule in numpy), training vs evaluation graphs, checkpoints."""
import numpy as np
import pytest

import exprvm as ev
from exprvm.ops import conv as C

nn = ev.nn


def small_net(seed=0):
    # NOTE: no conv bias in front of batch norm: its gradient is zero up to rounding,
    # which Adam would blow up into steps of lr in random directions.
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False, name="c1", seed=seed), nn.BatchNorm2d(4, momentum=0.25, name="bn1"),
        ev.relu, nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding="same", bias=False, name="c2", seed=seed + 1),
        nn.BatchNorm2d(6, name="bn2"), ev.relu, nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(6, 3, name="head", seed=seed + 2), name="net")


def test_names_parameters_and_state():
    model = small_net()
    assert list(model) == ["c1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                           "bn1.running_var", "c2.weight", "bn2.weight", "bn2.bias",
                           "bn2.running_mean", "bn2.running_var", "head.W", "head.b"]
    assert model["c1.weight"].shape == (4, 1, 3, 3) and model["c2.weight"].dtype == np.float32
    assert [p.name for p in nn.state(model)] == ["bn1.running_mean", "bn1.running_var",
                                                  "bn2.running_mean", "bn2.running_var"]
    assert {p.name for p in nn.trainable(model)} == set(model) - {p.name for p in nn.state(model)}
    assert np.array_equal(small_net()["c1.weight"], model["c1.weight"])       # seeded
    with pytest.raises(ev.ExprError, match="groups"):
        nn.Conv2d(3, 4, 3, groups=2)


def test_blocks_compute_the_functional_ops():
    rng = np.random.default_rng(0)
    xv = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    g = ev.Graph()
    x = g.tensor("x", xv.shape, np.float32, value=xv)
    conv = nn.Conv2d(3, 4, (3, 2), stride=2, padding=1, dilation=(1, 2), name="conv", seed=1)
    ln = nn.LayerNorm((7, 7), name="ln")
    ys = [conv(x), nn.MaxPool2d(3, 2, 1)(x), nn.AvgPool2d(2)(x), nn.Flatten()(x), nn.Flatten(2)(x), ln(x)]
    ev.TapeMachine(g, outputs=ys).run()
    p = ys[0].inputs[0].params
    want = C.naive_conv(xv, conv["conv.weight"], **p) + conv["conv.bias"].reshape(1, -1, 1, 1)
    np.testing.assert_allclose(ys[0].value, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ys[1].value, ev.max_pool2d(xv, 3, 2, 1))
    np.testing.assert_allclose(ys[2].value, ev.avg_pool2d(xv, 2), rtol=1e-6)
    assert ys[3].shape == (2, 147) and ys[4].shape == (2, 3, 49)
    np.testing.assert_allclose(ys[5].value, ev.layer_norm(xv, (7, 7)), rtol=1e-5, atol=1e-6)


def _batches(steps, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.normal(i, 1 + i, (5, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 5))
            for i in range(steps)]


def _reference_running_stats(model, batches):
    """bn1's running statistics by the rule, in numpy, from the batches' first-layer outputs."""
    w = model["c1.weight"].astype(np.float64)
    m, v = np.zeros(4), np.ones(4)
    for xv, _ in batches:
        h = C.naive_conv(xv.astype(np.float64), w, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
        n = h.size // 4
        m = 0.75 * m + 0.25 * h.mean(axis=(0, 2, 3))
        v = 0.75 * v + 0.25 * h.var(axis=(0, 2, 3)) * n / (n - 1)
    return m, v


@pytest.mark.parametrize("machine", ["tape", "lisp"])
def test_state_updates_over_several_steps(machine):
    """Frozen weights (no solver), so bn1's input is known: its running statistics after
    each run follow the rule; bn2's change too."""
    model, batches = small_net(), _batches(4)
    g = ev.Graph()
    x, t = g.tensor("x", (5, 1, 4, 4), np.float32), g.tensor("t", (5,), np.int64)
    cost = nn.mean_cross_entropy(model(x), t)
    ups = nn.updates(model, g)
    assert len(ups) == 4 and all(s.op == "param" for s in ups)
    if machine == "tape":
        m = ev.TapeMachine(g, outputs=[cost], updates=ups)
        assert str(m.program).count(" update ") >= 4     # visible in the disassembly
    else:
        m = ev.LispMachine(g, cost=cost, updates=ups)
    before = model["bn2.running_var"].copy()
    for k in range(len(batches)):
        xv, tv = batches[k]
        m.run({x: xv, t: tv})
        want_m, want_v = _reference_running_stats(model, batches[:k + 1])
        np.testing.assert_allclose(model["bn1.running_mean"], want_m, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(model["bn1.running_var"], want_v, rtol=1e-4, atol=1e-5)
    assert not np.allclose(model["bn2.running_var"], before)


def test_lisp_graph_per_batch_trains_and_updates_like_the_tape():
    """A fresh graph per batch on the LispMachine vs one compiled graph: same losses,
    weights and running statistics after a few Adam steps."""
    batches = _batches(3, seed=2)
    results = []
    for mode in ("tape", "lisp"):
        model = small_net(seed=5)
        opt = ev.solvers.Adam(lr=0.01)
        losses = []
        if mode == "tape":
            g = ev.Graph()
            x, t = g.tensor("x", (5, 1, 4, 4), np.float32), g.tensor("t", (5,), np.int64)
            cost = nn.mean_cross_entropy(model(x), t)
            params = nn.trainable(model)
            ev.grad(cost, [p.node(g) for p in params])
            m = ev.TapeMachine(g, outputs=[cost], updates=nn.updates(model, g))
        for xv, tv in batches:
            if mode == "tape":
                m.run({x: xv, t: tv})
                opt.step([p.node(g) for p in params])
            else:
                g = ev.Graph()
                x, t = g.tensor("x", xv.shape, np.float32, value=xv), g.constant(tv)
                cost = nn.mean_cross_entropy(model(x), t)
                ev.LispMachine(g, cost=cost, updates=nn.updates(model, g)).run()
                params = nn.trainable(model)
                for p in params:
                    p.grad = p.node(g).grad
                opt.step(params)
            losses.append(float(cost.value))
        results.append((losses, {k: v.copy() for k, v in model.parameters().items()}))
    (l1, p1), (l2, p2) = results
    np.testing.assert_allclose(l1, l2, rtol=1e-4)
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-3, atol=1e-4, err_msg=k)


def test_training_and_evaluation_graphs_share_parameters_and_state():
    model = small_net()
    xv, _ = _batches(1)[0]
    gt = ev.Graph()
    yt = model(gt.tensor("x", xv.shape, np.float32, value=xv))
    ev.TapeMachine(gt, outputs=[yt], updates=nn.updates(model, gt)).run()
    nn.set_training(model, False)
    ge = ev.Graph()
    ye = model(ge.tensor("x", xv.shape, np.float32, value=xv))
    assert nn.updates(model, ge) == {}
    assert "batch_norm" not in {n.op for n in ge.nodes}     # evaluation: running statistics only
    m = ev.TapeMachine(ge, outputs=[ye])
    m.run()
    first = ye.value.copy()
    model["bn1.running_mean"][...] += 1.0                 # the eval program reads the state arrays
    m.run()
    assert not np.allclose(ye.value, first)
    nn.set_training(model, True)
    assert nn.updates(model, ev.Graph()) == {}


def test_checkpoint_round_trip_keeps_the_running_statistics(tmp_path):
    model = small_net()
    model["bn1.running_mean"][...] = [1, 2, 3, 4]
    ev.save(tmp_path / "ck.npz", model)
    other = small_net(seed=9)
    ev.load(tmp_path / "ck.npz", other)
    for k in model:
        np.testing.assert_array_equal(other[k], model[k])


def test_dropout_block():
    d = nn.Dropout(0.5, seed=3)
    g = ev.Graph()
    x = g.tensor("x", (200, 50), np.float32, value=np.ones((200, 50), np.float32))
    a, b = d(x), d(x)
    ev.LispMachine(g, outputs=[a, b]).run()
    assert set(np.unique(a.value)) <= {0.0, 2.0} and abs((a.value == 0).mean() - 0.5) < 0.05
    assert not np.array_equal(a.value, b.value)          # each application its own stream
    assert d(x, train=False) is x
    nn.set_training(d, False)
    assert d(x) is x
    with pytest.raises(ev.ExprError, match=r"dropout: p must be in \[0, 1\), got 1.0"):
        nn.Dropout(1.0)


def test_flatten_refuses_a_dim_out_of_range():
    g = ev.Graph()
    x = g.tensor("x", (2, 3, 4), np.float32)
    assert ev.nn.Flatten()(x).shape == (2, 12)
    with pytest.raises(ev.ShapeError, match="out of range"):
        ev.nn.Flatten(start_dim=3)(x)
