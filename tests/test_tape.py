"""TapeMachine: results, gradients, options, feed errors, solvers; the benchmark
models against the LispMachine and the handwritten numpy of benchmarks/."""
import copy
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import exprvm as ev

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import handwritten as hw  # noqa: E402
import models  # noqa: E402

F32 = np.float32


def layer(dtype=F32):
    g = ev.Graph()
    W = g.matrix("W", (3, 4), dtype=dtype, init=ev.init.glorot_normal(seed=1))
    b = g.vector("b", 3, dtype=dtype, value=np.array([0.1, -0.2, 0.3], dtype))
    v = g.vector("v", 4, dtype=dtype)
    h = ev.tanh(W @ v + b)
    cost = ev.sum(h * h)
    gW, gb = ev.grad(cost, [W, b])
    return g, W, b, v, h, cost, gW, gb


def test_run_sets_values_and_grads_like_the_lisp_machine():
    g, W, b, v, h, cost, gW, gb = layer()
    m = ev.TapeMachine(g)
    assert m.outputs == [cost]                  # by default the sinks but gradients, and costs
    out = m.run({v: np.arange(4, dtype=F32)})
    assert len(out) == 1 and out[0] == cost.value and out[0] is not cost.value
    tape = (float(cost.value), W.grad.copy(), b.grad.copy(), gW.value.copy())
    ev.LispMachine(g, cost=cost).run({v: np.arange(4, dtype=F32)})
    assert tape[0] == pytest.approx(float(cost.value), rel=1e-6)
    np.testing.assert_allclose(tape[1], W.grad, rtol=1e-5)
    np.testing.assert_allclose(tape[2], b.grad, rtol=1e-5)
    np.testing.assert_allclose(tape[3], W.grad, rtol=1e-5)


def test_outputs_compile_only_what_they_need_plus_their_gradients():
    g, W, b, v, h, cost, gW, gb = layer()
    other = ev.exp(v) * 3
    m = ev.TapeMachine(g, outputs=[cost])
    assert other not in m.program.index
    assert gW in m.program.index and gb in m.program.index
    m.run({v: np.ones(4, F32)})
    assert W.grad is not None and b.grad is not None
    only_h = ev.TapeMachine(g, outputs=[h])
    assert gW not in only_h.program.index
    no_grads = ev.TapeMachine(g, outputs=[cost], grads=False)
    assert gW not in no_grads.program.index


def test_repeated_runs_reuse_the_program_and_follow_in_place_updates():
    g, W, b, v, h, cost, gW, gb = layer()
    m = ev.TapeMachine(g, outputs=[cost], fuse="sync")     # (tiered may swap its fused form in)
    prog = m.program
    m.run({v: np.ones(4, F32)})
    first = float(cost.value)
    ev.exp(h)                                   # the graph grows: the program does not change
    W.value *= 2                                # a solver updates in place
    m.run({v: np.ones(4, F32)})
    assert m.program is prog
    ev.LispMachine(g, outputs=[cost]).run({v: np.ones(4, F32)})
    assert float(cost.value) != first
    expected = float(cost.value)
    m.run({v: np.ones(4, F32)})
    assert float(cost.value) == pytest.approx(expected, rel=1e-6)


def test_rebinding_a_parameter_is_noticed():
    g, W, b, v, h, cost, gW, gb = layer()
    m = ev.TapeMachine(g, outputs=[cost])
    ev.let(v, np.ones(4, F32))                  # bound to persist: every run reads it
    m.run()
    ev.let(W, np.zeros((3, 4), F32))
    m.run()
    assert float(cost.value) == pytest.approx(float(np.sum(np.tanh(b.value) ** 2)), rel=1e-6)
    W.value = np.ones((3, 4), F32)              # a new array again, then changed in place
    m.run()
    W.value[0] = 0
    m.run()
    ref = np.tanh(W.value @ np.ones(4, F32) + b.value)
    assert float(cost.value) == pytest.approx(float(np.sum(ref * ref)), rel=1e-6)


