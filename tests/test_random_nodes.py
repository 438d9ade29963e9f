"""ev.random: random nodes draw fresh values on every run of either machine, the same
sequence from the same seed (on both machines), follow their distributions, and pass
gradients to their parameters (loc, scale, low, high)."""
import numpy as np
import pytest

import exprvm as ev


def machine(kind, g, node, cost=None):
    if kind == "tape":
        return ev.TapeMachine(g, outputs=[node] + ([cost] if cost is not None else []))
    return ev.LispMachine(g, cost=cost, outputs=[node])


def draws(kind, build, runs=3):
    g = ev.Graph()
    node = build(g)
    m = machine(kind, g, node)
    out = []
    for _ in range(runs):
        m.run()
        out.append(np.array(node.value, copy=True))
    return out


BUILDS = {
    "normal": lambda g: ev.random.normal(shape=(4, 5), seed=7, graph=g),
    "uniform": lambda g: ev.random.uniform(-1.0, 2.0, (30,), seed=7, graph=g, dtype=np.float32),
    "bernoulli": lambda g: ev.random.bernoulli(0.3, (6, 7), seed=7, graph=g),
}


@pytest.mark.parametrize("kind", ["lisp", "tape"])
@pytest.mark.parametrize("dist", sorted(BUILDS))
def test_fresh_values_every_run_reproducible_from_the_seed(dist, kind):
    first = draws(kind, BUILDS[dist])
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    again = draws(kind, BUILDS[dist])
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dist", sorted(BUILDS))
def test_both_machines_draw_the_same_sequence(dist):
    for a, b in zip(draws("lisp", BUILDS[dist]), draws("tape", BUILDS[dist])):
        np.testing.assert_array_equal(a, b)


def test_different_seeds_differ_and_a_shared_generator_is_one_stream():
    g = ev.Graph()
    a = ev.random.normal(shape=(8,), seed=1, graph=g)
    b = ev.random.normal(shape=(8,), seed=2, graph=g)
    gen = np.random.default_rng(5)
    c = ev.random.uniform(shape=(8,), seed=gen, graph=g)
    d = ev.random.uniform(shape=(8,), seed=gen, graph=g)
    ev.LispMachine(g, outputs=[a, b, c, d]).run()
    assert not np.array_equal(a.value, b.value) and not np.array_equal(c.value, d.value)
    ref = np.random.default_rng(5)
    np.testing.assert_array_equal(c.value, ref.random(8))
    np.testing.assert_array_equal(d.value, ref.random(8))


@pytest.mark.parametrize("kind", ["lisp", "tape"])
def test_distributions_with_node_parameters(kind):
    g = ev.Graph()
    loc = g.vector("loc", 3, value=np.array([-5.0, 0.0, 5.0]))
    scale = g.vector("scale", 3, value=np.array([0.5, 1.0, 2.0]))
    z = ev.random.normal(loc, scale, shape=(20000, 3), seed=0)
    assert z.shape == (20000, 3) and z.dtype == np.float64
    m = machine(kind, g, z)
    m.run()
    np.testing.assert_allclose(z.value.mean(0), loc.value, atol=0.05)
    np.testing.assert_allclose(z.value.std(0), scale.value, rtol=0.03)
    p = g.matrix("p", (200, 2), value=np.tile([0.1, 0.8], (200, 1)))
    b = ev.random.bernoulli(p, seed=3)
    machine(kind, g, b).run()
    assert set(np.unique(b.value)) <= {0.0, 1.0}
    np.testing.assert_allclose(b.value.mean(0), [0.1, 0.8], atol=0.06)


@pytest.mark.parametrize("kind", ["lisp", "tape"])
def test_gradients_reach_loc_and_scale_through_the_draw(kind):
    """d/dloc sum(loc + scale * z) = N, d/dscale = sum(z): the reparameterisation."""
    g = ev.Graph()
    loc = g.scalar("loc", value=np.array(1.5))
    scale = g.scalar("scale", value=np.array(0.5))
    x = ev.random.normal(loc, scale, shape=(50,), seed=4)
    cost = ev.sum(x)
    gl, gs = ev.grad(cost, [loc, scale])
    m = ev.TapeMachine(g, outputs=[cost, x]) if kind == "tape" else ev.LispMachine(g, cost=cost, outputs=[x])
    m.run()
    z = (x.value - 1.5) / 0.5
    got = (gl.value, gs.value) if kind == "tape" else (loc.grad, scale.grad)
    np.testing.assert_allclose(got[0], 50)
    np.testing.assert_allclose(got[1], z.sum(), rtol=1e-12)
    lo = g.scalar("lo", value=np.array(-1.0))
    u = ev.random.uniform(lo, 3.0, shape=(10,), seed=1)
    glo = ev.grad(ev.sum(u), lo)            # d/dlow (low + (high - low) u) = 1 - u
    ev.LispMachine(g, outputs=[glo, u]).run()
    np.testing.assert_allclose(glo.value, np.sum(1 - (u.value + 1.0) / 4.0), rtol=1e-12)


def test_the_lisp_machine_never_replays_a_random_graph():
    seen = []
    for _ in range(ev.replay.WALKS_BEFORE_COMPILE + 3):
        g = ev.Graph()
        w = g.vector("w", 4, value=np.ones(4))
        cost = ev.sum(w * ev.random.normal(shape=(4,), seed=0, graph=g))
        ev.LispMachine(g, cost=cost).run()
        seen.append(w.grad.copy())
    for s in seen[1:]:          # each new graph starts its stream at the seed again
        np.testing.assert_array_equal(s, seen[0])


def test_eager_draws_and_errors():
    a = ev.random.normal(shape=(3,), seed=0)
    assert isinstance(a, np.ndarray) and a.shape == (3,)
    np.testing.assert_array_equal(a, np.random.default_rng(0).standard_normal(3))
    assert ev.random.uniform(2.0, 4.0, (1000,), seed=1).min() >= 2.0
    g = ev.Graph()
    v = g.vector("v", 3)
    with pytest.raises(ev.ShapeError, match="(?s)^normal: parameter shapes.*do not broadcast to shape \\(3, 2\\).*built at"):
        ev.random.normal(v, 1.0, shape=(3, 2))
    with pytest.raises(ev.ShapeError, match="do not fit shape \\(1,\\)"):
        ev.random.normal(v, 1.0, shape=(1,))
    with pytest.raises(ev.DTypeError, match="dtype=float32 but the parameters are float64"):
        ev.random.normal(v, dtype=np.float32)
    with pytest.raises(ev.ExprError, match="p must lie in"):
        ev.random.bernoulli(1.5, (2,), graph=g)
    with pytest.raises(ev.ExprError, match="seed must be"):
        ev.random.uniform(shape=(2,), seed="abc", graph=g)
    bad = g.vector("bad", 2, value=np.array([0.5, 1.5]))
    b = ev.random.bernoulli(bad, seed=0)
    with pytest.raises(ev.RunError, match="random_bernoulli.*probabilities must lie in \\[0, 1\\]"):
        ev.LispMachine(g, outputs=[b]).run()
    with pytest.raises(ev.RunError, match="probabilities must lie in \\[0, 1\\]"):
        ev.TapeMachine(g, outputs=[b]).run()
