"""The compiler's work grows linearly with the graph: counted (lines of Python executed),
not timed. A pass that is quadratic in the graph (a planner looking at every unit live
at once for each unit, a check scanning the rest of the tape for each instruction) makes
the work per node grow with the graph's size; a linear compiler's stays flat."""
import gc
import sys
from pathlib import Path

import pytest

import exprvm as ev
from exprvm.compiler import batching, compile_graph, ir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import models  # noqa: E402

GROWTH = 1.15   # the most the work per node may grow when the graph grows fourfold


def _lines(fn):
    """Lines of Python that fn() executes (sys.settrace: a loop's every turn counts)."""
    n = [0]

    def local(frame, event, arg):
        n[0] += 1
        return local

    def call(frame, event, arg):
        n[0] += 1
        return local
    old = sys.gettrace()
    sys.settrace(call)
    try:
        fn()
    finally:
        sys.settrace(old)
    return n[0]


def _lstm(T):
    w = models.rnn_weights(12, 8, gates=4)
    g = ev.Graph(f"lstm {T}")
    m = models.lstm(g, w, T, 4)         # an unrolled recurrence with its gradients
    return g, [m.cost], {}


def _chain(n):
    g = ev.Graph(f"chain {n}")
    m = models.chain(g, n=n, size=4, backward=True)
    return g, [m.cost], {}


def _states(n):
    """n state parameters, each updated at the end of the run (Theano's updates)."""
    g = ev.Graph(f"states {n}")
    x = g.vector("x", 4)
    states = [g.vector(f"s{i}", 4, value=[float(i)] * 4) for i in range(n)]
    news = [s * 0.5 + x for s in states]
    return g, [ev.sum(news[-1])], {"updates": tuple(zip(states, news))}


@pytest.mark.parametrize("fuse", [False, "sync"])
@pytest.mark.parametrize("make, small", [(_lstm, 8), (_chain, 50), (_states, 50)],
                         ids=["lstm", "chain", "updates"])
def test_compile_work_per_node_stays_flat_as_the_graph_grows(make, small, fuse):
    per_node = []
    for n in (small, 4 * small):
        g, outs, opts = make(n)
        prog = compile_graph(g, outs, fuse=fuse, **opts)    # kernels built, caches warm
        assert prog.verify()
        per_node.append(_lines(lambda: compile_graph(g, outs, fuse=fuse, **opts)) / len(g))
    assert per_node[1] <= GROWTH * per_node[0], per_node


@pytest.mark.parametrize("make, small", [(_lstm, 32), (_chain, 50)], ids=["lstm", "chain"])
def test_scans_of_ir_lists_stay_flat_as_the_graph_grows(make, small, monkeypatch):
    """A C-level scan of a list of Vals (list.remove, .count, .index, `in`) executes no
    line of Python, so the count above misses it: counted here through Val.__eq__, which
    each comparison of two distinct Vals calls. (Slice pushing once scanned a bias's
    readers, one per step, for every op it pushed: quadratic in the steps.)"""
    compared = [0]

    def eq(a, b):
        compared[0] += 1
        return a is b
    monkeypatch.setattr(ir.Val, "__eq__", eq)
    per_node = []
    for n in (small, 4 * small):
        g, outs, opts = make(n)
        compile_graph(g, outs, fuse="sync", **opts)
        compared[0] = 0
        compile_graph(g, outs, fuse="sync", **opts)
        per_node.append(compared[0] / len(g))
    assert per_node[1] <= GROWTH * per_node[0] + 0.01, per_node


def test_batching_tells_independent_copies_apart_with_one_bit_per_group(monkeypatch):
    """Each Val's ancestry mask has a bit per group of copies, not per copy (a mask per
    copy is a bit per step of the unroll on every Val: quadratic)."""
    widths = []
    ancestry = batching._ancestry

    def spy(vals, bit):
        anc = ancestry(vals, bit)
        widths.append((max((m.bit_length() for m in anc.values()), default=0), len(set(bit.values()))))
        return anc
    monkeypatch.setattr(batching, "_ancestry", spy)
    for T in (8, 32):
        g, outs, _ = _lstm(T)
        compile_graph(g, outs, fuse=False)
    assert widths and all(w <= groups for w, groups in widths), widths
    assert max(w for w, _ in widths) < 32


def test_the_planner_stays_near_the_bound_for_unrolled_steps():
    """The sweeps that replace the greedy packing on long graphs keep every buffer plan
    sound and near the liveness bound."""
    for T in (8, 32):
        for fuse in (False, "sync"):
            g, outs, _ = _lstm(T)
            prog = compile_graph(g, outs, fuse=fuse)
            assert prog.verify()
            assert prog.lower_bound <= prog.peak_bytes <= 1.15 * prog.lower_bound, (T, fuse)


def _scan(T):
    w = models.rnn_weights(12, 8, gates=4)
    g = ev.Graph(f"lstm scan {T}")
    m = models.lstm_scan(g, w, T, 4)    # a loop: its body is compiled too
    return g, [m.cost], {}


@pytest.mark.parametrize("make", [_lstm, _scan], ids=["unrolled", "scan"])
@pytest.mark.parametrize("fuse", [False, "sync"])
def test_a_compile_leaves_nothing_to_the_cyclic_collector(make, fuse):
    """The IR's Vals and their readers refer to each other; a compile breaks those cycles
    as it ends, so its whole IR is freed at once instead of waiting for a collection
    (which cost a sixth of a big graph's compile)."""
    g, outs, opts = make(6)
    compile_graph(g, outs, fuse=fuse, **opts)       # kernels built, one-time imports done
    gc.collect()
    gc.disable()
    try:
        prog = compile_graph(g, outs, fuse=fuse, **opts)
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert prog.verify()