def test_feed_errors_name_the_input_and_leave_the_machine_usable():
    g, W, b, v, h, cost, gW, gb = layer()
    m = ev.TapeMachine(g, outputs=[cost])
    with pytest.raises(ev.FeedError, match="no value for input v"):
        m.run()
    with pytest.raises(ev.FeedError, match=r"input v: fed shape \(5,\)"):
        m.run({v: np.ones(5, F32)})
    with pytest.raises(ev.FeedError, match="input v: fed dtype float64"):
        m.run({v: np.ones(4)})
    with pytest.raises(ev.FeedError, match="cannot bind"):
        m.run({h: np.ones(3, F32)})
    m.run({v: np.ones(4, F32)})
    ref = np.tanh(W.value @ np.ones(4, F32) + b.value)
    assert float(cost.value) == pytest.approx(float(np.sum(ref * ref)), rel=1e-6)
    out, = m.run({v: [1, 2, 3, 4]})             # Python lists take the input's dtype
    ref = np.tanh(W.value @ np.arange(1, 5, dtype=F32) + b.value)
    assert out.dtype == F32 and float(out) == pytest.approx(float(np.sum(ref * ref)), rel=1e-6)
    assert v.value is None                      # a feed is for its run only
    with pytest.raises(ev.FeedError, match="no value for input v"):
        m.run()


def test_large_inputs_are_read_in_place_and_follow_every_kind_of_feed():
    g = ev.Graph()
    x = g.matrix("x", (64, 100), dtype=F32)
    W = g.matrix("W", (100, 3), dtype=F32, value=np.ones((100, 3), F32))
    y = ev.sum(x @ W, axis=0) + ev.sum(x.T, axis=1)[:3]
    m = ev.TapeMachine(g, [y])
    assert m._leaf[x].byref

    def check(xv):
        np.testing.assert_allclose(y.value, xv.sum() + xv.sum(axis=0)[:3], rtol=1e-4)

    a = np.random.default_rng(0).standard_normal((64, 100)).astype(F32)
    m.run({x: a})
    check(a)
    a *= 2                                      # same array, changed in place
    m.run({x: a})
    check(a)
    b = np.ones((64, 100), F32)
    m.run({x: b})
    check(b)
    m.run({x: a.tolist()})                      # not an array: copied
    check(a)
    m.run({x: np.asfortranarray(b)})            # not C-contiguous: copied
    check(b)
    ev.let(x, a)
    m.run()
    check(a)


def test_run_time_errors_name_the_instruction_and_the_line():
    g = ev.Graph()
    table = g.matrix("table", (5, 3), value=np.ones((5, 3)))
    ids = g.tensor("ids", (2,), np.int64)
    out = ev.sum(ev.take(table, ids))
    m = ev.TapeMachine(g, [out])
    m.run({ids: np.array([0, 4])})
    assert float(out.value) == 6
    with pytest.raises(ev.IndexRangeError, match=r"take#\d+ \(made at test_tape.py:\d+\).*`r\d+ = take r\d+, r\d+`"):
        m.run({ids: np.array([0, 7])})
    with pytest.raises(ev.IndexRangeError, match="min -1"):
        m.run({ids: np.array([-1, 2])})
    t = g.tensor("t", (5,), np.int64)
    z = ev.sum(ev.cross_entropy(table, t))
    with pytest.raises(ev.IndexRangeError, match="cross_entropy target"):
        ev.TapeMachine(g, [z]).run({t: np.array([0, 1, 2, 3, 0])})
    m.run({ids: np.array([1, 2])})
    assert float(out.value) == 6


def test_nan_and_inf_watch_name_node_instruction_and_line():
    g = ev.Graph()
    x = g.vector("x", 3)
    y = ev.log(x)
    z = ev.sum(y * 2)
    m = ev.TapeMachine(g, [z], nan_watch=True)
    m.run({x: np.ones(3)})
    with np.errstate(invalid="ignore"), pytest.raises(ev.NumericError) as e:
        m.run({x: np.array([1.0, -1.0, 2.0])})
    msg = str(e.value)
    assert "NaN" in msg and f"(made at test_tape.py:{y.site.split(':')[1]})" in msg
    assert "= log r" in msg and y.label in msg
    inf = ev.TapeMachine(g, [z], inf_watch=True)
    with np.errstate(divide="ignore"), pytest.raises(ev.NumericError, match="Inf in log"):
        inf.run({x: np.array([1.0, 0.0, 2.0])})
    m.run({x: np.ones(3)})                      # still usable


