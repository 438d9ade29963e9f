"""ev.scan, ev.fori_loop, ev.while_loop, ev.cond against plain numpy loops, on both
machines, float32 and float64, with gradients against finite differences."""
import numpy as np
import pytest

import exprvm as ev
from machines import EVALUATORS

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
DTYPES = [np.float32, np.float64]


def rnn_reference(W, U, h0, xs, length=None, reverse=False):
    """h_t = tanh(W h_{t-1} + U x_t), the ys are the states; a plain numpy loop."""
    n = len(xs) if length is None else length
    h, ys = h0, np.zeros((len(xs),) + h0.shape, h0.dtype)
    rows = range(n - 1, -1, -1) if reverse else range(n)
    for t in rows:
        h = np.tanh(W @ h + U @ xs[t])
        ys[t] = h
    return h, ys


def rnn_step(W, U):
    def step(h, x):
        h = ev.tanh(W @ h + U @ x)
        return h, h
    return step


def _rnn_graph(rng, dtype, T=5, H=3, D=2):
    g = ev.Graph()
    W = g.matrix("W", (H, H), value=(rng.normal(size=(H, H)) * 0.5).astype(dtype), dtype=dtype)
    U = g.matrix("U", (H, D), value=rng.normal(size=(H, D)).astype(dtype), dtype=dtype)
    h0 = g.vector("h0", H, value=rng.normal(size=H).astype(dtype), dtype=dtype)
    xs = g.matrix("xs", (T, D), dtype=dtype)
    return g, W, U, h0, xs


