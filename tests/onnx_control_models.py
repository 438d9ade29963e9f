"""exprvm graphs with loops and branches for the ONNX export tests: each build returns
(graph, inputs, outputs, feeds, the ONNX operators its model must hold, the exprvm
control ops its re-import must hold)."""
import pathlib
import sys

import numpy as np

import exprvm as ev
from exprvm.core.body import Body

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import char_rnn  # noqa: E402
import models  # noqa: E402

F32 = np.float32


def ev_ops(nodes):
    """Every op among nodes, their ancestors and the bodies of the loops and branches there."""
    out = set()
    for n in ev.ancestors(nodes):
        out.add(n.op)
        for b in n.params.values():
            if isinstance(b, Body):
                out |= ev_ops(list(b.outputs))
    return out


def _rnn(g, rng):
    """The leaves a recurrence reads: xs (5, 2, 3), h0 (2, 4), weights W (3, 4), U (4, 4)."""
    xs = g.tensor("xs", (5, 2, 3), F32)
    h0 = g.tensor("h0", (2, 4), F32)
    W = g.tensor("W", (3, 4), F32, value=(rng.standard_normal((3, 4)) * 0.5).astype(F32))
    U = g.tensor("U", (4, 4), F32, value=(rng.standard_normal((4, 4)) * 0.5).astype(F32))
    return xs, h0, W, U


def _feeds(ins, rng, ints=None):
    return {n: (np.asarray((ints or {})[n.name]) if n.dtype.kind in "iub" else
                rng.standard_normal(n.shape).astype(n.dtype)) for n in ins}


def scan(rng, reverse=False, unroll=1, checkpoint=None):
    """An RNN over xs with two carries and two stacked outputs; W and U captured."""
    g = ev.Graph("scan")
    xs, h0, W, U = _rnn(g, rng)

    def step(carry, x):
        h, total = carry
        h = ev.tanh(x @ W + h @ U)
        return (h, total + ev.sum(h)), (h, ev.sigmoid(h) * 2.0)

    (h, total), (hs, gs) = ev.scan(step, (h0, g.constant(np.zeros((), F32))), xs, reverse=reverse,
                                   unroll=unroll, checkpoint=checkpoint)
    return g, [xs, h0], [h, total, hs, gs], _feeds([xs, h0], rng), {"Scan"}, {"scan"}


def scan_length(rng, reverse=False):
    """A scan whose number of steps is an input (rows past it are zeros): ONNX Loop."""
    g = ev.Graph("scan_length")
    xs, h0, W, U = _rnn(g, rng)
    n = g.scalar("n", np.int64)
    h, hs = ev.scan(lambda h, x: (ev.tanh(x @ W + h @ U),) * 2, h0, xs, length=n, reverse=reverse)
    return g, [xs, h0, n], [h, hs], _feeds([xs, h0, n], rng, {"n": 3}), {"Loop"}, {"scan"}


def scan_static_length(rng):
    """Three steps over five rows: a Scan over the first three, the rest zeros."""
    g = ev.Graph("scan_static_length")
    xs, h0, W, U = _rnn(g, rng)
    h, hs = ev.scan(lambda h, x: (ev.tanh(x @ W + h @ U),) * 2, h0, xs, length=3, reverse=True)
    return g, [xs, h0], [h, hs], _feeds([xs, h0], rng), {"Scan"}, {"scan"}


def fori(rng):
    """ev.fori_loop with static bounds (a scan over its index range): ONNX Loop."""
    g = ev.Graph("fori")
    x = g.tensor("x", (3,), F32)
    out = ev.fori_loop(2, 6, lambda i, c: c * 0.5 + ev.astype(i, F32), x)
    return g, [x], [out], _feeds([x], rng), {"Loop"}, {"scan"}


def fori_node(rng):
    """ev.fori_loop up to an input (a while_loop): ONNX Loop with a condition."""
    g = ev.Graph("fori_node")
    x = g.tensor("x", (3,), F32)
    n = g.scalar("n", np.int64)
    out = ev.fori_loop(0, n, lambda i, c: ev.tanh(c) + ev.astype(i, F32), x)
    return g, [x, n], [out], _feeds([x, n], rng, {"n": 4}), {"Loop"}, {"while_loop"}