def test_watch_records_a_copy_per_run():
    g, W, b, v, h, cost, gW, gb = layer()
    m = ev.TapeMachine(g, outputs=[cost], watch=[h, cost])
    for k in range(3):
        m.run({v: np.full(4, k, F32)})
    assert len(m.history[h]) == 3 and len(m.history[cost]) == 3
    np.testing.assert_allclose(m.history[h][0], np.tanh(b.value), rtol=1e-6)
    assert m.history[h][0] is not m.history[h][1]
    assert not np.allclose(m.history[h][1], m.history[h][2])


def test_trace_keeps_every_intermediate():
    g, W, b, v, h, cost, gW, gb = layer()
    for n in g.nodes:
        if not n.is_leaf:
            n.value = None
    m = ev.TapeMachine(g, outputs=[cost], trace=True)
    m.run({v: np.arange(4, dtype=F32)})
    every = [n for n in ev.ancestors([cost, gW, gb]) if n.op != "input"]   # a feed is not bound
    assert all(n.value is not None for n in every)
    traced = {n: np.array(n.value) for n in every}
    ev.LispMachine(g, cost=cost, outputs=list(traced)).run({v: np.arange(4, dtype=F32)})
    for n, val in traced.items():
        np.testing.assert_allclose(val, n.value, rtol=1e-5, atol=1e-7, err_msg=n.label)


def test_logger_hears_every_instruction():
    g, W, b, v, h, cost, gW, gb = layer()
    lines = []
    m = ev.TapeMachine(g, outputs=[cost], logger=lines.append)
    m.run({v: np.ones(4, F32)})
    assert len(lines) == len(m.program)
    assert [ln.split("  ;")[0] for ln in lines] == [i.text() for i in m.program]
    assert any(" = tanh" in ln or ("fused" in ln and "tanh" in ln) for ln in lines)
    log = logging.getLogger("exprvm-test-tape")
    seen = []
    log.addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: seen.append(r.getMessage())})())
    log.setLevel(logging.DEBUG)
    m2 = ev.TapeMachine(g, outputs=[cost], logger=log)
    m2.run({v: np.ones(4, F32)})
    assert len(seen) == len(m2.program)      # (its own tier: kernels may have been built since)


def test_solvers_train_identically_on_both_machines():
    def train(machine):
        g = ev.Graph()
        rng = np.random.default_rng(3)
        W = g.matrix("W", (2, 3), value=rng.standard_normal((2, 3)))
        b = g.vector("b", 2, value=np.zeros(2))
        x = g.matrix("x", (5, 3))
        t = g.tensor("t", (5,), np.int64)
        cost = ev.mean(ev.cross_entropy(x @ W.T + b, t))
        ev.grad(cost, [W, b])
        # NOTE: replay=False: after 8 walks a LispMachine replays a compiled program, and the
        # comparison would be tape against tape.
        m = ev.TapeMachine(g, [cost]) if machine == "tape" else ev.LispMachine(g, cost=cost, replay=False)
        opt = ev.solvers.SGD(lr=0.5)
        xs = rng.standard_normal((5, 3))
        ts = np.array([0, 1, 1, 0, 1])
        losses = []
        for _ in range(20):
            m.run({x: xs, t: ts})
            losses.append(float(cost.value))
            if machine == "lisp":   # a walk leaves values on intermediate nodes, a replay none
                assert cost.inputs[0].value is not None
                cost.inputs[0].value = None
            opt.step([W, b])
        return losses, W.value, b.value
    lt, Wt, bt = train("tape")
    ll, Wl, bl = train("lisp")
    np.testing.assert_allclose(lt, ll, rtol=1e-10)
    np.testing.assert_allclose(Wt, Wl, rtol=1e-10)
    np.testing.assert_allclose(bt, bl, rtol=1e-10)
    assert lt[-1] < lt[0]


