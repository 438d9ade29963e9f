"""Steady state: running a compiled program again allocates nothing that stays,
and the kernels that write into their buffers allocate nothing at all."""
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import exprvm as ev

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import models  # noqa: E402


def _net_after(m, feeds, runs):
    """Bytes and blocks still allocated after `runs` more runs."""
    before = tracemalloc.take_snapshot()
    for _ in range(runs):
        m.run(feeds)
    after = tracemalloc.take_snapshot()
    stats = after.compare_to(before, "filename")
    return sum(s.size_diff for s in stats), sum(s.count_diff for s in stats)


@pytest.mark.parametrize("name", ["rnn_b1", "lstm_b32", "mlp"])
def test_allocations_do_not_grow_with_the_number_of_runs(name):
    model, _, data = models.build(name, small=True)
    m = ev.TapeMachine(model.graph, [model.cost], fuse="sync")   # its final program throughout
    feeds = model.feeds(data)
    for _ in range(3):
        m.run(feeds)
    tracemalloc.start()
    try:
        bytes10, blocks10 = _net_after(m, feeds, 10)
        bytes100, blocks100 = _net_after(m, feeds, 100)
    finally:
        tracemalloc.stop()
    # Whatever a run leaves behind would be 10x larger after 100 runs than after 10.
    assert bytes100 <= max(bytes10, 0) + 2048, (bytes10, bytes100)
    assert blocks100 <= max(blocks10, 0) + 16, (blocks10, blocks100)


def test_out_kernels_allocate_no_arrays():
    # Big vectors (800 kB): any temporary array would show. NOTE: numpy's broadcasting
    # ufuncs take an iterator buffer of 8192 elements per call (32 kB here), freed on return.
    g = ev.Graph()
    n = 200_000
    x = g.vector("x", n, np.float32)
    w = g.vector("w", n, np.float32, value=np.linspace(0.5, 1, n, dtype=np.float32))
    y = x
    for _ in range(4):
        y = ev.sigmoid(ev.tanh(y * w) + 1.0) - ev.relu(y)
    cost = ev.sum(ev.softmax(y.reshape((1000, 200)), axis=1) * 2)
    ev.grad(cost, [w])
    for backend in ("numpy", "c"):
        if backend == "c" and not ev.kernels.available("tanh", np.float32, "c"):
            continue
        m = ev.TapeMachine(g, [cost], backend=backend, fuse="sync")
        assert not any(i.allocates for i in m.program), [i.text() for i in m.program if i.allocates]
        feeds = {x: np.linspace(-2, 2, n, dtype=np.float32)}
        m.run(feeds)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(5):
                m.run(feeds)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak - base < 8192 * 4 + 4096, (backend, peak - base)