def while_(rng, bounded=True):
    """ev.while_loop growing a vector until its sum passes a threshold (an input)."""
    g = ev.Graph("while")
    x = g.tensor("x", (3,), F32)
    limit = g.scalar("limit", F32)
    M = g.tensor("M", (3, 3), F32, value=(np.eye(3) * 1.3 + 0.1).astype(F32))
    out = ev.while_loop(lambda c: ev.sum(c) < limit, lambda c: c @ M + 0.05, ev.abs(x),
                        max_iterations=50 if bounded else None)
    feeds = {x: rng.standard_normal(3).astype(F32), limit: np.array(20.0, F32)}
    return g, [x, limit], [out], feeds, {"Loop"}, {"while_loop"}


def cond(rng, pred=True):
    """ev.cond over an input predicate; the branches read a weight (captured)."""
    g = ev.Graph("cond")
    x = g.tensor("x", (2, 3), F32)
    p = g.scalar("p", np.bool_)
    W = g.tensor("W", (3, 3), F32, value=rng.standard_normal((3, 3)).astype(F32))
    a, b = ev.cond(p, lambda v: (ev.tanh(v @ W), ev.sum(v)), lambda v: (v * 2.0, ev.max(v)), x)
    feeds = {x: rng.standard_normal((2, 3)).astype(F32), p: np.array(pred)}
    return g, [x, p], [a, b], feeds, {"If"}, {"cond"}


def nested(rng):
    """A scan whose step branches on its row and runs a fori_loop: subgraphs in subgraphs,
    reading a weight two levels up."""
    g = ev.Graph("nested")
    xs, h0, W, U = _rnn(g, rng)

    def step(h, x):
        z = x @ W
        h = ev.cond(ev.sum(z) > 0.0, lambda a: ev.tanh(a @ U), lambda a: ev.fori_loop(0, 2, lambda i, c: c * 0.5, a),
                    h + z)
        return h, h

    h, hs = ev.scan(step, h0, xs)
    return g, [xs, h0], [h, hs], _feeds([xs, h0], rng), {"Scan", "If", "Loop"}, {"scan", "cond"}


def char_rnn_lstm(rng, cell="lstm"):
    """examples/char_rnn.py's model over a sequence: StackedRNN.sequence (one ev.scan over
    two LSTM layers) and the linear head over every step."""
    model = char_rnn.CharModel(vocab=20, cell=cell, hidden=16, layers=2, seed=0)
    g = ev.Graph(f"char_rnn_{cell}_scan")
    ids = g.tensor("ids", (7, 3), np.int32)
    state0 = model.rnn.state_inputs(g, 3)
    hs, final = model.rnn.sequence(ids, state0)
    ins = [ids] + ev.nn.flat(state0)
    feeds = {n: (rng.integers(0, 20, n.shape).astype(n.dtype) if n.dtype.kind in "iu"
                 else rng.standard_normal(n.shape).astype(n.dtype)) for n in ins}
    return g, ins, [model.head(hs)] + ev.nn.flat(final), feeds, {"Scan"}, {"scan"}


def lstm_scan(rng, name="lstm_scan"):
    """benchmarks/models.py's LSTM with the recurrence as one ev.scan (lstm_scan_steps: the
    input rows, output layer and loss inside the loop): its loss."""
    weights = models.rnn_weights(vocab=11, hidden=8, seed=0, gates=4)
    g = ev.Graph(name)
    m = getattr(models, name)(g, weights, 6, 2, grads=False)
    data = models.rnn_data(11, 6, 2)
    ins = [m.inputs["ids"], m.inputs["targets"]]
    return g, ins, [m.cost], m.feeds(data), {"Scan"}, {"scan"}


BUILDS = {
    "scan": scan, "scan_reverse": lambda r: scan(r, reverse=True), "scan_unroll2": lambda r: scan(r, unroll=2),
    "scan_checkpoint2": lambda r: scan(r, checkpoint=2), "scan_length": scan_length,
    "scan_length_reverse": lambda r: scan_length(r, reverse=True), "scan_static_length": scan_static_length,
    "fori": fori, "fori_node": fori_node, "while": while_, "while_unbounded": lambda r: while_(r, bounded=False),
    "cond_true": cond, "cond_false": lambda r: cond(r, pred=False), "nested": nested,
    "char_rnn_lstm": char_rnn_lstm, "char_rnn_gru": lambda r: char_rnn_lstm(r, "gru"),
    "bench_lstm_scan": lstm_scan, "bench_lstm_scan_steps": lambda r: lstm_scan(r, "lstm_scan_steps"),
}