@pytest.mark.parametrize("name", ["rnn_b1", "rnn_b32", "lstm_b32", "mlp"])
@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_benchmark_models_match_lisp_and_handwritten_numpy(name, backend):
    if backend == "c" and not ev.kernels.available("tanh", F32, "c"):
        pytest.skip("C kernels not built")
    w, data = models.weights_and_data(name, small=True)
    wt, wl, wh = copy.deepcopy(w), copy.deepcopy(w), copy.deepcopy(w)
    mt = models.graph(name, wt, small=True)
    tm = ev.TapeMachine(mt.graph, [mt.cost], backend=backend)
    tm.run(mt.feeds(data))
    tape_loss = float(mt.cost.value)
    tape_grads = [p.grad.copy() for p in mt.params]
    ml = models.graph(name, wl, small=True, grads=False)
    ev.LispMachine(ml.graph, cost=ml.cost).run(ml.feeds(data))
    assert tape_loss == pytest.approx(float(ml.cost.value), rel=1e-5)
    for a, p in zip(tape_grads, ml.params):
        np.testing.assert_allclose(a, p.grad, rtol=2e-4, atol=2e-5, err_msg=p.name)
    step = {"mlp": lambda: hw.mlp_step(wh, data["x"], data["y"], 0.1),
            "lstm_b32": lambda: hw.lstm_step(wh, data["ids"], data["targets"], 0.1)}.get(
        name, lambda: hw.rnn_step(wh, data["ids"], data["targets"], 0.1))
    assert float(step()) == pytest.approx(tape_loss, rel=1e-5)
    for p, g in zip(mt.params, tape_grads):
        np.testing.assert_allclose(wh[p.name], wt[p.name] - 0.1 * g, rtol=2e-4, atol=2e-5, err_msg=p.name)


def test_small_benchmarks_match_handwritten_numpy():
    m, _, data = models.build("chain_bwd", small=True)
    ev.TapeMachine(m.graph, [m.cost]).run(m.feeds(data))
    cost, dw = hw.chain_backward(data["x"], m.params[0].value, n=5)
    assert float(m.cost.value) == pytest.approx(float(cost), rel=1e-5)
    np.testing.assert_allclose(m.params[0].grad, dw, rtol=1e-5)
    e, _, data = models.build("expr")
    ev.TapeMachine(e.graph, e.outputs).run(e.feeds(data))
    for node, ref in zip(e.outputs, hw.expr(data["x"], data["y"])):
        assert float(node.value) == pytest.approx(float(ref))


def test_close_and_context_manager():
    g, W, b, v, h, cost, gW, gb = layer()
    with ev.TapeMachine(g, outputs=[cost]) as m:
        m.run({v: np.ones(4, F32)})
        assert "TapeMachine" in repr(m)
    assert m._arenas == {}
    with pytest.raises(ev.ExprError, match="closed"):
        m.run()


# -- CUDA: runs only where a GPU is -----------------------------------------------------------

def _cuda_available():
    from exprvm import cuda
    return cuda.is_available()


def test_device_request_without_a_gpu_is_a_clear_error():
    if _cuda_available():
        pytest.skip("a GPU is present")
    g, W, b, v, h, cost, gW, gb = layer()
    with pytest.raises(ev.BackendError, match="cuda.*not available"):
        ev.TapeMachine(g, [cost], device="cuda")
    assert ev.TapeMachine(g, [cost], use_cuda_for=("relu",)).program   # nothing placed: fine


@pytest.mark.cuda
@pytest.mark.parametrize("how", [{"device": "cuda"}, {"use_cuda_for": ("tanh", "sigmoid")}])
def test_device_runs_match_the_host(how):
    if not _cuda_available():
        pytest.skip("no CUDA device")
    g = ev.Graph()
    x = g.matrix("x", (16, 32), dtype=F32)
    w = g.matrix("w", (16, 32), dtype=F32, value=np.linspace(0.1, 1, 512, dtype=F32).reshape(16, 32))
    h = ev.tanh(ev.sigmoid(x) * w + x)
    cost = ev.sum(ev.exp(h) * h)
    ev.grad(cost, [w])
    xv = np.random.default_rng(0).standard_normal((16, 32)).astype(F32)
    ev.TapeMachine(g, [cost]).run({x: xv})
    host = (float(cost.value), w.grad.copy())
    with ev.TapeMachine(g, [cost], **how) as m:
        assert any(i.kernel == "cuda" for i in m.program)
        for _ in range(2):
            m.run({x: xv})
            assert float(cost.value) == pytest.approx(host[0], rel=1e-5)
            np.testing.assert_allclose(w.grad, host[1], rtol=1e-4, atol=1e-6)
        bufs = list(m._device_bufs.values())
        assert bufs
    assert all(b.freed for b in bufs)


