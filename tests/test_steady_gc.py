"""ev.steady_gc(): inside the block the cyclic collector walks only what was made since it
began; outside, exprvm leaves the collector's state as it found it."""
import gc
import weakref

import numpy as np
import pytest

import exprvm as ev
from exprvm.machines.replay import ReplayCache


@pytest.fixture(autouse=True)
def _no_frozen_objects():
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()


def _step_graph(W, xv, length):
    """A fresh graph per step, as a LispMachine loop builds: (graph, cost, W's leaf)."""
    g = ev.Graph(f"step {length}")
    w = g.matrix("W", W.shape, value=W)
    x = g.tensor("x", (length, 3))
    h = g.constant(np.zeros(3))
    for t in range(length):
        h = ev.tanh(w @ h + x[t])
    ev.let(x, xv[:length])
    return g, ev.sum(h * h), w


def _loop(steps, cache):
    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, 3)) * 0.5
    xv = rng.normal(size=(6, 3))
    out = []
    for k in range(steps):
        g, cost, w = _step_graph(W, xv, 4 + k % 2)
        ev.LispMachine(g, cost=cost, replay_cache=cache).run()
        out.append((float(cost.value), w.grad.copy()))
    return out


def test_the_block_freezes_what_lives_and_unfreezes_on_leaving():
    keep = [object() for _ in range(10)]
    with ev.steady_gc():
        frozen = gc.get_freeze_count()
        assert frozen > len(keep)
        with ev.steady_gc():                    # nested: one block
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_inside_the_block_the_oldest_generation_is_collected_often_and_thresholds_come_back():
    before = gc.get_threshold()
    gc.set_threshold(900, 12, 10)
    try:
        with ev.steady_gc():
            assert gc.get_threshold() == (900, 12, 1)
            with ev.steady_gc():
                assert gc.get_threshold() == (900, 12, 1)
            assert gc.get_threshold() == (900, 12, 1)
        assert gc.get_threshold() == (900, 12, 10)
    finally:
        gc.set_threshold(*before)


def test_garbage_made_inside_the_block_is_still_collected():
    with ev.steady_gc():
        g, cost, w = _step_graph(np.eye(3), np.ones((6, 3)), 4)
        probe = weakref.ref(cost)
        del g, cost, w                          # a graph and its nodes refer to each other
        gc.collect()
        assert probe() is None


def test_programs_compiled_in_the_block_are_frozen_and_values_do_not_change():
    cache = ReplayCache(walks_before_compile=1)
    plain = _loop(8, ReplayCache(walks_before_compile=1))
    with ev.steady_gc():
        before = gc.get_freeze_count()
        steady = _loop(8, cache)
        assert len(cache.compiled()) == 2
        assert gc.get_freeze_count() <= before  # nothing frozen on the step itself
        gc.collect()                            # the next full collection (made anyway)
        assert gc.get_freeze_count() > before   # the replay programs joined the frozen objects
        probe = gc.get_freeze_count()
        gc.collect()
        assert gc.get_freeze_count() == probe   # frozen once, not at every collection
    for (c1, g1), (c2, g2) in zip(plain, steady):
        assert c1 == c2
        np.testing.assert_array_equal(g1, g2)


def test_outside_a_block_exprvm_leaves_the_collector_alone():
    enabled = gc.isenabled()
    cache = ReplayCache(walks_before_compile=1)
    _loop(6, cache)
    g, cost, _ = _step_graph(np.eye(3), np.ones((6, 3)), 5)
    ev.TapeMachine(g, [cost]).run()
    assert gc.get_freeze_count() == 0 and gc.isenabled() == enabled
    gc.disable()
    try:
        ev.TapeMachine(g, [cost]).run()         # a compile pauses it, and leaves it paused
        assert not gc.isenabled()
    finally:
        if enabled:
            gc.enable()
