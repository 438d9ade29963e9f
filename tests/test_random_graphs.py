"""Property tests on random small graphs: every machine's values and gradients equal
the numpy-reference evaluation (the same ops replayed eagerly on arrays), the
LispMachine's autodiff equals ev.grad's symbolic nodes, and both equal finite differences."""
import numpy as np
from hypothesis import given, strategies as st

import exprvm as ev
from machines import EVALUATORS

UNARY = ["tanh", "sigmoid", "sin", "cos", "negative", "softplus", "square", "exp"]
BINARY = ["add", "subtract", "multiply", "maximum", "minimum", "divide"]
SHAPES = [(3, 4), (4,), (3, 1), ()]


def _bounded(x):
    # Keep values in a range where every op stays finite and well conditioned.
    return ev.tanh(x)


def replay(program, leaves):
    """Build the program over `leaves`: nodes in a graph, or arrays for the numpy reference."""
    pool = list(leaves)
    for kind, name, i, j, axis in program:
        a, b = pool[i % len(pool)], pool[j % len(pool)]
        if kind == "unary":
            out = getattr(ev, name)(_bounded(a) if name in ("exp", "square") else a)
        elif kind == "binary":
            out = getattr(ev, name)(a, 2.0 + ev.sigmoid(b)) if name == "divide" else getattr(ev, name)(a, b)
        elif kind == "sum":
            nd = len(np.shape(a)) if isinstance(a, np.ndarray) else a.ndim
            out = ev.sum(a, axis=None if nd == 0 else axis % nd, keepdims=True)
        else:
            out = ev.mean(a)
        pool.append(out)
    return ev.sum(pool[-1] * pool[-1]) + ev.sum(pool[0])


steps = st.tuples(
    st.sampled_from(["unary"] * 4 + ["binary"] * 4 + ["sum", "mean"]),
    st.sampled_from(UNARY + BINARY),
    st.integers(0, 50), st.integers(0, 50), st.integers(0, 3))


@st.composite
def graphs(draw):
    shapes = draw(st.lists(st.sampled_from(SHAPES), min_size=1, max_size=3))
    ops = []
    for kind, name, i, j, axis in draw(st.lists(steps, min_size=1, max_size=10)):
        name = name if (kind != "unary" or name in UNARY) and (kind != "binary" or name in BINARY) else (
            UNARY[i % len(UNARY)] if kind == "unary" else BINARY[j % len(BINARY)])
        ops.append((kind, name, i, j, axis))
    seed = draw(st.integers(0, 2**16))
    return shapes, ops, seed


def _arrays(shapes, seed, dtype):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1.5, 1.5, s).astype(dtype) for s in shapes]


@given(graphs(), st.sampled_from([np.float32, np.float64]))
def test_machines_match_numpy_reference(case, dtype):
    shapes, program, seed = case
    arrays = _arrays(shapes, seed, dtype)
    expected = np.asarray(replay(program, arrays))
    g = ev.Graph()
    leaves = [g.tensor(f"x{i}", a.shape, dtype, value=a) for i, a in enumerate(arrays)]
    cost = replay(program, leaves)
    used = {n.id for n in ev.ancestors([cost])}
    leaves = [leaf for leaf in leaves if leaf.id in used]
    grads = ev.grad(cost, leaves)
    ev.LispMachine(g, cost=cost, replay=False).run()   # the walk's own autodiff
    autodiff = [leaf.grad.copy() for leaf in leaves]
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-11)
    for name, evaluate in EVALUATORS.items():
        value, *gvals = evaluate(g, [cost] + grads)
        assert value.dtype == dtype, name
        np.testing.assert_allclose(value, expected, **tol, err_msg=name)
        for gv, ad in zip(gvals, autodiff):
            np.testing.assert_allclose(np.broadcast_to(gv, ad.shape), ad, **tol, err_msg=name)


@given(graphs())
def test_gradients_match_finite_differences(case):
    shapes, program, seed = case
    assert ev.check_grad(lambda *xs: replay(program, xs), _arrays(shapes, seed, np.float64), rtol=1e-5)


@given(graphs(), st.sampled_from([np.float32, np.float64]))
def test_lisp_replay_matches_the_walk(case, dtype):
    """A second graph of the same structure, over other values, is replayed from a
    compiled program; it must agree with walking it."""
    from exprvm.machines import replay as cache
    shapes, program, seed = case
    cache.clear()
    results = []
    default, cache.WALKS_BEFORE_COMPILE = cache.WALKS_BEFORE_COMPILE, 1   # compile the second one
    try:
        for values_seed, walk in ((seed, False), (seed + 1, False), (seed + 1, True)):
            g = ev.Graph()
            leaves = [g.tensor(f"x{i}", a.shape, dtype, value=a)
                      for i, a in enumerate(_arrays(shapes, values_seed, dtype))]
            cost = replay(program, leaves)
            ev.LispMachine(g, cost=cost, replay=not walk).run()
            results.append([np.asarray(cost.value)] + [leaf.grad for leaf in leaves if leaf.grad is not None])
    finally:
        cache.WALKS_BEFORE_COMPILE = default
    assert isinstance(next(iter(cache.DEFAULT._entries.values())), cache.CompiledStructure)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-11)
    replayed, walked = results[1], results[2]
    assert len(replayed) == len(walked)
    for a, b in zip(replayed, walked):
        np.testing.assert_allclose(a, b, **tol)