# -- the optimizer's rewrites on unrolled loops ---------------------------------------------

def _unrolled(seed):
    """A small random unrolled recurrence: embeddings by take or one_hot @ W, a random
    activation, per-step losses summed; exercises fusion, batching and merged sums."""
    r = np.random.default_rng(seed)
    steps, batch, hidden, vocab = (int(r.integers(1, 6)), int(r.integers(1, 4)),
                                   int(r.integers(2, 6)), int(r.integers(3, 7)))
    g = ev.Graph()
    Wx = g.tensor("Wx", (vocab, hidden), value=r.standard_normal((vocab, hidden)))
    Wh = g.tensor("Wh", (hidden, hidden), value=r.standard_normal((hidden, hidden)) * 0.5)
    Wy = g.tensor("Wy", (hidden, vocab), value=r.standard_normal((hidden, vocab)))
    b = g.tensor("b", (hidden,), value=r.standard_normal(hidden))
    ids = g.tensor("ids", (steps, batch), np.int64)
    tg = g.tensor("tg", (steps, batch), np.int64)
    act = [ev.tanh, ev.sigmoid, ev.relu, lambda x: x * ev.tanh(x)][int(r.integers(0, 4))]
    h = g.constant(np.zeros((batch, hidden)))
    loss = None
    X = ev.take(Wx, ids) if r.random() < 0.4 else None     # every step's rows at once
    for t in range(steps):
        if X is not None:
            e = X[t]
        else:
            e = ev.take(Wx, ids[t]) if r.random() < 0.6 else ev.one_hot(ids[t], vocab) @ Wx
        h = act(e + h @ Wh + b if r.random() < 0.5 else (h @ Wh + b) + e)
        y = h @ Wy
        step = ev.sum(ev.cross_entropy(y, tg[t])) if r.random() < 0.6 else ev.mean(ev.square(ev.softmax(y)))
        loss = step if loss is None else loss + step
    params = [Wx, Wh, Wy, b]
    ev.grad(loss, params)
    feeds = {ids: r.integers(0, vocab, (steps, batch)), tg: r.integers(0, vocab, (steps, batch))}
    return g, loss, params, feeds


@given(st.integers(0, 10_000), st.sampled_from(["numpy", "c"]), st.booleans())
def test_optimized_programs_match_the_lisp_machine_on_unrolled_loops(seed, backend, whole_graph):
    if backend == "c" and not ev.kernels.available("tanh", np.float64, "c"):
        backend = "numpy"
    g, loss, params, feeds = _unrolled(seed)
    m = ev.TapeMachine(g, None if whole_graph else [loss], backend=backend)
    m.run(feeds)
    tape = (float(loss.value), [p.grad.copy() for p in params])
    ev.LispMachine(g, cost=loss).run(feeds)
    assert tape[0] == pytest.approx(float(loss.value), rel=1e-9)
    for a, p in zip(tape[1], params):
        np.testing.assert_allclose(a, p.grad, rtol=1e-8, atol=1e-10, err_msg=p.name)


