"""ev.nn.StackedRNN.sequence: a whole sequence as one ev.scan (or unrolled), with
per-row lengths; against the unrolled form and a numpy loop, on both machines."""
import numpy as np
import pytest

import exprvm as ev
from machines import EVALUATORS


def _graph(rnn, X, L, mode):
    g = ev.Graph()
    xs = g.tensor("xs", X.shape, X.dtype, value=X)
    lens = None if L is None else g.tensor("lens", L.shape, np.int64, value=L)
    hs, final = rnn.sequence(xs, lengths=lens, unroll=(mode == "unroll"))
    cost = ev.sum(hs * hs) + sum(ev.sum(s * s) for layer in final for s in layer)
    return g, hs, final, cost


@pytest.mark.parametrize("machine", sorted(EVALUATORS))
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("lengths", [None, np.array([5, 2, 4, 0])])
def test_scan_and_unrolled_sequences_agree_with_gradients(machine, cell, lengths, rng):
    rnn = ev.nn.StackedRNN(cell, 3, 4, layers=2, dtype=np.float64, seed=1)
    X = rng.normal(size=(5, 4, 3))
    got = {}
    for mode in ("scan", "unroll"):
        g, hs, final, cost = _graph(rnn, X, lengths, mode)
        params = [n for n in g.params() if n.dtype.kind == "f"]
        grads = ev.grad(cost, params)
        got[mode] = EVALUATORS[machine](g, [cost, hs] + grads)
    for a, b in zip(got["scan"], got["unroll"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    if lengths is not None:
        hs = got["scan"][1]
        for b, n in enumerate(lengths):
            assert not hs[n:, b].any() and (n == 0 or hs[n - 1, b].any())


def test_a_finished_row_keeps_its_state(rng):
    rnn = ev.nn.StackedRNN("lstm", 3, 4, dtype=np.float64, seed=2)
    X = rng.normal(size=(6, 2, 3))
    g = ev.Graph()
    xs = g.tensor("xs", X.shape, value=X)
    lens = g.tensor("lens", (2,), np.int64, value=np.array([6, 3]))
    _, final = rnn.sequence(xs, lengths=lens)
    short = ev.Graph()
    xs3 = short.tensor("xs", (3, 2, 3), value=X[:3])
    _, final3 = rnn.sequence(xs3)
    h, c = ev.LispMachine(g, outputs=list(final[0])), None
    h.run()
    m3 = ev.LispMachine(short, outputs=list(final3[0]))
    m3.run()
    for s, s3 in zip(final[0], final3[0]):
        np.testing.assert_allclose(s.value[1], s3.value[1], rtol=1e-12)


def test_sequence_gradients_by_finite_differences(rng):
    rnn = ev.nn.StackedRNN("gru", 2, 3, dtype=np.float64, seed=3)
    X = rng.normal(size=(4, 2, 2))

    def f(x):
        hs, _ = rnn.sequence(x, lengths=x.graph.constant(np.array([4, 2])))
        return ev.sum(hs * hs)
    assert ev.check_grad(f, [X])


def test_ids_in_a_scan_take_their_rows_before_the_loop(rng):
    rnn = ev.nn.StackedRNN("lstm", 11, 8, dtype=np.float32, seed=4)
    ids = rng.integers(0, 11, (7, 3))
    g = ev.Graph()
    x = g.tensor("ids", ids.shape, np.int64)
    hs, _ = rnn.sequence(x)
    cost = ev.sum(hs)
    ev.grad(cost, [n for n in g.params() if n.dtype.kind == "f"])
    m = ev.TapeMachine(g, outputs=[cost])
    loop = next(i for i in m.program.instrs if i.bodies and "rev" not in i.text())
    # the input rows and the input projection run once, before the loop
    assert not any(i.op in ("take", "one_hot") for i in loop.bodies[0].instrs)
    m.run({x: ids})
    g2 = ev.Graph()
    x2 = g2.tensor("ids", ids.shape, np.int64)
    hs2, _ = rnn.sequence(x2, unroll=True)
    m2 = ev.TapeMachine(g2, outputs=[ev.sum(hs2)])
    m2.run({x2: ids})
    assert float(cost.value) == pytest.approx(float(m2.program.values[0][0].value), rel=1e-5)