@pytest.mark.parametrize("machine", sorted(EVALUATORS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_matches_a_numpy_loop(machine, dtype, reverse, rng):
    g, W, U, h0, xs = _rnn_graph(rng, dtype)
    X = rng.normal(size=xs.shape).astype(dtype)
    h, ys = ev.scan(rnn_step(W, U), h0, xs, reverse=reverse)
    got_h, got_ys = EVALUATORS[machine](g, [h, ys], {xs: X})
    want_h, want_ys = rnn_reference(W.value, U.value, h0.value, X, reverse=reverse)
    assert got_h.dtype == dtype and got_ys.shape == (5, 3)
    np.testing.assert_allclose(got_h, want_h, **TOL[dtype])
    np.testing.assert_allclose(got_ys, want_ys, **TOL[dtype])


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_gradients_by_finite_differences(reverse, rng):
    X, W0, U0 = rng.normal(size=(4, 2)), rng.normal(size=(3, 3)) * 0.5, rng.normal(size=(3, 2))

    def f(W, U, h0, xs):
        h, ys = ev.scan(rnn_step(W, U), h0, xs, reverse=reverse)
        return ev.sum(h * h) + ev.sum(ys * ys * 0.5)

    assert ev.check_grad(f, [W0, U0, rng.normal(size=3), X])


@pytest.mark.parametrize("dtype", DTYPES)
def test_scan_gradients_agree_on_both_machines(dtype, rng):
    g, W, U, h0, xs = _rnn_graph(rng, dtype)
    X = rng.normal(size=xs.shape).astype(dtype)
    h, ys = ev.scan(rnn_step(W, U), h0, xs)
    cost = ev.sum(h) + ev.sum(ys * ys)
    grads = ev.grad(cost, [W, U, h0, xs])
    tape = ev.TapeMachine(g, outputs=[cost] + grads)
    tape.run({xs: X})
    sym = [np.array(n.value, copy=True) for n in grads]
    lisp = ev.LispMachine(g, cost=cost, replay=False)
    lisp.run({xs: X})
    for leaf, want in zip([W, U, h0, xs], sym):
        assert leaf.grad.dtype == dtype
        np.testing.assert_allclose(leaf.grad, want, rtol=1e-4 if dtype == np.float32 else 1e-11,
                                   atol=1e-5 if dtype == np.float32 else 1e-12)


def test_structured_carries_several_xs_and_no_ys(rng):
    A = rng.normal(size=(4, 3))
    B = rng.normal(size=(4,))

    def step(c, x):
        a, b = x
        return {"sum": c["sum"] + a * b, "n": c["n"] + 1.0}, None

    def f(A_, B_):
        c, ys = ev.scan(step, {"n": 0.0, "sum": ev.zeros_like(A_[0]) if hasattr(ev, "zeros_like")
                               else A_[0] * 0.0}, (A_, B_))
        assert ys is None
        return ev.sum(c["sum"]) * c["n"]

    want = (A * B[:, None]).sum() * 4
    for machine in EVALUATORS:
        g = ev.Graph()
        a, b = g.tensor("A", A.shape, value=A), g.tensor("B", B.shape, value=B)
        (got,) = EVALUATORS[machine](g, [f(a, b)])
        assert float(got) == pytest.approx(want)
    assert ev.check_grad(f, [A, B])


@pytest.mark.parametrize("machine", sorted(EVALUATORS))
@pytest.mark.parametrize("reverse", [False, True])
def test_a_length_node_runs_any_length_with_one_program(machine, reverse, rng):
    g, W, U, h0, xs = _rnn_graph(rng, np.float64, T=6)
    n = g.scalar("n", dtype=np.int64)
    h, ys = ev.scan(rnn_step(W, U), h0, xs, length=n, reverse=reverse)
    cost = ev.sum(h) + ev.sum(ys)
    gW = ev.grad(cost, W)
    X = rng.normal(size=xs.shape)
    m = ev.TapeMachine(g, outputs=[h, ys, gW]) if machine == "tape" else \
        ev.LispMachine(g, outputs=[h, ys, gW])
    for length in (6, 0, 3, 1, 6, 2):
        m.run({xs: X, n: np.array(length)})
        want_h, want_ys = rnn_reference(W.value, U.value, h0.value, X, length, reverse)
        np.testing.assert_allclose(h.value, want_h, rtol=1e-12)
        np.testing.assert_allclose(ys.value, want_ys, rtol=1e-12, atol=1e-15)
        assert not ys.value[length:].any()

        def f(W_):
            hh, yy = ev.scan(rnn_step(W_, U.value), h0.value, X, length=length, reverse=reverse)
            return ev.sum(hh) + ev.sum(yy)
        if length == 3:
            assert ev.check_grad(f, [W.value])


@pytest.mark.parametrize("machine", sorted(EVALUATORS))
def test_a_length_past_the_rows_is_a_feed_error_and_the_machine_still_runs(machine, rng):
    g, W, U, h0, xs = _rnn_graph(rng, np.float64, T=4)
    n = g.scalar("n", dtype=np.int64)
    h, _ = ev.scan(rnn_step(W, U), h0, xs, length=n)
    X = rng.normal(size=xs.shape)
    m = ev.TapeMachine(g, outputs=[h]) if machine == "tape" else ev.LispMachine(g, outputs=[h])
    m.run({xs: X, n: np.array(2)})
    before = np.array(h.value, copy=True)
    for bad in (5, -1):
        with pytest.raises(ev.FeedError, match=r"length .* outside \[0, 4\]"):
            m.run({xs: X, n: np.array(bad)})
    m.run({xs: X, n: np.array(2)})
    np.testing.assert_array_equal(h.value, before)


def test_zero_length_scan_passes_init_and_gives_zero_gradients(rng):
    g, W, U, h0, xs = _rnn_graph(rng, np.float64, T=3)
    h, ys = ev.scan(rnn_step(W, U), h0, xs, length=0)
    cost = ev.sum(h * 2.0) + ev.sum(ys)
    grads = ev.grad(cost, [W, U, h0])
    for machine in EVALUATORS:
        got = EVALUATORS[machine](g, [h, ys] + grads, {xs: np.ones(xs.shape)})
        np.testing.assert_array_equal(got[0], h0.value)
        assert not got[1].any() and not got[2].any() and not got[3].any()
        np.testing.assert_array_equal(got[4], 2.0)


@pytest.mark.parametrize("machine", sorted(EVALUATORS))
def test_scan_inside_scan_and_cond_inside_scan(machine, rng):
    M = rng.normal(size=(3, 4, 2))

    def inner_sum(c, row):
        return c + ev.tanh(row), None

    def outer(c, block):
        s, _ = ev.scan(inner_sum, c * 0.0, block)
        bigger = ev.cond(ev.sum(s) > 0.0, lambda a: a * 2.0, lambda a: a - 1.0, s)
        return c + bigger, ev.sum(bigger)

    def want(M_):
        c, ys = np.zeros(2), []
        for block in M_:
            s = np.tanh(block).sum(0)
            b = s * 2 if s.sum() > 0 else s - 1
            c = c + b
            ys.append(b.sum())
        return c, np.array(ys)

    g = ev.Graph()
    m = g.tensor("M", M.shape, value=M)
    c, ys = ev.scan(outer, np.zeros(2), m)
    got_c, got_ys = EVALUATORS[machine](g, [c, ys])
    wc, wys = want(M)
    np.testing.assert_allclose(got_c, wc, rtol=1e-12)
    np.testing.assert_allclose(got_ys, wys, rtol=1e-12)

    def f(M_):
        c, ys = ev.scan(outer, np.zeros(2), M_)
        return ev.sum(c * c) + ev.sum(ys)
    if machine == "lisp":
        assert ev.check_grad(f, [M])


@pytest.mark.parametrize("machine", sorted(EVALUATORS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_while_loop_and_its_gradient(machine, dtype):
    g = ev.Graph()
    x = g.scalar("x", dtype=dtype)
    y = ev.while_loop(lambda c: c < 10.0, lambda c: c * x, x, max_iterations=50)
    gx = ev.grad(y, x)
    for xv, want in ((1.5, 1.5 ** 6), (3.0, 27.0), (20.0, 20.0)):
        got, gval = EVALUATORS[machine](g, [y, gx], {x: np.asarray(xv, dtype)})
        assert got == pytest.approx(want, rel=1e-6)
        n = round(np.log(want) / np.log(xv))
        assert gval == pytest.approx(n * xv ** (n - 1), rel=1e-5)


def test_while_loop_stops_at_max_iterations():
    g = ev.Graph()
    x = g.scalar("x", value=1.0)
    y = ev.while_loop(lambda c: c > 0.0, lambda c: c + 1.0, x, max_iterations=7)
    for machine in EVALUATORS:
        (got,) = EVALUATORS[machine](g, [y])
        assert got == 8.0


def test_grad_through_an_unbounded_while_loop_names_max_iterations():
    g = ev.Graph()
    x = g.scalar("x", value=1.5)
    y = ev.while_loop(lambda c: c < 10.0, lambda c: c * x, x)
    with pytest.raises(ev.GradError, match="max_iterations"):
        ev.grad(y, x)


@pytest.mark.parametrize("machine", sorted(EVALUATORS))
def test_fori_loop_with_int_and_node_bounds(machine):
    g = ev.Graph()
    x = g.scalar("x", value=1.5)
    n = g.scalar("n", dtype=np.int64)
    body = lambda i, c: c * x + ev.astype(i, np.float64)  # noqa: E731
    a = ev.fori_loop(0, 4, body, x)
    b = ev.fori_loop(0, n, body, x, max_iterations=10)
    ga, gb = ev.grad(a, x), ev.grad(b, x)

    def ref(xv, k):
        c = xv
        for i in range(k):
            c = c * xv + i
        return c
    for k in (4, 0, 2):
        got = EVALUATORS[machine](g, [a, b, ga, gb], {n: np.array(k)})
        assert got[0] == pytest.approx(ref(1.5, 4)) and got[1] == pytest.approx(ref(1.5, k))
        e = 1e-6
        assert got[3] == pytest.approx((ref(1.5 + e, k) - ref(1.5 - e, k)) / (2 * e), rel=1e-6)
    assert got[2] == pytest.approx((ref(1.5 + e, 4) - ref(1.5 - e, 4)) / (2 * e), rel=1e-6)


@pytest.mark.parametrize("machine", sorted(EVALUATORS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_cond_runs_the_taken_branch_and_differentiates_it(machine, dtype):
    g = ev.Graph()
    x = g.vector("x", 3, dtype=dtype)
    W = g.matrix("W", (3, 3), value=np.eye(3, dtype=dtype) * 2, dtype=dtype)
    # NOTE: the false branch indexes out of range for x > 0: it must not run then.
    bad = g.constant(np.array([7]))
    y = ev.cond(ev.sum(x) > 0.0, lambda a: W @ a, lambda a: ev.take(a, bad) * 0.0 + a, x)
    cost = ev.sum(y * y)
    gx, gW = ev.grad(cost, [x, W])
    X = np.array([1.0, 2.0, 3.0], dtype)
    got = EVALUATORS[machine](g, [y, gx, gW], {x: X})
    np.testing.assert_allclose(got[0], 2 * X, **TOL[dtype])
    np.testing.assert_allclose(got[1], 8 * X, **TOL[dtype])
    np.testing.assert_allclose(got[2], 2 * np.outer(2 * X, X), rtol=1e-5)
    with pytest.raises(ev.IndexRangeError):
        EVALUATORS[machine](g, [y], {x: -X})


def test_cond_gradients_by_finite_differences(rng):
    def f(x, W):
        return ev.sum(ev.cond(ev.sum(x) > 0.0, lambda a: ev.tanh(W @ a), lambda a: a * W[0], x) ** 2)
    W0 = rng.normal(size=(3, 3))
    assert ev.check_grad(f, [np.array([0.5, 1.0, -0.2]), W0])
    assert ev.check_grad(f, [np.array([-0.5, 1.0, -0.9]), W0])


def test_eager_loops_on_arrays():
    assert ev.while_loop(lambda c: c < 10, lambda c: c * 2, 1.0) == 16.0
    assert ev.fori_loop(0, 5, lambda i, c: c + ev.astype(i, np.float64), 0.0) == 10.0
    assert ev.cond(False, lambda a: a + 1, lambda a: a - 1, 3.0) == 2.0
    h, ys = ev.scan(lambda c, x: (c + x, c * 2), np.zeros(2), np.ones((3, 2)))
    np.testing.assert_array_equal(h, [3, 3])
    np.testing.assert_array_equal(ys, [[0, 0], [2, 2], [4, 4]])


def test_a_captured_parameter_updated_in_place_is_seen_by_the_next_run(rng):
    g, W, U, h0, xs = _rnn_graph(rng, np.float64)
    X = rng.normal(size=xs.shape)
    h, ys = ev.scan(rnn_step(W, U), h0, xs)
    cost = ev.sum(ys * ys)
    ev.grad(cost, [W, U])
    m = ev.TapeMachine(g, outputs=[cost])
    opt = ev.solvers.SGD(lr=0.1)
    for _ in range(3):
        m.run({xs: X})
        before = float(cost.value)
        opt.step([W, U])
        _, want = rnn_reference(W.value, U.value, h0.value, X)
        m.run({xs: X})
        assert float(cost.value) == pytest.approx(float((want * want).sum()), rel=1e-12)
        assert float(cost.value) < before


# -- build errors name the function and the user's line ------------------------------------

def test_a_carry_changing_shape_or_dtype_is_named():
    g = ev.Graph()
    x = g.vector("x", 3)
    with pytest.raises(ev.ExprError, match=r"grow .*test_control_flow.py:\d+.*shape \(6,\).*\(3,\)"):
        def grow(c, _):
            return ev.concat([c, c]), None
        ev.scan(grow, x, length=2)
    with pytest.raises(ev.ExprError, match=r"float32.*float64"):
        ev.scan(lambda c, _: (ev.astype(c, np.float32), None), x, length=2)
    with pytest.raises(ev.ExprError, match="structure"):
        ev.scan(lambda c, _: ((c, c), None), x, length=2)
    with pytest.raises(ev.ExprError, match="pair"):
        ev.scan(lambda c, _: c, x, length=2)


def test_branches_of_different_types_are_named():
    g = ev.Graph()
    x = g.vector("x", 3)
    with pytest.raises(ev.ExprError, match=r"result 0 is \(3,\).*\(\).*"):
        ev.cond(ev.sum(x) > 0.0, lambda a: a, lambda a: ev.sum(a), x)
    with pytest.raises(ev.ExprError, match="returns"):
        ev.cond(ev.sum(x) > 0.0, lambda a: (a, a), lambda a: a, x)


def test_a_python_if_on_a_node_inside_a_body_points_at_cond():
    g = ev.Graph()
    x = g.vector("x", 3)

    def step(c, _):
        if ev.sum(c) > 0:
            return c, None
        return -c, None
    with pytest.raises(ev.ExprError, match=r"while tracing step .*test_control_flow.py.*ev.cond"):
        ev.scan(step, x, length=3)


def test_the_disassembly_indents_the_body_and_verify_covers_it(rng):
    g, W, U, h0, xs = _rnn_graph(rng, np.float64)
    h, ys = ev.scan(rnn_step(W, U), h0, xs)
    ev.grad(ev.sum(ys), [W])
    m = ev.TapeMachine(g)
    text = str(m.program)
    assert "scan[5]" in text and "scan[rev 5]" in text
    assert "\n  { step\n    ; body:" in text and "\n  { step (gradient)" in text
    assert m.program.verify()
    # a body whose instruction reads a register nothing wrote fails verify
    loop = next(i for i in m.program.instrs if i.bodies)
    body = loop.bodies[0]
    first = body.instrs[0]
    body.instrs[0] = type(first)(first.op, first.ins, first.out, first.node, first.kernel, first.build,
                                 first.tmps, first.inplace, first.allocates, first.note)
    body.instrs.insert(0, body.instrs[1])
    with pytest.raises(ev.CompileError, match="body 0"):
        m.program.verify()


def test_the_program_size_does_not_grow_with_the_sequence(rng):
    sizes = []
    for T in (5, 50):
        g, W, U, h0, xs = _rnn_graph(rng, np.float64, T=T)
        h, ys = ev.scan(rnn_step(W, U), h0, xs)
        ev.grad(ev.sum(ys * ys), [W, U])
        sizes.append(len(ev.TapeMachine(g).program))
    assert sizes[0] == sizes[1]


def test_graphs_built_alike_with_a_loop_replay_one_program_for_every_length(rng):
    W0, U0, h0 = rng.normal(size=(3, 3)) * 0.5, rng.normal(size=(3, 2)), np.zeros(3)
    cache = ev.replay.ReplayCache(walks_before_compile=2)
    for k, length in enumerate([5, 3, 6, 1, 4, 6, 2, 0]):
        X = rng.normal(size=(6, 2))
        g = ev.Graph()
        W = g.matrix("W", (3, 3), value=W0)
        U = g.matrix("U", (3, 2), value=U0)
        xs = g.matrix("xs", (6, 2), value=X)
        n = g.scalar("n", dtype=np.int64, value=np.array(length))
        h, ys = ev.scan(rnn_step(W, U), h0, xs, length=n)
        cost = ev.sum(h * h) + ev.sum(ys)
        m = ev.LispMachine(g, cost=cost, replay_cache=cache)
        m.run()
        want_h, want_ys = rnn_reference(W0, U0, h0, X, length)
        assert float(cost.value) == pytest.approx(float((want_h ** 2).sum() + want_ys.sum()), rel=1e-12)
        walked = ev.LispMachine(g, cost=cost, replay=False)
        grads = [W.grad.copy(), U.grad.copy()]
        walked.run()
        np.testing.assert_allclose(grads[0], W.grad, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(grads[1], U.grad, rtol=1e-10, atol=1e-13)
    assert cache.stats() == {"walking": 0, "compiled": 1, "failed": 0}


@pytest.mark.parametrize("unroll", [2, 3, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_unroll_gives_the_same_values_and_gradients(unroll, reverse, rng):
    W0, U0, X = rng.normal(size=(3, 3)) * 0.5, rng.normal(size=(3, 2)), rng.normal(size=(7, 2))
    h0 = rng.normal(size=3)
    g, W, U, h0n, xs = _rnn_graph(rng, np.float64, T=7)
    h, ys = ev.scan(rnn_step(W, U), h0n, xs, reverse=reverse, unroll=unroll)
    h1, ys1 = ev.scan(rnn_step(W, U), h0n, xs, reverse=reverse, length=5, unroll=unroll)
    for machine in EVALUATORS:
        got = EVALUATORS[machine](g, [h, ys, h1, ys1], {xs: X})
        wh, wys = rnn_reference(W.value, U.value, h0n.value, X, reverse=reverse)
        np.testing.assert_allclose(got[0], wh, rtol=1e-12)
        np.testing.assert_allclose(got[1], wys, rtol=1e-12)
        wh, wys = rnn_reference(W.value, U.value, h0n.value, X, length=5, reverse=reverse)
        np.testing.assert_allclose(got[2], wh, rtol=1e-12)
        np.testing.assert_allclose(got[3], wys, rtol=1e-12, atol=1e-15)

    def f(W_, X_):
        hh, yy = ev.scan(rnn_step(W_, U0), h0, X_, reverse=reverse, unroll=unroll)
        return ev.sum(hh * hh) + ev.sum(yy)
    assert ev.check_grad(f, [W0, X])


@pytest.mark.parametrize("checkpoint", [1, 3, 4, 20])
@pytest.mark.parametrize("reverse", [False, True])
def test_checkpoint_gives_the_same_values_and_gradients(checkpoint, reverse, rng):
    W0, U0, X, h0 = rng.normal(size=(3, 3)) * 0.5, rng.normal(size=(3, 2)), rng.normal(size=(8, 2)), \
        rng.normal(size=3)

    def f(W_, X_, length=None):
        hh, yy = ev.scan(rnn_step(W_, U0), h0, X_, reverse=reverse, checkpoint=checkpoint, length=length)
        return ev.sum(hh * hh) + ev.sum(yy * yy)
    assert ev.check_grad(f, [W0, X])
    assert ev.check_grad(lambda W_, X_: f(W_, X_, 6), [W0, X])
    for machine in EVALUATORS:
        g = ev.Graph()
        W, xs = g.tensor("W", W0.shape, value=W0), g.tensor("xs", X.shape, value=X)
        cost = f(W, xs)
        gW = ev.grad(cost, W)
        plain = ev.grad(ev.sum(ev.scan(rnn_step(W, U0), h0, xs, reverse=reverse)[1] ** 2)
                        + ev.sum(ev.scan(rnn_step(W, U0), h0, xs, reverse=reverse)[0] ** 2), W)
        got, want = EVALUATORS[machine](g, [gW, plain])
        np.testing.assert_allclose(got, want, rtol=1e-11)


def _body_ops(prog):
    """The forward op names an instruction list computes (a fused group's members too)."""
    names = []
    for ins in prog.instrs:
        if ins.op == "fused":
            names += ins.comment().split("fused ", 1)[1].split(":", 1)[1].split("[")[0].split()
        else:
            names.append(ins.op)
    return names


def test_the_gradient_reads_transcendental_values_back_and_recomputes_arithmetic(rng):
    # an LSTM-like step: the gradient body needs sigmoid's and tanh's values; it reads
    # them from the rows the forward scan stored instead of computing them again
    W0, X = rng.normal(size=(4, 8)) * 0.5, rng.normal(size=(6, 3, 8))
    g = ev.Graph()
    W, xs = g.tensor("W", W0.shape, value=W0), g.tensor("xs", X.shape, value=X)

    c, hs = ev.scan(lambda c, x: _gated_step(W, c, x), np.ones((3, 4)), xs)
    gW = ev.grad(ev.sum(hs * hs) + ev.sum(c), W)
    m = ev.TapeMachine(g, outputs=[gW])
    m.run()
    loops = [ins for ins in m.program.instrs if ins.bodies]
    forward, backward = loops[0].bodies[0], loops[-1].bodies[0]
    assert {"sigmoid", "tanh"} <= set(_body_ops(forward))
    assert not {"sigmoid", "tanh"} & set(_body_ops(backward)), str(backward)
    assert len(forward.externals) > 3       # the values stored for the gradient
    assert ev.check_grad(lambda W_: ev.sum(ev.scan(lambda c, x: _gated_step(W_, c, x), np.ones((3, 4)),
                                                   X)[1] ** 2), [W0])


def _gated_step(W, c, x):
    z = c @ W + x
    c = ev.sigmoid(z[:, :4]) * c + ev.tanh(z[:, 4:]) * 0.5
    return c, ev.tanh(c)


def test_checkpoint_bounds_the_planned_memory_of_a_long_sequence(rng):
    T, H = 400, 16
    W0, X = rng.normal(size=(H, H)) * 0.3, rng.normal(size=(T, H))
    peaks = {}
    for ck in (None, 20):
        g = ev.Graph()
        W, xs = g.tensor("W", W0.shape, value=W0), g.tensor("xs", X.shape, value=X)

        def step(h, x):
            h = ev.tanh(h @ W + x)
            return h, None
        h, _ = ev.scan(step, np.zeros(H), xs, checkpoint=ck)
        gW = ev.grad(ev.sum(h), W)
        m = ev.TapeMachine(g, outputs=[gW])
        m.run()
        peaks[ck] = (m.program.peak_bytes, gW.value.copy())
    np.testing.assert_allclose(peaks[20][1], peaks[None][1], rtol=1e-10)
    assert peaks[20][0] * 4 < peaks[None][0]


def test_profile_and_drawings_of_a_program_with_loops(rng, tmp_path):
    g, W, U, h0, xs = _rnn_graph(rng, np.float64, T=6)
    X = rng.normal(size=xs.shape)

    def step(h, x):
        h = ev.tanh(W @ h + U @ x)
        return h, ev.cond(ev.sum(h) > 0.0, lambda a: a * 2.0, lambda a: a, h)
    h, ys = ev.scan(step, h0, xs)
    ev.grad(ev.sum(ys), [W])
    m = ev.TapeMachine(g)
    prof = m.profile({xs: X}, runs=2)
    loops = [k for k, ins in enumerate(m.program.instrs) if ins.bodies]
    body_rows = [r for r in prof.body_rows if r.loop == f"{loops[0]}/0"]
    assert len(body_rows) == len(m.program.instrs[loops[0]].bodies[0].instrs)
    assert all(r.iterations == 6 for r in body_rows)
    branch = [r for r in prof.body_rows if r.loop.startswith(f"{loops[0]}/0:")]
    taken = {r.loop: r.iterations for r in branch}
    assert sum(taken.values()) == 6     # the two branches ran 6 times together
    assert "loop bodies" in str(prof)
    for obj, name in ((g, "graph.svg"), (m.program, "program.svg")):
        ev.render(obj, str(tmp_path / name))
        text = (tmp_path / name).read_text()
        assert "next iteration" in text and "step" in text


def test_a_body_output_written_by_a_kernel_with_scratch_is_planned(rng):
    # the gradient body's output is a product whose kernel takes scratch memory: the
    # scratch is planned although the output is the loop's
    g = ev.Graph()
    W = g.matrix("W", (4, 4), value=rng.standard_normal((4, 4)) * 0.5)
    U = g.matrix("U", (4, 2), value=rng.standard_normal((4, 2)) * 0.5)
    xs = g.matrix("xs", (25, 2))
    n = g.scalar("n", dtype=np.int64)

    def step(h, x):
        h = ev.tanh(W @ h + U @ x)
        return h, ev.sum(h * h)
    h, ys = ev.scan(step, g.constant(np.zeros(4)), xs, length=n)
    gW = ev.grad(ev.sum(ys), W)
    X = rng.standard_normal((25, 2))
    for machine in EVALUATORS:
        got = EVALUATORS[machine](g, [gW], {xs: X, n: np.array(10)})[0]
        np.testing.assert_allclose(got, EVALUATORS["lisp"](g, [gW], {xs: X, n: np.array(10)})[0], rtol=1e-12)


def test_scan_gradients_match_torch_autograd_through_a_python_loop(rng):
    torch = pytest.importorskip("torch")
    T, H, D = 6, 4, 3
    W0, U0, X, h00 = (rng.normal(size=(H, H)) * 0.5, rng.normal(size=(H, D)), rng.normal(size=(T, D)),
                      rng.normal(size=H))
    Wt, Ut, Xt, ht = (torch.tensor(a, requires_grad=True) for a in (W0, U0, X, h00))
    h, ys = ht, []
    for t in range(T):
        h = torch.tanh(Wt @ h + Ut @ Xt[t])
        ys.append(h)
    loss = (h * h).sum() + (torch.stack(ys) ** 3).sum()
    loss.backward()
    g, W, U, h0, xs = _rnn_graph(rng, np.float64, T=T, H=H, D=D)
    W.value, U.value, h0.value = W0, U0, h00
    hN, hs = ev.scan(rnn_step(W, U), h0, xs)
    cost = ev.sum(hN * hN) + ev.sum(hs ** 3)
    grads = ev.grad(cost, [W, U, h0, xs])
    for machine in EVALUATORS:
        got = EVALUATORS[machine](g, [cost] + grads, {xs: X})
        assert float(got[0]) == pytest.approx(float(loss), rel=1e-12)
        for mine, theirs in zip(got[1:], (Wt, Ut, ht, Xt)):
            np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_gradients_of_gradients_through_scan_and_cond(rng):
    # the gradient of a scan is a scan: differentiating it again works the same way
    X = rng.normal(size=(4, 2))

    def hvp(W, v):
        h, hs = ev.scan(lambda h, x: (ev.tanh(W @ h + x), h), np.zeros(2), X)
        gW = ev.grad(ev.sum(h * h) + ev.sum(hs), W)
        return ev.sum(gW * v)

    assert ev.check_grad(hvp, [rng.normal(size=(2, 2)) * 0.5, rng.normal(size=(2, 2))])

    def branchy(x):
        y = ev.cond(ev.sum(x) > 0.0, lambda a: ev.sin(a) * a, lambda a: a * a * a, x)
        return ev.sum(ev.grad(ev.sum(y), x) ** 2)

    assert ev.check_grad(branchy, [np.array([0.3, 0.8])])
    assert ev.check_grad(branchy, [np.array([-0.3, -0.8])])


def test_feeding_new_arrays_does_not_rebind_a_loop(rng):
    # a big input read by a loop is copied into its buffer, never bound by reference:
    # rebinding a loop's body every run would cost more than the copy
    g, W, U, h0, xs = _rnn_graph(rng, np.float64, T=600)
    h, ys = ev.scan(rnn_step(W, U), h0, xs)
    # NOTE: sync: a tiered program whose kernels were not built yet swaps its fused form in
    # between two runs, rebinding everything (a cold cache: CI's)
    m = ev.TapeMachine(g, outputs=[h], fuse="sync")
    loop = next(k for k, ins in enumerate(m.program.instrs) if ins.bodies)
    runner = m._steps[loop][0]
    for _ in range(3):
        X = rng.normal(size=xs.shape)
        (got,) = m.run({xs: X})
        np.testing.assert_allclose(got, rnn_reference(W.value, U.value, h0.value, X)[0], rtol=1e-12)
        assert m._steps[loop][0] is runner


@pytest.mark.parametrize("rows", [1, 3])
def test_unroll_true_builds_no_loop_node_even_for_one_step(rows, rng):
    g = ev.Graph()
    X = rng.normal(size=(rows, 3))
    xs = g.tensor("xs", X.shape, value=X)
    c, ys = ev.scan(lambda c, x: (c + x, c * x), np.ones(3), xs, unroll=True)
    assert "scan" not in {n.opdef.name for n in g.nodes if n.opdef is not None}
    got = ev.TapeMachine(g, outputs=[c, ys]).run()
    want_c, want_ys = np.ones(3), []
    for x in X:
        want_ys.append(want_c * x)
        want_c = want_c + x
    np.testing.assert_allclose(got[0], want_c)
    np.testing.assert_allclose(got[1], np.stack(want_ys))
    with pytest.raises(ev.ExprError, match="exclude each other"):
        ev.scan(lambda c, x: (c + x, c * x), np.ones(3), xs, unroll=True, checkpoint=2)