@pytest.mark.parametrize("skip", [None, 2])
def test_gradients_of_time_steps_merge_into_one_concatenation(skip):
    """x[t] over all t of a sequence: the steps' gradients, summed, are one concatenation
    instead of a zero-filled array per step. With a step missing they stay separate."""
    r = np.random.default_rng(3)
    g = ev.Graph()
    X = g.tensor("X", (5, 2, 3), value=r.standard_normal((5, 2, 3)))
    W = g.tensor("W", (3, 3), value=r.standard_normal((3, 3)) * 0.5)
    h, hs = g.constant(np.zeros((2, 3))), []
    for t in range(5):
        if t != skip:
            h = ev.tanh(X[t] + h @ W)
            hs.append(h)
    cost = ev.sum(ev.stack(hs) * ev.stack(hs))
    ev.grad(cost, [X, W])
    m = ev.TapeMachine(g, [cost])
    ops = [i.op for i in m.program]
    assert ("getitem_grad" in ops) == (skip is not None), str(m.program)
    m.run()
    tape = [X.grad.copy(), W.grad.copy()]
    ev.LispMachine(g, cost=cost, replay=False).run()
    for a, b in zip(tape, [X.grad, W.grad]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    if skip is not None:
        assert not X.grad[skip].any()


def test_adds_in_front_of_kernels_fuse_into_them():
    """tanh(a + b) and tanh's gradient of a summed gradient run with their adds in one
    generated kernel each (fuse=True, a C compiler here; relu's forward and gradient too);
    fuse=False runs every op on its own. Same results as numpy either way."""
    if not ev.kernels.available("tanh", F32, "c"):
        pytest.skip("C kernels not built")
    r = np.random.default_rng(4)
    g = ev.Graph()
    a, b, w, c, d = (g.tensor(k, shape, F32, value=r.standard_normal(shape).astype(F32))
                     for k, shape in (("a", (3, 5)), ("b", (3, 5)), ("w", (3, 5)), ("c", (4, 2)), ("d", (4, 2))))
    h = ev.tanh(a + b)
    cost = ev.sum(h * w) + ev.sum(ev.exp(h)) + ev.sum(ev.relu(c + d))   # h's gradient: w + exp(h)
    ev.grad(cost, [a, c])
    ev.TapeMachine(g, [cost], backend="numpy").run()
    want = (float(cost.value), a.grad.copy(), c.grad.copy())
    for fuse in ("sync", False):
        m = ev.TapeMachine(g, [cost], backend="c", fuse=fuse)
        ops = [i.op for i in m.program]
        if fuse and ev.compiler.fusion.available()[0]:
            assert "add" not in ops and "tanh" not in ops and "fused" in ops, str(m.program)
            notes = " | ".join(i.note for i in m.program if i.op == "fused")
            assert "add tanh" in notes and "tanh_grad" in notes and "relu" in notes, notes
        else:
            assert {"add", "tanh", "relu"} <= set(ops) and "fused" not in ops, str(m.program)
        m.run()
        assert float(cost.value) == pytest.approx(want[0], rel=1e-6)
        np.testing.assert_allclose(a.grad, want[1], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(c.grad, want[2])


def test_watches_keep_the_adds_a_kernel_would_fuse():
    """inf_watch checks every value an instruction makes: an Inf in a + b must be
    caught there, so a watching machine fuses nothing (no generated kernels)."""
    if not ev.kernels.available("tanh", F32, "c"):
        pytest.skip("C kernels not built")
    g = ev.Graph()
    a, b = g.vector("a", 3, dtype=F32), g.vector("b", 3, dtype=F32)
    cost = ev.sum(ev.tanh(a + b))
    assert "add" not in [i.op for i in ev.TapeMachine(g, [cost], backend="c", fuse="sync").program]
    m = ev.TapeMachine(g, [cost], backend="c", inf_watch=True)
    big = np.array([3e38, 0, 0], F32)
    with np.errstate(over="ignore"), pytest.raises(ev.NumericError, match=r"Inf in add#\d+ .*test_tape.py"):
        m.run({a: big, b: big})


def test_whole_graph_programs_keep_no_dead_instructions():
    """outputs=None: what a fusion leaves unread (tanh's 1 - y*y) is dropped, not run."""
    g = ev.Graph()
    W = g.matrix("W", (3, 4), value=np.ones((3, 4), np.float32) / 4, dtype=np.float32)
    v = g.vector("v", 4, dtype=np.float32)
    y = ev.tanh(W @ v)
    cost = ev.sum(y * y)
    ev.grad(cost, [W])
    prog = ev.TapeMachine(g).program
    # NOTE: read directly or through a view (a fused group's results are views of its value)
    read = {prog.root(r).id for ins in prog.instrs for r in ins.ins}
    outs = {prog.root(r).id for r in prog.outputs}
    for ins in prog.instrs:
        assert ins.out in read or ins.out in outs, f"dead: {ins.text()}"
